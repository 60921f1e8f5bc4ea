"""The training engine: one jitted step serves every model and every objective.

An *objective* is ``objective(params, batch, extra) -> scalar``: ``batch`` holds a minibatch of the
per-example arrays in ``data`` (any dict of arrays with a shared leading axis) plus weights ``"w"``
(0 marks padding in the last, short batch); ``extra`` holds run constants (e.g. a whole forget set
or teacher outputs). Training is ``lax.scan`` over epochs of ``lax.scan`` over steps; each epoch's
batches come from a *plan* ``plan(key) -> (idx, w)`` of static shape ``(steps, batch)`` drawn from
``fold_in(key, epoch)``. A plan whose only padding is at the end of its last batch says so with a
``last_rows`` attribute (:class:`BatchPlan`); ``make_train`` then runs that batch on its real rows
alone (a second shape of the step, compiled once): MNIST unlearning cuts its 350 retain rows into
256 + 94, and the padded 162 rows were a fifth of the SCRUB weight grid's work. Runs (seeds, noise
ratios) are batched over the whole train by :func:`over_runs`: ``jax.vmap``, optionally in
``lax.map``-ed chunks.

Batching differs from the reference code on purpose: it streams
``repeat(epochs).shuffle(128).batch(bs)``, so batches cross epoch boundaries and shuffling is local;
we draw a full permutation per epoch, short last batch included, so an epoch has ceil(N/bs) steps
(MNIST Fig 2c: 200 Adam steps instead of 196).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax

from qunlearn.errors import QunlearnError

BCE_EPS = 1e-14
STEP_KEY_TAG = 0x5407  # fold_in tag of the steps' keys (finite shots), apart from the plan's key


def bce(p, y, eps: float = BCE_EPS):
    """Binary cross-entropy of probabilities ``p`` against labels ``y``, eps as Keras."""
    return -(y * jnp.log(p + eps) + (1 - y) * jnp.log(1 - p + eps))


def cross_entropy(p, y, eps: float = BCE_EPS):
    """Per-example cross-entropy of probabilities ``p`` against labels ``y`` (ints, or floats
    holding ints): :func:`bce` for a binary model (``p`` shaped like ``y``), and
    −log(p_y + eps) for a C-class model (``p`` one axis longer: (..., C))."""
    if p.ndim == jnp.ndim(y):
        return bce(p, y, eps)
    label = jnp.asarray(y).astype(jnp.int32)[..., None]
    return -jnp.log(jnp.take_along_axis(p, label, axis=-1)[..., 0] + eps)


def hits(p, y):
    """Per-example correctness: p > ½ against y > ½ for a binary model; the most probable
    class against ``y`` for a C-class one (``p`` (..., C))."""
    if p.ndim == jnp.ndim(y):
        return (p > 0.5) == (y > 0.5)
    return jnp.argmax(p, axis=-1) == jnp.asarray(y).astype(jnp.int32)


def weighted_mean(values, w):
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1e-12)


def predict(model, params, x, key=None):
    """Probabilities for a batch ``x`` of shape (n, D). With a ``key`` and a model that samples
    (finite shots: ``model.sample``), the shot estimate drawn from that key; otherwise exact."""
    if key is not None and getattr(model, "sample", None) is not None:
        return model.sample(params, x, key)
    return jax.vmap(model.apply, (None, 0))(params, x)


def hit_rate(p, y):
    """The share of a batch's probabilities ``p`` whose predicted class is ``y`` (:func:`hits`)."""
    return jnp.mean(hits(p, y).astype(p.dtype))


def accuracy(model, params, x, y, key=None):
    return hit_rate(predict(model, params, x, key), y)


