"""Did unlearning work? Per-example statistics of model ensembles against retrain oracles.

Every function takes *margins*: ``(models, examples)`` arrays of one ensemble's per-example margin,
the logit of the model's class-1 probability (:func:`margin`; for the QNN, ``5<Z>`` up to the
readout's clipping). Oracles are models trained from scratch on the retain set only; an unlearned
ensemble is judged by how its margin *distribution* on each example differs from theirs.

* Distances (KLoM-style, after Georgiev et al. 2024): :func:`histogram_kl` (the headline: per
  example, both samples binned on ``bins`` equal-width bins spanning their pooled range, every bin
  given a pseudo-count of 1/2 (Krichevsky–Trofimov), KL(ensemble ‖ oracles) in nats) and
  :func:`gaussian_kl` (closed form between fitted normals; smaller bias with few models). Both are 0
  for identical ensembles; both are biased upward by finite samples, so results carry a
  calibration: two halves of the oracle ensemble, and retrain runs (fresh oracles).
* Membership inference: :func:`population_attack` (a loss-threshold attack, one AUC per model,
  members vs non-members that carry the same corruption) and :func:`ulira` (a per-example
  likelihood-ratio attack in the spirit of U-LiRA, Hayes et al. 2024: per example, a Gaussian fit
  to the ensemble's margins ("in": trained with the example, then unlearned) against one fit to
  the oracles' ("out"), each target model scored leave-one-out).
* Stability: :func:`flip_rate` (how often two models of an ensemble disagree on an example's
  class) and :func:`nested_variance` (how much of the spread comes from the training seed vs the
  unlearning seed in a teachers x unlearning-seeds design).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.train import BCE_EPS

PSEUDO_COUNT = 0.5  # per histogram bin (Krichevsky–Trofimov smoothing)
VAR_FLOOR = 1e-4  # margin variance floor of the Gaussian fits (margins are O(1)-O(10))


def margin(p, labels=None, eps: float = BCE_EPS):
    """The logit of a class-1 probability, guarded as the training loss guards ``log``:
    log(p + eps) − log(1 − p + eps). Saturated MLP outputs give ±32.2 instead of ±inf.

    A C-class model's probabilities (n, C) need ``labels`` (n,): the margin of each example's
    label, log p_y − max_{k≠y} log p_k (eps-guarded), positive exactly where the label is the
    most probable class; with two classes it is the logit of p_y, the binary margin oriented
    by the label. Such margins are *oriented*: the scores read them against label 1."""
    if labels is None:
        return jnp.log(p + eps) - jnp.log(1 - p + eps)
    log_p = jnp.log(p + eps)
    label = jax.nn.one_hot(jnp.asarray(labels).astype(jnp.int32), p.shape[-1], dtype=bool)
    own = jnp.sum(jnp.where(label, log_p, 0.0), -1)
    return own - jnp.max(jnp.where(label, -jnp.inf, log_p), -1)


# ---------------------------------------------------------------------------------------------
# Per-example distances between two ensembles


def histogram_kl(sample, reference, bins: int = 20):
    """(examples,) KL(P_sample ‖ P_reference) of the per-example margin histograms.

    ``sample`` (n, E), ``reference`` (K, E). Bins: ``bins`` equal-width bins on the pooled
    [min, max] of each example (so the estimator ignores the margins' scale); counts + 1/2 per
    bin. An example where every value is equal has distance 0.
    """
    sample, reference = np.asarray(sample, float), np.asarray(reference, float)
    lo = np.minimum(sample.min(0), reference.min(0))
    hi = np.maximum(sample.max(0), reference.max(0))
    width = np.where(hi > lo, hi - lo, 1.0)

    def histogram(values):
        idx = np.clip(((values - lo) / width * bins).astype(int), 0, bins - 1)
        flat = idx + bins * np.arange(idx.shape[1])  # example e's bins: e·bins ... e·bins + bins-1
        counts = np.bincount(flat.ravel(), minlength=flat.shape[1] * bins).reshape(-1, bins)
        smoothed = counts + PSEUDO_COUNT
        return smoothed / smoothed.sum(1, keepdims=True)

    p, q = histogram(sample), histogram(reference)
    return np.where(hi > lo, (p * np.log(p / q)).sum(1), 0.0)


def _fit(values):
    """Per-example mean and (floored, ML) variance over the models axis."""
    return values.mean(0), np.maximum(values.var(0), VAR_FLOOR)


def gaussian_kl(sample, reference):
    """(examples,) KL(N(μ_s, σ_s²) ‖ N(μ_r, σ_r²)) of Gaussians fitted per example."""
    mu_s, var_s = _fit(np.asarray(sample, float))
    mu_r, var_r = _fit(np.asarray(reference, float))
    return 0.5 * (np.log(var_r / var_s) + (var_s + (mu_s - mu_r) ** 2) / var_r - 1.0)


def null_band(
    n: int, k: int, *, bins: int = 20, examples: int = 2000, quantile: float = 0.5, seed: int = 0
) -> dict:
    """What each distance gives between two ensembles of sizes ``n`` and ``k`` drawn from ONE
    distribution (standard normal margins): {estimator: (its ``quantile`` over examples, the
    95th percentile of that statistic over 20 repetitions)}. A distance within the second value
    is indistinguishable from "the same distribution" at these sample sizes."""
    rng = np.random.default_rng(seed)
    stats: dict[str, list[float]] = {"histogram_kl": [], "gaussian_kl": []}
    for _ in range(20):
        a, b = rng.standard_normal((n, examples)), rng.standard_normal((k, examples))
        stats["histogram_kl"].append(np.quantile(histogram_kl(a, b, bins), quantile))
        stats["gaussian_kl"].append(np.quantile(gaussian_kl(a, b), quantile))
    return {name: (float(np.median(v)), float(np.quantile(v, 0.95))) for name, v in stats.items()}


# ---------------------------------------------------------------------------------------------
# Membership inference


def auc(positive, negative) -> float:
    """Area under the ROC curve of scores (higher = "member"), ties counted half (Mann–Whitney)."""
    from scipy.stats import rankdata  # here: scipy.stats costs ~1.3 s of every CLI start

    positive, negative = np.ravel(positive), np.ravel(negative)
    ranks = rankdata(np.concatenate([positive, negative]))
    n_p, n_n = len(positive), len(negative)
    return float((ranks[:n_p].sum() - n_p * (n_p + 1) / 2) / (n_p * n_n))


def roc_curve(positive, negative):
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    positive, negative = np.ravel(positive), np.ravel(negative)
    thresholds = np.unique(np.concatenate([positive, negative]))[::-1]
    pos, neg = np.sort(positive), np.sort(negative)
    # counts first, then one division: 1 - k/n can land just above k'/n and fail an FPR cut
    tpr = (len(pos) - np.searchsorted(pos, thresholds, side="left")) / len(pos)
    fpr = (len(neg) - np.searchsorted(neg, thresholds, side="left")) / len(neg)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def tpr_at_fpr(positive, negative, fpr: float) -> float:
    """The largest true-positive rate at a threshold whose false-positive rate is ≤ ``fpr``."""
    f, t = roc_curve(positive, negative)
    return float(t[f <= fpr].max())


def tpr_at_fpr_rows(positive, negative, fpr: float) -> np.ndarray:
    """:func:`tpr_at_fpr` of each row of ``positive`` (R, P) against the same row of
    ``negative`` (R, N), without a ROC curve per row: with m the most negatives an FPR of ``fpr``
    admits (m / N ≤ fpr, as the curve divides), every threshold above the (m+1)-th largest
    negative v is admitted and none at or below it, so the TPR is the share of positives > v."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    n = negative.shape[1]
    m = int(np.count_nonzero(np.arange(n + 1) / n <= fpr)) - 1
    if m >= n:
        return np.ones(len(positive))
    v = -np.partition(-negative, m, axis=1)[:, m : m + 1]
    return np.count_nonzero(positive > v, axis=1) / positive.shape[1]


def log_likelihood(margins, labels):
    """log p_model(label) per example from margins: −softplus(∓margin)."""
    signed = np.where(np.asarray(labels) > 0.5, 1.0, -1.0) * np.asarray(margins, float)
    return -np.logaddexp(0.0, -signed)


def population_attack(member_margins, member_labels, other_margins, other_labels):
    """(models,) AUC of a loss-threshold attack per model: members (an ensemble's margins on
    examples it was trained with, (R, M)) against non-members ((R, N)), each scored by the
    log-likelihood of its given label; 0.5 = the attack cannot tell them apart."""
    member = log_likelihood(member_margins, member_labels)
    other = log_likelihood(other_margins, other_labels)
    return np.array([auc(m, o) for m, o in zip(member, other, strict=True)])


def _log_normal(x, mu, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


def _leave_one_out(values):
    """Per model j and example: mean and floored unbiased variance of the OTHER models."""
    n = values.shape[0]
    total, squares = values.sum(0), (values**2).sum(0)
    mu = (total - values) / (n - 1)
    var = (squares - values**2 - (n - 1) * mu**2) / max(n - 2, 1)
    return mu, np.maximum(var, VAR_FLOOR)


def ulira(group, oracles):
    """Per-example likelihood-ratio scores: (positive (n, E), negative (K, E)).

    Positives: each model j of ``group`` (n, E) (trained with the example, then unlearned), scored
    log N(m; in-fit of the group without j) − log N(m; out-fit of all oracles). Negatives: each
    oracle k of ``oracles`` (K, E), scored log N(m; in-fit of the group) − log N(m; out-fit of the
    oracles without k). Needs n ≥ 3 and K ≥ 3.
    """
    group, oracles = np.asarray(group, float), np.asarray(oracles, float)
    mu_in, var_in = _fit(group)
    mu_out, var_out = _fit(oracles)
    mu_in_loo, var_in_loo = _leave_one_out(group)
    mu_out_loo, var_out_loo = _leave_one_out(oracles)
    positive = _log_normal(group, mu_in_loo, var_in_loo) - _log_normal(group, mu_out, var_out)
    negative = _log_normal(oracles, mu_in, var_in) - _log_normal(oracles, mu_out_loo, var_out_loo)
    return positive, negative


def attack_summary(positive, negative, *, identify_fpr: float = 0.05) -> dict:
    """AUC, TPR at 1 % and 5 % FPR over all (example, model) scores, and the fraction of examples
    still *identified*: whose median positive score beats the threshold at ``identify_fpr``."""
    threshold = np.quantile(np.ravel(negative), 1 - identify_fpr)
    return {
        "auc": auc(positive, negative),
        "tpr_at_1pct_fpr": tpr_at_fpr(positive, negative, 0.01),
        "tpr_at_5pct_fpr": tpr_at_fpr(positive, negative, 0.05),
        "identified_frac": float(np.mean(np.median(positive, 0) > threshold)),
    }


# ---------------------------------------------------------------------------------------------
# Stability


def flip_rate(margins) -> float:
    """Mean over examples of the fraction of model PAIRS that predict different classes."""
    hits = (np.asarray(margins) > 0).sum(0)
    n = np.asarray(margins).shape[0]
    return float(np.mean(hits * (n - hits) / (n * (n - 1) / 2)))


def nested_variance(values) -> tuple[float, float]:
    """(between, within) variance components of a (teachers, seeds, ...) array, one-way nested
    random effects (ANOVA estimators, averaged over trailing axes): ``between`` = the spread the
    training seed causes, ``within`` = the unlearning seed's. ``between`` is clipped at 0."""
    values = np.asarray(values, float)
    t, u = values.shape[:2]
    teacher_means = values.mean(1)
    ms_within = values.var(1, ddof=1).mean(0) if u > 1 else np.zeros(values.shape[2:])
    ms_between = u * teacher_means.var(0, ddof=1) if t > 1 else np.zeros(values.shape[2:])
    between = np.maximum((ms_between - ms_within) / u, 0.0)
    return float(np.mean(between)), float(np.mean(ms_within))
