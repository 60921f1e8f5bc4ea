"""The evaluation's readouts (``eval_shots``, ``eval_circuit_noise``): the same params' margins
read out with S shots and under circuit noise, every score per readout; the exact readout
untouched. One toy QNN evaluation (3 qubits, synthetic data) without and one with readouts."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn import audit
from qunlearn.cli import main
from qunlearn.experiments import runner
from qunlearn.experiments.config import EvaluationConfig, build
from qunlearn.experiments.keys import teacher_keys
from qunlearn.experiments.readouts import readout_key
from qunlearn.experiments.unlearning_setup import load_teacher_npz
from qunlearn.models import make_model
from qunlearn.plotting.results import results_figures
from qunlearn.train import predict
from test_audit import run_on_toy_data, separable

SHOTS = 50
COIN = {"readout_p01": 0.5, "readout_p10": 0.5}  # every readout a fair coin: <Z> = 0 exactly
HYPER = {"depth": 1}
CONFIG = {
    "experiment": "evaluation",
    "name": "readouts_toy",
    "dataset": "mnist",
    "models": {
        "qnn": {
            "model": "qnn",
            "hyper": HYPER,
            "epochs": 3,
            "batch_size": 40,
            "lr": 0.1,
            "unlearn_epochs": 2,
            "unlearn_batch_size": 0,
            "unlearn_lr": 0.1,
            "oracles": 6,
            "teachers": 3,
            "unlearn_seeds": 1,
        }
    },
    "methods": ["retrain", "finetune"],
    "alpha": 0.3,
}
READOUTS = {"eval_shots": [SHOTS], "eval_circuit_noise": {"coin": COIN}}


(X, _), (XV, _), (XO, _) = separable(20, 1), separable(20, 2), separable(20, 3)  # the toy's


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(plain store, store with readouts) of the toy evaluation."""
    root = tmp_path_factory.mktemp("readouts")
    with pytest.MonkeyPatch.context() as mp:
        plain = run_on_toy_data(mp, CONFIG, root / "plain")
        read = run_on_toy_data(mp, CONFIG | READOUTS, root / "read")
    return plain, read


def _table(store, name="results.csv"):
    return runner.VerifiedResults(store.root).table(name)


