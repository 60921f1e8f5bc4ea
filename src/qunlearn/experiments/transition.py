"""The critical noise ratio α_c of a Fig 2 sweep, fitted, with bootstrap 95 % intervals.

The paper calls α_c the ratio where clean validation accuracy falls through 0.5 (protocol claim
1; ``compare.critical_alpha`` interpolates the mean curve linearly). Here the mean curve is fitted
by a logistic drop

    val(α) = lo + (hi − lo) · σ(−(α − centre) / scale),   σ(z) = 1 / (1 + e^−z),

and α_c is where the *fitted* curve crosses the same threshold (0.5):
α_c = centre + scale · ln((hi − 0.5) / (0.5 − lo)), defined when lo < 0.5 < hi. For a symmetric
drop (lo + hi = 1) α_c is the centre. The transition ``width`` is the α range over which the
fitted curve falls from 90 % to 10 % of its drop, 2 ln 9 · scale.

Intervals: resample the runs within each α with replacement (a seeded numpy generator), refit the
mean curve, and take the 2.5 / 97.5 percentiles of α_c and width over the resamples whose fit
crosses 0.5 (``crossing_fraction`` says how many did).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

THRESHOLD = 0.5
WIDTH_FACTOR = 2 * math.log(9.0)  # scale -> the 90 %..10 % width of a logistic drop
MIN_SCALE = 1e-3  # a drop sharper than this cannot be told apart on any grid we run
RESAMPLES = 400
CONFIDENCE = 0.95


def logistic_drop(alpha, lo, hi, centre, scale):
    """lo + (hi − lo) · σ(−(α − centre) / scale), evaluated stably for any sign of the exponent."""
    z = np.clip((np.asarray(alpha, float) - centre) / scale, -500, 500)
    return lo + (hi - lo) / (1.0 + np.exp(z))


def _jacobian(alpha, lo, hi, centre, scale):
    """d logistic_drop / d(lo, hi, centre, scale), (len(alpha), 4): an exact Jacobian makes each
    fit a few times faster, which the bootstrap's hundreds of refits need."""
    z = np.clip((np.asarray(alpha, float) - centre) / scale, -500, 500)
    s = 1.0 / (1.0 + np.exp(z))  # σ(−z)
    ds = -s * (1.0 - s)  # dσ(−z)/dz
    return np.stack([1.0 - s, s, (hi - lo) * ds * (-1.0 / scale), (hi - lo) * ds * (-z / scale)], 1)


def crossing(lo: float, hi: float, centre: float, scale: float, threshold: float = THRESHOLD):
    """The α where the logistic drop equals ``threshold``; None if it never does."""
    if not lo < threshold < hi:
        return None
    return centre + scale * math.log((hi - threshold) / (threshold - lo))


def _start(alphas: np.ndarray, means: np.ndarray) -> list[float]:
    lo, hi = float(means.min()), float(means.max())
    below = np.nonzero(means < (lo + hi) / 2)[0]
    centre = float(alphas[below[0]]) if below.size else float(alphas.mean())
    step = float(np.min(np.diff(alphas))) if len(alphas) > 1 else 0.1
    return [lo, hi, centre, max(step, 0.02)]


def fit_curve(alphas, means, p0=None) -> dict | None:
    """Least-squares logistic drop through (alphas, means); None when the fit fails.

    Returns {lo, hi, centre, scale, alpha_c, width}; alpha_c is None unless the fitted curve
    crosses 0.5 inside the measured α range."""
    alphas, means = np.asarray(alphas, float), np.asarray(means, float)
    if len(alphas) < 4:  # four parameters
        return None
    span = float(alphas.max() - alphas.min())
    lower = [0.0, 0.0, float(alphas.min()) - span, MIN_SCALE]
    upper = [1.0, 1.0, float(alphas.max()) + span, max(span, 2 * MIN_SCALE)]
    start = np.clip(p0 if p0 is not None else _start(alphas, means), lower, upper)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(
                logistic_drop,
                alphas,
                means,
                p0=start,
                bounds=(lower, upper),
                jac=_jacobian,
                max_nfev=200,
            )
    except (RuntimeError, ValueError):
        return None
    lo, hi, centre, scale = (float(p) for p in params)
    alpha_c = crossing(lo, hi, centre, scale)
    if alpha_c is not None and not alphas.min() <= alpha_c <= alphas.max():
        alpha_c = None  # an extrapolated crossing is no measurement
    return {
        "lo": lo,
        "hi": hi,
        "centre": centre,
        "scale": scale,
        "alpha_c": alpha_c,
        "width": WIDTH_FACTOR * scale,
    }


