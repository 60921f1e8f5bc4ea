"""complex64 (``models.<table>.hyper.dtype = "complex64"``, float32 angles and state) against
complex128 for the paper's MNIST QNN: outputs agree to ~1e-5, and a small training from the same
keys and the same initial angles ends with the same accuracies, or within one example.

A GPU runs complex64 several times faster than complex128; these tests say what it costs in
accuracy. (The 6-qubit output check with large angles is tests/test_qnn.py.)"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.data import load_dataset
from qunlearn.experiments.common import model_input
from qunlearn.experiments.noise_sweep import sweep_program
from qunlearn.models import make_model


@pytest.fixture(scope="module")
def mnist():
    """The Fig 2c inputs (10 qubits, reference encoding): 200 training and 600 validation images."""
    dataset = load_dataset("mnist", encoding="reference")
    x_train, x_val, dim, is_complex = model_input(dataset)
    rng = np.random.default_rng(0)  # both classes in both sets (the files are sorted by class)
    pick, val = rng.permutation(len(x_train))[:200], rng.permutation(len(x_val))[:600]
    return {
        "x": jnp.asarray(x_train[pick]),
        "y": jnp.asarray(dataset.y_train[pick], jnp.float64),
        "x_val": jnp.asarray(x_val[val]),
        "y_val": jnp.asarray(dataset.y_val[val], jnp.float64),
        "dim": dim,
        "is_complex": is_complex,
    }


def models(mnist, depth):
    return {
        dtype: make_model("qnn", mnist["dim"], mnist["is_complex"], depth=depth, dtype=dtype)
        for dtype in ("complex128", "complex64")
    }


def test_complex64_outputs_agree_with_complex128_at_the_paper_size(mnist):
    pair = models(mnist, depth=6)
    params = 20 * pair["complex128"].init(jax.random.PRNGKey(3))  # angles far from the start
    out = {
        dtype: jax.jit(jax.vmap(m.apply, (None, 0)))(params, mnist["x_val"][:64])
        for dtype, m in pair.items()
    }
    assert out["complex64"].dtype == jnp.float32 and out["complex128"].dtype == jnp.float64
    spread = float(jnp.std(out["complex128"]))
    assert spread > 0.01  # the outputs vary: agreement is not the agreement of constants
    np.testing.assert_allclose(out["complex64"], out["complex128"], atol=1e-5)


def test_complex64_training_ends_at_the_complex128_accuracies(mnist):
    keys = jax.random.split(jax.random.PRNGKey(7), 4).reshape(2, 2, -1)  # 2 runs
    pair = models(mnist, depth=2)
    # The same start: a float32 normal draw from a key is not the float64 draw rounded, so each
    # dtype's own init would start another run; here complex64 starts from complex128's angles.
    wide = pair["complex128"].init
    pair["complex64"] = pair["complex64"]._replace(init=lambda k: wide(k).astype(jnp.float32))
    final = {}
    for dtype, model in pair.items():
        program = sweep_program(model, epochs=10, batch_size=25, lr=0.05, n_train=200)
        out = program(
            keys[:, 0],
            keys[:, 1],
            jnp.stack([mnist["x"]] * 2),
            jnp.stack([mnist["y"]] * 2),
            mnist["x_val"],
            mnist["y_val"],
        )
        final[dtype] = {k: np.asarray(v, np.float64) for k, v in out.items()}
    lo, hi = final["complex64"], final["complex128"]
    assert np.all(hi["val_acc"] > 0.75)  # it learned (chance: 0.53): the accuracies mean something

    # within one example of 600 (validation) and of 200 (training); compared as counts, since a
    # float32 accuracy is the fraction rounded (478/600 reads 0.79666668: off by 1.0000091/600)
    def examples(acc, n):
        return np.rint(acc * n).astype(int)

    for name, n in (("val_acc", 600), ("train_acc_noisy_labels", 200)):
        assert np.all(np.abs(examples(lo[name], n) - examples(hi[name], n)) <= 1), (name, lo, hi)
    # 80 Adam steps in float32 drift the last epoch's mean loss by ~2e-4 (measured)
    np.testing.assert_allclose(lo["final_loss"], hi["final_loss"], atol=1e-3)


def test_float32_mlp_ends_at_the_float64_accuracies(mnist):
    """``models.mlp.hyper.dtype = "float32"``: from the same initial weights, a short training of
    the paper's MLP ends with the float64 accuracies, or within one example; the probability is
    float64 either way (the BCE's eps is below float32's resolution near 1)."""
    keys = jax.random.split(jax.random.PRNGKey(5), 4).reshape(2, 2, -1)  # 2 runs
    pair = {
        dtype: make_model("mlp", mnist["dim"], mnist["is_complex"], dtype=dtype)
        for dtype in ("float64", "float32")
    }
    wide = pair["float64"].init
    pair["float32"] = pair["float32"]._replace(
        init=lambda k: jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), wide(k))
    )
    params = wide(keys[0, 0])
    out = {
        d: jax.jit(jax.vmap(m.apply, (None, 0)))(params, mnist["x_val"][:64])
        for d, m in pair.items()
    }
    assert out["float32"].dtype == jnp.float64 and float(jnp.std(out["float64"])) > 0.01
    np.testing.assert_allclose(out["float32"], out["float64"], atol=1e-5)
    assert not np.array_equal(out["float32"], out["float64"])  # float32 arithmetic did run
    own_init = make_model("mlp", mnist["dim"], mnist["is_complex"], dtype="float32").init
    own = jax.jit(own_init)(keys[0, 0])  # one compile, not one per eager op
    assert {a.dtype for a in jax.tree_util.tree_leaves(own)} == {jnp.dtype(jnp.float32)}
    final = {}
    for dtype, model in pair.items():
        program = sweep_program(model, epochs=10, batch_size=25, lr=0.01, n_train=200)
        y_noisy = np.asarray(mnist["y"]).copy()  # some labels to memorise
        y_noisy[:40] = 1 - y_noisy[:40]
        out = program(
            keys[:, 0],
            keys[:, 1],
            jnp.stack([mnist["x"]] * 2),
            np.stack([y_noisy] * 2),
            mnist["x_val"],
            mnist["y_val"],
        )
        final[dtype] = {k: np.asarray(v, np.float64) for k, v in out.items()}
    lo, hi = final["float32"], final["float64"]
    assert np.all(hi["val_acc"] > 0.75)
    for name, n in (("val_acc", 600), ("train_acc_noisy_labels", 200)):
        counts = [np.rint(acc[name] * n).astype(int) for acc in (lo, hi)]
        assert np.all(np.abs(counts[0] - counts[1]) <= 1), (name, lo, hi)
    np.testing.assert_allclose(lo["final_loss"], hi["final_loss"], atol=1e-3)


@pytest.mark.slow  # two whole weight sweeps (34 s cold); the c64 training check above stays
def test_complex64_weight_sweep_ends_at_the_complex128_accuracies(tmp_path):
    """``sweep_dtype = "complex64"`` (the shipped QNN sweep's setting): the same complex128
    teacher, then the sweep's circuit in float32 states, ends every (point, run) at the complex128
    sweep's accuracies, within one example of each set."""
    import csv

    from qunlearn.experiments.config import load_config
    from qunlearn.experiments.runner import run

    overrides = [
        "runs=2",
        "sweep.scrub.kl_w=[0.0, 0.5]",
        "sweep.scrub.fo_w=[0.0, 0.9]",
        "sweep.gradient_ascent.fo_w=[0.5]",
        "models.qnn.hyper={depth=2}",
        "models.qnn.epochs=4",
        "models.qnn.unlearn_epochs=4",
    ]
    out = {}
    for dtype in ("model", "complex64"):
        config = load_config("fig3_sweep_mnist_qnn", [*overrides, f'sweep_dtype="{dtype}"'])
        run(config, tmp_path / dtype, progress=False)
        with open(tmp_path / dtype / "sweep.csv") as f:
            out[dtype] = {
                (r["method"], r["kl_w"], r["fo_w"], r["run"], r["metric"]): float(r["value"])
                for r in csv.DictReader(f)
            }
        assert (tmp_path / dtype / "teacher.csv").read_text() == (
            tmp_path / "model" / "teacher.csv"
        ).read_text()  # one teacher: only the sweep's arithmetic differs
    cell = json.loads((tmp_path / "complex64" / "cells" / "qnn__sweep__scrub.json").read_text())
    assert cell["sweep_dtype"] == "complex64"
    lo, hi = out["complex64"], out["model"]
    assert lo.keys() == hi.keys() and len(lo) == (4 + 1) * 2 * 5
    sizes = {  # examples behind each metric: 500 training images, 150 flipped, 2144 validation
        "train_acc_noisy_labels": 500,
        "val_acc": 2144,
        "retain_acc": 350,
        "forget_acc_true": 150,
        "forget_frac_poisoned_label": 150,
    }
    vals = [v for k, v in hi.items() if k[-1] == "val_acc"]
    assert max(vals) - min(vals) > 0.02  # the points differ: agreement is not of one constant
    for key, value in hi.items():
        n = sizes[key[-1]]
        assert abs(round(lo[key] * n) - round(value * n)) <= 1, (key, lo[key], value)
