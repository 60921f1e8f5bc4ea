"""Matrix-free Hessian diagnostics at the experiments' sizes (CPU, float64). Not a test.

Problems: the MLP 1024 -> 64 -> 16 -> 1 (66,657 parameters, ``make_model("mlp", 1024, False)``)
on 500 random unit-norm 1024-dim inputs, and the HEA QNN of depth 6 on 10 qubits (240 angles,
``make_model("qnn", 1024, False, depth=6)``) on 100 (the roughening Hessian set's size); mean
BCE against random 0/1 labels, as ``bce(predict(...))`` in the experiments.

Default run: wall time of one HVP, of :func:`qunlearn.hessian.top_eigenvalues` (top-5) per
Lanczos step count, and of :func:`qunlearn.hessian.hutchinson_trace_fixed` (300 probes, as the
roughening config), each as compile time and steady state (best of ``--repeats`` calls).

``--compare``: the side-by-side behind the library's use of matfree. "hand" is the hand-written
Lanczos (full re-orthogonalisation, restart on breakdown) that qunlearn.hessian had before it
moved to matfree; it lives on here, verbatim, as the reference. "matfree" is the library as it
is (``matfree.decomp.hessenberg`` + the breakdown cut of ``qunlearn.hessian._lanczos``); "raw"
is matfree without that cut. Sections: (1) accuracy against dense ``numpy.linalg.eigh`` at small
and full size (top-5 relative error, min/max error, SLQ moments ``sum_k w_k theta_k^p`` against
``v^T H^p v``, p = 1..3); (2) compile and steady time of top-5 Lanczos (40 steps) and of the SLQ
spectrum (16 probes x 40 steps, 16 at a time, as the curvature config) on both models; (3) the
fixed Hutchinson trace, our chunked probes (32 at a time) against matfree's
``stochtrace.estimator_monte_carlo_mean_and_sem`` (all probes vmapped at once).

Measured 2026-12-01 on the shared 2-core CPU box, ``python bench/bench_hessian.py --compare``
(26 min; load average 4-10 from other jobs, so steady wall times are noisy: the process CPU
times are the steadier numbers).

(1) accuracy vs dense eigh, top-5 max relative error (raw: min / max Ritz value error)::

    MLP 8-4-1 relu, P = 41 (no zero rows), 41 steps:  hand 1e-15  matfree 2e-15  raw 2e-15
    QNN 4 qubits depth 2, P = 32 (18 zero rows), 16 steps: hand 2e-13  matfree 7e-13  raw 6e-13
                                                 32 steps: hand 2e-13  matfree 7e-13  raw 72
    QNN 10 qubits depth 6, P = 240 (105 zero rows), 40 steps: all three 2e-15
                                                 240 steps: hand 1e-15  matfree 2e-15
                                                 raw 1.4e3 (min / max off by -36 / +36 for a
                                                 spectrum in [-0.136, 0.089]: ghosts)
    SLQ moments p = 1..3 vs v^T H^p v: <= 3e-14 everywhere

(2) compile / steady wall / steady CPU (s); hand and matfree outputs agree to <= 1e-14::

    MLP 66,657  top-5, 40 steps   hand  2.7 / 0.60 / 0.60   matfree  2.1 / 0.40 / 0.74
    MLP 66,657  SLQ 16 x 40       hand  2.2 / 19.4 / 19.1   matfree  3.4 / 11.1 / 11.1
    QNN 240     top-5, 40 steps   hand 28.8 / 2.71 / 2.69   matfree 14.9 / 4.70 / 2.90
    QNN 240     SLQ 16 x 40       hand 41.9 / 68.4 / 47.3   matfree 35.4 / 49.1 / 42.9

(3) Hutchinson, 300 probes, MLP 66,657: ours (32 at a time) 1.45 / 0.94 / 1.78, matfree's
estimator (all 300 at once, its own probe draw) 1.04 / 1.17 / 2.26: no faster, and 300 HVPs'
memory at once.

So matfree is as accurate as the hand-written Lanczos once the breakdown cut is added (without
it, it is not, whenever the Krylov space becomes invariant: zero Hessian rows and enough
steps), and at least as fast (the hand-written loop compiled two copies of the HVP, loop body
plus a final alpha; matfree one).

Run: ``python bench/bench_hessian.py [--steps 30 40 80] [--compare] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import jax

jax.config.update("jax_enable_x64", True)  # this script's own process: float64 as in the tests

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from matfree import decomp, stochtrace  # noqa: E402

from qunlearn import hessian as hs  # noqa: E402
from qunlearn.models import make_model  # noqa: E402
from qunlearn.train import bce, predict  # noqa: E402

# --------------------------------------------------------------------------- problems


def make_problem(name: str, n_data: int, seed: int = 0, input_dim: int = 1024, **hyper):
    """``(loss_fn, params)``: mean BCE of model ``name`` on random unit-norm inputs."""
    model = make_model(name, input_dim, False, **hyper)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_data, input_dim))
    x = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))
    y = jnp.asarray((rng.uniform(size=n_data) > 0.5).astype(np.float64))
    params = model.init(jax.random.PRNGKey(seed + 1))

    def loss_fn(p):
        return jnp.mean(bce(predict(model, p, x), y))

    return loss_fn, params


def big_problems(seed: int):
    return {
        "MLP 66,657": make_problem("mlp", 500, seed),
        "QNN 240": make_problem("qnn", 100, seed, depth=6),
    }


# --------------------------------------------------------------------------- the hand-written
# Lanczos qunlearn.hessian used before matfree (verbatim but for the module prefixes)


def hand_lanczos(matvec, dim: int, num_steps: int, v0, breakdown_tol: float | None = None):
    """``(alphas, betas, V)``: Lanczos with full re-orthogonalisation (CGS2 against all rows
    of ``V``); on breakdown (``beta_j <= tol * max ||A v_i||``, default ``sqrt(eps)``) ``beta_j``
    is set to 0 and the run restarts from the orthogonalised ``e_i`` least represented in ``V``.
    """
    v0 = jnp.asarray(v0)
    dtype = jnp.result_type(v0.dtype, hs._out_dtype(matvec, dim))
    v0 = v0.astype(dtype)
    tol = math.sqrt(float(jnp.finfo(dtype).eps)) if breakdown_tol is None else breakdown_tol
    m = num_steps

    def cgs2(V, w):
        w = w - V.T @ (V @ w)
        return w - V.T @ (V @ w)

    def restart(V, j):
        i = jnp.argmin(jnp.sum(V**2, axis=0))
        r = cgs2(V, jax.nn.one_hot(i, dim, dtype=dtype))
        return r / jnp.linalg.norm(r)

    def step(j, carry):
        V, alphas, betas, anorm = carry
        v = V[j]
        av = matvec(v).astype(dtype)
        alpha = jnp.vdot(v, av)
        anorm = jnp.maximum(anorm, jnp.linalg.norm(av))
        w = cgs2(V, av)
        beta = jnp.linalg.norm(w)
        broke = beta <= tol * anorm
        safe_beta = jnp.where(broke, 1.0, beta)
        nxt = jax.lax.cond(broke, restart, lambda V, j: w / safe_beta, V, j)
        beta = jnp.where(broke, jnp.zeros_like(beta), beta)
        return V.at[j + 1].set(nxt), alphas.at[j].set(alpha), betas.at[j].set(beta), anorm

    V = jnp.zeros((m, dim), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    init = (V, jnp.zeros(m, dtype), jnp.zeros(max(m - 1, 0), dtype), jnp.zeros((), dtype))
    V, alphas, betas, _ = jax.lax.fori_loop(0, m - 1, step, init) if m > 1 else init
    alphas = alphas.at[m - 1].set(jnp.vdot(V[m - 1], matvec(V[m - 1]).astype(dtype)))
    return alphas, betas, V


def raw_matfree_lanczos(matvec, dim: int, num_steps: int, v0):
    """matfree's Arnoldi/Lanczos as it comes: no breakdown handling."""
    _, H, *_ = decomp.hessenberg(num_steps, reortho="full", custom_vjp=False)(matvec, v0)
    return jnp.diagonal(H), jnp.diagonal(H, -1), None


