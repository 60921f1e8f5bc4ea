"""Tests for qunlearn.hessian: HVP (against jax.hessian and finite differences), Lanczos and SLQ
(matfree underneath) against dense eigh, breakdown, Hutchinson, vmap over runs, bad input.

float64 comes from tests/conftest.py (``jax_enable_x64``); the tolerances below assume it.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn import hessian as hs
from qunlearn.errors import QunlearnError
from qunlearn.models import make_model
from qunlearn.train import bce, predict

# --------------------------------------------------------------------------- fixtures


# Test data comes from numpy's RNG: every eager jax.random call would compile its own threefry
# kernel, and compilation, not arithmetic, is what these tests spend their time on.


def init_mlp(seed, sizes):
    """Glorot-uniform weights, small random biases (non-zero so every entry is exercised)."""
    rng = np.random.default_rng(seed)
    params = []
    for m, n in zip(sizes[:-1], sizes[1:], strict=True):
        lim = np.sqrt(6.0 / (m + n))
        params.append(
            (jnp.asarray(rng.uniform(-lim, lim, (m, n))), jnp.asarray(0.1 * rng.standard_normal(n)))
        )
    return params


def make_mlp_loss(seed, n_in, n_data=24, act=jnp.tanh):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n_data, n_in)))
    y = jnp.asarray((rng.uniform(size=n_data) > 0.5).astype(np.float64))

    def loss(params):
        h = x
        for w, b in params[:-1]:
            h = act(h @ w + b)
        w, b = params[-1]
        logits = (h @ w + b)[:, 0]
        # BCE with logits, the numerically stable form.
        return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

    return loss


def n_params(params):
    return sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))


def random_sym(seed, eigs):
    """``Q diag(eigs) Q^T`` with a random orthogonal Q (QR of a Gaussian matrix)."""
    n = len(eigs)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return jnp.asarray((q * np.asarray(eigs)) @ q.T)


def quadratic(A):
    """``(loss, params)`` with ``loss = 0.5 x^T A x`` on a two-leaf pytree: Hessian exactly A."""
    n = A.shape[0]

    def loss(p):
        x = jnp.concatenate([p["u"], p["w"].ravel()])
        return 0.5 * x @ A @ x

    return loss, {"u": jnp.ones(n - 4), "w": jnp.zeros((2, 2))}


def reference_hessian(loss, params):
    """``jax.hessian`` of the flat loss: the ground truth every matrix-free result is checked
    against (independent of the module's own flattening)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return np.asarray(jax.jit(jax.hessian(lambda x: loss(unravel(x))))(flat))


def rademacher(key, shape):
    """The probe draw of the library (``jax.random.rademacher``, float64)."""
    return np.asarray(jax.random.rademacher(key, shape, dtype=jnp.float64))


@pytest.fixture(scope="module")
def small_mlp():
    """4 -> 5 -> 3 -> 1 tanh net: P = 47."""
    params = init_mlp(1, [4, 5, 3, 1])
    loss = make_mlp_loss(2, 4)
    return loss, params, reference_hessian(loss, params)


@pytest.fixture(scope="module")
def mid_mlp():
    """6 -> 10 -> 6 -> 1 with tanh then relu: P = 143; relu unit 0 is dead (bias -100), so
    (at least) the 8 Hessian rows of its in/out weights are exactly zero."""
    params = init_mlp(3, [6, 10, 6, 1])
    params[1] = (params[1][0], params[1][1].at[0].set(-100.0))
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((32, 6)))
    y = jnp.asarray(rng.standard_normal(32))

    def loss(p):
        (w1, b1), (w2, b2), (w3, b3) = p
        h = jax.nn.relu(jnp.tanh(x @ w1 + b1) @ w2 + b2)
        return jnp.mean(((h @ w3 + b3)[:, 0] - y) ** 2)

    return loss, params, reference_hessian(loss, params)


