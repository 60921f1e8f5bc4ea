"""Poisoning models: protocol counts, class balance, masks, determinism, purity, vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.noise import NOISE, flip_labels, n_poisoned, randomize_features
from qunlearn.testing import check_noise

ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# (N, kind) -> n for ALPHAS, from protocol §2
TABLES = {
    (500, "label_flip"): [0, 50, 100, 150, 200, 250, 300, 350, 400, 450],
    (500, "feature_randomization"): [0, 50, 100, 150, 200, 250, 300, 350, 400, 450],
    (82, "label_flip"): [0, 8, 16, 24, 32, 40, 48, 56, 64, 72],
    (82, "feature_randomization"): [0, 8, 16, 24, 32, 42, 50, 58, 66, 74],
}


def _mnist_like(n=500, seed=0):
    """Class-sorted (n, 1024) unit vectors with zeros beyond 784, like the MNIST features."""
    x = np.abs(np.random.default_rng(seed).standard_normal((n, 784)))
    x = np.pad(x / np.linalg.norm(x, axis=1, keepdims=True), ((0, 0), (0, 240)))
    return x, np.repeat(np.array([0, 1], np.int32), n // 2)


def _xxz_like(n=82, dim=64, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)) + 1j * rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(
        np.array([0, 1], np.int32), n // 2
    )


def _data(n):
    return _mnist_like(n) if n == 500 else _xxz_like(n)


def _changed(kind, x, y, out):
    x_p, y_p, _ = out
    if kind == "label_flip":
        return np.asarray(y_p) != y
    return np.any(np.asarray(x_p) != x, axis=1)


@pytest.mark.parametrize(("n", "kind"), list(TABLES))
def test_counts_balance_and_mask(n, kind):
    x, y = _data(n)
    for alpha, expected in zip(ALPHAS, TABLES[(n, kind)], strict=True):
        assert n_poisoned(n, alpha, kind) == expected, alpha
        out = NOISE[kind](jax.random.key(7), x, y, alpha)
        mask = np.asarray(out[2])
        assert mask.dtype == bool and mask.shape == (n,)
        assert mask[: n // 2].sum() == mask[n // 2 :].sum() == expected // 2, alpha
        np.testing.assert_array_equal(_changed(kind, x, y, out), mask)


def test_alpha_is_floored_robustly():
    assert n_poisoned(100, 0.29, "label_flip") == 28  # 100 * 0.29 = 28.999999999999996
    assert n_poisoned(100, 0.29, "feature_randomization") == 30
    assert n_poisoned(10, 0.7, "label_flip") == 6


def test_flip_swaps_labels_and_keeps_features():
    x, y = _xxz_like()
    x_p, y_p, mask = flip_labels(jax.random.key(0), x, y, 0.5)
    np.testing.assert_array_equal(np.asarray(x_p), x)
    np.testing.assert_array_equal(np.asarray(y_p)[np.asarray(mask)], 1 - y[np.asarray(mask)])
    assert y_p.dtype == jnp.int32


@pytest.mark.parametrize("make", [_mnist_like, _xxz_like])
def test_randomised_rows_are_unit_noise(make):
    x, y = make()
    raw_dim = 784 if x.shape[1] == 1024 else None
    x_p, y_p, mask = randomize_features(jax.random.key(3), x, y, 0.5, raw_dim=raw_dim)
    x_p, mask = np.asarray(x_p), np.asarray(mask)
    np.testing.assert_array_equal(np.asarray(y_p), y)
    assert x_p.dtype == x.dtype
    rows = x_p[mask]
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-12)
    if raw_dim:
        assert np.all(rows[:, 784:] == 0)
        assert np.all(rows[:, :784] != 0) and np.any(rows < 0)  # fresh Gaussian, not pixels
    else:  # real and imaginary parts drawn independently: each holds about half the weight
        share = np.linalg.norm(rows.real, axis=1) ** 2
        assert 0.35 < share.mean() < 0.65 and np.all(rows.imag != 0)
    # Pooled entries of the normalised noise look like N(0, 1/D) per (real) component.
    pooled = rows[:, :784].ravel() if raw_dim else rows.view(np.float64).ravel()
    assert abs(pooled.mean()) < 5 * pooled.std() / np.sqrt(pooled.size)


@pytest.mark.parametrize("kind", list(NOISE))
def test_deterministic_per_key_and_keys_differ(kind):
    x, y = _xxz_like()
    a = NOISE[kind](jax.random.key(1), x, y, 0.3)
    b = NOISE[kind](jax.random.key(1), x, y, 0.3)
    c = NOISE[kind](jax.random.key(2), x, y, 0.3)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert not np.array_equal(np.asarray(a[2]), np.asarray(c[2]))


@pytest.mark.parametrize("kind", list(NOISE))
def test_inputs_untouched(kind):
    x, y = _mnist_like()
    x0, y0 = x.copy(), y.copy()
    out = NOISE[kind](jax.random.key(4), x, y, 0.6)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    assert all(isinstance(a, jax.Array) for a in out)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    NOISE[kind](jax.random.key(4), xj, yj, 0.6)
    np.testing.assert_array_equal(np.asarray(xj), x0)


@pytest.mark.parametrize("kind", list(NOISE))
@pytest.mark.parametrize("make", [_mnist_like, _xxz_like])
def test_vmap_over_keys_equals_loop(kind, make):
    x, y = make()
    keys = jax.random.split(jax.random.key(5), 5)
    batched = jax.vmap(lambda k: NOISE[kind](k, x, y, 0.4))(keys)
    looped = [NOISE[kind](k, x, y, 0.4) for k in keys]
    for i, single in enumerate(looped):
        for got, want in zip(batched, single, strict=True):
            np.testing.assert_array_equal(np.asarray(got[i]), np.asarray(want))


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, float("nan"), "0.3"])
def test_alpha_out_of_range(alpha):
    x, y = _xxz_like()
    for fn in NOISE.values():
        with pytest.raises(QunlearnError, match=r"alpha must be in \[0, 1\), got"):
            fn(jax.random.key(0), x, y, alpha)


def test_unsorted_or_odd_inputs_rejected():
    x, y = _xxz_like()
    with pytest.raises(QunlearnError, match="class-sorted"):
        flip_labels(jax.random.key(0), x, y[::-1], 0.2)
    with pytest.raises(QunlearnError, match="divisible by the 2 classes"):
        randomize_features(jax.random.key(0), x[:81], np.r_[y[:40], y[41:]], 0.2)
    with pytest.raises(QunlearnError, match="raw_dim"):
        randomize_features(jax.random.key(0), x, y, 0.2, raw_dim=65)
    with pytest.raises(QunlearnError, match="unknown noise kind"):
        n_poisoned(10, 0.2, "gaussian")


def test_indices_are_jax_random_choice_without_replacement():
    x, y = _xxz_like()
    key = jax.random.key(11)
    _, _, mask = flip_labels(key, x, y, 0.3)
    k0, k1 = jax.random.split(key)
    expected = np.zeros(82, bool)
    expected[np.asarray(jax.random.choice(k0, 41, (12,), replace=False))] = True
    expected[41 + np.asarray(jax.random.choice(k1, 41, (12,), replace=False))] = True
    np.testing.assert_array_equal(np.asarray(mask), expected)


@pytest.mark.parametrize("kind", list(NOISE))
def test_every_noise_kind_meets_the_public_contract(kind):
    """The check users run on their own noise kinds (qunlearn.testing.check_noise)."""
    assert "vmap over keys = loop" in check_noise(NOISE[kind])
