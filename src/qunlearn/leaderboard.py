"""The unlearning leaderboard of an evaluation: per forget request, model and method, forget
quality (the KLoM residual, the U-LiRA TPR at 1 % FPR), utility (validation accuracy) and cost
(wall time relative to retrain), each with a 95 % bootstrap interval over the teachers, and a
rank with its own interval.

The statistics and their resamples come from the evaluation's tables (``results.csv`` and
``bootstrap.csv``, see :func:`qunlearn.experiments.evaluation.bootstrap_groups`); this module
only combines them, so it reads and imports nothing of a run. The rank rule: methods (retrain
included) are ranked by the point value of the residual, lower = closer to the oracles, equal
values sharing the best rank; the same ranking within every bootstrap resample gives the rank's
95 % interval. Two methods whose rank intervals overlap are not told apart by these teachers.

The intervals are percentile intervals of the resamples *re-centred on the point value*
(:func:`bootstrap_interval`): a resample repeats teachers, so its estimators see fewer distinct
models than the point value did, and the histogram KL (and U-LiRA's leave-one-out fit, which keeps
a repeated model's copy) rise with that alone: retrain's forget KLoM P50 on Fig 3a's MLP is .244
and every one of its 1000 resamples lies above it (mean .389). That shift is the resampling's, not
the estimator's bias (the point is defined at T distinct models, as the oracle halves' null is),
so the intervals keep the resamples' spread and drop their shift; BC/BCa or basic intervals would
read the shift as the estimator's bias and move the interval further from the point.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from qunlearn.surgery import removal_epsilon

LEVEL = 0.95
REFERENCE_GROUPS = (
    "oracle",
    "oracle_half",
    "oracle_null",
    "clean_oracle",
    "teacher",
)  # never ranked
DEFAULT_FORGET = "poison"  # the forget request of an evaluation that names none
# leaderboard column -> (split, metric) of its point value in results.csv (residual: compare's)
STATISTICS = {
    "resid": ("forget", "residual"),
    "ulira_tpr_at_1pct_fpr": ("forget", "ulira_tpr_at_1pct_fpr"),
    "val_acc": ("val", "acc_true_mean"),
}
# a statistic's resamples in bootstrap.csv (resid is formed from klom_p50)
RESAMPLED = {"ulira_tpr_at_1pct_fpr": "ulira_tpr_at_1pct_fpr", "val_acc": "acc_true_mean"}
BOUNDS = {"ulira_tpr_at_1pct_fpr": (0.0, 1.0), "val_acc": (0.0, 1.0)}  # resid is unbounded
COLUMNS = (
    "forget",
    "model",
    "method",
    "rank",
    "rank_lo",
    "rank_hi",
    *(f"{s}{end}" for s in STATISTICS for end in ("", "_lo", "_hi")),
    "cost",
    "cost_includes_compile",
    "seconds",
    "retrain_seconds",
    "resamples",
    "certificate",
    "epsilon",
    "delta",
)
CERTIFIED = "certified_newton"  # the method whose rows carry a certificate
# δ of its (ε, δ): below 1/n for every data set here, as differential privacy asks
CERTIFIED_DELTA = 1e-5


def percentile_interval(values, level: float = LEVEL) -> tuple[float, float] | None:
    """The central ``level`` percentile interval of bootstrap ``values``; None when fewer than
    ``level`` of them are finite (the interval would hide how often the statistic is undefined)."""
    values = np.asarray(values, float)
    finite = values[np.isfinite(values)]
    if not values.size or finite.size < level * values.size:
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def recentred(point: float, values) -> np.ndarray:
    """Bootstrap ``values`` shifted so that their median is ``point``: the resamples' spread
    around the point, without the shift that repeating teachers gives every resample (see the
    module docstring); NaN resamples stay NaN."""
    values = np.asarray(values, float)
    finite = values[np.isfinite(values)]
    return values - (np.median(finite) - point) if finite.size else values


def bootstrap_interval(
    point: float, values, level: float = LEVEL, bounds: tuple[float, float] | None = None
) -> tuple[float, float] | None:
    """The central ``level`` percentile interval of the resamples re-centred on ``point``
    (:func:`recentred`), clipped to the statistic's ``bounds`` (an accuracy's [0, 1]); it always
    holds the point. None as :func:`percentile_interval`."""
    found = percentile_interval(recentred(point, values), level)
    if found is None or bounds is None:
        return found
    return float(np.clip(found[0], *bounds)), float(np.clip(found[1], *bounds))


def ranks(values) -> np.ndarray:
    """Ranks along the last axis, 1 = lowest value; equal values share the best of their ranks
    (1, 1, 3); a NaN ranks below every number."""
    values = np.where(np.isnan(values), np.inf, np.asarray(values, float))
    return 1 + (values[..., None, :] < values[..., :, None]).sum(-1)


def rank_table(point: dict, resampled: dict | None, level: float = LEVEL) -> dict:
    """{name: (rank, lo, hi)} of the names with a finite ``point`` value (lower is better):
    rank by the point values, [lo, hi] the central ``level`` interval of the ranks within each
    resample (``resampled``: {name: values per resample}, aligned; None: no interval)."""
    names = [n for n, v in point.items() if v is not None and math.isfinite(v)]
    if not names:
        return {}
    at = ranks(np.array([point[n] for n in names]))
    out: dict[str, tuple[int, int | None, int | None]] = {
        n: (int(r), None, None) for n, r in zip(names, at, strict=True)
    }
    if resampled is None or any(n not in resampled for n in names):
        return out
    per = ranks(np.stack([resampled[n] for n in names], axis=1))  # (resamples, names)
    tail = 100 * (1 - level) / 2
    for j, n in enumerate(names):
        lo = np.percentile(per[:, j], tail, method="lower")
        hi = np.percentile(per[:, j], 100 - tail, method="higher")
        out[n] = (out[n][0], int(lo), int(hi))
    return out


def residual(klom: dict) -> dict:
    """{group: residual per resample} from {group: forget KLoM P50 per resample}: (group − retrain)
    / (teacher − retrain), resample by resample (one draw of teachers for all); {} without
    both ends. A resample where teacher and retrain coincide gives NaN."""
    if "retrain" not in klom or "teacher" not in klom:
        return {}
    ref, span = klom["retrain"], klom["teacher"] - klom["retrain"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {g: np.where(span != 0, (v - ref) / span, np.nan) for g, v in klom.items()}


def resamples_by_group(rows: list[dict], forget_of) -> dict:
    """{(forget, model, group): {metric: values ordered by resample}} of ``bootstrap.csv`` rows
    (strings, as read); ``forget_of(row)`` names a row's forget request."""
    found: defaultdict = defaultdict(list)
    for r in rows:
        found[(forget_of(r), r["model"], r["group"])].append(r)
    out = {}
    for key, group_rows in found.items():
        group_rows.sort(key=lambda r: int(r["resample"]))
        metrics = [k for k in group_rows[0] if k not in ("dataset", "model", "group", "resample")]
        out[key] = {
            m: np.array([float(r[m]) if r[m] != "" else np.nan for r in group_rows])
            for m in metrics
            if m != "forget"
        }
    return out


