"""Poisoning models (protocol §2). Inputs are class-sorted: the first half label 0, the second half
label 1. Each function takes ``(key, x, y, alpha)`` and returns ``(x', y', mask)`` with ``mask``
(N,) bool, True = poisoned; n/2 poisoned samples come from each half, drawn without replacement.
With C ≥ 3 classes (labels 0..C-1, sorted in C equal blocks, ``n_classes`` read from the labels)
n/C come from each block and a flipped label is a uniformly random *other* class; with two
classes that is 0 <-> 1 and the draws are the binary ones, bit for bit.

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


def n_poisoned(n: int, alpha: float, kind: str, n_classes: int = 2) -> int:
    """Number of poisoned samples: floor(n·alpha) rounded DOWN to even for "label_flip", UP to
    even for "feature_randomization" (the reference's counts); with C classes, to a multiple
    of C."""
    _check_alpha(alpha)
    # + 1e-9: n·alpha must not fall just below an integer by round-off (e.g. 0.29 · 100)
    count = math.floor(n * alpha + 1e-9)
    if kind == "label_flip":
        return count - count % n_classes
    if kind == "feature_randomization":
        return count + (-count) % n_classes
    raise QunlearnError(f"unknown noise kind {kind!r}: choose one of {sorted(NOISE)}")


def _check_alpha(alpha) -> None:
    if isinstance(alpha, jax.core.Tracer):
        raise QunlearnError(
            "alpha must be a concrete Python float (it sets the count n): do not trace it"
        )
    if not (isinstance(alpha, int | float | np.floating | np.integer) and 0 <= alpha < 1):
        raise QunlearnError(f"alpha must be in [0, 1), got {alpha!r}")


def _check_sorted(x, y, n_classes: int | None = None) -> tuple[int, int]:
    """(N, C) for class-sorted labels; sorting is checked only when the labels are concrete
    (not traced). C: ``n_classes``, or read from concrete labels (2 for traced ones)."""
    n = y.shape[0]
    if y.ndim != 1 or x.shape[:1] != (n,):
        raise QunlearnError(f"need x (N, D) and y (N,), got x {x.shape} and y {y.shape}")
    traced = isinstance(y, jax.core.Tracer)
    if n_classes is None:
        n_classes = 2 if traced else max(2, int(np.max(np.asarray(y))) + 1)
    if n % n_classes:
        raise QunlearnError(
            f"noise needs N divisible by the {n_classes} classes (class-sorted, equal blocks), "
            f"got N = {n}"
        )
    if not traced:
        labels = np.asarray(y)
        if np.any(labels != np.repeat(np.arange(n_classes), n // n_classes)):
            raise QunlearnError(
                "labels must be class-sorted with equal blocks (N/C zeros, then N/C ones, ...): "
                "sort the data set by label"
            )
    return n, n_classes


def _poison_mask(key, n_total: int, n, n_classes: int = 2) -> jax.Array:
    """(n_total,) bool with n/C True in each class's block, positions uniform without
    replacement.

    The first n/C entries of ``jax.random.permutation(k, N/C)`` are exactly
    ``jax.random.choice(k, N/C, (n/C,), replace=False)``; marking them by rank lets n be traced,
    so one compiled program serves every alpha.
    """
    block = n_total // n_classes
    chosen = jnp.arange(block) < n // n_classes  # rank in the permutation < n/C
    blocks = [
        jnp.zeros(block, bool).at[jax.random.permutation(k, block)].set(chosen)
        for k in jax.random.split(key, n_classes)
    ]
    return jnp.concatenate(blocks)


@partial(jax.jit, static_argnames=("n_classes",))
def _flip(key, y, n, n_classes=2):
    if n_classes == 2:  # the paper's flip, its draws unchanged
        mask = _poison_mask(key, y.shape[0], n)
        return jnp.where(mask, 1 - y, y), mask
    k_mask, k_label = jax.random.split(key)
    mask = _poison_mask(k_mask, y.shape[0], n, n_classes)
    shift = jax.random.randint(k_label, y.shape, 1, n_classes).astype(y.dtype)
    return jnp.where(mask, (y + shift) % n_classes, y), mask


@partial(jax.jit, static_argnames=("raw_dim", "n_classes"))
def _randomize(key, x, n, raw_dim, n_classes=2):
    n_total, dim = x.shape
    k_mask, k_noise = jax.random.split(key)
    mask = _poison_mask(k_mask, n_total, n, n_classes)
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


def flip_labels(key, x, y, alpha: float, *, n_classes: int | None = None):
    """Flip 0 <-> 1 on n = n_poisoned(N, alpha, "label_flip") samples; with C ≥ 3 classes
    (``n_classes``, else read from the labels) each flipped label becomes a uniformly random
    other class.

    x (N, D) is returned unchanged, y (N,) int -> y' (N,), mask (N,) bool.
    """
    _check_alpha(alpha)
    x, y = jnp.asarray(x), jnp.asarray(y)
    n_total, n_classes = _check_sorted(x, y, n_classes)
    n = n_poisoned(n_total, alpha, "label_flip", n_classes)
    y_poisoned, mask = _flip(key, y, n=n, n_classes=n_classes)
    return x, y_poisoned, mask


def randomize_features(
    key, x, y, alpha: float, *, raw_dim: int | None = None, n_classes: int | None = None
):
    """Replace the features of n = n_poisoned(N, alpha, "feature_randomization") samples by
    i.i.d. N(0, 0.1²) entries (real and imaginary parts separately if x is complex), L2-normalised.

    x (N, D) -> x' (N, D); y unchanged; mask (N,) bool. ``raw_dim``: only the first raw_dim
    features are drawn and the rest are zero (MNIST: 784 pixels padded to 1024).
    """
    _check_alpha(alpha)
    x, y = jnp.asarray(x), jnp.asarray(y)
    n_total, n_classes = _check_sorted(x, y, n_classes)
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.inexact):
        raise QunlearnError(f"x must be (N, D) float or complex, got {x.dtype} {x.shape}")
    dim = x.shape[1]
    raw_dim = dim if raw_dim is None else int(raw_dim)
    if not 1 <= raw_dim <= dim:
        raise QunlearnError(f"raw_dim must be in [1, {dim}] (the feature size), got {raw_dim}")
    n = n_poisoned(n_total, alpha, "feature_randomization", n_classes)
    x_poisoned, mask = _randomize(key, x, n=n, raw_dim=raw_dim, n_classes=n_classes)
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
    (N,) labels among y's classes; mask (N,) bool; rows outside the mask unchanged; alpha = 0
    poisons nothing."""

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
    n_classes = max(2, int(y.max()) + 1)
    if not np.all(np.isin(yp, np.arange(n_classes))):
        fail(f"y' must hold labels 0..{n_classes - 1}, the classes of y")
    if np.any(xp[~mask] != x[~mask]) or np.any(yp[~mask] != y[~mask]):
        fail("it changed rows outside its mask: mark every row it changes as poisoned")
    if alpha == 0 and mask.any():
        fail(f"alpha = 0 poisoned {int(mask.sum())} samples; poison none")