def small_mlp_model():
    """``make_model("mlp", 6, False, hidden=(5, 3))`` (relu, 57 params), mean BCE on 16 inputs;
    also returns the relu pattern ``x -> (pre-activation > 0)`` to check that a finite
    difference stays on one linear piece."""
    model = make_model("mlp", 6, False, hidden=(5, 3))
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.standard_normal((16, 6)))
    y = jnp.asarray((rng.uniform(size=16) > 0.5).astype(np.float64))
    params = jax.tree_util.tree_map(  # in numpy: no eager op to compile per leaf shape
        lambda a: jnp.asarray(np.asarray(a) + 0.3 * rng.standard_normal(a.shape)),
        model.init(jax.random.PRNGKey(2)),
    )

    @jax.jit  # one compile serves the test's 13 calls, not one per eager op
    def pattern(p):
        h, signs = x, []
        for layer in p[:-1]:
            pre = h @ layer["w"] + layer["b"]
            signs.append(pre > 0)
            h = jax.nn.relu(pre)
        return jnp.concatenate([s.ravel() for s in signs])

    return (lambda p: jnp.mean(bce(predict(model, p, x), y))), params, pattern


def small_qnn_model():
    """``make_model("qnn", 2**4, False, depth=2)`` (4 qubits, 32 angles), mean BCE on 12
    unit-norm inputs, at random angles; smooth, so no pattern to check."""
    model = make_model("qnn", 2**4, False, depth=2)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((12, 16))
    x = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))
    y = jnp.asarray(np.repeat([0.0, 1.0], 6))
    params = jnp.asarray(rng.uniform(-np.pi, np.pi, model.init(jax.random.PRNGKey(0)).shape))
    return (lambda p: jnp.mean(bce(predict(model, p, x), y))), params, None


# --------------------------------------------------------------------------- HVP / dense


def test_flat_hvp_matches_dense_hessian_on_mlp(mid_mlp):
    loss, params, H = mid_mlp
    matvec, dim, unravel = hs.flat_hvp(loss, params)
    assert dim == n_params(params) == 143
    V = jnp.asarray(np.random.default_rng(5).standard_normal((3, dim)))
    np.testing.assert_allclose(jax.jit(matvec)(V[0]), H @ V[0], rtol=1e-10, atol=1e-12)
    # Batched products (vmap over vectors) and the unravel round trip.
    np.testing.assert_allclose(jax.jit(jax.vmap(matvec))(V), V @ H.T, rtol=1e-10, atol=1e-12)
    back = unravel(V[0])
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    np.testing.assert_array_equal(jax.flatten_util.ravel_pytree(back)[0], V[0])


def test_dense_and_exact_trace_on_pytree_of_two_arrays():
    def f(p):
        a, b = p["a"], p["b"]
        return jnp.sum(jnp.sin(a)) * jnp.sum(b**2) + jnp.sum(a[:, None] * b) ** 2

    params = {
        "a": jnp.array([0.3, -1.2, 0.7]),
        "b": jnp.array([[0.5, -0.1], [1.5, 0.2], [-0.4, 0.9]]),
    }
    flat_p, unravel = jax.flatten_util.ravel_pytree(params)
    flat_v = jnp.arange(9.0) / 7 - 0.5
    H = np.asarray(jax.jit(jax.hessian(lambda x: f(unravel(x))))(flat_p))

    @jax.jit
    def everything(p, t):
        return (
            hs.flat_hvp(f, p)[0](t),
            hs.dense_hessian(f, p),
            hs.dense_hessian(f, p, batch_size=4),
            hs.trace_exact(f, p, batch_size=4),
            hs.dense_spectrum(f, p),
        )

    hv, dense, dense_hvps, tr, spec = everything(params, flat_v)
    np.testing.assert_allclose(hv, H @ flat_v, rtol=1e-12)
    np.testing.assert_allclose(dense, H, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dense_hvps, H, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tr, np.trace(H), rtol=1e-12)
    np.testing.assert_allclose(spec, np.linalg.eigvalsh(H), atol=1e-12)


