"""Benchmark the fused QNN's training step at wide circuits: 12, 14 and 16 qubits (issue 30).

Not a test. For each width and dtype, times ``jax.jit(value_and_grad(mean BCE))`` over a batch of
random complex input states (``bench_qnn_kernel.make_step``, the callers' batching), after printing
the memory bound of :mod:`qunlearn.models.memory` for the whole plan before anything is compiled
(and refusing, as training would, a width that does not fit). Prints one table: compile time,
best ms/step and sample-grads/s (batch / best step time) per width and dtype.

    .venv/bin/python bench/bench_wide.py            # 12 14 16 qubits, depth 6, both dtypes
    .venv/bin/python bench/bench_wide.py --qubits 12 --steps 2 --json wide.json

Times on shared machines move 2x between sessions: quote the machine and its load beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench_qnn_kernel import make_step  # noqa: E402  (sets jax_enable_x64, as the CLI does)
from qunlearn.models import memory  # noqa: E402
from qunlearn.models.qnn import qnn  # noqa: E402


def memory_plan(widths, dtypes, batch: int) -> list[str]:
    """One line per (width, dtype): the library's floor (one state x QNN_STATE_COPIES) and this
    batch's input states; raises QunlearnError (as training would) when the floor does not fit."""
    total = memory.physical_memory()
    lines = [
        f"memory: physical {memory._size(total) if total else 'unknown'}, bound "
        f"{memory.MEMORY_FRACTION:g} of it per model"
    ]
    for n in widths:
        for dtype in dtypes:
            hyper = {"depth": 6, "dtype": dtype}
            floor = memory.estimate_bytes("qnn", 2**n, True, **hyper)
            item = 16 if dtype == "complex128" else 8
            lines.append(
                f"  {n} qubits {dtype}: floor {memory._size(floor)} (one state "
                f"{memory._size(item * 2**n)} x {memory.QNN_STATE_COPIES}); batch of {batch} "
                f"inputs {memory._size(batch * item * 2**n)}"
            )
            memory.check_fits("qnn", 2**n, True, hyper)
    return lines


def time_step(n: int, dtype: str, depth: int, batch: int, steps: int, repeats: int) -> dict:
    dim = 2**n
    init, apply = qnn(dim, True, depth=depth, n_qubits=n, dtype=dtype)
    kp, kx, ki, ky = jax.random.split(jax.random.PRNGKey(0), 4)
    params = init(kp)
    x = jax.random.normal(kx, (batch, dim)) + 1j * jax.random.normal(ki, (batch, dim))
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    if dtype == "complex64":
        x = x.astype(jnp.complex64)
    y = jax.random.bernoulli(ky, 0.5, (batch,)).astype(params.dtype)
    step = make_step(apply, 1)
    t0 = time.perf_counter()
    compiled = step.lower(params, x, y).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(params, x, y))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            out = compiled(params, x, y)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / steps)
    best = min(times)
    return {
        "qubits": n,
        "dtype": dtype,
        "depth": depth,
        "batch": batch,
        "compile_s": compile_s,
        "ms_per_step": best * 1e3,
        "sample_grads_per_s": batch / best,
        "loss": float(out[0]),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qubits", type=int, nargs="+", default=[12, 14, 16])
    ap.add_argument("--dtypes", nargs="+", default=["complex64", "complex128"])
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=2, help="report the best of this many")
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    args = ap.parse_args(argv)
    print("\n".join(memory_plan(args.qubits, args.dtypes, args.batch)), flush=True)
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind})", flush=True)
    rows = []
    header = f"{'qubits':>6} {'dtype':>10} {'compile s':>9} {'ms/step':>9} {'sample-grads/s':>14}"
    print(header, flush=True)
    for n in args.qubits:
        for dtype in args.dtypes:
            row = time_step(n, dtype, args.depth, args.batch, args.steps, args.repeats)
            rows.append(row)
            print(
                f"{n:>6} {dtype:>10} {row['compile_s']:>9.2f} {row['ms_per_step']:>9.1f} "
                f"{row['sample_grads_per_s']:>14,.1f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"rows": rows, "settings": vars(args), "backend": jax.default_backend()}, fh)


if __name__ == "__main__":
    main()