def lib_lanczos(matvec, dim: int, num_steps: int, v0):
    """The library's: matfree plus the breakdown cut."""
    return hs._lanczos(matvec, v0, num_steps)


IMPLS = {"hand": hand_lanczos, "matfree": lib_lanczos, "raw": raw_matfree_lanczos}


def ritz(impl, loss_fn, steps):
    """Jittable ``(params, key) -> all Ritz values`` (ascending) with ``impl``'s Lanczos, start
    vector ``rademacher(key, (P,))`` as :func:`qunlearn.hessian.top_eigenvalues`."""

    def f(p, key):
        matvec, dim, _ = hs.flat_hvp(loss_fn, p)
        v0 = jax.random.rademacher(key, (dim,), dtype=jnp.float64)
        alphas, betas, _ = impl(matvec, dim, steps, v0)
        return jnp.linalg.eigvalsh(hs._tridiagonal(alphas, betas))

    return f


def top5(impl, loss_fn, steps):
    """Jittable ``(params, key) -> top-5 Ritz values``, descending."""
    f = ritz(impl, loss_fn, steps)
    return lambda p, key: f(p, key)[::-1][:5]


def slq(impl, loss_fn, steps, probes, batch):
    """Jittable ``(params, key) -> (nodes, weights)``: SLQ as in ``spectrum_arrays``."""

    def f(p, key):
        matvec, dim, _ = hs.flat_hvp(loss_fn, p)
        z = jax.random.rademacher(key, (probes, dim), dtype=jnp.float64)

        def one(v):
            alphas, betas, _ = impl(matvec, dim, steps, v)
            theta, S = jnp.linalg.eigh(hs._tridiagonal(alphas, betas))
            return theta, S[0] ** 2

        return hs._chunked_map(one, z, batch)

    return f