@pytest.mark.parametrize("problem", [small_mlp_model, small_qnn_model], ids=["mlp", "qnn"])
def test_hvp_matches_central_differences_of_the_gradient(problem):
    """``H v`` from ``flat_hvp`` against ``(g(x + eps v) - g(x - eps v)) / (2 eps)``.

    The central difference differs from ``H v`` by ``eps^2/6 * D^3 g[v, v]`` plus roundoff
    ``~1e-16 |g| / eps``: at ``eps = 1e-4`` both are below 1e-7 relative, and the error must fall
    ~100x from ``eps = 1e-3`` to ``1e-4`` (second order), which only holds when ``H v`` is the
    limit: a wrong HVP (a dropped term, a factor, a transpose) leaves an ``eps``-independent
    error of order ``|H v|`` and fails both checks.
    """
    loss, params, pattern = problem()
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    assert flat.dtype == jnp.float64
    grad = jax.jit(jax.grad(lambda x: loss(unravel(x))))
    matvec, dim, _ = hs.flat_hvp(loss, params)
    V = np.random.default_rng(10).standard_normal((3, dim))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    hv = np.asarray(jax.jit(jax.vmap(matvec))(jnp.asarray(V)))
    for v, want in zip(V, hv, strict=True):
        scale = np.linalg.norm(want)
        assert scale > 1e-6  # a non-trivial direction
        err = {}
        for eps in (1e-3, 1e-4):
            if pattern is not None:  # relu: both points on the linear piece of x
                for x in (flat + eps * v, flat - eps * v):
                    np.testing.assert_array_equal(pattern(unravel(x)), pattern(params))
            fd = (np.asarray(grad(flat + eps * v)) - np.asarray(grad(flat - eps * v))) / (2 * eps)
            err[eps] = np.linalg.norm(fd - want) / scale
        assert err[1e-4] < 1e-7, err
        assert err[1e-3] / err[1e-4] > 30, err  # second-order convergence towards H v


# --------------------------------------------------------------------------- Lanczos vs eigh


def test_top_eigenvalues_full_steps_equal_eigh_with_ritz_vectors(small_mlp):
    loss, params, H = small_mlp
    P = H.shape[0]
    assert P == 47
    exact = np.linalg.eigvalsh(H)
    run = jax.jit(lambda p, k: hs.top_eigenvalues(loss, p, P, k, num_steps=P, return_vectors=True))
    vals, vecs = run(params, jax.random.PRNGKey(0))
    scale = np.abs(exact).max()
    np.testing.assert_allclose(vals, exact[::-1], rtol=0, atol=1e-8 * scale)
    U = np.asarray(jax.vmap(lambda t: jax.flatten_util.ravel_pytree(t)[0])(vecs))  # (P, P)
    np.testing.assert_allclose(U @ U.T, np.eye(P), atol=1e-8)  # full re-orthogonalisation
    np.testing.assert_allclose(U @ H @ U.T, np.diag(vals), atol=1e-8 * scale)


def test_top_k_with_a_gap_converges_in_40_steps():
    rng = np.random.default_rng(0)
    top = np.array([10.0, 9.0, 8.0, 7.0, 6.0])
    A = random_sym(6, np.concatenate([top, rng.uniform(-1.0, 1.0, 195)]))
    loss, params = quadratic(A)
    run = jax.jit(lambda p, k: hs.top_eigenvalues(loss, p, 5, k, num_steps=40, return_vectors=True))
    vals, vecs = run(params, jax.random.PRNGKey(3))
    np.testing.assert_allclose(vals, top, rtol=1e-6)
    assert vecs["u"].shape == (5, 196) and vecs["w"].shape == (5, 2, 2)
    flat = jax.vmap(lambda t: jax.flatten_util.ravel_pytree(t)[0])(vecs)
    np.testing.assert_allclose(flat @ A @ flat.T, np.diag(top), atol=1e-5)  # Ritz pairs