def supervised_objective(model, label_smoothing: float = 0.0) -> Callable:
    """Weighted cross-entropy (:func:`cross_entropy`) of the model on the batch's (x, y).
    ``label_smoothing`` ε trains a binary model on the targets y·(1 − ε) + ε/2 (Keras' binary
    convention), a C-class one on one-hot·(1 − ε) + ε/C; accuracies still use the labels."""

    def objective(params, batch, extra):
        del extra
        # batch["key"]: a step key, there when make_train(step_keys=True) (finite-shot models)
        p = predict(model, params, batch["x"], batch.get("key"))
        if not label_smoothing:  # no ops otherwise: the paper's loss, to the last bit
            return weighted_mean(cross_entropy(p, batch["y"]), batch["w"])
        if p.ndim == batch["y"].ndim:
            target = batch["y"] * (1 - label_smoothing) + 0.5 * label_smoothing
            return weighted_mean(bce(p, target), batch["w"])
        n_classes = p.shape[-1]
        target = jax.nn.one_hot(batch["y"].astype(jnp.int32), n_classes, dtype=p.dtype)
        target = target * (1 - label_smoothing) + label_smoothing / n_classes
        return weighted_mean(-jnp.sum(target * jnp.log(p + BCE_EPS), -1), batch["w"])

    return objective


