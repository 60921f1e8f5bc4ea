"""One QNN benchmark table (not a test): compile time, sample-gradients/s and GFLOP/s of our fused
kernel (``qunlearn.models.qnn``), a tensorcircuit-ng gate-by-gate build (``models/qnn_tc.py``)
and a plain gate-by-gate JAX circuit written here, all measured in the same run.

    .venv/bin/python bench/bench_qnn.py                       # the default table (~6 min, 2 cores)
    .venv/bin/python bench/bench_qnn.py --quick               # fewer rows, 1 repeat
    .venv/bin/python bench/bench_qnn.py --sections runs --qubits-runs 10 \\
        --runs 1 5 50 500 --dtypes complex64 complex128       # the GPU check's rows

Sections (``--sections``, default all three):

* ``cross``: ours vs plain JAX vs tensorcircuit-ng at ``--cross-qubits`` (6 8), runs = 1, where
  all three compile in well under a minute; the last column is max |p - p_ours| over the batch
  (the three are the same circuit: rx, ry, rx on every qubit, then an RZZ ring, per layer).
* ``runs``: ours at ``--qubits-runs`` (10) for every ``--runs`` (1 5 50), runs vmapped.
* ``qubits``: ours at ``--qubits`` (10 12 14), runs = 1.

Every row is one jitted ``value_and_grad`` of the mean BCE w.r.t. the angles over ``--batch``
(256) unit-norm real inputs (``vmap`` over examples, then over a leading runs axis), depth
``--depth`` (6), each dtype of ``--dtypes``. Compile = ``lower().compile()`` wall time (the
persistent compilation cache is off, so nothing is reused); step time = best of ``--repeats``
timings of as many calls as fill ``--min-time`` seconds, after one warm-up call;
sample-grads/s = runs · batch / step time.

FLOPs (ours only), counted analytically from the kernel's plan (``qnn_plan._hea_plan``, the op
list ``qnn()`` executes): a ``gemm`` op on a w-qubit segment multiplies the state (L reals: 2·2^n,
or 2^n for the real input of the first op) as rows of K by a K x 2·2^w real matrix: 2·L·2·2^w
flops per example; the readout ``tail`` keeps half the rows: 2·L·2^w. A training step does each
GEMM three times (forward Y = XR, backward dX = dY·R^T and dR = X^T·dY), so step flops =
3 · runs · batch · sum over GEMM ops. Not counted: building the matrices (once per call, not
per example), bit-order rotations and phase passes (O(L) memory moves). XLA's own
``cost_analysis()`` flop count of the compiled step is printed beside it. The peak is the best
``jnp.matmul`` of two 2048 x 2048 matrices of the real dtype (2·2048^3 flops), measured at the
start of the same run. Backend-agnostic: on a GPU the same command runs on the default device.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)  # benchmark entry point, as the CLI sets it

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from qunlearn.models import make_model  # noqa: E402
from qunlearn.models import qnn_plan as plan  # noqa: E402
from qunlearn.models.gates import ring_pairs, rx, ry, z_signs  # noqa: E402

REAL = {"complex128": jnp.float64, "complex64": jnp.float32}
COMPLEX = {"complex128": jnp.complex128, "complex64": jnp.complex64}


# --------------------------------------------------------------------------- circuits


def plain_qnn(n: int, depth: int, dtype: str, scale: float = 5.0):
    """The study's ansatz gate by gate in plain JAX: the state as a (2,)*n tensor, each rotation a
    ``tensordot`` on its axis, each RZZ a diagonal phase, readout sigmoid(scale·⟨Z_{n-1}⟩)."""
    cdtype = COMPLEX[dtype]
    z = z_signs(n)
    zz = [(z[:, a] * z[:, b]).reshape((2,) * n) for a, b in ring_pairs(n)]
    z_read = jnp.asarray(z[:, n - 1], REAL[dtype])

    def apply(params, x):
        psi = x.astype(cdtype).reshape((2,) * n)
        for theta in params:
            for q in range(n):
                for k, gate in ((0, rx), (1, ry), (2, rx)):
                    u = gate(theta[q, k]).astype(cdtype)
                    psi = jnp.moveaxis(jnp.tensordot(u, psi, axes=([1], [q])), 0, q)
            for j in range(n):
                psi = psi * jnp.exp(-0.5j * theta[j, 3] * zz[j]).astype(cdtype)
        prob = jnp.real(psi * jnp.conj(psi)).reshape(-1)
        return jax.nn.sigmoid(scale * jnp.sum(prob * z_read))

    return apply


def tc_qnn(n: int, depth: int, dtype: str):
    from qunlearn.models.qnn_tc import circuit_model, hea_build

    return circuit_model(hea_build(n), n, (depth, n, 4), dtype=dtype)[1]


def ours_qnn(n: int, depth: int, dtype: str):
    return make_model("qnn", 2**n, False, depth=depth, dtype=dtype).apply


IMPLS = {"ours": ours_qnn, "plain": plain_qnn, "tensorcircuit": tc_qnn}


def gemm_flops_per_example(n: int, depth: int, dtype: str) -> int:
    """Forward GEMM flops of one example in our kernel's plan (see the module docstring)."""
    ops = plan._hea_plan(n, depth, n - 1, plan._STORE_COST[dtype])
    total, length = 0, 2**n  # the first GEMM reads the real input
    for op in ops:
        if op[0] in ("gemm", "tail"):
            width = 2 ** len(op[2])  # op[2]: the segment's qubits
            total += 2 * length * (2 * width if op[0] == "gemm" else width)
            length = 2 * 2**n
    return total