def test_breakdown_is_cut_no_ghosts_no_nan(mid_mlp):
    # Dead relu unit: zero rows, so zero is a multiple eigenvalue and the Krylov space of a
    # Rademacher vector is invariant well before P steps. Uncut, matfree's Lanczos normalises a
    # roundoff residual there and produces ghost Ritz values far outside the spectrum.
    loss, params, H = mid_mlp
    P = H.shape[0]
    assert np.sum(np.all(H == 0.0, axis=1)) >= 8
    exact = np.linalg.eigvalsh(H)
    scale = np.abs(exact).max()
    z = jnp.asarray(rademacher(jax.random.PRNGKey(15), (P,)))  # uncut: a ghost at -1.86
    alphas, betas, V = jax.jit(lambda p, v: hs._lanczos(hs.flat_hvp(loss, p)[0], v, P))(params, z)
    assert np.all(np.isfinite(alphas)) and np.all(np.isfinite(V))
    theta = np.linalg.eigvalsh(hs._tridiagonal(alphas, betas))
    assert theta[0] >= exact[0] - 1e-8 * scale and theta[-1] <= exact[-1] + 1e-8 * scale
    assert np.sum(np.asarray(betas) == 0.0) >= 1  # cut
    np.testing.assert_allclose(theta[::-1][:5], exact[::-1][:5], rtol=1e-8)  # distinct ones
    np.testing.assert_allclose(theta[0], exact[0], atol=1e-8 * scale)
    kept = np.any(np.asarray(V) != 0, axis=1)
    np.testing.assert_allclose(V[kept] @ V[kept].T, np.eye(kept.sum()), atol=1e-10)

    # Repeated eigenvalues: the Ritz values are the distinct eigenvalues (each found), plus
    # zero-weight copies of v^T A v; every one inside the spectrum.
    eigs = np.repeat([-2.0, 1.0, 5.0], [4, 7, 5])
    A = random_sym(5, eigs)
    v = jnp.asarray(np.arange(1.0, 17.0))
    a, b, _ = jax.jit(lambda v: hs._lanczos(lambda x: A @ x, v, 16))(v)
    theta, S = np.linalg.eigh(hs._tridiagonal(a, b))
    w = S[0] ** 2
    for lam in (-2.0, 1.0, 5.0):
        assert np.sum(w[np.abs(theta - lam) < 1e-9]) > 1e-3  # found, with weight
    assert np.all(theta >= -2.0 - 1e-9) and np.all(theta <= 5.0 + 1e-9)
    np.testing.assert_allclose(w @ theta, v @ A @ v / (v @ v), rtol=1e-12)
    np.testing.assert_allclose(w.sum(), 1.0, atol=1e-12)

    # Zero operator (exact breakdown, 0/0 inside matfree): finite zeros.
    a0, b0, V0 = jax.jit(lambda v: hs._lanczos(lambda x: 0.0 * x, v, 8))(jnp.ones(8))
    assert np.all(np.asarray(a0) == 0.0) and np.all(np.asarray(b0) == 0.0)
    assert np.all(np.isfinite(V0))
    # One step: alpha = v^T A v for the normalised start vector.
    a1, b1, V1 = jax.jit(lambda v: hs._lanczos(lambda x: A @ x, v, 1))(v)
    assert b1.shape == (0,) and V1.shape == (1, 16)
    np.testing.assert_allclose(a1, [v @ A @ v / (v @ v)], rtol=1e-12)


def test_a_collapsed_models_top_k_after_breakdown_is_its_spectrum():
    """A collapsed model (the notebook's |trace - 0.25| filter: only the output bias matters) has
    a rank-1 Hessian. Lanczos breaks down after two steps; the slots after it used to read
    v^T A v > 0 and pushed the true zeros out of the top 5 (seen as eig_2..eig_5 = 3.04e-5 in a
    tiny roughening run whose dense eigenvalues are 0)."""
    u = np.random.default_rng(3).standard_normal(20)
    A = jnp.asarray(0.25 * np.outer(u, u) / (u @ u))
    loss, params = quadratic(A)
    exact = np.linalg.eigvalsh(np.asarray(A))[::-1][:5]
    for steps in (5, 20):
        top = jax.jit(lambda p, k, s=steps: hs.top_eigenvalues(loss, p, 5, k, s))(
            params, jax.random.PRNGKey(0)
        )
        np.testing.assert_allclose(top, exact, atol=1e-12)
    nodes, weights = jax.jit(lambda v: hs._slq(lambda x: A @ x, v, 6, 1))(jnp.ones((1, 20)))
    np.testing.assert_allclose(np.sort(nodes[0])[::-1][:3], exact[:3], atol=1e-12)
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-12)


