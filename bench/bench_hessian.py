"""Wall time of matrix-free Hessian diagnostics on a 66,657-parameter MLP (CPU, float64).

MLP 1024 -> 64 -> 16 -> 1 (Glorot-uniform weights, zero biases, relu, sigmoid output), BCE on
500 random unit-norm 1024-dim inputs with random 0/1 labels. Times:

* top-5 Hessian eigenvalues by Lanczos (30 and 40 steps): first call (trace + compile + run)
  and steady state (best of 3 calls of the compiled function);
* adaptive Hutchinson trace to a 95 % CI half-width <= 5 % of |trace| (includes its compile),
  plus the steady per-probe cost of the compiled chunk.

Run: ``python bench/bench_hessian.py [--steps 30 40] [--seed 0]``. Not a test.
"""

from __future__ import annotations

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)  # this script's own process: float64 as in the tests

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from qunlearn import hessian as hs  # noqa: E402

SIZES = (1024, 64, 16, 1)
N_DATA = 500


def make_problem(key: jax.Array):
    """``(loss_fn, params)`` for the benchmark MLP; data are closed over by ``loss_fn``."""
    k_w, k_x, k_y = jax.random.split(key, 3)
    params = []
    for i, (m, n) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        lim = np.sqrt(6.0 / (m + n))  # Glorot uniform
        w = jax.random.uniform(jax.random.fold_in(k_w, i), (m, n), minval=-lim, maxval=lim)
        params.append((w, jnp.zeros(n)))
    x = jax.random.normal(k_x, (N_DATA, SIZES[0]))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jax.random.bernoulli(k_y, 0.5, (N_DATA,)).astype(x.dtype)

    def loss_fn(p):
        h = x
        for w, b in p[:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = p[-1]
        logits = (h @ w + b)[:, 0]
        # BCE of sigmoid(logits), in the stable log-sum-exp form.
        return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

    return loss_fn, params


def timed(fn, *args):
    """``(out, wall seconds)``."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def cpu_timed(fn, *args):
    """``(out, wall seconds, process CPU seconds)``: CPU time is the contention-robust number on
    a shared box (it counts both cores' threads, so on an idle 2-core box wall <= cpu)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[30, 40, 80])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtol", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()

    key = jax.random.PRNGKey(args.seed)
    k_model, k_lanczos, k_trace = jax.random.split(key, 3)
    loss_fn, params = make_problem(k_model)
    flat, _ = jax.flatten_util.ravel_pytree(params)
    P = int(flat.size)
    print(
        f"device: {jax.devices()[0].device_kind}, cpus visible: {os.cpu_count()}, "
        f"load avg: {os.getloadavg()[0]:.1f}, jax {jax.__version__}, P = {P:,}"
    )

    grad = jax.jit(jax.grad(loss_fn))
    timed(grad, params)
    _, t_grad = min((timed(grad, params) for _ in range(5)), key=lambda r: r[1])
    matvec = jax.jit(lambda p, v: hs.flat_hvp(loss_fn, p)[0](v))
    v = jnp.ones(P)
    timed(matvec, params, v)
    _, t_hvp = min((timed(matvec, params, v) for _ in range(5)), key=lambda r: r[1])
    print(f"grad: {1e3 * t_grad:.1f} ms   one HVP (jvp of grad): {1e3 * t_hvp:.1f} ms")

    for steps in args.steps:
        top5 = jax.jit(lambda p, k, s=steps: hs.top_eigenvalues(loss_fn, p, 5, k, num_steps=s))
        vals, t_first, c_first = cpu_timed(top5, params, k_lanczos)
        _, t_steady, c_steady = min(
            (cpu_timed(top5, params, k_lanczos) for _ in range(3)), key=lambda r: r[1]
        )
        print(
            f"top-5 Lanczos {steps:>3} steps: first call {t_first:6.2f} s wall / "
            f"{c_first:6.2f} s cpu (incl. compile), steady {t_steady:5.2f} s wall / "
            f"{c_steady:5.2f} s cpu   "
            f"eigenvalues {np.array2string(np.asarray(vals), precision=6)}"
        )

    est, t_trace, c_trace = cpu_timed(
        lambda: hs.hutchinson_trace(
            loss_fn, params, k_trace, rtol=args.rtol, batch=args.batch, max_samples=5000
        )
    )
    half = 0.5 * (est.ci_high - est.ci_low)
    print(
        f"Hutchinson to {100 * args.rtol:.0f}% relative 95% CI: {t_trace:6.2f} s wall / "
        f"{c_trace:6.2f} s cpu (incl. compile), n = {est.n_samples}, trace = {est.mean:.5f} "
        f"+- {half:.5f} ({100 * half / abs(est.mean):.2f}%), stderr {est.stderr:.5f}"
    )

    chunk = jax.jit(
        lambda p, k: (
            hs.hutchinson_trace_fixed(
                hs.flat_hvp(loss_fn, p)[0], P, k, args.batch, batch=args.batch
            ).mean
        )
    )
    timed(chunk, params, k_trace)
    t_chunk = min(timed(chunk, params, k_trace)[1] for _ in range(5))
    print(
        f"steady Hutchinson cost: {1e3 * t_chunk / args.batch:.1f} ms/probe "
        f"(vmapped chunks of {args.batch}) -> {est.n_samples * t_chunk / args.batch:.2f} s "
        f"for the {est.n_samples} probes above without compile/dispatch"
    )


if __name__ == "__main__":
    main()