def _value(v) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _cost(seconds: dict, model: str, group: str) -> dict:
    """Wall time of the group's runs relative to retrain's; None where either is unrecorded."""
    own, ref = seconds.get((model, group)), seconds.get((model, "retrain"))
    if own is None or ref is None or not ref[0] > 0:
        return {
            "cost": None,
            "seconds": None if own is None else own[0],
            "retrain_seconds": None if ref is None else ref[0],
        }
    return {
        "cost": own[0] / ref[0],
        "cost_includes_compile": bool(own[1] or ref[1]),
        "seconds": own[0],
        "retrain_seconds": ref[0],
    }


def certificate(rows: list[dict], gap: str | None) -> dict:
    """The certificate columns of a certified_newton row: "uncertified" where the loss allows
    none (``gap``, :func:`qunlearn.surgery.certificate_gap` of the run's model), else ε at
    δ = :data:`CERTIFIED_DELTA` of the worst of its teachers (``rows``: certificate.csv's, one
    per teacher; :func:`qunlearn.surgery.removal_epsilon`); "n/a" for a run made before they
    were recorded."""
    if gap is not None:
        return {"certificate": "uncertified"}
    found = [r for r in rows if str(r.get("certified")) == "True"]
    if not found:
        return {"certificate": "n/a"}
    epsilon = max(
        removal_epsilon(
            float(r["gradient_norm"]), float(r["l2"]), float(r["sigma"]), CERTIFIED_DELTA
        )
        for r in found
    )
    return {"certificate": "certified", "epsilon": epsilon, "delta": CERTIFIED_DELTA}