def test_nan_loss_stays_nan():
    loss, params = quadratic(random_sym(1, np.linspace(-1.0, 1.0, 10)))
    top = jax.jit(lambda p, k: hs.top_eigenvalues(lambda q: loss(q) * jnp.nan, p, 2, k))(
        params, jax.random.PRNGKey(0)
    )
    assert np.all(np.isnan(top))


# --------------------------------------------------------------------------- SLQ vs eigh


def test_spectrum_arrays_slq_quadrature_moments_density_and_trace(small_mlp):
    loss, params, H = small_mlp
    P = H.shape[0]
    key = jax.random.PRNGKey(0)
    out = jax.jit(
        lambda p: hs.spectrum_arrays(
            loss, p, key, k=3, method="slq", num_steps=12, num_probes=6, batch_size=4
        )
    )(params)
    nodes, weights = np.asarray(out["nodes"]), np.asarray(out["weights"])
    assert nodes.shape == weights.shape == (6, 12)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    eig = np.linalg.eigvalsh(H)
    assert nodes.min() >= eig[0] - 1e-10 and nodes.max() <= eig[-1] + 1e-10  # Ritz interlacing
    assert out["top"].shape == (3,) and out["top"][0] <= eig[-1] + 1e-10
    np.testing.assert_allclose(out["top"][0], eig[-1], rtol=1e-6)  # 12 steps: converged
    assert out["min"] >= eig[0] - 1e-10
    # m-point Gauss quadrature is exact for degree <= 2m - 1: moments 1..3 against v^T H^k v,
    # v the normalised probes rademacher(key, (6, P)) that spectrum_arrays draws.
    z = rademacher(key, (6, P))
    v = z / np.sqrt(P)
    for p in (1, 2, 3):
        exact = np.einsum("ij,jk,ik->i", v, np.linalg.matrix_power(H, p), v)
        np.testing.assert_allclose((weights * nodes**p).sum(axis=1), exact, rtol=1e-9, atol=1e-12)
    # The trace is Hutchinson on those probes, with a Student-t CI.
    samples = np.einsum("qi,ij,qj->q", z, H, z)
    np.testing.assert_allclose(out["trace"], samples.mean(), rtol=1e-9)
    np.testing.assert_allclose(out["trace_stderr"], samples.std(ddof=1) / np.sqrt(6), rtol=1e-9)
    assert out["trace_ci_low"] < out["trace"] < out["trace_ci_high"]
    sigma = 0.02 * (eig[-1] - eig[0])
    grid = jnp.linspace(eig[0] - 8 * sigma, eig[-1] + 8 * sigma, 4001)
    dens = hs.density_on_grid(out["nodes"], out["weights"], grid, sigma)
    np.testing.assert_allclose(jnp.trapezoid(dens, grid), 1.0, atol=1e-6)


def test_spectrum_arrays_dense_is_eigh_and_full_slq_agrees(small_mlp):
    loss, params, H = small_mlp
    P = H.shape[0]
    eig = np.linalg.eigvalsh(H)

    @jax.jit
    def both(p):
        dense = hs.spectrum_arrays(loss, p, None, k=4, method="dense", batch_size=16)
        slq = hs.spectrum_arrays(
            loss, p, jax.random.PRNGKey(1), k=4, method="slq", num_steps=P, num_probes=3
        )
        return dense, slq

    dense, slq = both(params)
    np.testing.assert_allclose(dense["top"], eig[::-1][:4], rtol=1e-10)
    np.testing.assert_allclose(dense["nodes"][0], eig, atol=1e-12)
    np.testing.assert_allclose(dense["weights"], np.full((1, P), 1.0 / P))
    np.testing.assert_allclose(dense["trace"], np.trace(H), rtol=1e-10)
    assert dense["trace_stderr"] == 0.0 and dense["trace_ci_low"] == dense["trace_ci_high"]
    np.testing.assert_allclose(slq["top"], eig[::-1][:4], rtol=1e-8)
    np.testing.assert_allclose(slq["min"], eig[0], atol=1e-10)


