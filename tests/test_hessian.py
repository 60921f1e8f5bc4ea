"""Tests for qunlearn.hessian: HVP, dense, Lanczos, Hutchinson, SLQ, vmap over runs, bad input."""

import jax

jax.config.update("jax_enable_x64", True)  # conftest does the same; kept for standalone runs

import json  # noqa: E402

import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from qunlearn import hessian as hs  # noqa: E402
from qunlearn.errors import QunlearnError  # noqa: E402

# --------------------------------------------------------------------------- fixtures


def init_mlp(key, sizes):
    """Glorot-uniform weights, small random biases (non-zero so every entry is exercised)."""
    params = []
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        kw, kb = jax.random.split(jax.random.fold_in(key, i))
        lim = np.sqrt(6.0 / (m + n))
        params.append((jax.random.uniform(kw, (m, n), minval=-lim, maxval=lim),
                       0.1 * jax.random.normal(kb, (n,))))
    return params


def make_mlp_loss(key, n_in, n_data=24, act=jnp.tanh):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (n_data, n_in))
    y = (jax.random.uniform(ky, (n_data,)) > 0.5).astype(x.dtype)

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


def random_sym(key, eigs):
    """``Q diag(eigs) Q^T`` with a Haar-ish random orthogonal Q."""
    q, _ = jnp.linalg.qr(jax.random.normal(key, (len(eigs), len(eigs))))
    return (q * jnp.asarray(eigs)) @ q.T


@pytest.fixture(scope="module")
def small_mlp():
    """4 -> 5 -> 3 -> 1 tanh net: P = 47."""
    key = jax.random.PRNGKey(0)
    params = init_mlp(jax.random.fold_in(key, 1), [4, 5, 3, 1])
    return make_mlp_loss(jax.random.fold_in(key, 2), 4), params


@pytest.fixture(scope="module")
def mid_mlp():
    """6 -> 10 -> 6 -> 1 with tanh then relu: P = 143."""
    key = jax.random.PRNGKey(1)
    params = init_mlp(jax.random.fold_in(key, 1), [6, 10, 6, 1])
    kx, ky = jax.random.split(jax.random.fold_in(key, 2))
    x = jax.random.normal(kx, (32, 6))
    y = jax.random.normal(ky, (32,))

    def loss(p):
        (w1, b1), (w2, b2), (w3, b3) = p
        h = jax.nn.relu(jnp.tanh(x @ w1 + b1) @ w2 + b2)
        return jnp.mean(((h @ w3 + b3)[:, 0] - y) ** 2)

    return loss, params


# --------------------------------------------------------------------------- HVP / dense


def test_hvp_matches_dense_hessian_on_mlp(mid_mlp):
    loss, params = mid_mlp
    assert n_params(params) == 143
    v = jax.tree_util.tree_map(lambda p: jax.random.normal(jax.random.PRNGKey(3), p.shape),
                               params)
    flat_v, _ = jax.flatten_util.ravel_pytree(v)
    H = hs.dense_hessian(loss, params)
    got, _ = jax.flatten_util.ravel_pytree(hs.hvp(loss, params, v))
    np.testing.assert_allclose(got, H @ flat_v, rtol=1e-10, atol=1e-12)

    matvec, dim, unravel = hs.flat_hvp(loss, params)
    assert dim == 143
    np.testing.assert_allclose(matvec(flat_v), H @ flat_v, rtol=1e-10, atol=1e-12)
    # Batched products (vmap over vectors) and the unravel round trip.
    V = jax.random.normal(jax.random.PRNGKey(4), (3, dim))
    np.testing.assert_allclose(jax.vmap(matvec)(V), V @ H.T, rtol=1e-10, atol=1e-12)
    assert jax.tree_util.tree_structure(unravel(flat_v)) == jax.tree_util.tree_structure(params)


