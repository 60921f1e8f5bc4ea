"""Poisoning models (protocol §2). Inputs are class-sorted: the first half label 0, the second half
label 1. Each function takes ``(key, x, y, alpha)`` and returns ``(x', y', mask)`` with ``mask``
(N,) bool, True = poisoned; n/2 poisoned samples come from each half, drawn without replacement.

``alpha`` is static (a Python float): it fixes the count n, so a function can be ``jax.vmap``-ed
over keys, e.g. ``jax.vmap(lambda k: flip_labels(k, x, y, 0.3))(keys)``.

The family is open (:mod:`qunlearn.families`, entry-point group ``qunlearn.noise``): a user's noise
kind has the same signature and passes :func:`check_poisoned` (and
:func:`qunlearn.testing.check_noise`). Noise sweeps take any member; the unlearning kinds need
label flipping, since their forget set is the flipped samples.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.errors import QunlearnError
from qunlearn.families import Family

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
        raise QunlearnError(
            "alpha must be a concrete Python float (it sets the count n): do not trace it"
        )
    if not (isinstance(alpha, int | float | np.floating | np.integer) and 0 <= alpha < 1):
        raise QunlearnError(f"alpha must be in [0, 1), got {alpha!r}")


def _check_sorted(x, y) -> int:
    """N for class-sorted labels; checked only when the labels are concrete (not traced)."""
    n = y.shape[0]
    if y.ndim != 1 or x.shape[:1] != (n,):
        raise QunlearnError(f"need x (N, D) and y (N,), got x {x.shape} and y {y.shape}")
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


def _poison_mask(key, n_total: int, n) -> jax.Array:
    """(n_total,) bool with n/2 True in each half, positions uniform without replacement.

    The first n/2 entries of ``jax.random.permutation(k, N/2)`` are exactly
    ``jax.random.choice(k, N/2, (n/2,), replace=False)``; marking them by rank lets n be traced,
    so one compiled program serves every alpha.
    """
    half = n_total // 2
    chosen = jnp.arange(half) < n // 2  # rank in the permutation < n/2
    halves = [
        jnp.zeros(half, bool).at[jax.random.permutation(k, half)].set(chosen)
        for k in jax.random.split(key)
    ]
    return jnp.concatenate(halves)


@jax.jit
def _flip(key, y, n):
    mask = _poison_mask(key, y.shape[0], n)
    return jnp.where(mask, 1 - y, y), mask


@partial(jax.jit, static_argnames=("raw_dim",))
def _randomize(key, x, n, raw_dim):
    n_total, dim = x.shape
    k_mask, k_noise = jax.random.split(key)
    mask = _poison_mask(k_mask, n_total, n)
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
    return jnp.where(mask[:, None], noise, x), mask


def flip_labels(key, x, y, alpha: float):
    """Flip 0 <-> 1 on n = n_poisoned(N, alpha, "label_flip") samples.

    x (N, D) is returned unchanged, y (N,) int -> y' (N,), mask (N,) bool.
    """
    _check_alpha(alpha)
    x, y = jnp.asarray(x), jnp.asarray(y)
    n_total = _check_sorted(x, y)
    y_poisoned, mask = _flip(key, y, n=n_poisoned(n_total, alpha, "label_flip"))
    return x, y_poisoned, mask


def randomize_features(key, x, y, alpha: float, *, raw_dim: int | None = None):
    """Replace the features of n = n_poisoned(N, alpha, "feature_randomization") samples by
    i.i.d. N(0, 0.1²) entries (real and imaginary parts separately if x is complex), L2-normalised.

    x (N, D) -> x' (N, D); y unchanged; mask (N,) bool. ``raw_dim``: only the first raw_dim
    features are drawn and the rest are zero (MNIST: 784 pixels padded to 1024).
    """
    _check_alpha(alpha)
    x, y = jnp.asarray(x), jnp.asarray(y)
    n_total = _check_sorted(x, y)
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.inexact):
        raise QunlearnError(f"x must be (N, D) float or complex, got {x.dtype} {x.shape}")
    dim = x.shape[1]
    raw_dim = dim if raw_dim is None else int(raw_dim)
    if not 1 <= raw_dim <= dim:
        raise QunlearnError(f"raw_dim must be in [1, {dim}] (the feature size), got {raw_dim}")
    n = n_poisoned(n_total, alpha, "feature_randomization")
    x_poisoned, mask = _randomize(key, x, n=n, raw_dim=raw_dim)
    return x_poisoned, y, mask


NOISE = Family(
    "noise kind",
    "qunlearn.noise",
    {"label_flip": flip_labels, "feature_randomization": randomize_features},
)
"""kind -> ``fn(key, x, y, alpha, **options) -> (x', y', mask)``; options differ by kind
(``raw_dim``); open (see above)."""


def check_poisoned(name: str, x, y, alpha: float, out) -> None:
    """The noise contract on one output ``out = fn(key, x, y, alpha)`` (concrete arrays), one line
    per breach naming ``name``: a triple (x', y', mask); x' of x's shape and dtype, finite; y'
    (N,) labels in {0, 1}; mask (N,) bool; rows outside the mask unchanged; alpha = 0 poisons
    nothing."""

    def fail(what: str):
        raise QunlearnError(f"noise kind {name!r} breaks the noise contract: {what}")

    if not isinstance(out, tuple | list) or len(out) != 3:
        fail(f"it must return (x', y', mask), got {type(out).__name__}")
    xp, yp, mask = (np.asarray(a) for a in out)
    x, y = np.asarray(x), np.asarray(y)
    if xp.shape != x.shape or xp.dtype != x.dtype:
        fail(f"x' is {xp.dtype} {xp.shape}, x was {x.dtype} {x.shape}: keep shape and dtype")
    if yp.shape != y.shape or mask.shape != y.shape:
        fail(f"y' {yp.shape} and mask {mask.shape} must both be ({len(y)},)")
    if mask.dtype != np.bool_:
        fail(f"mask must be bool (True = poisoned), got {mask.dtype}")
    if not np.all(np.isfinite(xp)):
        fail("x' holds NaN or infinite values")
    if not np.all((yp == 0) | (yp == 1)):
        fail("y' must hold labels 0 and 1")
    if np.any(xp[~mask] != x[~mask]) or np.any(yp[~mask] != y[~mask]):
        fail("it changed rows outside its mask: mark every row it changes as poisoned")
    if alpha == 0 and mask.any():
        fail(f"alpha = 0 poisoned {int(mask.sum())} samples; poison none")
