"""Benchmark one training step under finite shots: exact autodiff vs parameter shift vs SPSA.

Not a test. A step is ``jax.jit(value_and_grad(weighted BCE))`` of the ``qnn`` circuit on a batch
of 64 real amplitude-encoded inputs, gradients by: exact autodiff; parameter shift with S = 100
and 1000 shots per shifted circuit; SPSA (S = 1000, one perturbation per step, as
``measure_batch`` draws it). Also timed: the 2P forward passes alone
(the shifted circuits of the whole batch, no sampling, no loss), the floor a parameter-shift step
is compared with (issue target: step / forwards ≤ 2). Times are the best of ``--repeats``
(medians beside them); compile times are one cold jit each.

    .venv/bin/python bench/bench_gradients.py                   # 6, 8, 10 qubits, depth 6
    .venv/bin/python bench/bench_gradients.py --qubits 6 --repeats 3 --json rows.json

:func:`rows` gives the timing rows of one qubit count as dicts, for a combined cost table.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)  # benchmark entry point, as the CLI sets it

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from qunlearn.models.qnn import qnn_parts  # noqa: E402
from qunlearn.models.shots import light_cone_mask, measure_batch, measured_expectation  # noqa: E402
from qunlearn.train import bce, weighted_mean  # noqa: E402

BATCH = 64


def _time(fn, args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, min(times), statistics.median(times)


def _step(batch_expectation, to_prob):
    def loss(params, x, y, w, key):
        return weighted_mean(bce(to_prob(batch_expectation(params, x, key)), y), w)

    return jax.jit(jax.value_and_grad(loss))


def rows(n_qubits: int, depth: int = 6, batch: int = BATCH, repeats: int = 5) -> list[dict]:
    """Timing rows (one dict per method) of one training step at ``n_qubits``."""
    parts = qnn_parts(2**n_qubits, False, depth=depth)
    key = jax.random.PRNGKey(0)
    params = jax.random.uniform(key, (depth, n_qubits, 4), maxval=2 * math.pi)
    x = jax.random.normal(jax.random.fold_in(key, 1), (batch, 2**n_qubits))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = (jnp.arange(batch) % 2).astype(x.dtype)
    w = jnp.ones(batch)
    step_key = jax.random.fold_in(key, 2)
    mask = light_cone_mask(parts.expectation, params.shape, params.dtype, x.shape[1:], x.dtype)
    n_shift = int(mask.sum())
    common = {"n_qubits": n_qubits, "depth": depth, "batch": batch, "angles": params.size}
    out = []

    def row(method, shots, circuits, fn, args):
        compile_s, best, median = _time(fn, args, repeats)
        out.append(
            common
            | {
                "method": method,
                "shots": shots,
                "circuits_per_example": circuits,
                "ms_per_step": 1e3 * best,
                "ms_median": 1e3 * median,
                "compile_s": compile_s,
            }
        )

    exact = _step(lambda p, xs, k: jax.vmap(parts.expectation, (None, 0))(p, xs), parts.to_prob)
    row("exact", None, 1, exact, (params, x, y, w, step_key))
    for gradient, shots, circuits in (
        ("parameter_shift", 100, 2 * n_shift + 1),
        ("parameter_shift", 1000, 2 * n_shift + 1),
        ("spsa", 1000, 3),
    ):
        f = measured_expectation(parts.expectation, shots=shots, gradient=gradient)
        step = _step(functools.partial(measure_batch, f), parts.to_prob)
        row(gradient, shots, circuits, step, (params, x, y, w, step_key))

    idx = np.flatnonzero(mask)
    unit = np.zeros((idx.size, params.size))
    unit[np.arange(idx.size), idx] = math.pi / 2
    flat = params.reshape(1, -1)
    shifted = jnp.concatenate([flat + unit, flat - unit]).reshape(-1, *params.shape)
    forwards = jax.jit(
        jax.vmap(jax.vmap(parts.expectation, (0, None)), (None, 0))  # (example, shift)
    )
    row("2P_forwards", None, 2 * n_shift, forwards, (shifted, x))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    print(f"batch {BATCH}, depth {args.depth}, complex128, {jax.devices()[0].device_kind}")
    print(
        f"{'qubits':>6} {'method':>16} {'shots':>6} {'circ/ex':>8} {'ms/step':>10} {'median':>10}"
    )
    table = []
    for n in args.qubits:
        got = rows(n, args.depth, repeats=args.repeats)
        table += got
        for r in got:
            print(
                f"{r['n_qubits']:>6} {r['method']:>16} {r['shots'] or '-':>6} "
                f"{r['circuits_per_example']:>8} {r['ms_per_step']:>10.1f} {r['ms_median']:>10.1f}"
            )
        by = {(r["method"], r["shots"]): r["ms_per_step"] for r in got}
        fwd, ex = by["2P_forwards", None], by["exact", None]
        for s in (100, 1000):
            ps = by["parameter_shift", s]
            print(
                f"{n:>6}   parameter shift S={s}: step / 2P forwards = {ps / fwd:.2f}, "
                f"step / exact step = {ps / ex:.0f}"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main()