def test_slq_trace_exact_with_basis_probes(mid_mlp):
    # Probes e_1..e_P: sum_k w_k theta_k = e_i^T H e_i exactly for any num_steps, so the SLQ
    # trace is exact. The relu layer leaves some rows of H zero -> exact breakdown at step 0.
    loss, params, H = mid_mlp
    P = H.shape[0]
    nodes, weights = jax.jit(lambda p: hs._slq(hs.flat_hvp(loss, p)[0], jnp.eye(P), 5, 64))(params)
    assert np.all(np.isfinite(nodes)) and np.all(np.isfinite(weights))
    np.testing.assert_allclose(P * np.mean(np.sum(weights * nodes, axis=1)), np.trace(H), rtol=1e-8)


# --------------------------------------------------------------------------- Hutchinson


def _theory_stderr(A, n):
    """Rademacher: Var(z^T A z) = 2 * sum_{i != j} A_ij^2."""
    A = np.asarray(A)
    return np.sqrt(2.0 * (np.sum(A**2) - np.sum(np.diag(A) ** 2)) / n)


def test_hutchinson_stderr_shrinks_like_inverse_sqrt_n():
    A = random_sym(10, np.linspace(-1.0, 3.0, 30))
    f = jax.jit(hs.hutchinson_trace_fixed, static_argnums=(0, 1, 3))

    def matvec(v):
        return A @ v

    errs = {}
    for n in (200, 1800):
        est = f(matvec, 30, jax.random.PRNGKey(n), n)
        errs[n] = float(est.stderr)
        assert est.n_samples == n
        assert abs(float(est.mean) - float(np.trace(A))) <= 4 * errs[n]
        np.testing.assert_allclose(errs[n], _theory_stderr(A, n), rtol=0.2)
    assert 2.4 < errs[200] / errs[1800] < 3.6  # ideal ratio sqrt(9) = 3


@pytest.mark.parametrize("z", ["rademacher", "gaussian"])
def test_hutchinson_negative_trace_of_an_indefinite_hessian(z):
    # Loss 0.5 x^T A x with an indefinite A of trace -87.5: the estimate is negative, the CI
    # holds the truth, the error is within 4 standard errors and the CI is two-sided.
    eigs = np.linspace(-4.0, 0.5, 50)
    loss, params = quadratic(random_sym(8, eigs))
    tr = float(eigs.sum())
    assert tr < 0

    @jax.jit
    def est(p, k):
        matvec, dim, _ = hs.flat_hvp(loss, p)
        return hs.hutchinson_trace_fixed(matvec, dim, k, 600, z=z, batch=64, confidence=0.99)

    e = est(params, jax.random.PRNGKey(1))
    assert e.mean < 0 and e.ci_low < e.mean < e.ci_high
    assert e.ci_low <= tr <= e.ci_high
    assert abs(float(e.mean) - tr) <= 4 * float(e.stderr)
    assert float(e.stderr) < 0.1 * abs(tr)  # informative, not a CI that spans both signs
    assert e.ci_high < 0


def test_hutchinson_on_loss_matches_trace_and_probe_draws(small_mlp):
    loss, params, H = small_mlp
    P = H.shape[0]
    key = jax.random.PRNGKey(0)
    matvec, dim, _ = hs.flat_hvp(loss, params)
    est = jax.jit(lambda k: hs.hutchinson_trace_fixed(matvec, dim, k, 50, batch=16))(key)
    # probe i is rademacher(split(key, n)[i], (P,)): the draws the roughening numbers rest on
    z = np.stack([rademacher(k, (P,)) for k in jax.random.split(key, 50)])
    samples = np.einsum("qi,ij,qj->q", z, H, z)
    np.testing.assert_allclose(est.mean, samples.mean(), rtol=1e-10)
    np.testing.assert_allclose(est.stderr, samples.std(ddof=1) / np.sqrt(50), rtol=1e-10)
    assert est.ci_low <= np.trace(H) <= est.ci_high


# --------------------------------------------------------------------------- vmap over runs