def _clean(values_by_alpha: Mapping[float, Sequence[float]]):
    """Sorted alphas and their finite run values (NaN runs are diverged runs: left out)."""
    pairs = []
    for alpha in sorted(values_by_alpha):
        v = np.asarray(values_by_alpha[alpha], float)
        v = v[np.isfinite(v)]
        if v.size:
            pairs.append((float(alpha), v))
    return [a for a, _ in pairs], [v for _, v in pairs]


def bootstrap_transition(
    values_by_alpha: Mapping[float, Sequence[float]],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict | None:
    """α_c and width of the mean curve, with percentile intervals from resampling runs per α.

    ``values_by_alpha``: {α: per-run validation accuracies}. Returns the :func:`fit_curve` keys
    plus ``alpha_c_lo/hi``, ``width_lo/hi`` (None when fewer than half the resamples cross 0.5,
    or with a single run at some α: resampling one run gives a zero-width, meaningless interval),
    ``resolved`` (False when the fitted width is below the grid step), ``resamples``,
    ``crossing_fraction`` and ``runs`` (the fewest runs at any α); None when the full-data fit
    fails.

    Pure in its arguments, so remembered per process: ``compare``, ``plot`` and a comparison
    across sweeps fit the same curves (hundreds of least-squares fits each) once."""
    key = tuple((float(a), tuple(map(float, values_by_alpha[a]))) for a in sorted(values_by_alpha))
    fit = _bootstrap(key, resamples, seed, confidence)
    return None if fit is None else dict(fit)  # a copy: the remembered one stays as computed


@functools.lru_cache(maxsize=256)
def _bootstrap(
    runs: tuple[tuple[float, tuple[float, ...]], ...], resamples: int, seed: int, confidence: float
) -> dict | None:
    alphas, values = _clean(dict(runs))
    full = fit_curve(alphas, [v.mean() for v in values])
    if full is None:
        return None
    if full["alpha_c"] is None:  # no transition inside the grid: nothing to put an interval on
        resamples = 0
    if min(v.size for v in values) < 2:  # one run per alpha resamples to itself: no interval
        resamples = 0
    rng = np.random.default_rng(seed)
    p0 = [full["lo"], full["hi"], full["centre"], full["scale"]]
    crossings, widths = [], []
    for _ in range(resamples):
        means = [v[rng.integers(0, v.size, v.size)].mean() for v in values]
        fit = fit_curve(alphas, means, p0=p0)
        if fit is not None and fit["alpha_c"] is not None:
            crossings.append(fit["alpha_c"])
            widths.append(fit["width"])
    tail = 100 * (1 - confidence) / 2
    out = dict(full)
    step = float(np.min(np.diff(alphas)))
    out |= {
        # a drop sharper than the grid's step: the logistic's width (so the interval) is not
        # measured, only bounded; refine the grid there (``qunlearn run CONFIG --refine``)
        "resolved": full["width"] >= step,
        "resamples": resamples,
        "crossing_fraction": len(crossings) / resamples if resamples else 0.0,
        "runs": min(v.size for v in values),
    }
    enough = resamples > 0 and len(crossings) >= resamples / 2
    for name, sample in (("alpha_c", crossings), ("width", widths)):
        lo, hi = np.percentile(sample, [tail, 100 - tail]) if enough else (None, None)
        out[f"{name}_lo"] = None if lo is None else float(lo)
        out[f"{name}_hi"] = None if hi is None else float(hi)
    return out
