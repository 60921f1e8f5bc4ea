"""The loss-landscape "roughening" study (protocol §5): Hessian trace on clean held-out data after
training on label-flipped data, relative to the clean trace, for a QNN and an MLP.

Set-up of the reference notebook (a different one from Figs 2-3): the 500 MNIST training images;
per seed a stratified 350 / 150 split (175 / 75 per class), whose first 50 + 50 held-out images
(clean labels) form the Hessian set; ``int(350·r)`` training labels flipped uniformly at random (not
class-balanced); Adam lr 0.01, 50 epochs, batch 32. The trace is of the mean BCE on the Hessian set
at the final parameters, w.r.t. the real parameters (circuit angles are never split into real and
imaginary parts). A run whose output is constant on the Hessian set is flagged ``collapsed`` and
reported, never dropped.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.data import load_dataset, n_classes
from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import build_model, model_input, run_devices, write_table
from qunlearn.experiments.engine import Cell, CellResult, Plan, Progress
from qunlearn.experiments.programs import shared
from qunlearn.hessian import flat_hvp, hutchinson_trace_fixed, top_eigenvalues, trace_exact
from qunlearn.models import n_params
from qunlearn.train import accuracy, cross_entropy, make_supervised_train, over_runs, predict

COLLAPSE_TOL = 1e-3  # max - min of the predicted probabilities on the Hessian set


def check_split_sizes(y, n_train_per_class: int, n_hessian_per_class: int) -> None:
    """Refuse, in one line naming the key, a split the labels ``y`` cannot give: the training
    part must leave held-out examples of each class, and the Hessian set must fit in them (a
    request is never shrunk: slicing past the end would silently take fewer)."""
    most = min(int(np.sum(np.asarray(y) == label)) for label in (0, 1))
    if n_hessian_per_class >= most:
        raise QunlearnError(
            f"n_hessian_per_class = {n_hessian_per_class} leaves no training example: the data "
            f"set has {most} training examples per class, so at most {most - 1}"
        )
    if n_train_per_class + n_hessian_per_class <= most:
        return
    if n_train_per_class >= most:
        raise QunlearnError(
            f"n_train_per_class = {n_train_per_class} leaves no held-out example for the Hessian "
            f"set: the data set has {most} training examples per class, so at most "
            f"{most - n_hessian_per_class} with n_hessian_per_class = {n_hessian_per_class} (or "
            "raise dataset_options.n_per_class)"
        )
    room = most - n_train_per_class
    raise QunlearnError(
        f"n_hessian_per_class = {n_hessian_per_class} is more than the {room} held-out examples "
        f"per class that n_train_per_class = {n_train_per_class} leaves of {most}: at most {room}"
    )


def check_top_k(top_k: int, model, table: str) -> None:
    """Lanczos gives at most as many eigenvalues as the model has parameters."""
    size = n_params(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    if top_k > size:
        raise QunlearnError(
            f"top_k = {top_k} is more than the {size} parameters of models.{table}: at most {size}"
        )


def stratified_split(key, y, n_train_per_class: int, n_hessian_per_class: int):
    """Index arrays (train, hessian) drawn per class from class-sorted labels ``y``; exactly the
    sizes asked for (:func:`check_split_sizes`)."""
    check_split_sizes(y, n_train_per_class, n_hessian_per_class)
    train, hess = [], []
    for label, k in zip((0, 1), jax.random.split(key), strict=True):
        members = jnp.nonzero(y == label, size=int(jnp.sum(y == label)))[0]
        perm = jax.random.permutation(k, members)
        train.append(perm[:n_train_per_class])
        hess.append(perm[n_train_per_class : n_train_per_class + n_hessian_per_class])
    return jnp.concatenate(train), jnp.concatenate(hess)


def flip_uniform(key, y, ratio: float):
    """Flip ``int(len(y)·ratio)`` labels chosen uniformly at random (the notebook's noise)."""
    y = jnp.asarray(y)
    n = int(len(y) * ratio)
    idx = jax.random.permutation(key, len(y))[:n]
    return y.at[idx].set(1 - y[idx]), n


def roughening_program(
    model,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    n_train: int,
    top_k: int = 5,
    run_chunk: int = 0,
    trace_probes: int = 0,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    devices=None,
):
    """``fn(keys, x_train, y_noisy, x_hess, y_hess) -> metrics`` over a leading run axis (seeds):
    training and the Hessian measurements in one compiled program, shared by every noise ratio.

    ``trace_probes = 0``: the exact trace (P Hessian-vector products: small models). ``n > 0``:
    Hutchinson with n Rademacher probes, reported with its standard error ``trace_stderr`` (the
    66k-parameter Fig 2 MLP: exact would be 66k HVPs per run). ``devices``: the seeds split over
    them (:func:`qunlearn.train.shard_runs`)."""
    train = make_supervised_train(
        model,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        n_train=n_train,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
    )

    def run_one(key, x_tr, y_noisy, x_h, y_h):
        k_init, k_shuffle, k_lanczos = jax.random.split(key, 3)
        params, log = train(k_shuffle, model.init(k_init), {"x": x_tr, "y": y_noisy}, None)

        def heldout_loss(p):
            return jnp.mean(cross_entropy(predict(model, p, x_h), y_h))

        probs = predict(model, params, x_h)
        top = top_eigenvalues(heldout_loss, params, top_k, k_lanczos)
        if trace_probes:
            matvec, dim, _ = flat_hvp(heldout_loss, params)
            estimate = hutchinson_trace_fixed(
                matvec, dim, jax.random.fold_in(k_lanczos, 1), trace_probes
            )
            trace, trace_stderr = estimate.mean, estimate.stderr
        else:
            trace, trace_stderr = trace_exact(heldout_loss, params), jnp.zeros(())
        return {
            "trace": trace,
            "trace_stderr": trace_stderr,
            "top_eigenvalues": top,
            "heldout_loss": heldout_loss(params),
            "heldout_acc": accuracy(model, params, x_h, y_h),
            "train_acc_noisy_labels": accuracy(model, params, x_tr, y_noisy),
            "output_spread": jnp.max(probs) - jnp.min(probs),
            "final_loss": log["loss"][-1],
        }

    return jax.jit(over_runs(run_one, (0, 0, 0, 0, 0), run_chunk, devices))


def roughening_cell(
    program,
    seeds,
    x,
    y,
    *,
    noise_ratio: float,
    n_train_per_class: int = 175,
    n_hessian_per_class: int = 50,
) -> list[dict]:
    """All seeds of one noise ratio: split and poison per seed, then one vmapped program call.
    Returns one metrics dict per seed (plain floats)."""
    keys = [jax.random.split(jax.random.PRNGKey(seed), 3) for seed in seeds]
    parts = []
    for k_split, k_flip, _ in keys:
        train_idx, hess_idx = stratified_split(k_split, y, n_train_per_class, n_hessian_per_class)
        y_noisy, n_flipped = flip_uniform(k_flip, y[train_idx], noise_ratio)
        parts.append((x[train_idx], y_noisy, x[hess_idx], y[hess_idx], n_flipped))
    stack = [jnp.stack([p[i] for p in parts]) for i in range(4)]
    out = program(
        jnp.stack([k[2] for k in keys]),
        stack[0],
        stack[1].astype(jnp.float64),
        stack[2],
        stack[3].astype(jnp.float64),
    )
    rows = []
    for i, seed in enumerate(seeds):
        row = {"seed": seed, "n_flipped": parts[i][4]}
        for name, value in out.items():
            if name == "top_eigenvalues":
                row |= {f"eig_{j + 1}": float(v) for j, v in enumerate(value[i])}
            else:
                row[name] = float(value[i])
        row["collapsed"] = float(row["output_spread"] < COLLAPSE_TOL)
        row["finite"] = float(all(math.isfinite(v) for v in row.values()))
        rows.append(row)
    return rows


METRICS = (
    "trace",
    "trace_stderr",
    "heldout_loss",
    "heldout_acc",
    "train_acc_noisy_labels",
    "output_spread",
    "collapsed",
    "final_loss",
    "n_flipped",
)


def plan(config, *, cache_dir=None, progress: Progress) -> Plan:
    """One cell per (model, noise ratio), all seeds in one vmapped call; rows per seed x metric.
    The config layer checked the values; the data set and models are built here, and the split
    sizes and ``top_k`` checked against them, before ``--out`` is touched."""
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    check_split_sizes(dataset.y_train, config.n_train_per_class, config.n_hessian_per_class)
    x, _, dim, is_complex = model_input(dataset)
    cells = {}
    for name, spec in config.models.items():
        model = build_model(name, spec, dim, is_complex, n_classes(dataset))
        check_top_k(config.top_k, model, name)
        program = shared(roughening_program)(
            model,
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            lr=spec.lr,
            n_train=2 * config.n_train_per_class,
            top_k=config.top_k,
            run_chunk=spec.run_chunk,
            trace_probes=config.trace_probes,
            weight_decay=spec.weight_decay,
            label_smoothing=spec.label_smoothing,
            devices=run_devices(spec.devices),
        )
        for ratio in config.noise_ratios:

            def compute(store, name=name, program=program, ratio=ratio):
                per_seed = roughening_cell(
                    program,
                    config.seeds,
                    x,
                    dataset.y_train,
                    noise_ratio=ratio,
                    n_train_per_class=config.n_train_per_class,
                    n_hessian_per_class=config.n_hessian_per_class,
                )
                metrics = (*METRICS, *(f"eig_{j + 1}" for j in range(config.top_k)))
                return CellResult(
                    [
                        {
                            "dataset": config.dataset,
                            "model": name,
                            "noise_ratio": ratio,
                            "seed": r["seed"],
                            "metric": metric,
                            "value": r[metric],
                        }
                        for r in per_seed
                        for metric in metrics
                    ]
                )

            cells[f"{name}__r{ratio:.3f}"] = Cell(compute)
    return Plan(cells, lambda store, final: write_table(store), dataset.info)
