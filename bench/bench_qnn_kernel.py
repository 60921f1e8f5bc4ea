"""Benchmark the fused QNN's training step: value_and_grad of mean binary cross-entropy.

Not a test. Times ``jax.jit(value_and_grad(mean BCE))`` w.r.t. the circuit angles, batched the way
callers batch it (``vmap(apply, (None, 0))`` over examples, then ``vmap`` over a leading runs axis
of params, data and labels when ``--runs > 1``). Prints compile time, ms/step (best of
``--repeats`` timings, with the median and the process CPU time per step, which is steadier than
wall time on a shared machine) and sample-grads/s (runs · batch / best step time).

    .venv/bin/python bench/bench_qnn_kernel.py --qubits 10 --depth 6 --batch 256 --runs 1
    .venv/bin/python bench/bench_qnn_kernel.py --qubits 12 --depth 4 --batch 32 --runs 5 --complex
    git show HEAD:src/qunlearn/models/qnn.py > /tmp/qnn_before.py
    .venv/bin/python bench/bench_qnn_kernel.py --impl /tmp/qnn_before.py   # compare a variant
    .venv/bin/python bench/bench_qnn_kernel.py --steps 10 --repeats 2 --json y.json  # yardstick

The machine yardstick beside every measured time (``bench/paper.py`` records it with each
figure): the default 10-qubit, depth-6, batch-256 complex128 step, ``--steps 10 --repeats 2``,
read as sample-grads/s. Times on shared machines move 2x between sessions; divide by it.

``--no-mmap`` first tells glibc malloc to serve large blocks from its heap and keep freed memory
(``mallopt``: no mmap, no trim). XLA's CPU runtime allocates each call's temporaries afresh (tens
to hundreds of MB here); with glibc defaults those blocks are mmap'd and returned on every step,
so each step pays page faults and zeroing for all of them. This is process-wide allocator policy,
for an entry point to choose (the library does not touch it); the option measures what it buys.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import json
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)  # benchmark entry point, as the CLI sets it

import jax.numpy as jnp  # noqa: E402


def no_mmap():
    """glibc: no mmap for large blocks (M_MMAP_MAX=0) and never trim the heap (M_TRIM_THRESHOLD)."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def load_factory(impl: str | None, model: str):
    if impl is None:  # (qunlearn.models re-exports the factory under the module's name)
        module = importlib.import_module("qunlearn.models.qnn")
    else:
        spec = importlib.util.spec_from_file_location("qnn_variant", impl)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return getattr(module, model)


def make_step(apply, runs: int, runs_map: bool = False):
    def loss(params, x, y):
        p = jax.vmap(apply, (None, 0))(params, x)
        return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))

    vg = jax.value_and_grad(loss)
    if runs > 1 and runs_map:  # one run after the other: each run's temporaries stay in cache
        return jax.jit(lambda p, x, y: jax.lax.map(lambda a: vg(*a), (p, x, y)))
    if runs > 1:
        vg = jax.vmap(vg)
    return jax.jit(vg)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qubits", type=int, default=10)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dtype", default="complex128", choices=["complex128", "complex64"])
    ap.add_argument("--complex", action="store_true", help="complex input amplitudes")
    ap.add_argument("--model", default="qnn", choices=["qnn", "qnn_cnot"])
    ap.add_argument("--steps", type=int, default=30, help="timed steps (after compile + warm-up)")
    ap.add_argument("--repeats", type=int, default=3, help="report the best of this many timings")
    ap.add_argument("--impl", default=None, help="path of an alternative qnn.py to load instead")
    ap.add_argument("--init-std", type=float, default=1.0, help="angle scale of the params")
    ap.add_argument(
        "--runs-map",
        action="store_true",
        help="loop over runs with lax.map instead of vmapping them",
    )
    ap.add_argument(
        "--no-mmap",
        action="store_true",
        help="glibc mallopt: keep large blocks on the heap (see the module docstring)",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = ap.parse_args(argv)
    if args.no_mmap and not no_mmap():
        raise SystemExit("mallopt failed (not glibc?)")

    factory = load_factory(args.impl, args.model)
    dim = 2**args.qubits
    init, apply = factory(
        dim,
        args.complex,
        depth=args.depth,
        n_qubits=args.qubits,
        dtype=args.dtype,
        init_std=args.init_std,
    )
    key = jax.random.PRNGKey(0)
    kp, kx, ki, ky = jax.random.split(key, 4)
    r = max(args.runs, 1)
    params = jax.vmap(init)(jax.random.split(kp, r))
    shape = (r, args.batch, dim)
    x = jax.random.normal(kx, shape)
    if args.complex:
        x = x + 1j * jax.random.normal(ki, shape)
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    if args.dtype == "complex64":
        x = x.astype(jnp.complex64 if args.complex else jnp.float32)
    y = jax.random.bernoulli(ky, 0.5, (r, args.batch)).astype(params.dtype)
    if args.runs <= 1:
        params, x, y = params[0], x[0], y[0]

    step = make_step(apply, args.runs, args.runs_map)
    t0 = time.perf_counter()
    compiled = step.lower(params, x, y).compile()
    t_compile = time.perf_counter() - t0
    jax.block_until_ready(compiled(params, x, y))  # warm-up
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            out = compiled(params, x, y)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / args.steps)
        cpu.append((time.process_time() - c0) / args.steps)
    best = min(times)
    value, grad = compiled(params, x, y)
    if args.json:
        figures = {
            "sample_grads_per_s": r * args.batch / best,
            "ms_per_step": best * 1e3,
            "compile_s": t_compile,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "jax_backend": jax.default_backend(),
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=1)
    print(
        f"qubits={args.qubits} depth={args.depth} batch={args.batch} runs={args.runs} "
        f"dtype={args.dtype} complex_input={args.complex} model={args.model}"
        f"{' no-mmap' if args.no_mmap else ''}{' runs-map' if args.runs_map else ''}\n"
        f"  compile {t_compile:.2f} s | {best * 1e3:.2f} ms/step (median "
        f"{statistics.median(times) * 1e3:.2f}; cpu {min(cpu) * 1e3:.1f} ms) | "
        f"{r * args.batch / best:,.0f} sample-grads/s"
        f" | loss {float(jnp.sum(value)):.6f} |grad| {float(jnp.linalg.norm(grad)):.6f}"
    )


if __name__ == "__main__":
    main()