def adam_optimizer(lr: float, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam, or with ``weight_decay`` > 0 AdamW: decoupled decay of every parameter by
    lr · weight_decay per step (optax.adamw), not an L2 term in the loss."""
    return optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)


@dataclass(frozen=True)
class BatchPlan:
    """A plan, ``plan(key) -> (idx, w)`` of shape (steps, batch), whose padding (index 0, weight
    0) is all at the end of the last batch: ``last_rows`` of that batch are real. ``make_train``
    runs the last batch on those rows only; called directly, it gives the padded arrays."""

    draw: Callable
    last_rows: int

    def __call__(self, key):
        return self.draw(key)


def shuffled_plan(n_examples: int, batch_size: int) -> BatchPlan:
    """Plan for one epoch: a fresh permutation, cut into ceil(n/bs) batches, the last one padded.
    ``batch_size`` is an upper bound: ``batch_size >= n_examples`` is one full batch per epoch.

    Returns ``plan(key) -> (idx, w)`` with shapes (steps, batch_size); padding: index 0, weight 0.
    """
    check_positive(batch_size=batch_size, n_examples=n_examples)
    batch_size = min(batch_size, n_examples)
    steps = math.ceil(n_examples / batch_size)
    pad = steps * batch_size - n_examples

    def plan(key):
        return _padded_batches(jax.random.permutation(key, n_examples), pad, steps, batch_size)

    return BatchPlan(plan, batch_size - pad)


def _padded_batches(order, pad: int, steps: int, batch_size: int):
    """``(idx, w)`` of shape (steps, batch_size): ``order`` then ``pad`` slots of index 0 and
    weight 0."""
    idx = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]).reshape(steps, batch_size)
    w = jnp.concatenate([jnp.ones(order.shape), jnp.zeros((pad,))]).reshape(steps, batch_size)
    return idx, w


def stream_plan(
    n_examples: int, batch_size: int, epochs: int, buffer_size: int = 128, preshuffle: bool = True
) -> BatchPlan:
    """The reference code's batching as ONE plan for all of training (``make_train(epochs=1)``).

    The reference shuffles its training set once (``shuffle_zip``), then streams it through
    tf.data's ``repeat(epochs).shuffle(buffer_size).batch(batch_size)``. Emulated here: the
    examples, in one random order drawn from the key (``preshuffle``; else in their stored,
    class-sorted order), stream ``epochs`` times through a shuffle buffer that emits a uniformly
    chosen element and refills its slot with the next one; batches cross epoch boundaries;
    ceil(epochs·n/bs) steps, the last batch short (padded here with weight 0). Same distribution
    as TensorFlow's, not its random numbers. Without the pre-shuffle, a buffer much smaller than n
    makes each batch a window of the class-sorted stream: mostly one class.
    """
    check_positive(
        batch_size=batch_size, n_examples=n_examples, epochs=epochs, buffer_size=buffer_size
    )
    total = epochs * n_examples
    batch_size = min(batch_size, total)
    steps = math.ceil(total / batch_size)
    pad = steps * batch_size - total
    width = min(buffer_size, total)

    def plan(key):
        order_key, key = jax.random.split(key)
        examples = (
            jax.random.permutation(order_key, n_examples) if preshuffle else jnp.arange(n_examples)
        )

        def emit(buffer, t_key):
            t, k = t_key
            live = jnp.minimum(width, total - t)  # the live elements are buffer[:live]
            j = jax.random.randint(k, (), 0, live)
            refill = jnp.where(t + width < total, (t + width) % n_examples, buffer[live - 1])
            return buffer.at[j].set(refill), buffer[j]

        first = jnp.arange(width) % n_examples
        _, positions = jax.lax.scan(emit, first, (jnp.arange(total), jax.random.split(key, total)))
        return _padded_batches(examples[positions], pad, steps, batch_size)

    return BatchPlan(plan, batch_size - pad)


BATCHINGS = ("epoch", "stream")


def batching_plan(batching: str, n_examples: int, batch_size: int, epochs: int):
    """(scan epochs, plan) for ``make_train``: ``"epoch"`` = a fresh permutation per epoch
    (:func:`shuffled_plan`), ``"stream"`` = the reference code's stream (:func:`stream_plan`), one
    long "epoch"."""
    if batching == "epoch":
        return scan_epochs(batching, epochs), shuffled_plan(n_examples, batch_size)
    if batching == "stream":
        return scan_epochs(batching, epochs), stream_plan(n_examples, batch_size, epochs)
    raise QunlearnError(f"unknown batching {batching!r}: choose one of {', '.join(BATCHINGS)}")


def scan_epochs(batching: str, epochs: int) -> int:
    """How many "epochs" ``make_train`` scans for a batching: a stream is one long epoch."""
    return 1 if batching == "stream" else epochs


def check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise QunlearnError(f"{name} must be a positive integer, got {value!r}")


def make_train(
    objective: Callable,
    optimizer: optax.GradientTransformation,
    *,
    epochs: int,
    plan: Callable,
    evaluate: Callable | None = None,
    on_epoch: Callable[[jax.Array], None] | None = None,
    snapshot_every: int = 0,
    step_keys: bool = False,
    epoch_index: bool = False,
) -> Callable:
    """Build ``train(key, params, data, extra) -> (params, log)`` (pure; jit/vmap it outside).

    ``log["loss"]``: (epochs,) mean objective per epoch; ``log["start"]``: ``evaluate(params, data,
    extra)`` at the START of every epoch (index 0: the starting params), ``log["final"]``: after the
    last epoch. ``evaluate`` returns a dict of scalars. ``on_epoch(epoch_index)`` is called on the
    host after each epoch (progress bars); it must not affect results. ``snapshot_every = k > 0``
    adds ``log["snapshots"]``: the params (pytree, leading axis S) at the epochs
    :func:`snapshot_epochs` lists, i.e. the start of epochs 0, k, 2k, ... and after the last epoch.
    ``step_keys``: every step's batch gets ``batch["key"]``, drawn from
    ``fold_in(epoch key, STEP_KEY_TAG)`` (the batch plan's draws are unchanged) for stochastic
    objectives (finite shots); off, the program is exactly the one without it. ``epoch_index``:
    the objective's ``extra`` (a dict) also holds ``"epoch"``, the current epoch's index (traced),
    for loss weights on a schedule (l1-sparse's decay); off, the program is the one without it.
    """
    check_positive(epochs=epochs)
    if snapshot_every:
        check_positive(snapshot_every=snapshot_every)
    evaluate = evaluate or (lambda params, data, extra: {})
    n_snapshots = len(snapshot_epochs(epochs, snapshot_every)) if snapshot_every else 0

    last_rows = getattr(plan, "last_rows", None)

    def train(key, params, data, extra):
        def run_batches(state, idx_w, epoch_key, current_epoch):
            step = partial(step_in, extra | {"epoch": current_epoch} if epoch_index else extra)
            idx, w = idx_w
            xs: tuple = (idx, w)
            if step_keys:
                xs += (jax.random.split(jax.random.fold_in(epoch_key, STEP_KEY_TAG), len(idx)),)
            if last_rows is None or last_rows == idx.shape[1]:
                return jax.lax.scan(step, state, xs)
            # the short last batch on its real rows: its padding would cost a full batch of work
            state, losses = jax.lax.scan(step, state, tuple(a[:-1] for a in xs))
            last_xs = (idx[-1, :last_rows], w[-1, :last_rows], *(a[-1] for a in xs[2:]))
            state, last = step(state, last_xs)
            return state, jnp.concatenate([losses, last[None]])

        def step_in(extra, carry, idx_w):
            params, opt_state = carry
            idx, w, *step_key = idx_w
            batch = jax.tree_util.tree_map(lambda a: a[idx], data) | {"w": w}
            if step_key:
                batch["key"] = step_key[0]
            loss, grads = jax.value_and_grad(objective)(params, batch, extra)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        def epoch(carry, epoch_index):
            state, snaps = carry
            metrics = evaluate(state[0], data, extra)
            if snapshot_every:  # slot e // k holds the params at the start of epoch k * (e // k)
                slot, take = epoch_index // snapshot_every, epoch_index % snapshot_every == 0
                snaps = jax.tree_util.tree_map(
                    lambda s, p: s.at[slot].set(jnp.where(take, p, s[slot])), snaps, state[0]
                )
            epoch_key = jax.random.fold_in(key, epoch_index)
            state, losses = run_batches(state, plan(epoch_key), epoch_key, epoch_index)
            if on_epoch is not None:
                jax.debug.callback(on_epoch, epoch_index)
            return (state, snaps), (metrics, jnp.mean(losses))

        snaps = None
        if snapshot_every:
            snaps = jax.tree_util.tree_map(
                lambda p: jnp.zeros((n_snapshots, *jnp.shape(p)), jnp.result_type(p)), params
            )
        ((params, _), snaps), (start, losses) = jax.lax.scan(
            epoch, ((params, optimizer.init(params)), snaps), jnp.arange(epochs)
        )
        log = {"loss": losses, "start": start, "final": evaluate(params, data, extra)}
        if snapshot_every:
            log["snapshots"] = jax.tree_util.tree_map(lambda s, p: s.at[-1].set(p), snaps, params)
        return params, log

    return train


def make_supervised_train(
    model,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    n_train: int,
    batching: str = "epoch",
    on_epoch: Callable | None = None,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
) -> Callable:
    """:func:`make_train` for plain supervised training (:func:`adam_optimizer`,
    :func:`supervised_objective`) with a :func:`batching_plan`: ``train(key, params, {"x", "y"},
    None) -> (params, log)``. The defaults (no decay, no smoothing) are the paper's training."""
    scan_epochs, plan = batching_plan(batching, n_train, batch_size, epochs)
    return make_train(
        supervised_objective(model, label_smoothing),
        adam_optimizer(lr, weight_decay),
        epochs=scan_epochs,
        plan=plan,
        on_epoch=on_epoch,
        step_keys=getattr(model, "sample", None) is not None,
    )


def snapshot_epochs(epochs: int, every: int) -> list[int]:
    """Epochs of :func:`make_train`'s snapshots: 0, k, 2k, ... < ``epochs``, then ``epochs``
    (= after the last epoch)."""
    return [*range(0, epochs, every), epochs]


def over_runs(fn: Callable, in_axes: tuple, run_chunk: int = 0, devices=None) -> Callable:
    """``fn`` lifted over a leading run axis of the arguments whose ``in_axes`` entry is 0.

    ``run_chunk=0`` vmaps every run at once: the right call for small models and on a GPU.
    ``run_chunk=k`` runs k at a time (vmapped) in a ``lax.map`` over the chunks. Same numbers, other
    memory traffic: on a 2-core CPU one QNN run's states stay in cache, and 5 vmapped runs of the
    10-qubit depth-6 circuit (batch 256) took 244 ms per step against 132 ms one run at a time
    (``bench/bench_qnn_kernel.py --runs 5 [--runs-map]``).

    ``devices``: a list of more than one device (e.g. ``jax.devices()``) splits the run axis
    over them (:func:`shard_runs`); each device lifts its share as above.
    """
    if devices is not None and len(devices) > 1:
        return shard_runs(over_runs(fn, in_axes, run_chunk), in_axes, devices)
    if not isinstance(run_chunk, int) or isinstance(run_chunk, bool) or run_chunk < 0:
        raise QunlearnError(
            f"run_chunk must be an integer >= 0 (0 = all runs at once), got {run_chunk!r}"
        )
    mapped = [i for i, axis in enumerate(in_axes) if axis == 0]
    if any(axis not in (0, None) for axis in in_axes):
        raise ValueError("over_runs maps axis 0 or nothing")
    if run_chunk == 0:
        return jax.vmap(fn, in_axes=in_axes)

    def lifted(*args):
        def one(run_args):
            full = list(args)
            for i, a in zip(mapped, run_args, strict=True):
                full[i] = a
            return fn(*full)

        xs = tuple(args[i] for i in mapped)
        if run_chunk == 1:  # no size-1 vmap axis left in the body for XLA to carry
            return jax.lax.map(one, xs)
        return jax.lax.map(one, xs, batch_size=run_chunk)

    return lifted


def shard_runs(lifted: Callable, in_axes: tuple, devices) -> Callable:
    """``lifted`` (a function over a leading run axis) with that axis split evenly over
    ``devices``: a 1-D ``Mesh`` named ``"runs"`` and ``jax.shard_map``, the arguments whose
    ``in_axes`` entry is None replicated. Runs that do not divide evenly are padded with copies of
    the last run, whose results are dropped. Every run is computed exactly as on one device: no
    value crosses devices (the runs are independent), so there is no collective to reorder sums.
    """
    from jax.sharding import Mesh, PartitionSpec

    n = len(devices)
    mesh = Mesh(devices, ("runs",))
    specs = tuple(PartitionSpec("runs") if axis == 0 else PartitionSpec() for axis in in_axes)
    # check_vma=False: each device's share is a plain, independent program. With the check on,
    # a value a run creates from constants (e.g. zero biases) counts as replicated over the mesh,
    # and its gradient is summed over the devices' runs (a wrong gradient, tested).
    sharded = jax.shard_map(
        lifted, mesh=mesh, in_specs=specs, out_specs=PartitionSpec("runs"), check_vma=False
    )
    mapped = [i for i, axis in enumerate(in_axes) if axis == 0]

    def call(*args):
        runs = jax.tree_util.tree_leaves(args[mapped[0]])[0].shape[0]
        pad = -runs % n

        def padded(a):
            return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a

        full = [jax.tree_util.tree_map(padded, a) if i in mapped else a for i, a in enumerate(args)]
        return jax.tree_util.tree_map(lambda out: out[:runs], sharded(*full))

    return call


def progress_ticks(
    epochs: int, runs: int, run_chunk: int = 0, batching: str = "epoch", devices=None
) -> int:
    """How often ``make_train``'s ``on_epoch`` fires in one call of a program over ``runs`` runs
    (:func:`over_runs` with ``run_chunk`` and ``devices``): the total of its progress bar. Split
    over n devices, each fires for its ceil(runs / n) runs."""
    n = len(devices) if devices is not None and len(devices) > 1 else 1
    return scan_epochs(batching, epochs) * n * sequential_chunks(-(-runs // n), run_chunk)


def sequential_chunks(runs: int, run_chunk: int) -> int:
    """How many times a per-run callback fires per epoch under :func:`over_runs`."""
    return 1 if run_chunk == 0 else -(-runs // run_chunk)