# --------------------------------------------------------------------------- timing


def compile_and_time(fn, *args, repeats: int = 3):
    """``(out, compile s, steady wall s, steady cpu s)``; steady = best of ``repeats`` calls."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    t_compile = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))
    best = (math.inf, math.inf)
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return out, t_compile, *best


def header() -> None:
    print(
        f"device: {jax.devices()[0].device_kind}, cpus visible: {os.cpu_count()}, "
        f"load avg: {os.getloadavg()[0]:.1f}, jax {jax.__version__}"
    )


# --------------------------------------------------------------------------- sections


def accuracy(seed: int) -> None:
    """Section (1): every Lanczos against dense eigh (the exact reference)."""
    print("\n(1) accuracy vs dense eigh: top-5 max rel err | min err | max err | SLQ moments")
    cases = [
        ("MLP 8-4-1 relu", make_problem("mlp", 40, seed, 8, hidden=(4,)), ["P"]),
        ("QNN 4q depth 2", make_problem("qnn", 40, seed, 16, depth=2), [16, "P"]),
        ("QNN 10q depth 6", make_problem("qnn", 100, seed, depth=6), [40, "P"]),
    ]
    for label, (loss_fn, params), step_list in cases:
        h = np.asarray(jax.jit(lambda p, f=loss_fn: hs.dense_hessian(f, p, batch_size=16))(params))
        eig = np.linalg.eigvalsh(h)
        dim = h.shape[0]
        print(
            f"  {label}: P = {dim}, exactly zero Hessian rows: "
            f"{int(np.sum(np.all(h == 0, axis=1)))}, spectrum [{eig[0]:.4g}, {eig[-1]:.4g}]"
        )
        key = jax.random.PRNGKey(seed + 7)
        v = np.asarray(jax.random.rademacher(key, (2, dim), dtype=jnp.float64)) / np.sqrt(dim)
        exact_moments = [
            np.einsum("qi,ij,qj->q", v, np.linalg.matrix_power(h, p), v) for p in (1, 2, 3)
        ]
        for steps in step_list:
            steps = dim if steps == "P" else steps
            for name, impl in IMPLS.items():
                theta = np.asarray(jax.jit(ritz(impl, loss_fn, steps))(params, key))
                nodes, weights = jax.jit(slq(impl, loss_fn, steps, 2, 2))(params, key)
                mom = max(
                    float(np.max(np.abs(np.sum(weights * nodes**p, axis=1) - e) / np.abs(e).max()))
                    for p, e in zip((1, 2, 3), exact_moments, strict=True)
                )
                top, want = theta[::-1][:5], eig[::-1][:5]
                rel = np.max(np.abs(top - want) / np.abs(want))
                print(
                    f"    {steps:>3} steps {name:>7}: {rel:8.1e} | {theta[0] - eig[0]:9.1e} | "
                    f"{theta[-1] - eig[-1]:9.1e} | {mom:8.1e}"
                )


def speed(seed: int, repeats: int) -> None:
    """Section (2): compile and steady time, hand-written vs matfree, at the real sizes."""
    print("\n(2) time (s): compile / steady wall / steady cpu")
    key = jax.random.PRNGKey(seed + 3)
    for label, (loss_fn, params) in big_problems(seed).items():
        for what, build in (
            ("top-5, 40 steps", lambda i, f=loss_fn: top5(i, f, 40)),
            ("SLQ 16 x 40, 16 at a time", lambda i, f=loss_fn: slq(i, f, 40, 16, 16)),
        ):
            outs = {}
            for name in ("hand", "matfree"):
                out, tc, tw, tcpu = compile_and_time(
                    build(IMPLS[name]), params, key, repeats=repeats
                )
                outs[name] = np.asarray(jax.tree_util.tree_leaves(out)[0])
                print(f"  {label:>10} {what:<26} {name:>7}: {tc:6.2f} / {tw:6.2f} / {tcpu:6.2f}")
            diff = np.max(np.abs(outs["hand"] - outs["matfree"]) / np.abs(outs["hand"]).max())
            print(f"  {'':>10} {'':<26} max |hand - matfree| / max |hand| = {diff:.1e}")


def hutchinson(seed: int, repeats: int, probes: int) -> None:
    """Section (3): fixed-probe Hutchinson, chunked (library) vs matfree's all-at-once."""
    print(f"\n(3) Hutchinson, {probes} probes, time (s): compile / steady wall / steady cpu")
    key = jax.random.PRNGKey(seed + 5)
    loss_fn, params = big_problems(seed)["MLP 66,657"]

    def ours(p, k):
        matvec, dim, _ = hs.flat_hvp(loss_fn, p)
        est = hs.hutchinson_trace_fixed(matvec, dim, k, probes)
        return est.mean, est.stderr

    def theirs(p, k):
        matvec, _, _ = hs.flat_hvp(loss_fn, p)
        flat = ravel_pytree(p)[0]
        est = stochtrace.estimator_monte_carlo_mean_and_sem(
            stochtrace.monte_carlo_trace(), stochtrace.sampler_signs(flat, num=probes)
        )
        return est(matvec, k)

    for name, fn in (("ours, 32 at a time", ours), ("matfree, all at once", theirs)):
        (mean, sem), tc, tw, tcpu = compile_and_time(fn, params, key, repeats=repeats)
        print(
            f"  MLP 66,657 {name:<22}: {tc:6.2f} / {tw:6.2f} / {tcpu:6.2f}   "
            f"trace {float(mean):.5f} +- {float(sem):.5f}"
        )


