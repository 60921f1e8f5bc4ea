"""certified_newton's (ε, δ) in the leaderboard: for logistic regression with l2 > 0 the ε that
compare prints is certified_epsilon of the run's residual ‖∇L_r(θ⁻)‖ / l2, θ⁻ the Newton step
from each teacher, recomputed here in numpy (the worst teacher's); any other model is
"uncertified"."""

import math

import numpy as np
import pytest

from qunlearn import leaderboard
from qunlearn.compare import compare_results_dir
from qunlearn.compare.evaluation import _certificates
from qunlearn.experiments.unlearning_setup import load_teacher_npz
from qunlearn.models import make_model
from qunlearn.surgery import certified_epsilon
from test_audit import run_on_toy_data, separable

L2, SIGMA, DAMPING = 0.1, 0.05, 1e-3
CONFIG = {
    "experiment": "evaluation",
    "name": "certificate_toy",
    "dataset": "mnist",
    "models": {
        "mlp": {
            "model": "mlp",
            "hyper": {"hidden": []},  # logistic regression
            "epochs": 20,
            "batch_size": 40,
            "lr": 0.05,
            "unlearn_epochs": 2,
            "unlearn_batch_size": 0,
            "unlearn_lr": 0.05,
            "oracles": 6,
            "teachers": 3,
            "unlearn_seeds": 1,
        }
    },
    "methods": ["retrain", "certified_newton"],
    "method_options": {"certified_newton": {"l2": L2, "sigma": SIGMA, "damping": DAMPING}},
    "alpha": 0.3,
}


def _residual(w, b, x, y) -> float:
    """‖∇L_r‖ / l2 after one damped Newton step from (w, b): L_r = mean BCE + l2/2·‖θ‖² of
    logistic regression, its exact gradient and Hessian."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    theta = np.append(w, b)

    def grad_hess(t):
        p = 1 / (1 + np.exp(-xa @ t))
        g = xa.T @ (p - y) / len(y) + L2 * t
        h = (xa * (p * (1 - p))[:, None]).T @ xa / len(y) + L2 * np.eye(len(t))
        return g, h

    g, h = grad_hess(theta)
    removed = theta - np.linalg.solve(h + DAMPING * np.eye(len(theta)), g)
    return float(np.linalg.norm(grad_hess(removed)[0])) / L2


def test_the_printed_epsilon_is_the_certificate_of_the_runs_residual(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        store = run_on_toy_data(mp, CONFIG, tmp_path / "run")
    x = separable(20, 1)[0]  # the training examples run_on_toy_data gives
    model = make_model("mlp", x.shape[1], False, hidden=[])
    params, y_noisy, mask = load_teacher_npz(store.companion_path("mlp__teachers.npz"), model)
    keep = ~np.asarray(mask[0], bool)
    residuals = [
        _residual(
            np.asarray(params[0]["w"][t, :, 0]),
            float(params[0]["b"][t, 0]),
            x[keep],
            np.asarray(y_noisy[0])[keep],
        )
        for t in range(3)
    ]
    want = certified_epsilon(max(residuals), SIGMA, leaderboard.CERTIFIED_DELTA)
    result = compare_results_dir(store.root, out=tmp_path / "cmp")
    (row,) = [r for r in result["summary"]["leaderboard"] if r["method"] == "certified_newton"]
    assert row["certificate"] == "certified"
    assert math.isclose(row["epsilon"], want, rel_tol=1e-6)
    assert row["delta"] == leaderboard.CERTIFIED_DELTA
    assert f"(ε, δ) = ({want:.3g}, 1e-05)" in result["text"]
    (retrain,) = [r for r in result["summary"]["leaderboard"] if r["method"] == "retrain"]
    assert "certificate" not in retrain  # only certified_newton's row carries one


@pytest.mark.parametrize(
    "model, hyper, l2, want",
    [
        ("qnn", {"depth": 2}, 0.1, "uncertified"),
        ("mlp", {"hidden": [4]}, 0.1, "uncertified"),
        ("mlp", {}, 0.1, "uncertified"),  # the default MLP has hidden layers
        ("mlp", {"hidden": [], "bound": 5.0}, 0.1, "uncertified"),
        ("mlp", {"hidden": []}, 0.0, "uncertified"),  # not strongly convex
        ("mlp", {"hidden": []}, 0.1, "n/a"),  # certifiable, but a run without its residuals
    ],
)
def test_a_model_whose_loss_allows_no_certificate_is_uncertified(model, hyper, l2, want):
    config = {
        "methods": ["retrain", "certified_newton"],
        "method_options": {"certified_newton": {"l2": l2}},
        "models": {"m": {"model": model, "hyper": hyper}},
    }
    assert _certificates(config, []) == {("m", "certified_newton"): {"certificate": want}}