def test_hvp_on_pytree_of_two_arrays():
    def f(p):
        a, b = p["a"], p["b"]
        return jnp.sum(jnp.sin(a)) * jnp.sum(b**2) + jnp.sum(a[:, None] * b) ** 2

    params = {"a": jnp.array([0.3, -1.2, 0.7]), "b": jnp.array([[0.5, -0.1], [1.5, 0.2],
                                                                  [-0.4, 0.9]])}
    v = {"a": jnp.array([1.0, 2.0, -0.5]), "b": jnp.arange(6.0).reshape(3, 2) / 7}
    flat_p, unravel = jax.flatten_util.ravel_pytree(params)
    flat_v, _ = jax.flatten_util.ravel_pytree(v)
    H = jax.hessian(lambda x: f(unravel(x)))(flat_p)
    got, _ = jax.flatten_util.ravel_pytree(hs.hvp(f, params, v))
    np.testing.assert_allclose(got, H @ flat_v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hs.dense_hessian(f, params), H, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hs.trace_exact(f, params, batch_size=4), jnp.trace(H), rtol=1e-12)
    np.testing.assert_allclose(hs.dense_spectrum(f, params), np.linalg.eigvalsh(H), atol=1e-12)


# --------------------------------------------------------------------------- Lanczos


def test_lanczos_full_steps_recovers_all_eigenvalues(small_mlp):
    loss, params = small_mlp
    dim = n_params(params)
    assert dim == 47
    exact = np.asarray(hs.dense_spectrum(loss, params))
    matvec, P, _ = hs.flat_hvp(loss, params)
    alphas, betas, V = hs.lanczos(matvec, P, P, jax.random.PRNGKey(0))
    ritz = np.linalg.eigvalsh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
    scale = np.abs(exact).max()
    np.testing.assert_allclose(ritz, exact, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(V @ V.T, np.eye(P), atol=1e-10)  # full re-orthogonalisation


def test_lanczos_breakdown_repeated_eigenvalues_no_nan():
    # Only 3 distinct eigenvalues: the Krylov space is invariant after 3 steps; the restart
    # must still produce every eigenvalue with its multiplicity and no NaN.
    eigs = np.repeat([-2.0, 1.0, 5.0], [4, 7, 5])
    A = random_sym(jax.random.PRNGKey(5), eigs)
    res = hs.lanczos(lambda v: A @ v, 16, 16, jax.random.PRNGKey(1))
    assert np.all(np.isfinite(res.alphas)) and np.all(np.isfinite(res.vectors))
    assert np.sum(np.asarray(res.betas) == 0.0) >= 2  # breakdowns are marked by exact zeros
    ritz = np.linalg.eigvalsh(hs._tridiagonal(res.alphas, res.betas))
    np.testing.assert_allclose(ritz, np.sort(eigs), atol=1e-10)
    # Zero operator: every step breaks down, still finite.
    res0 = hs.lanczos(lambda v: 0.0 * v, 8, 8, jax.random.PRNGKey(1))
    assert np.all(np.asarray(res0.alphas) == 0.0) and np.all(np.isfinite(res0.vectors))


def test_lanczos_top_k_with_gap_and_loss_level_api():
    rng = np.random.default_rng(0)
    top = np.array([10.0, 9.0, 8.0, 7.0, 6.0])
    eigs = np.concatenate([top, rng.uniform(-1.0, 1.0, 195)])
    A = random_sym(jax.random.PRNGKey(6), eigs)
    alphas, betas, _ = hs.lanczos(lambda v: A @ v, 200, 40, jax.random.PRNGKey(2))
    ritz = np.sort(np.linalg.eigvalsh(hs._tridiagonal(alphas, betas)))[::-1][:5]
    np.testing.assert_allclose(ritz, top, rtol=1e-6)

    # Same through top_eigenvalues on the quadratic loss 0.5 x^T A x, whose Hessian is A;
    # split into a two-leaf pytree to exercise unravel of the Ritz vectors.
    def loss(p):
        x = jnp.concatenate([p["u"], p["w"].ravel()])
        return 0.5 * x @ A @ x

    params = {"u": jnp.ones(100), "w": jnp.zeros((10, 10))}
    vals, vecs = hs.top_eigenvalues(loss, params, 5, jax.random.PRNGKey(3), num_steps=40,
                                    return_vectors=True)
    np.testing.assert_allclose(vals, top, rtol=1e-6)
    assert vecs["u"].shape == (5, 100) and vecs["w"].shape == (5, 10, 10)
    flat = jax.vmap(lambda t: jax.flatten_util.ravel_pytree(t)[0])(vecs)
    np.testing.assert_allclose(flat @ A @ flat.T, np.diag(top), atol=1e-5)  # Ritz pairs


def test_top_eigenvalues_is_jittable(small_mlp):
    loss, params = small_mlp
    f = jax.jit(lambda p, k: hs.top_eigenvalues(loss, p, 3, k, num_steps=47))
    exact = np.sort(np.asarray(hs.dense_spectrum(loss, params)))[::-1][:3]
    np.testing.assert_allclose(f(params, jax.random.PRNGKey(0)), exact, rtol=1e-8)


# --------------------------------------------------------------------------- Hutchinson


def _explicit(key, eigs):
    A = random_sym(key, eigs)
    return (lambda v: A @ v), A


def _theory_stderr(A, n):
    """Rademacher: Var(z^T A z) = 2 * sum_{i != j} A_ij^2."""
    A = np.asarray(A)
    return np.sqrt(2.0 * (np.sum(A**2) - np.sum(np.diag(A) ** 2)) / n)


def test_hutchinson_converges_to_trace_within_ci():
    eigs = np.linspace(0.5, 3.0, 60)
    matvec, A = _explicit(jax.random.PRNGKey(7), eigs)
    est = hs.hutchinson_trace_matvec(matvec, 60, jax.random.PRNGKey(0), rtol=0.01,
                                     max_samples=5000, batch=50)
    tr = float(np.trace(A))
    assert est.ci_low <= tr <= est.ci_high
    assert est.n_samples < 5000
    assert (est.ci_high - est.ci_low) / 2 <= 0.01 * abs(est.mean) + 1e-12
    assert all(isinstance(x, float) for x in est[:4]) and isinstance(est.n_samples, int)


def test_hutchinson_negative_trace_terminates_by_relative_rule():
    eigs = np.linspace(-4.0, 0.5, 50)  # trace = -87.5
    matvec, A = _explicit(jax.random.PRNGKey(8), eigs)
    est = hs.hutchinson_trace_matvec(matvec, 50, jax.random.PRNGKey(1), rtol=0.05, atol=1e-3,
                                     max_samples=10_000)
    tr = float(np.trace(A))
    assert tr < 0 and est.mean < 0
    assert est.n_samples < 10_000
    assert est.ci_low <= tr <= est.ci_high


def test_hutchinson_near_zero_trace_terminates_by_atol():
    eigs = np.concatenate([np.linspace(-2.0, -0.1, 20), np.linspace(0.1, 2.0, 20)])
    matvec, A = _explicit(jax.random.PRNGKey(9), eigs)
    tr = float(np.trace(A))
    assert abs(tr) < 1e-10
    est = hs.hutchinson_trace_matvec(matvec, 40, jax.random.PRNGKey(2), rtol=0.05, atol=1.0,
                                     max_samples=100_000, batch=20)
    half = (est.ci_high - est.ci_low) / 2
    assert est.n_samples < 100_000
    assert half <= 1.0 and half > 0.05 * abs(est.mean)  # it was atol, not rtol, that stopped it
    assert est.ci_low <= tr <= est.ci_high
    # Without atol the relative rule alone cannot stop on a zero trace: it runs to the cap.
    capped = hs.hutchinson_trace_matvec(matvec, 40, jax.random.PRNGKey(2), rtol=0.05,
                                        max_samples=60, batch=20)
    assert capped.n_samples == 60


def test_hutchinson_stderr_shrinks_like_inverse_sqrt_n():
    matvec, A = _explicit(jax.random.PRNGKey(10), np.linspace(-1.0, 3.0, 30))
    f = jax.jit(hs.hutchinson_trace_fixed, static_argnums=(0, 1, 3))
    errs = {}
    for n in (100, 400, 1600):
        est = f(matvec, 30, jax.random.PRNGKey(n), n)
        errs[n] = float(est.stderr)
        assert float(est.ci_low) <= float(np.trace(A)) <= float(est.ci_high)
        np.testing.assert_allclose(errs[n], _theory_stderr(A, n), rtol=0.2)
    for small, big in ((100, 400), (400, 1600)):
        assert 1.5 < errs[small] / errs[big] < 2.6  # ideal ratio sqrt(4) = 2


def test_hutchinson_on_loss_and_gaussian_probes(small_mlp):
    loss, params = small_mlp
    tr = float(hs.trace_exact(loss, params))
    est = hs.hutchinson_trace(loss, params, jax.random.PRNGKey(0), rtol=0.05, max_samples=4000)
    assert est.ci_low <= tr <= est.ci_high
    est_g = hs.hutchinson_trace(loss, params, jax.random.PRNGKey(1), rtol=0.05, z="gaussian",
                                max_samples=4000)
    assert est_g.ci_low <= tr <= est_g.ci_high


# --------------------------------------------------------------------------- SLQ


def test_slq_weights_density_and_gauss_quadrature(small_mlp):
    loss, params = small_mlp
    matvec, P, _ = hs.flat_hvp(loss, params)
    H = np.asarray(hs.dense_hessian(loss, params))
    nodes, weights = hs.slq_density(matvec, P, jax.random.PRNGKey(0), num_probes=6, num_steps=12)
    assert nodes.shape == weights.shape == (6, 12)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    eig = np.linalg.eigvalsh(H)
    assert nodes.min() >= eig[0] - 1e-10 and nodes.max() <= eig[-1] + 1e-10  # Ritz interlacing
    sigma = 0.02 * (eig[-1] - eig[0])
    grid = jnp.linspace(eig[0] - 8 * sigma, eig[-1] + 8 * sigma, 4001)
    dens = hs.density_on_grid(nodes, weights, grid, sigma)
    np.testing.assert_allclose(jnp.trapezoid(dens, grid), 1.0, atol=1e-6)
    # m-point Gauss quadrature is exact for degree <= 2m - 1: check moments 1..3 against v^T H^k v
    # for the same normalised Rademacher start vectors the function draws internally.
    k_probe, _ = jax.random.split(jax.random.PRNGKey(0))
    z = jax.vmap(lambda k: jax.random.rademacher(k, (P,), dtype=jnp.float64))(
        jax.random.split(k_probe, 6))
    v = np.asarray(z) / np.sqrt(P)
    for p in (1, 2, 3):
        exact = np.einsum("ij,jk,ik->i", v, np.linalg.matrix_power(H, p), v)
        np.testing.assert_allclose((weights * nodes**p).sum(axis=1), exact, rtol=1e-9,
                                   atol=1e-12)


def test_slq_trace_exact_with_basis_probes_and_unbiased_with_random(mid_mlp):
    loss, params = mid_mlp
    matvec, P, _ = hs.flat_hvp(loss, params)
    tr = float(hs.trace_exact(loss, params))
    H = np.asarray(hs.dense_hessian(loss, params))
    # Probes e_1..e_P: sum_k w_k theta_k = e_i^T H e_i exactly for any num_steps, so the SLQ trace
    # is exact. The relu layer leaves some rows of H zero -> immediate breakdown, no NaN.
    basis = jnp.eye(P)
    for m in (1, 5):
        nodes, weights = hs.slq_density(matvec, P, jax.random.PRNGKey(0), num_probes=P,
                                         num_steps=m, probes=basis, batch_size=48)
        assert np.all(np.isfinite(nodes)) and np.all(np.isfinite(weights))
        np.testing.assert_allclose(hs.slq_trace(nodes, weights, P), tr, rtol=1e-8)
    # Random Rademacher probes: unbiased, with per-probe sd sqrt(2 sum_{i!=j} H_ij^2); 4 sigma.
    n = 64
    nodes, weights = hs.slq_density(matvec, P, jax.random.PRNGKey(1), num_probes=n, num_steps=10)
    assert abs(float(hs.slq_trace(nodes, weights, P)) - tr) <= 4 * _theory_stderr(H, n)


# --------------------------------------------------------------------------- vmap over runs


def test_vmap_over_runs_equals_loop():
    key = jax.random.PRNGKey(11)
    loss = make_mlp_loss(jax.random.fold_in(key, 0), 3)
    runs = [init_mlp(jax.random.fold_in(key, 10 + r), [3, 4, 1]) for r in range(3)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *runs)
    keys = jax.random.split(jax.random.PRNGKey(12), 3)
    P = n_params(runs[0])

    def per_run(p, k):
        k1, k2, k3 = jax.random.split(k, 3)
        matvec, dim, _ = hs.flat_hvp(loss, p)
        top = hs.top_eigenvalues(loss, p, 3, k1, num_steps=10)
        tr = hs.hutchinson_trace_fixed(matvec, dim, k2, 16, batch=8).mean
        nodes, weights = hs.slq_density(matvec, dim, k3, num_probes=4, num_steps=6)
        return top, tr, nodes, weights

    batched = jax.jit(jax.vmap(per_run))(stacked, keys)
    looped = [per_run(p, k) for p, k in zip(runs, keys, strict=True)]
    for i, got in enumerate(batched):
        want = np.stack([np.asarray(out[i]) for out in looped])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert batched[0].shape == (3, 3) and batched[2].shape == (3, 4, 6) and P == 21


# --------------------------------------------------------------------------- summary


def test_spectrum_summary_dense_and_lanczos_agree(small_mlp):
    loss, params = small_mlp
    key = jax.random.PRNGKey(0)
    dense = hs.spectrum_summary(loss, params, key, k=3)
    assert dense["method"] == "dense" and dense["num_params"] == 47
    lz = hs.spectrum_summary(loss, params, key, k=3, method="lanczos", num_steps=47, rtol=0.05)
    json.dumps(dense), json.dumps(lz)  # plain floats/ints/strings only
    np.testing.assert_allclose(lz["top_eigenvalues"], dense["top_eigenvalues"], rtol=1e-8)
    np.testing.assert_allclose(lz["min_eigenvalue"], dense["min_eigenvalue"], atol=1e-8)
    assert lz["trace_ci"][0] <= dense["trace"] <= lz["trace_ci"][1]
    assert dense["trace_ci"] == [dense["trace"], dense["trace"]]


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(small_mlp):
    loss, params = small_mlp
    key = jax.random.PRNGKey(0)
    matvec, P, _ = hs.flat_hvp(loss, params)
    with pytest.raises(QunlearnError, match=r"k=48 must be in \[1, 47\].*P=47"):
        hs.top_eigenvalues(loss, params, 48, key)
    with pytest.raises(QunlearnError, match="num_steps=48"):
        hs.top_eigenvalues(loss, params, 3, key, num_steps=48)
    with pytest.raises(QunlearnError, match="num_steps=2 must be in"):
        hs.top_eigenvalues(loss, params, 3, key, num_steps=2)
    with pytest.raises(QunlearnError, match="more steps than the dimension"):
        hs.lanczos(matvec, P, P + 1, key)
    with pytest.raises(QunlearnError, match="num_steps"):
        hs.slq_density(matvec, P, key, num_probes=2, num_steps=P + 1)
    with pytest.raises(QunlearnError, match="k=48"):
        hs.spectrum_summary(loss, params, key, k=48)
    with pytest.raises(QunlearnError, match="method='eig'"):
        hs.spectrum_summary(loss, params, key, method="eig")
    with pytest.raises(QunlearnError, match="z='normal'"):
        hs.hutchinson_trace(loss, params, key, z="normal")
    with pytest.raises(QunlearnError, match="rtol"):
        hs.hutchinson_trace(loss, params, key, rtol=-0.1)
    with pytest.raises(QunlearnError, match="n_probes=1"):
        hs.hutchinson_trace_fixed(matvec, P, key, 1)
    with pytest.raises(QunlearnError, match="real scalar"):
        hs.flat_hvp(lambda p: jnp.ones(3) * p[0][0].sum(), params)
    with pytest.raises(QunlearnError, match="must be real"):
        hs.flat_hvp(lambda p: jnp.abs(p).sum(), jnp.ones(3, jnp.complex128))
    with pytest.raises(QunlearnError, match="shaped like params"):
        hs.hvp(loss, params, [(w[:1], b) for w, b in params])
