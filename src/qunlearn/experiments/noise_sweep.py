"""Fig 2: clean validation accuracy of models trained on poisoned data, swept over the noise ratio.

One compiled program per model serves every (noise, alpha) cell and run: poisoning happens outside
it (the poisoned count is static per alpha) and all runs of a cell go through one ``vmap``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from qunlearn.models import Model
from qunlearn.noise import NOISE
from qunlearn.train import accuracy, make_supervised_train, over_runs

METRICS = ("train_acc_noisy_labels", "val_acc", "final_loss")


def stable_key(root: jax.Array, *parts) -> jax.Array:
    """A key that depends only on ``parts`` (never on run order): fold in a CRC of their text."""
    return jax.random.fold_in(root, zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF)


def run_keys(cell_key: jax.Array, runs: int) -> jax.Array:
    """(runs, 3) keys per run: poisoning, initialisation, shuffling."""
    split = jax.vmap(lambda r: jax.random.split(jax.random.fold_in(cell_key, r), 3))
    return split(jnp.arange(runs))


def sweep_program(model: Model, *, epochs: int, batch_size: int, lr: float, n_train: int,
                  on_epoch: Callable | None = None, run_chunk: int = 0,
                  batching: str = "epoch"):
    """``runs_fn(init_keys, shuffle_keys, x, y, x_val, y_val) -> metrics`` over a leading run axis.

    ``x, y`` are (runs, N, ...) poisoned training sets; validation is shared. Jitted once; the
    returned function carries ``.traces`` (how often it was traced) for the compile-count test.
    ``run_chunk``: see :func:`qunlearn.train.over_runs`; ``batching``: see
    :func:`qunlearn.train.batching_plan`.
    """
    train = make_supervised_train(model, lr=lr, epochs=epochs, batch_size=batch_size,
                                  n_train=n_train, batching=batching, on_epoch=on_epoch)
    traces = []

    def run_one(init_key, shuffle_key, x, y, x_val, y_val):
        traces.append(1)
        params, log = train(shuffle_key, model.init(init_key), {"x": x, "y": y}, None)
        return {
            "train_acc_noisy_labels": accuracy(model, params, x, y),
            "val_acc": accuracy(model, params, x_val, y_val),
            "final_loss": log["loss"][-1],
        }

    fn = jax.jit(over_runs(run_one, (0, 0, 0, 0, None, None), run_chunk))
    fn.traces = traces
    return fn


def poison_runs(noise: str, poison_keys, x, y, alpha: float, *, raw_dim: int | None = None):
    """Poisoned copies for every run: (runs, N, D) features, (runs, N) labels, (runs, N) masks."""
    fn = NOISE[noise]
    if noise == "feature_randomization" and raw_dim is not None:
        fn = partial(fn, raw_dim=raw_dim)
    return jax.vmap(lambda k: fn(k, x, y, alpha))(poison_keys)


def run_cell(program, keys, x, y, x_val, y_val, *, noise: str, alpha: float,
             raw_dim: int | None = None) -> tuple[dict, float]:
    """Train all runs of one (noise, alpha) cell; returns per-run metrics and wall seconds."""
    start = time.perf_counter()
    xp, yp, mask = poison_runs(noise, keys[:, 0], x, y, alpha, raw_dim=raw_dim)
    out = jax.block_until_ready(program(keys[:, 1], keys[:, 2], xp, yp.astype(x_val.real.dtype),
                                        x_val, y_val))
    metrics = {k: [float(v) for v in out[k]] for k in METRICS}
    metrics["n_poisoned"] = [int(m) for m in jnp.sum(mask, axis=1)]
    return metrics, time.perf_counter() - start