def test_vmap_over_runs_equals_loop():
    loss = make_mlp_loss(11, 3)
    runs = [init_mlp(20 + r, [3, 4, 1]) for r in range(3)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *runs)
    keys = jax.random.split(jax.random.PRNGKey(12), 3)
    P = n_params(runs[0])

    def per_run(p, k):
        k1, k2, k3 = jax.random.split(k, 3)
        matvec, dim, _ = hs.flat_hvp(loss, p)
        top = hs.top_eigenvalues(loss, p, 3, k1, num_steps=10)
        tr = hs.hutchinson_trace_fixed(matvec, dim, k2, 16, batch=16).mean
        out = hs.spectrum_arrays(loss, p, k3, k=2, method="slq", num_steps=6, num_probes=4)
        return top, tr, out["nodes"], out["weights"]

    batched = jax.jit(jax.vmap(per_run))(stacked, keys)
    one = jax.jit(per_run)
    looped = [one(p, k) for p, k in zip(runs, keys, strict=True)]
    for i, got in enumerate(batched):
        want = np.stack([np.asarray(out[i]) for out in looped])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert batched[0].shape == (3, 3) and batched[2].shape == (3, 4, 6) and P == 21


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(small_mlp):
    loss, params, _ = small_mlp
    key = jax.random.PRNGKey(0)
    matvec, P, _ = hs.flat_hvp(loss, params)
    with pytest.raises(QunlearnError, match=r"k=48 must be in \[1, 47\].*P=47"):
        hs.top_eigenvalues(loss, params, 48, key)
    with pytest.raises(QunlearnError, match="num_steps=48"):
        hs.top_eigenvalues(loss, params, 3, key, num_steps=48)
    with pytest.raises(QunlearnError, match="num_steps=2 must be in"):
        hs.top_eigenvalues(loss, params, 3, key, num_steps=2)
    with pytest.raises(QunlearnError, match="num_steps=48"):
        hs.spectrum_arrays(loss, params, key, k=3, method="slq", num_steps=48, num_probes=2)
    with pytest.raises(QunlearnError, match="num_probes=1"):
        hs.spectrum_arrays(loss, params, key, k=3, method="slq", num_steps=5, num_probes=1)
    with pytest.raises(QunlearnError, match="needs a PRNG key"):
        hs.spectrum_arrays(loss, params, None, k=3, method="slq", num_steps=5, num_probes=2)
    with pytest.raises(QunlearnError, match="method='eig'"):
        hs.spectrum_arrays(loss, params, key, k=3, method="eig")
    with pytest.raises(QunlearnError, match="k=48"):
        hs.spectrum_arrays(loss, params, key, k=48, method="dense")
    with pytest.raises(QunlearnError, match="z='normal'"):
        hs.hutchinson_trace_fixed(matvec, P, key, 10, z="normal")
    with pytest.raises(QunlearnError, match="n_probes=1"):
        hs.hutchinson_trace_fixed(matvec, P, key, 1)
    with pytest.raises(QunlearnError, match="confidence"):
        hs.hutchinson_trace_fixed(matvec, P, key, 10, confidence=1.5)
    with pytest.raises(QunlearnError, match="sigma"):
        hs.density_on_grid(jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.zeros(3), 0.0)
    with pytest.raises(QunlearnError, match="real scalar"):
        hs.flat_hvp(lambda p: jnp.ones(3) * p[0][0].sum(), params)
    with pytest.raises(QunlearnError, match="must be real"):
        hs.flat_hvp(lambda p: jnp.abs(p).sum(), jnp.ones(3, jnp.complex128))
    with pytest.raises(QunlearnError, match="no array leaves"):
        hs.flat_hvp(lambda p: jnp.zeros(()), [])


# --------------------------------------------------------------------------- grouped, dense


