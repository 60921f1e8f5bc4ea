"""The roughening study (protocol §5): its program's Hessian numbers, its table, and a tiny run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qunlearn.cli import main
from qunlearn.compare import read_results
from qunlearn.experiments.config import load_config
from qunlearn.experiments.roughening import METRICS, roughening_program
from qunlearn.hessian import dense_spectrum
from qunlearn.models import make_model
from qunlearn.train import bce, make_train, predict, shuffled_plan, supervised_objective


def _toy(n, d, seed):
    rng = np.random.default_rng(seed)
    y = np.repeat([0.0, 1.0], n // 2)
    x = rng.normal(size=(n, d)) + 1.5 * (2 * y[:, None] - 1) * np.eye(d)[0]
    return jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True)), jnp.asarray(y)


def test_program_trace_is_exact_or_a_calibrated_hutchinson_estimate():
    model = make_model("mlp", 6, False, hidden=[5, 3])
    x_tr, y_tr = _toy(24, 6, 0)
    x_h, y_h = _toy(20, 6, 1)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    args = (keys, *(jnp.stack([a, a]) for a in (x_tr, y_tr, x_h, y_h)))
    exact = roughening_program(model, epochs=5, batch_size=8, lr=0.05, n_train=24, top_k=2)(*args)
    probes = roughening_program(
        model, epochs=5, batch_size=8, lr=0.05, n_train=24, top_k=2, trace_probes=400
    )(*args)
    # the same training (same keys) reaches the same params, so the same spectrum ...
    np.testing.assert_allclose(probes["top_eigenvalues"], exact["top_eigenvalues"], rtol=1e-9)
    np.testing.assert_array_equal(exact["trace_stderr"], 0.0)
    assert np.all(probes["trace_stderr"] > 0)
    # ... and the Hutchinson trace lies within 4 standard errors of the exact one
    assert np.all(np.abs(probes["trace"] - exact["trace"]) < 4 * probes["trace_stderr"])

    # the exact trace is the sum of the dense spectrum at the trained params
    init_key, shuffle_key, _ = jax.random.split(keys[0], 3)
    train = make_train(
        supervised_objective(model), optax.adam(0.05), epochs=5, plan=shuffled_plan(24, 8)
    )
    # jitted (one program each; eager, every op of the loop compiles on its own)
    params, _ = jax.jit(train)(shuffle_key, model.init(init_key), {"x": x_tr, "y": y_tr}, None)
    spectrum = jax.jit(
        lambda p: dense_spectrum(lambda q: jnp.mean(bce(predict(model, q, x_h), y_h)), p)
    )(params)
    np.testing.assert_allclose(exact["trace"][0], jnp.sum(spectrum), rtol=1e-8)
    np.testing.assert_allclose(exact["top_eigenvalues"][0], spectrum[::-1][:2], rtol=1e-6)


def test_trace_probes_config_is_checked(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(open("configs/roughening_mnist.toml").read())
    assert load_config(path).trace_probes == 0
    assert load_config(path, ["trace_probes=200"]).trace_probes == 200
    with pytest.raises(Exception, match="trace_probes = 1"):
        load_config(path, ["trace_probes=1"])


SMALL = """
experiment = "roughening"
name = "rough_small"
noise_ratios = [0.0, 0.3]
seeds = [0, 42]
top_k = 2
trace_probes = 8           # Hutchinson keeps the 4k-parameter MLP cheap (exact: 4k HVPs per run)
n_hessian_per_class = 10

[models.mlp]
model = "mlp"
hyper = { hidden = [4] }
epochs = 2
batch_size = 64
lr = 0.01

[models.qnn]
model = "qnn_cnot"
hyper = { depth = 1 }
epochs = 2
batch_size = 64
lr = 0.01
"""


@pytest.mark.slow  # MLP + QNN through the CLI (24 s cold); the contract runs roughening
def test_small_roughening_run_writes_every_seed_and_metric(tmp_path, capsys):
    config_path, out = tmp_path / "small.toml", tmp_path / "rough"
    config_path.write_text(SMALL)
    assert main(["run", str(config_path), "--quiet", "--out", str(out)]) == 0
    config, rows = read_results(out)
    assert config["experiment"] == "roughening" and config["trace_probes"] == 8
    seen = {(r["model"], float(r["noise_ratio"]), int(r["seed"]), r["metric"]) for r in rows}
    expected = {
        (m, ratio, s, metric)
        for m in ("mlp", "qnn")
        for ratio in (0.0, 0.3)
        for s in (0, 42)
        for metric in METRICS
    }
    assert expected <= seen
    flipped = {
        float(r["noise_ratio"]): float(r["value"])
        for r in rows
        if r["metric"] == "n_flipped" and r["model"] == "mlp"
    }
    assert flipped == {0.0: 0.0, 0.3: 105.0}  # int(350 * r) labels flipped
    assert main(["compare", str(out)]) == 0
    assert "noise_ratio" in (out / "compare.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_shipped_config_tiny_run(tmp_path):
    out = tmp_path / "rough"
    assert (
        main(
            [
                "run",
                "configs/roughening_mnist.toml",
                "trace_probes=8",
                "--tiny",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert read_results(out)[0]["name"] == "roughening_mnist"
