"""Every ``deviations_from_reference`` text against the code it describes, one test per text.

A manifest carries these texts as the description of what was run; when the code changes under
a text, its test here fails. Each test reads the claim from the text itself (so an edited text is
checked too) and then checks the code's behaviour. docs/deviations.md quotes every text.
"""

import inspect
import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp

from qunlearn.compare import compare_roughening
from qunlearn.data import load_dataset
from qunlearn.data.mnist import preprocess_mnist
from qunlearn.data.xxz import ground_state, xxz_hamiltonian
from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import (
    CHOSEN_DEVIATIONS,
    DEVIATIONS,
    MNIST_ENCODING_NOTES,
    deviations,
)
from qunlearn.hessian import dense_hessian
from qunlearn.models import MODELS, make_model
from qunlearn.train import batching_plan, make_train, predict, stream_plan
from qunlearn.unlearn import METHODS, make_method, make_split, make_unlearn

ROOT = Path(__file__).resolve().parent.parent


def _rows_seen(plan, epochs: int, n: int):
    """Train a constant objective through ``make_train``: (batch sizes the program computes,
    per-epoch mean of the zero-weight rows each step computed)."""
    sizes = set()

    def objective(params, batch, extra):
        sizes.add(batch["w"].shape[0])  # at trace time
        padding = batch["w"].shape[0] - jnp.sum(batch["w"])
        return padding + 0.0 * jnp.sum(params)

    train = make_train(objective, optax.sgd(0.0), epochs=epochs, plan=plan)
    _, log = jax.jit(train)(jax.random.PRNGKey(0), jnp.zeros(1), {"i": jnp.arange(n)}, None)
    return sizes, np.asarray(log["loss"])


def test_batching_text():
    text = DEVIATIONS["batching"]
    assert "fold_in(key, epoch)" in text and "ceil(N/bs) steps" in text
    assert "N mod bs real rows (no padding)" in text and "shuffle(128)" in text
    n, bs, epochs = 10, 4, 2
    scanned, plan = batching_plan("epoch", n, bs, epochs)
    assert scanned == epochs
    idx, w = plan(jax.random.PRNGKey(0))
    assert idx.shape == (math.ceil(n / bs), bs)
    assert plan.last_rows == n % bs
    # each epoch is a full permutation of its own, drawn from fold_in(key, epoch)
    orders = [
        np.asarray(plan(jax.random.fold_in(jax.random.PRNGKey(0), e))[0]).reshape(-1)[:n]
        for e in range(epochs)
    ]
    assert all(sorted(o) == list(range(n)) for o in orders)
    assert not np.array_equal(orders[0], orders[1])
    # the program computes batches of bs and of N mod bs rows, and never a padding row
    sizes, padding = _rows_seen(plan, epochs, n)
    assert sizes == {bs, n % bs}
    np.testing.assert_array_equal(padding, 0.0)
    # the reference's stream, for the text's other half: the same 128-example buffer
    assert inspect.signature(stream_plan).parameters["buffer_size"].default == 128


def test_stream_batching_text():
    text = CHOSEN_DEVIATIONS["stream batching"]
    assert "one-time shuffle" in text and "repeat(epochs).shuffle(128).batch(bs)" in text
    n, bs, epochs = 10, 4, 3
    scanned, plan = batching_plan("stream", n, bs, epochs)
    assert scanned == 1  # one stream over all epochs: batches cross epoch boundaries
    idx, w = plan(jax.random.PRNGKey(0))
    assert idx.shape == (math.ceil(epochs * n / bs), bs)
    emitted = np.asarray(idx).reshape(-1)[np.asarray(w).reshape(-1) > 0]
    np.testing.assert_array_equal(np.bincount(emitted, minlength=n), np.full(n, epochs))
    # one-time shuffle: with a buffer of one, every epoch repeats the one random order
    one, _ = stream_plan(n, bs, epochs, buffer_size=1)(jax.random.PRNGKey(1))
    per_epoch = np.asarray(one).reshape(-1)[: epochs * n].reshape(epochs, n)
    assert sorted(per_epoch[0]) == list(range(n)) and (per_epoch == per_epoch[0]).all()
    assert not np.array_equal(per_epoch[0], np.arange(n))


def test_mnist_validation_text():
    text = DEVIATIONS["mnist validation"]
    count = int(text.split("all ")[1].split()[0])
    assert "digits 1 and 9" in text
    ds = load_dataset("mnist")
    assert len(ds.y_val) == count == sum(ds.info["n_val_per_class"])
    assert "val: all test-split 1s and 9s" in ds.info["selection"]