def default(seed: int, steps_list: list[int], repeats: int, probes: int) -> None:
    key = jax.random.PRNGKey(seed + 3)
    for label, (loss_fn, params) in big_problems(seed).items():
        P = int(ravel_pytree(params)[0].size)
        print(f"\n{label}: P = {P:,}")
        hvp = jax.jit(lambda p, v, f=loss_fn: hs.flat_hvp(f, p)[0](v))
        _, tc, tw, _ = compile_and_time(hvp, params, jnp.ones(P), repeats=5)
        print(f"  one HVP: compile {tc:.2f} s, steady {1e3 * tw:.1f} ms")
        for steps in steps_list:
            fn = jax.jit(
                lambda p, k, s=steps, f=loss_fn: hs.top_eigenvalues(f, p, 5, k, num_steps=s)
            )
            vals, tc, tw, tcpu = compile_and_time(fn, params, key, repeats=repeats)
            print(
                f"  top-5 Lanczos {steps:>3} steps: compile {tc:6.2f} s, steady {tw:5.2f} s "
                f"wall / {tcpu:5.2f} s cpu   {np.array2string(np.asarray(vals), precision=6)}"
            )

        def trace(p, k, f=loss_fn, d=P):
            est = hs.hutchinson_trace_fixed(hs.flat_hvp(f, p)[0], d, k, probes)
            return est.mean, est.stderr

        (mean, sem), tc, tw, tcpu = compile_and_time(trace, params, key, repeats=1)
        print(
            f"  Hutchinson {probes} probes: compile {tc:6.2f} s, steady {tw:5.2f} s wall / "
            f"{tcpu:5.2f} s cpu   trace {float(mean):.5f} +- {float(sem):.5f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[30, 40, 80])
    parser.add_argument(
        "--compare",
        action="store_true",
        help="hand-written Lanczos vs matfree: accuracy, speed, Hutchinson",
    )
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    header()
    if args.compare:
        accuracy(args.seed)
        speed(args.seed, args.repeats)
        hutchinson(args.seed, args.repeats, args.probes)
    else:
        default(args.seed, args.steps, args.repeats, args.probes)


if __name__ == "__main__":
    main()