# --------------------------------------------------------------------------- timing


def timed(fn, args, repeats: int, min_time: float) -> float:
    """Best seconds per call of compiled ``fn`` over ``repeats`` timings of enough calls."""
    jax.block_until_ready(fn(*args))  # warm-up
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    calls = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-6)))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def gemm_peak(dtype: str, repeats: int, size: int = 2048) -> float:
    """Best GFLOP/s of a ``size``-square ``jnp.matmul`` in the real dtype behind ``dtype``."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), REAL[dtype])
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), REAL[dtype])
    mm = jax.jit(jnp.matmul).lower(a, b).compile()
    return 2 * size**3 / timed(mm, (a, b), repeats, 0.5) / 1e9


def step_fn(apply, runs: int):
    def loss(params, x, y):
        p = jax.vmap(apply, (None, 0))(params, x)
        return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))

    vg = jax.value_and_grad(loss)
    return jax.jit(jax.vmap(vg) if runs > 1 else vg)


def inputs(n: int, depth: int, batch: int, runs: int, dtype: str):
    kp, kx, ky = jax.random.split(jax.random.PRNGKey(0), 3)
    params = 0.5 * jax.random.normal(kp, (runs, depth, n, 4), REAL[dtype])
    x = jax.random.normal(kx, (runs, batch, 2**n), REAL[dtype])
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    y = jax.random.bernoulli(ky, 0.5, (runs, batch)).astype(REAL[dtype])
    return (params, x, y) if runs > 1 else (params[0], x[0], y[0])


def measure(impl: str, n: int, depth: int, batch: int, runs: int, dtype: str, args) -> dict:
    apply = IMPLS[impl](n, depth, dtype)
    data = inputs(n, depth, batch, runs, dtype)
    t0 = time.perf_counter()
    compiled = step_fn(apply, runs).lower(*data).compile()
    compile_s = time.perf_counter() - t0
    step_s = timed(compiled, data, args.repeats, args.min_time)
    row = {
        "impl": impl,
        "qubits": n,
        "depth": depth,
        "batch": batch,
        "runs": runs,
        "dtype": dtype,
        "compile_s": compile_s,
        "ms_per_step": 1e3 * step_s,
        "sample_grads_per_s": runs * batch / step_s,
    }
    if impl == "ours":
        flops = 3 * runs * batch * gemm_flops_per_example(n, depth, dtype)
        row["gflop_per_s"] = flops / step_s / 1e9
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        if cost and "flops" in cost:
            row["xla_gflop_per_step"] = float(cost["flops"]) / 1e9
        row["gflop_per_step"] = flops / 1e9
    return row


def agreement(n: int, depth: int, dtype: str) -> dict:
    """max |p_impl - p_ours| on 16 inputs at the benchmark's params, per impl."""
    params, x, _ = inputs(n, depth, 16, 1, dtype)
    ref = jax.jit(jax.vmap(ours_qnn(n, depth, dtype), (None, 0)))(params, x)
    out = {}
    for impl in ("plain", "tensorcircuit"):
        p = jax.jit(jax.vmap(IMPLS[impl](n, depth, dtype), (None, 0)))(params, x)
        out[impl] = float(jnp.max(jnp.abs(p - ref)))
    return out