def test_xxz_data_text():
    text = DEVIATIONS["xxz data"]
    assert "sparse exact diagonalisation" in text and "deterministic global phase" in text
    assert sp.issparse(xxz_hamiltonian(0.5, 6))
    energy, psi = ground_state(0.5, 6)
    again = ground_state(0.5, 6)[1]
    np.testing.assert_array_equal(psi, again)  # deterministic, phase included
    top = psi[np.argmax(np.abs(psi))]
    assert top.imag == 0 and top.real > 0
    dense = np.linalg.eigvalsh(xxz_hamiltonian(0.5, 6).toarray())
    assert energy == pytest.approx(dense[0], abs=1e-10)


def test_xxz_random_phase_text(tmp_path):
    text = CHOSEN_DEVIATIONS["xxz data"]
    assert "seeded random global phase" in text and "phase = 'random'" in text
    fixed = load_dataset("xxz", cache_dir=tmp_path, n_spins=4)
    rand = load_dataset("xxz", cache_dir=tmp_path, n_spins=4, phase="random", phase_seed=3)
    ratio = np.sum(np.conj(fixed.x_train) * rand.x_train, axis=1)  # e^{i phi} per state
    np.testing.assert_allclose(rand.x_train, ratio[:, None] * fixed.x_train, atol=1e-12)
    np.testing.assert_allclose(np.abs(ratio), 1, atol=1e-12)
    assert np.std(np.angle(ratio)) > 0.5
    again = load_dataset("xxz", cache_dir=tmp_path, n_spins=4, phase="random", phase_seed=3)
    np.testing.assert_array_equal(again.x_train, rand.x_train)  # seeded


def test_unlearning_text():
    """Every method's run ends with the same metric: D_f predicted with its poisoned label."""
    text = DEVIATIONS["unlearning"]
    assert "fraction of D_f predicted with its poisoned label" in text
    assert "for every method" in text
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(12, 4)))
    y = jnp.asarray(np.repeat([0, 1], 6).astype(np.int32))
    mask = jnp.asarray(np.isin(np.arange(12), [1, 2, 7, 8]))
    y_noisy = jnp.where(mask, 1 - y, y)
    split = make_split(x, y, y_noisy, mask, x[:6], y[:6], n_forget=4)
    model = make_model("mlp", 4, False, hidden=(3,))
    teacher = model.init(jax.random.PRNGKey(1))
    # the metric is make_unlearn's, whatever the method: one method per way of reaching it
    # (variant; trained or only edited; with or without a prepare step) is enough
    forms = {}
    for name in METHODS:
        method = make_method(name, model, n_retain=8, n_forget=4, epochs=1, batch_size=4)
        way = (method.variant, method.steps > 0, method.prepare is not None)
        forms.setdefault(way, (name, method))
    assert len(forms) > 1
    for name, method in forms.values():
        unlearn = make_unlearn(model, method, lr=0.01, epochs=1, trajectory=False)
        params, log = jax.jit(unlearn)(
            jax.random.PRNGKey(2), teacher, teacher, split, method.weights
        )
        p = predict(model, params, split["x_forget"])
        expected = np.mean((np.asarray(p) > 0.5) == (np.asarray(split["y_forget_poisoned"]) > 0.5))
        assert float(log["final"]["forget_frac_poisoned_label"]) == pytest.approx(expected), name


def test_hessian_text():
    text = DEVIATIONS["hessian"]
    assert "w.r.t. the real circuit angles" in text
    angles = make_model("qnn", 2**4, True, depth=1).init(jax.random.PRNGKey(0))
    assert jnp.issubdtype(angles.dtype, jnp.floating)  # real angles, not real + imaginary parts

    def loss(params):  # any real loss of the angles: the Hessian is over the angles themselves
        return jnp.sum(jnp.sin(params) ** 2)

    h = jax.jit(lambda a: dense_hessian(loss, a))(angles)  # one compile, not one per eager op
    assert h.shape == (angles.size, angles.size) and jnp.isrealobj(h)
    np.testing.assert_allclose(jnp.diag(h), 2 * jnp.cos(2 * angles).reshape(-1), atol=1e-12)
    with pytest.raises(QunlearnError, match="real floating arrays"):
        dense_hessian(lambda p: jnp.abs(jnp.sum(p)), angles.astype(jnp.complex128))


def test_collapsed_runs_text():
    """A collapsed run stays in the roughening means, and is counted."""
    text = DEVIATIONS["collapsed runs"]
    assert "flagged collapsed and kept in the means" in text
    rows = []
    for ratio, traces in ((0.0, (1.0, 1.0)), (0.4, (2.0, 0.25))):
        for seed, trace in enumerate(traces):
            collapsed = ratio > 0 and seed == 1
            rows += [
                {
                    "model": "qnn",
                    "noise_ratio": ratio,
                    "seed": seed,
                    "metric": "trace",
                    "value": trace,
                },
                {
                    "model": "qnn",
                    "noise_ratio": ratio,
                    "seed": seed,
                    "metric": "collapsed",
                    "value": float(collapsed),
                },
            ]
    row = next(r for r in compare_roughening(rows, {"qnn": "qnn"}) if r["noise_ratio"] == 0.4)
    assert row["collapsed"] == 1 and row["runs"] == 2
    assert row["ratio_mean"] == pytest.approx((2.0 + 0.25) / 2)  # the collapsed run is in it
    assert row["ratio_mean_excl_collapsed"] == pytest.approx(2.0)