def leaderboard_rows(
    scores: dict,
    resampled: dict,
    seconds: dict,
    *,
    forget: str = DEFAULT_FORGET,
    certificates: dict | None = None,
) -> list[dict]:
    """The rows of one forget request, per model: every method ranked, then the teacher (no
    unlearning) as an unranked reference. ``scores``: {(model, group): {(split, metric): value}}
    (:func:`qunlearn.compare.evaluation_scores`); ``resampled``: {(model, group): {metric:
    values per resample}} (empty: point values only); ``seconds``: {(model, group): (wall
    seconds of its cell, whether they include a compilation)}; ``certificates``: {(model,
    group): the :func:`certificate` columns of its row}."""
    rows = []
    for model in sorted({m for m, _ in scores}):
        groups = [g for (m, g) in scores if m == model and g not in REFERENCE_GROUPS[:3]]
        boot = {g: resampled[(model, g)] for g in groups if (model, g) in resampled}
        # every method and the teacher resampled, or no interval (a clean reference has none)
        needed = [g for g in groups if g not in REFERENCE_GROUPS or g == "teacher"]
        draws = dict(boot) if all(g in boot for g in needed) else {}
        resid = residual({g: d["klom_p50"] for g, d in draws.items()})
        per_stat = {"resid": resid} | {
            s: {g: d[m] for g, d in draws.items() if m in d} for s, m in RESAMPLED.items()
        }
        ranked = [g for g in groups if g not in REFERENCE_GROUPS]
        point = {g: scores[(model, g)].get(STATISTICS["resid"]) for g in ranked}
        # the resamples' own ranking, each method's residuals re-centred on its point value
        shifted = {
            g: recentred(point[g], resid[g])
            for g in ranked
            if g in resid and _value(point[g]) is not None
        }
        order = rank_table(point, shifted if resid else None)
        n = len(next(iter(draws.values()))["klom_p50"]) if draws else 0
        references = [g for g in ("clean_oracle", "teacher") if g in groups]  # unranked
        for g in sorted(ranked, key=lambda g: (order.get(g, (math.inf,))[0], g)) + references:
            rank, lo, hi = order.get(g, (None, None, None))
            row = {"forget": forget, "model": model, "method": g}
            row |= {"rank": rank, "rank_lo": lo, "rank_hi": hi}
            for stat, key in STATISTICS.items():
                value = _value(scores[(model, g)].get(key))
                bounds = (
                    bootstrap_interval(value, per_stat[stat][g], bounds=BOUNDS.get(stat))
                    if g in per_stat[stat] and value is not None
                    else None
                )
                row[stat] = value
                row[f"{stat}_lo"], row[f"{stat}_hi"] = (
                    bounds if bounds and value is not None else (None, None)
                )
            row |= _cost(seconds, model, g) if g in ranked else {"cost": None}
            rows.append(row | {"resamples": n or None} | (certificates or {}).get((model, g), {}))
    return rows


def _interval(row: dict, stat: str, fmt: str) -> str:
    value, lo, hi = row.get(stat), row.get(f"{stat}_lo"), row.get(f"{stat}_hi")
    if value is None:
        return "n/a"
    text = format(value, fmt)
    return text if lo is None else f"{text} [{lo:{fmt}}, {hi:{fmt}}]"


def _certificate_text(row: dict) -> str:
    if row["certificate"] == "certified":
        return f"(ε, δ) = ({row['epsilon']:.3g}, {row['delta']:.0e})"
    return row["certificate"]


def format_leaderboard(rows: list[dict]) -> str:
    """The leaderboard as text, one block per forget request."""
    lines = []
    for forget in dict.fromkeys(r["forget"] for r in rows):
        lines.append(f"leaderboard, forget request {forget!r}:")
        lines.append(
            f"{'model':6} {'method':17} {'rank':>11}  {'KLoM resid':22} {'U-LiRA TPR@1%':21} "
            f"{'val acc':21} cost"
        )
        for r in (r for r in rows if r["forget"] == forget):
            rank = "-" if r["rank"] is None else str(r["rank"])
            if r["rank_lo"] is not None:
                rank += f" [{r['rank_lo']}, {r['rank_hi']}]"
            cost = "n/a" if r["cost"] is None else f"{r['cost']:.2f}"
            cost += "*" if r.get("cost_includes_compile") else ""
            cost += f"  {_certificate_text(r)}" if r.get("certificate") else ""
            lines.append(
                f"{r['model']:6} {r['method']:17} {rank:>11}  {_interval(r, 'resid', '+.2f'):22} "
                f"{_interval(r, 'ulira_tpr_at_1pct_fpr', '.3f'):21} "
                f"{_interval(r, 'val_acc', '.3f'):21} {cost}"
            )
    resamples = {r["resamples"] for r in rows} - {None}
    lines.append(
        "rank: by the KLoM residual (0 = as close to the oracles as fresh oracles, 1 = no "
        "unlearning), ties share a rank; [ ]: 95 % bootstrap intervals over the teachers, "
        "re-centred on the point value"
        + (f" ({', '.join(map(str, sorted(resamples)))} resamples)" if resamples else "")
        + ", the rank's from ranking every resample; cost: wall time of the method's runs / "
        "retrain's (* = either includes a compilation; n/a = not recorded)"
    )
    if any(r.get("certificate") for r in rows):
        lines.append(
            f"{CERTIFIED}: (ε, δ) of certified removal (Guo et al. 2020; its noise on the weights, "
            "against retraining to the retain loss's optimum plus the same noise; the worst "
            "teacher's), where the loss is strongly convex (logistic regression with l2 > 0); "
            "else uncertified"
        )
    if any(r["rank"] is not None and r["rank_lo"] is None for r in rows):
        lines.append(
            "no bootstrap resamples (a run made before the leaderboard existed): point values "
            "and ranks only; a new run into a fresh --out gives the intervals"
        )
    return "\n".join(lines)