# --------------------------------------------------------------------------- table


def table(rows: list[dict], peaks: dict) -> str:
    head = (
        f"{'impl':<14}{'qubits':>6}{'depth':>6}{'batch':>6}{'runs':>5} {'dtype':<11}"
        f"{'compile s':>10}{'ms/step':>10}{'sample-grads/s':>16}{'GFLOP/s':>9}"
        f"{'% peak':>8}{'  max|dp|':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        gf = r.get("gflop_per_s")
        pct = 100 * gf / peaks[r["dtype"]] if gf is not None else None
        lines.append(
            f"{r['impl']:<14}{r['qubits']:>6}{r['depth']:>6}{r['batch']:>6}{r['runs']:>5} "
            f"{r['dtype']:<11}{r['compile_s']:>10.2f}{r['ms_per_step']:>10.2f}"
            f"{r['sample_grads_per_s']:>16,.0f}"
            + (f"{gf:>9.2f}{pct:>7.1f}%" if gf is not None else f"{'-':>9}{'-':>8}")
            + (f"{r['max_dp']:>10.1e}" if "max_dp" in r else f"{'':>10}")
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=["cross", "runs", "qubits"])
    ap.add_argument("--cross-qubits", type=int, nargs="+", default=[6, 8])
    ap.add_argument("--qubits-runs", type=int, default=10)
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 5, 50])
    ap.add_argument("--qubits", type=int, nargs="+", default=[10, 12, 14])
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--cross-depth", type=int, default=None, help="depth of the cross section")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dtypes", nargs="+", default=["complex128", "complex64"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per timing (at least)")
    ap.add_argument("--quick", action="store_true", help="1 repeat, runs 1 5, qubits 10 12")
    ap.add_argument("--json", default=None, help="also write the rows and peaks here")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.runs, args.qubits = 1, [1, 5], [10, 12]
    jax.config.update("jax_enable_compilation_cache", False)

    device = jax.devices()[0]
    print(
        f"backend {jax.default_backend()} | device {device.device_kind} | "
        f"{platform.processor() or platform.machine()} | jax {jax.__version__}",
        flush=True,
    )
    peaks = {d: gemm_peak(d, args.repeats) for d in args.dtypes}
    for d, g in peaks.items():
        print(f"GEMM peak ({np.dtype(REAL[d]).name} 2048^3 matmul): {g:.1f} GFLOP/s", flush=True)
    plans = []
    for d in args.dtypes:
        if "cross" in args.sections:
            plans += [(impl, n, 1, d) for n in args.cross_qubits for impl in IMPLS]
        if "runs" in args.sections:
            plans += [("ours", args.qubits_runs, r, d) for r in args.runs]
        if "qubits" in args.sections:
            plans += [("ours", n, 1, d) for n in args.qubits]
    rows, seen, checks = [], set(), {}
    for impl, n, runs, d in plans:
        if (impl, n, runs, d) in seen:
            continue
        seen.add((impl, n, runs, d))
        cross = runs == 1 and n in args.cross_qubits and "cross" in args.sections
        depth = args.cross_depth if cross and args.cross_depth else args.depth
        row = measure(impl, n, depth, args.batch, runs, d, args)
        if impl != "ours":
            if (n, d) not in checks:
                checks[(n, d)] = agreement(n, depth, d)
            row["max_dp"] = checks[(n, d)][impl]
        rows.append(row)
        print(
            f"  {impl} q={n} runs={runs} {d}: compile {row['compile_s']:.1f} s, "
            f"{row['ms_per_step']:.2f} ms/step",
            flush=True,
        )
    print()
    print(table(rows, peaks))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peaks_gflop_per_s": peaks, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