def test_qnn_readout_text():
    text = CHOSEN_DEVIATIONS["qnn readout"]
    assert "(1 + <Z>)/2" in text and "sigmoid(5<Z>)" in text
    defaults = inspect.signature(MODELS["qnn"]).parameters
    assert defaults["readout"].default == "sigmoid" and defaults["scale"].default == 5.0
    sigmoid = make_model("qnn", 2**4, True, depth=1)
    linear = make_model("qnn", 2**4, True, depth=1, readout="linear")
    params = sigmoid.init(jax.random.PRNGKey(0))
    xs = jax.random.normal(jax.random.PRNGKey(1), (3, 2**4)).astype(jnp.complex128)
    xs = xs / jnp.linalg.norm(xs, axis=1, keepdims=True)
    # jitted: an eager circuit compiles each of its many small ops on its own
    z = 2 * jax.jit(partial(predict, linear))(params, xs) - 1  # <Z>, from (1 + <Z>)/2
    np.testing.assert_allclose(
        jax.jit(partial(predict, sigmoid))(params, xs), jax.nn.sigmoid(5 * z), atol=1e-12
    )


def _image_with_columns(columns: int) -> np.ndarray:
    """A 28x28 image whose first ``columns`` columns (from the 6th) have ink, of varying shade."""
    img = np.zeros((28, 28), np.uint8)
    img[3:20, 5 : 5 + columns] = (np.arange(17 * columns).reshape(17, columns) * 7) % 250 + 5
    return img


@pytest.mark.parametrize("encoding", ["unit", "reference"])
def test_mnist_encoding_texts(encoding):
    text = MNIST_ENCODING_NOTES[encoding]
    assert "||x||^2 = non-blank columns" in text
    images = np.stack([_image_with_columns(c) for c in (3, 11)])
    x = preprocess_mnist(images, encoding)
    assert x.shape == (2, 1024)
    norms2 = np.sum(x**2, axis=1)
    if encoding == "unit":
        assert "whole-image L2 (a valid 10-qubit state)" in text
        np.testing.assert_allclose(norms2, 1, atol=1e-12)
    else:
        assert "float32, each column L2-normalised, no renormalisation" in text
        np.testing.assert_allclose(norms2, [3, 11], rtol=1e-6)  # float32 arithmetic
        # "so the QNN's <Z> is scaled by it": logit / scale = ||x||^2 <Z>(x / ||x||)
        model = make_model("qnn", 1024, False, depth=1)
        params = model.init(jax.random.PRNGKey(0))
        run = jax.jit(partial(predict, model))  # one compile serves both calls
        logit = jax.scipy.special.logit(run(params, jnp.asarray(x)))
        unit = x / np.sqrt(norms2)[:, None]
        logit_unit = jax.scipy.special.logit(run(params, jnp.asarray(unit)))
        np.testing.assert_allclose(logit, norms2 * logit_unit, rtol=1e-8)


def test_docs_quote_every_text():
    page = (ROOT / "docs" / "deviations.md").read_text(encoding="utf-8")
    texts = [*DEVIATIONS.values(), *CHOSEN_DEVIATIONS.values(), *MNIST_ENCODING_NOTES.values()]
    missing = [t for t in texts if t not in page]
    assert not missing, f"docs/deviations.md does not quote: {missing}"
    # and deviations() hands out nothing else
    configs = [
        {"experiment": kind, "dataset": dataset, "dataset_options": options, "models": models}
        for kind in ("noise_sweep", "unlearning", "roughening", "curvature")
        for dataset, options in (
            ("mnist", {"encoding": "unit"}),
            ("mnist", {"encoding": "reference"}),
            ("xxz", {"phase": "random"}),
        )
        for models in ({}, {"m": {"batching": "stream", "hyper": {"readout": "linear"}}})
    ]
    assert {d for c in configs for d in deviations(c)} <= set(texts)


def test_other_mnist_digits_are_named_and_not_called_the_papers_validation_set():
    from qunlearn.experiments.common import deviations

    def topics(options):
        config = {"experiment": "noise_sweep", "dataset": "mnist", "models": {}}
        return [d.split(":")[0] for d in deviations(config | {"dataset_options": options})]

    assert "mnist validation" in topics({}) and "mnist digits" not in topics({})
    assert "mnist validation" in topics({"digits": [1, 9]})
    other = topics({"digits": [3, 5]})
    assert "mnist digits" in other and "mnist validation" not in other
