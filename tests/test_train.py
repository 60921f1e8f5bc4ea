"""The engine: learns, batches correctly, is deterministic, compiles once across runs and alphas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.experiments import noise_sweep
from qunlearn.models import make_model
from qunlearn.train import (
    accuracy,
    bce,
    make_train,
    over_runs,
    sequential_chunks,
    shuffled_plan,
    stream_plan,
    supervised_objective,
)


def _toy(n=40, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2).astype(np.int32)
    x = rng.normal(size=(n, d)) + 1.5 * (2 * y[:, None] - 1) * np.eye(d)[0]
    return jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True)), jnp.asarray(y)


def test_bce_matches_formula():
    p, y = jnp.array([0.2, 0.9]), jnp.array([0.0, 1.0])
    np.testing.assert_allclose(bce(p, y), -np.log([0.8 + 1e-14, 0.9 + 1e-14]))


def test_plan_covers_each_example_once_per_epoch():
    idx, w = shuffled_plan(10, 4)(jax.random.PRNGKey(0))
    assert idx.shape == (3, 4) and w.shape == (3, 4)
    assert sorted(np.asarray(idx)[np.asarray(w) > 0].tolist()) == list(range(10))
    assert float(w.sum()) == 10


def test_padded_batch_equals_unpadded_gradient():
    """The zero-weight padding of the last batch does not change its loss."""
    model = make_model("mlp", 8, False, hidden=(4,))
    x, y = _toy()
    params = model.init(jax.random.PRNGKey(1))
    objective = supervised_objective(model)
    batch = {"x": x[:3], "y": y[:3], "w": jnp.ones(3)}
    padded = {
        "x": jnp.concatenate([x[:3], x[:2]]),
        "y": jnp.concatenate([y[:3], y[:2]]),
        "w": jnp.array([1.0, 1, 1, 0, 0]),
    }
    grad = jax.jit(jax.grad(objective))  # one program per batch shape, not one per op
    g1 = grad(params, batch, None)
    g2 = grad(params, padded, None)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-14), g1, g2)


@pytest.mark.parametrize(
    "plan_of, epochs",  # a stream is one long "epoch" of all the training
    [(shuffled_plan, 3), (lambda n, bs: stream_plan(n, bs, 3), 1)],
)
def test_short_last_batch_runs_on_its_real_rows_only(plan_of, epochs):
    """A plan with ``last_rows`` trains exactly as its padded batches do (the same loss and
    gradients, up to the order of sums), and the objective never sees the padding rows."""
    model = make_model("mlp", 8, False, hidden=(4,))
    x, y = _toy(n=38)
    seen = set()

    def objective(params, batch, extra):
        seen.add(batch["x"].shape[0])  # at trace time: the batch shapes the program computes
        return supervised_objective(model)(params, batch, extra)

    plan = plan_of(len(x), 16)
    padded = plan.draw  # the same batches as a plain function: no last_rows, padded last batch
    params0 = model.init(jax.random.PRNGKey(1))
    out = {}
    for name, p in (("trimmed", plan), ("padded", padded)):
        seen.clear()
        train = make_train(objective, optax.adam(0.05), epochs=epochs, plan=p)
        out[name] = jax.jit(train)(jax.random.PRNGKey(3), params0, {"x": x, "y": y}, None)
        out[name + "_shapes"] = set(seen)
    assert out["padded_shapes"] == {16}
    assert out["trimmed_shapes"] == {16, plan.last_rows} and plan.last_rows < 16
    np.testing.assert_allclose(out["trimmed"][1]["loss"], out["padded"][1]["loss"], rtol=1e-12)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13),
        out["trimmed"][0],
        out["padded"][0],
    )


def test_training_learns_and_is_deterministic():
    model = make_model("mlp", 8, False, hidden=(8,))
    x, y = _toy()
    train = jax.jit(
        make_train(
            supervised_objective(model),
            optax.adam(0.05),
            epochs=30,
            plan=shuffled_plan(len(x), 16),
            evaluate=lambda p, d, e: {"acc": accuracy(model, p, d["x"], d["y"])},
        )
    )
    params0 = model.init(jax.random.PRNGKey(2))
    p1, log1 = train(jax.random.PRNGKey(3), params0, {"x": x, "y": y}, None)
    p2, log2 = train(jax.random.PRNGKey(3), params0, {"x": x, "y": y}, None)
    assert float(log1["final"]["acc"]) == 1.0
    assert log1["start"]["acc"].shape == (30,)
    assert float(log1["loss"][-1]) < float(log1["loss"][0])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), p1, p2)


def test_sweep_program_compiles_once_across_runs_alphas_and_noises():
    x, y = _toy(n=20, d=16)
    model = make_model("qnn", 16, False, depth=2)
    # the sizes of the next test's program: one compile serves both (the persistent cache)
    program = noise_sweep.sweep_program(model, epochs=3, batch_size=8, lr=0.01, n_train=20)
    root = jax.random.PRNGKey(0)
    results = {}
    for noise in ("label_flip", "feature_randomization"):
        for alpha in (0.0, 0.3, 0.6):
            keys = noise_sweep.run_keys(noise_sweep.stable_key(root, noise, alpha), 3)
            results[noise, alpha], _ = noise_sweep.run_cell(
                program, keys, x, y, x, y, noise=noise, alpha=alpha
            )
    assert len(program.traces) == 1
    assert results["label_flip", 0.3]["n_poisoned"] == [6, 6, 6]
    assert results["feature_randomization", 0.0]["n_poisoned"] == [0, 0, 0]


def test_vmapped_runs_equal_single_runs():
    x, y = _toy(n=20, d=16)
    model = make_model("qnn", 16, False, depth=2)
    program = noise_sweep.sweep_program(model, epochs=3, batch_size=8, lr=0.01, n_train=20)
    keys = noise_sweep.run_keys(jax.random.PRNGKey(5), 3)
    together, _ = noise_sweep.run_cell(program, keys, x, y, x, y, noise="label_flip", alpha=0.3)
    alone = [
        noise_sweep.run_cell(program, keys[i : i + 1], x, y, x, y, noise="label_flip", alpha=0.3)[0]
        for i in range(3)
    ]
    for metric in ("val_acc", "final_loss"):
        np.testing.assert_allclose(together[metric], [a[metric][0] for a in alone], rtol=1e-12)


@pytest.mark.parametrize("run_chunk", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_chunked_runs_equal_vmapped_runs(run_chunk):
    """lax.map over chunks of runs (2: a remainder of 1 run) changes scheduling, not numbers."""
    x, y = _toy(n=20, d=16)
    model = make_model("qnn", 16, False, depth=2)
    keys = noise_sweep.run_keys(jax.random.PRNGKey(5), 3)
    cell = {}
    for chunk in (0, run_chunk):
        ticks = []
        program = noise_sweep.sweep_program(
            model,
            epochs=3,
            batch_size=8,
            lr=0.01,
            n_train=20,
            run_chunk=chunk,
            on_epoch=ticks.append,
        )
        cell[chunk], _ = noise_sweep.run_cell(
            program, keys, x, y, x, y, noise="label_flip", alpha=0.3
        )
        assert len(ticks) == 3 * sequential_chunks(3, chunk)
    for metric in ("val_acc", "train_acc_noisy_labels", "final_loss"):
        np.testing.assert_allclose(cell[run_chunk][metric], cell[0][metric], rtol=1e-12)


def test_bad_run_chunk():
    with pytest.raises(QunlearnError, match="run_chunk must be an integer >= 0"):
        over_runs(lambda a: a, (0,), -1)


def test_bad_batch_size_and_epochs():
    with pytest.raises(QunlearnError, match="batch_size"):
        shuffled_plan(10, 0)
    with pytest.raises(QunlearnError, match="epochs"):
        make_train(lambda p, b, e: 0.0, optax.adam(0.1), epochs=0, plan=shuffled_plan(10, 2))


def test_stream_plan_emulates_a_repeat_shuffle_batch_stream():
    n, bs, epochs, buffer = 50, 16, 3, 8
    idx, w = jax.jit(stream_plan(n, bs, epochs, buffer, preshuffle=False))(jax.random.PRNGKey(0))
    assert idx.shape == (math.ceil(epochs * n / bs), bs)  # batches cross epoch boundaries
    order = np.asarray(idx).reshape(-1)[: epochs * n]
    assert np.asarray(w).sum() == epochs * n and np.all(
        np.asarray(w).reshape(-1)[epochs * n :] == 0
    )
    np.testing.assert_array_equal(np.bincount(order, minlength=n), np.full(n, epochs))
    # the t-th emitted element entered the buffer at stream position <= t + buffer - 1
    stream_pos = np.empty(epochs * n, int)
    seen = np.zeros(n, int)
    for t, i in enumerate(order):  # the k-th emission of example i is its k-th stream occurrence
        stream_pos[t] = seen[i] * n + i
        seen[i] += 1
    assert np.all(stream_pos <= np.arange(epochs * n) + buffer - 1)
    assert not np.array_equal(order, np.arange(epochs * n) % n)  # it does shuffle
    # a buffer of one is no shuffle at all; one larger than the stream is a full permutation
    # every plan below jitted: one compile each, fewer than its eager ops would need
    one, _ = jax.jit(stream_plan(n, bs, epochs, 1, preshuffle=False))(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(
        np.asarray(one).reshape(-1)[: epochs * n], np.arange(epochs * n) % n
    )
    # the reference pre-shuffles once: a buffer of one then repeats ONE random order every epoch
    pre, _ = jax.jit(stream_plan(n, bs, epochs, 1))(jax.random.PRNGKey(1))
    pre = np.asarray(pre).reshape(-1)[: epochs * n].reshape(epochs, n)
    assert sorted(pre[0]) == list(range(n)) and not np.array_equal(pre[0], np.arange(n))
    assert all(np.array_equal(row, pre[0]) for row in pre)

    # the reference's Fig 2c stream: 100 epochs of 500 class-sorted examples in 196 steps. Streamed
    # in stored order, its batches would be class-imbalanced (about 63/37); pre-shuffled as the
    # reference does, they are balanced like a per-epoch permutation's
    def imbalance(idx):
        return np.mean(np.abs(np.mean(np.asarray(idx[:-1]) < 250, axis=1) - 0.5))

    sorted_idx, _ = jax.jit(stream_plan(500, 256, 100, preshuffle=False))(jax.random.PRNGKey(2))
    ref_idx, _ = jax.jit(stream_plan(500, 256, 100))(jax.random.PRNGKey(2))
    assert ref_idx.shape == sorted_idx.shape == (196, 256)
    assert imbalance(sorted_idx) > 0.08 and imbalance(ref_idx) < 0.05
    perm_idx, _ = jax.jit(shuffled_plan(500, 256))(jax.random.PRNGKey(2))
    assert imbalance(np.concatenate([perm_idx, perm_idx[:1]])) < 0.05


def test_stream_batching_trains_through_the_sweep_program():
    x, y = _toy(n=40, d=8)
    model = make_model("mlp", 8, False, hidden=[8])
    keys = noise_sweep.run_keys(jax.random.PRNGKey(0), 2)
    cells = {}
    for batching in ("epoch", "stream"):
        program = noise_sweep.sweep_program(
            model, epochs=30, batch_size=8, lr=0.05, n_train=40, batching=batching
        )
        cells[batching], _ = noise_sweep.run_cell(
            program, keys, x, y, x, y, noise="label_flip", alpha=0.0
        )
    assert min(cells["stream"]["val_acc"]) > 0.9  # it learns the toy task
    assert cells["stream"]["final_loss"] != cells["epoch"]["final_loss"]  # other batches
    with pytest.raises(QunlearnError, match="unknown batching 'tf'"):
        noise_sweep.sweep_program(model, epochs=1, batch_size=8, lr=0.1, n_train=40, batching="tf")