def _margins(store, cell):
    with np.load(store.companion_path(f"{cell}.margins.npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


CELLS = ("qnn__teachers", "qnn__oracles", "qnn__retrain", "qnn__finetune")


def test_the_exact_readout_is_untouched_by_the_readouts(runs):
    plain, read = runs
    for name in ("results.csv", "per_example.csv", "roc.csv", "bootstrap.csv"):
        rows = _table(plain, name)
        assert rows and all("readout" not in r for r in rows), name  # unset: no new column
        exact = [
            {k: v for k, v in r.items() if k != "readout"}
            for r in _table(read, name)
            if r["readout"] == "exact"
        ]
        assert exact == rows, name  # the same values, as the same text
    assert _table(read, "ensemble.csv") == _table(plain, "ensemble.csv")
    for cell in CELLS:
        before, after = _margins(plain, cell), _margins(read, cell)
        assert list(before) == ["margins"]
        assert sorted(after) == ["margins", "margins_noise_coin", f"margins_shots{SHOTS}"]
        assert before["margins"].tobytes() == after["margins"].tobytes(), cell


def test_shot_margins_differ_and_come_from_the_documented_keys(runs):
    _, read = runs
    config = build(EvaluationConfig, CONFIG | READOUTS)
    t = config.models["qnn"].teachers
    saved = _margins(read, "qnn__teachers")
    shot = saved[f"margins_shots{SHOTS}"]
    assert shot.shape == saved["margins"].shape
    assert np.mean(shot != saved["margins"]) > 0.5  # 50 shots: most margins move
    # recomputed from the saved teachers: run key = the teacher's batch-order key, then
    # fold_in(fold_in(key, EVAL_SHOTS_TAG), S)
    exact = make_model("qnn", 8, False, **HYPER)
    sampled = make_model("qnn", 8, False, shots=SHOTS, **HYPER)
    params = load_teacher_npz(read.companion_path("qnn__teachers.npz"), exact)[0]
    keys = teacher_keys(jax.random.PRNGKey(config.seed), "mnist", "qnn", t)[:, 1]
    probes = jnp.asarray(np.concatenate([X, XV, XO[:6], XO[20:26]]))  # n_forget // 2 a class
    read_out = jax.jit(
        lambda p, k: audit.margin(predict(sampled, p, probes, readout_key(k, SHOTS)))
    )
    for i in range(t):
        again = read_out(jax.tree_util.tree_map(lambda a, i=i: a[i], params), keys[i])
        np.testing.assert_allclose(shot[i], np.asarray(again), rtol=1e-9, atol=1e-9)
    assert not np.array_equal(shot[0], shot[1])  # each run its own stream


def _score(rows, readout, group, split, metric) -> float:
    (row,) = [
        r
        for r in rows
        if (r["readout"], r["group"], r["split"], r["metric"]) == (readout, group, split, metric)
    ]
    return float(row["value"])


def test_a_coin_readout_is_at_chance_for_every_group(runs):
    _, read = runs
    rows = _table(read)
    assert {r["readout"] for r in rows} == {"exact", f"shots{SHOTS}", "noise_coin"}
    margins = _margins(read, "qnn__finetune")["margins_noise_coin"]
    np.testing.assert_array_equal(margins, 0.0)  # <Z> = 0: p = 1/2 for every model
    for group in ("teacher", "retrain", "finetune"):
        assert _score(rows, "noise_coin", group, "forget", "klom_p50") == 0.0
        assert _score(rows, "noise_coin", group, "forget", "gauss_kl_p95") == pytest.approx(0.0)
        assert _score(rows, "noise_coin", group, "forget", "ulira_auc") == 0.5
        assert _score(rows, "noise_coin", group, "forget", "mia_loss_auc_mean") == 0.5
    # the teacher does see its forget set on the exact readout (trained with it)
    assert _score(rows, "exact", "teacher", "forget", "klom_p50") > 0.0


def test_compare_and_plot_show_every_readout(runs, tmp_path, capsys):
    _, read = runs
    assert main(["compare", str(read.root), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"readout S={SHOTS}" in text and "readout noise coin" in text
    assert "readouts (eval_shots" in text
    summary = json.loads((tmp_path / "compare.json").read_text())["readouts"]["summary"]
    assert {r["readout"] for r in summary} == {"exact", f"shots{SHOTS}", "noise_coin"}
    coin = [r for r in summary if r["readout"] == "noise_coin" and r["group"] == "teacher"]
    assert coin[0]["ulira_auc"] == 0.5
    # the figure (drawn, not saved: saving every figure of the run is the slow part)
    figures = results_figures(runner.VerifiedResults(read.root))
    assert "evaluation_readouts" in figures
    panels = figures["evaluation_readouts"].axes
    assert [t.get_text() for t in panels[0].get_xticklabels()] == [
        f"S={SHOTS}",
        "exact\n(S = inf)",
        "noise\ncoin",
    ]


BAD = [
    ("eval_shots=[0]", "config.eval_shots has 0: list positive shot counts"),
    ("eval_shots=[-1]", "config.eval_shots has -1: list positive shot counts"),
    ("eval_shots=[1.5]", "config.eval_shots[0] must be an integer, got 1.5"),
    ('eval_circuit_noise={dev="fake_nowhere"}', "config.eval_circuit_noise.dev:"),
    ("eval_circuit_noise={bad={readout_p01=1.5}}", "circuit_noise.readout_p01 = 1.5"),
]


@pytest.mark.parametrize(("override", "message"), BAD)
def test_bad_readouts_are_one_line_and_write_nothing(tmp_path, capsys, override, message):
    out = tmp_path / "out"
    code = main(["run", "eval_fig3a_mnist.toml", "--tiny", "--out", str(out), override])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert message in line
    assert not out.exists()


def test_readouts_of_a_config_without_a_qnn_are_refused(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "eval_fig3a_mnist.toml", "--tiny", "--models", "mlp", "--out", str(out)]
    assert main([*argv, "eval_shots=[100]"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "config.eval_shots reads out QNNs" in line and not out.exists()
