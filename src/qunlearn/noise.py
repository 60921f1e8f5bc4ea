"""Poisoning models (protocol §2). Inputs are class-sorted: the first half label 0, the second half
label 1. Each function takes ``(key, x, y, alpha)`` and returns ``(x', y', mask)`` with ``mask``
(N,) bool, True = poisoned; n/2 poisoned samples come from each half, drawn without replacement.

``alpha`` is static (a Python float): it fixes the count n, so a function can be ``jax.vmap``-ed
over keys, e.g. ``jax.vmap(lambda k: flip_labels(k, x, y, 0.3))(keys)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.errors import QunlearnError

SIGMA = 0.1  # std of the replacement features
EPS = 1e-12  # same normalisation guard as the data pipeline


def n_poisoned(n: int, alpha: float, kind: str) -> int:
    """Number of poisoned samples: floor(n·alpha) rounded DOWN to even for "label_flip", UP to
    even for "feature_randomization" (the reference's counts)."""
    _check_alpha(alpha)
    # + 1e-9: n·alpha must not fall just below an integer by round-off (e.g. 0.29 · 100)
    count = math.floor(n * alpha + 1e-9)
    if kind == "label_flip":
        return count - count % 2
    if kind == "feature_randomization":
        return count + count % 2
    raise QunlearnError(f"unknown noise kind {kind!r}: choose one of {sorted(NOISE)}")


def _check_alpha(alpha) -> None:
    if isinstance(alpha, jax.core.Tracer):
        raise QunlearnError("alpha must be a Python float (it fixes array shapes): do not trace it")
    if not (isinstance(alpha, int | float | np.floating | np.integer) and 0 <= alpha < 1):
        raise QunlearnError(f"alpha must be in [0, 1), got {alpha!r}")


def _check_sorted(y) -> int:
    """N for class-sorted labels; checked only when the labels are concrete (not traced)."""
    n = y.shape[0]
    if n % 2:
        raise QunlearnError(f"noise needs an even number of class-sorted samples, got N = {n}")
    if not isinstance(y, jax.core.Tracer):
        labels = np.asarray(y)
        if np.any(labels[: n // 2] != 0) or np.any(labels[n // 2 :] != 1):
            raise QunlearnError(
                "labels must be class-sorted with equal halves (N/2 zeros then N/2 ones): sort the "
                "data set by label"
            )
    return n


def _poison_mask(key, n_total: int, n: int) -> jax.Array:
    """(n_total,) bool with n/2 True in each half, positions uniform without replacement."""
    half = n_total // 2
    k0, k1 = jax.random.split(key)
    first = jax.random.choice(k0, half, (n // 2,), replace=False)
    second = half + jax.random.choice(k1, half, (n // 2,), replace=False)
    return jnp.zeros(n_total, bool).at[first].set(True).at[second].set(True)


def flip_labels(key, x, y, alpha: float):
    """Flip 0 <-> 1 on n = n_poisoned(N, alpha, "label_flip") samples.

    x (N, D) is returned unchanged, y (N,) int -> y' (N,), mask (N,) bool.
    """
    _check_alpha(alpha)
    x, y = jnp.asarray(x), jnp.asarray(y)
    n_total = _check_sorted(y)
    mask = _poison_mask(key, n_total, n_poisoned(n_total, alpha, "label_flip"))
    return x, jnp.where(mask, 1 - y, y), mask


def randomize_features(key, x, y, alpha: float, *, raw_dim: int | None = None):
    """Replace the features of n = n_poisoned(N, alpha, "feature_randomization") samples by
    i.i.d. N(0, 0.1²) entries (real and imaginary parts separately if x is complex), L2-normalised.

    x (N, D) -> x' (N, D); y unchanged; mask (N,) bool. ``raw_dim``: only the first raw_dim
    features are drawn and the rest are zero (MNIST: 784 pixels padded to 1024).
    """
    _check_alpha(alpha)
    x, y = jnp.asarray(x), jnp.asarray(y)
    n_total = _check_sorted(y)
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.inexact):
        raise QunlearnError(f"x must be (N, D) float or complex, got {x.dtype} {x.shape}")
    dim = x.shape[1]
    raw_dim = dim if raw_dim is None else int(raw_dim)
    if not 1 <= raw_dim <= dim:
        raise QunlearnError(f"raw_dim must be in [1, {dim}] (the feature size), got {raw_dim}")
    k_mask, k_noise = jax.random.split(key)
    mask = _poison_mask(k_mask, n_total, n_poisoned(n_total, alpha, "feature_randomization"))
    # Drawing for every row keeps shapes static (vmap-able); only masked rows are used.
    real_dtype = jnp.finfo(x.dtype).dtype
    if jnp.iscomplexobj(x):
        k_re, k_im = jax.random.split(k_noise)
        noise = jax.random.normal(k_re, (n_total, raw_dim), real_dtype) + 1j * jax.random.normal(
            k_im, (n_total, raw_dim), real_dtype
        )
    else:
        noise = jax.random.normal(k_noise, (n_total, raw_dim), real_dtype)
    noise = SIGMA * noise
    noise = noise / jnp.maximum(jnp.linalg.norm(noise, axis=1, keepdims=True), EPS)
    noise = jnp.pad(noise, ((0, 0), (0, dim - raw_dim))).astype(x.dtype)
    return jnp.where(mask[:, None], noise, x), y, mask


NOISE = {"label_flip": flip_labels, "feature_randomization": randomize_features}