def test_grouped_dense_spectra_of_a_toy_with_unused_parameters():
    """Fast case: two losses over pieces of a function that never reads params 1 and 4; the
    live blocks and spectra equal ``jax.hessian`` of each loss (zeros merged in)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((6, 3)))

    def piece_loss(p, piece):
        used = p[np.array([0, 2, 3, 5])]
        return jnp.sum(jnp.sin(piece @ used[:3]) * used[3] ** 2 + (piece @ used[:3]) ** 4)

    pieces, groups = x.reshape(3, 2, 3), jnp.array([0, 1, 1])
    params = jnp.asarray(rng.standard_normal(6))
    live = hs.live_parameters(lambda p: jax.vmap(lambda r: piece_loss(p, r[None]))(x), params)
    np.testing.assert_array_equal(live, [0, 2, 3, 5])
    spectra = jax.jit(
        lambda p: hs.grouped_dense_spectra(piece_loss, p, pieces, groups, 2, k=2, live=live)
    )(params)
    reference = jax.jit(lambda p: [jax.hessian(piece_loss)(p, r) for r in (x[:2], x[2:])])
    for g, full in enumerate(map(np.asarray, reference(params))):
        eig = np.linalg.eigvalsh(0.5 * (full + full.T))
        np.testing.assert_allclose(spectra["nodes"][g, 0], eig, rtol=0, atol=1e-11)
        np.testing.assert_allclose(spectra["top"][g], eig[::-1][:2], rtol=0, atol=1e-11)


@pytest.mark.slow  # QNN compilation: 82 s on the loaded 2-core CPU; the toy above covers the code
def test_grouped_dense_hessians_equal_per_column_hvps_and_skip_unused_angles():
    """Three losses as sums over pieces of 4 examples (sets of 8, 4 and 8: no padding), built
    with 5-wide batched HVPs over the live angles only, equal each loss's Hessian from one HVP
    per column (``dense_hessian(batch_size=1)``); the angles left out are exactly the QNN's
    unused ones (zero rows), and the spectra equal ``eigvalsh`` of the full Hessians."""
    model = make_model("qnn", 2**4, False, depth=2)  # 32 angles, some outside the light cone
    rng = np.random.default_rng(9)
    x = rng.standard_normal((20, 16))
    x = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))
    y = jnp.asarray((rng.uniform(size=20) > 0.5).astype(np.float64))
    params = jnp.asarray(rng.uniform(-np.pi, np.pi, (2, 4, 4)))
    owner = np.repeat([0, 1, 2], [8, 4, 8])
    w = jnp.asarray(np.eye(3)[owner].T / np.bincount(owner)[:, None])  # (3, 20): set means
    pieces = {"x": x.reshape(5, 4, 16), "y": y.reshape(5, 4), "w": w.sum(0).reshape(5, 4)}
    groups = jnp.array([0, 0, 1, 2, 2])

    def piece_loss(p, piece):
        return jnp.sum(piece["w"] * bce(predict(model, p, piece["x"]), piece["y"]))

    live = hs.live_parameters(lambda p: jax.vmap(model.apply, (None, 0))(p, x[:4]), params)
    assert 0 < len(live) < 32

    @jax.jit
    def both(p):
        spectra = hs.grouped_dense_spectra(
            piece_loss, p, pieces, groups, 3, k=3, live=live, batch_size=5
        )
        full = jax.lax.map(  # one HVP per column, each set's loss over all 20 (weight 0 off it)
            lambda wg: hs.dense_hessian(
                lambda q: jnp.sum(wg * bce(predict(model, q, x), y)), p, batch_size=1
            ),
            w,
        )
        return hs.grouped_dense_hessians(piece_loss, p, pieces, groups, 3, live=live), spectra, full

    blocks, spectra, full = both(params)
    full = np.asarray(full)
    dead = np.setdiff1d(np.arange(32), live)
    assert np.all(full[:, dead] == 0) and np.all(full[:, :, dead] == 0)
    np.testing.assert_allclose(blocks, full[:, live][:, :, live], rtol=0, atol=1e-13)
    for g in range(3):
        eig = np.linalg.eigvalsh(full[g])
        np.testing.assert_allclose(spectra["nodes"][g, 0], eig, rtol=0, atol=1e-12)
        np.testing.assert_allclose(spectra["top"][g], eig[::-1][:3], rtol=0, atol=1e-12)
        assert spectra["trace"][g] == pytest.approx(np.trace(full[g]), abs=1e-12)
