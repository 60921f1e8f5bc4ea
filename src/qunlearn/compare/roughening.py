"""Roughening (§5): Hessian-trace ratios beside the reference notebook's."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from qunlearn.compare.common import (
    RESAMPLES,
    _finite,
    _mean_spread,
    _write_compare_csv,
    not_comparable,
)

# Published values of the reference notebook (protocol §5): ratio = noisy trace / mean clean trace,
# mean ± std over 5 seeds.
ROUGHENING_REFERENCE = {
    ("qnn", 0.2): (0.961, 0.075),
    ("qnn", 0.3): (0.737, 0.057),
    ("qnn", 0.4): (0.508, 0.045),
    ("mlp", 0.2): (88.5, 61.2),
    ("mlp", 0.3): (94.7, 44.1),
    ("mlp", 0.4): (179.4, 63.7),
}
ROUGHENING_CLEAN_MEAN = {"qnn": 6.19, "mlp": 0.194}


NOTEBOOK_COLLAPSE = (0.25, 0.01)  # the notebook drops traces with |trace - 0.25| < 0.01


def ratio_intervals(noisy, clean, *, same_seeds: bool, resamples: int = RESAMPLES, seed=0):
    """Bootstrap 95 % intervals of the median and mean trace ratio noisy / mean(clean): seeds are
    resampled with replacement, the clean seeds too (the denominator is an estimate); for the
    clean row itself (``same_seeds``) one resample serves both. Returns {median_lo, median_hi,
    mean_lo, mean_hi}; {} with fewer than 2 seeds."""
    noisy, clean = np.asarray(noisy, float), np.asarray(clean, float)
    if len(noisy) < 2 or len(clean) < 2:
        return {}
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(noisy), (resamples, len(noisy)))
    picked_clean = clean[pick] if same_seeds else clean[rng.integers(0, len(clean), pick.shape)]
    ratios = noisy[pick] / picked_clean.mean(axis=1, keepdims=True)
    out: dict[str, float] = {}
    for name, stat in (("median", np.median), ("mean", np.mean)):
        lo, hi = np.percentile(stat(ratios, axis=1), [2.5, 97.5])
        out |= {f"{name}_lo": float(lo), f"{name}_hi": float(hi)}
    return out


def _kept_by_notebook_filter(values: np.ndarray) -> np.ndarray:
    centre, tol = NOTEBOOK_COLLAPSE
    return ~(np.abs(values - centre) < tol)


def _clean_baseline(traces: dict, model: str) -> tuple[np.ndarray, str | None]:
    """(finite clean traces of ``model``, why no ratio can be formed or None): a ratio needs a
    clean run (noise ratio 0) with a finite, positive mean trace."""
    if (model, 0.0) not in traces:
        return np.array([]), "no clean run (noise ratio 0) to divide by: add 0.0 to noise_ratios"
    clean = _finite(list(traces[(model, 0.0)].values()))
    if not clean.size:
        return clean, "no finite clean trace (noise ratio 0) to divide by"
    if clean.mean() <= 0:
        return clean, (
            f"the clean mean trace {clean.mean():.3g} is not positive: a ratio to it has no "
            "direction"
        )
    return clean, None


def compare_roughening(results: list[dict], model_kinds: dict[str, str]) -> list[dict]:
    """Trace ratios per (model, noise ratio) against the notebook's. Collapsed runs stay in the
    mean and are counted; ``*_excl_collapsed`` repeats the statistics without them. Each row has
    the per-seed ``ratios``, their median, and bootstrap 95 % intervals of median and mean
    (:func:`ratio_intervals`); ``*_notebook_filter`` repeats mean and median after the notebook's
    own filter (every trace, clean ones included, with |trace - 0.25| < 0.01 dropped).

    Seeds whose trace is not finite (diverged) are counted in ``nonfinite`` and left out. A row
    without a usable clean baseline or without a finite trace has no ratio, no spread and no
    direction, only ``not_comparable`` (why); ``ratio_std`` needs two seeds."""
    traces: defaultdict[tuple[str, float], dict[str, float]] = defaultdict(dict)  # by seed
    collapsed: defaultdict[tuple[str, float], dict[str, bool]] = defaultdict(dict)
    for r in results:
        key = (r["model"], round(float(r["noise_ratio"]), 3))
        if r["metric"] == "trace":
            traces[key][r["seed"]] = float(r["value"])
        elif r["metric"] == "collapsed":
            collapsed[key][r["seed"]] = float(r["value"]) > 0.5
    table = []
    for model in sorted({k[0] for k in traces}):
        clean, missing = _clean_baseline(traces, model)
        kind = "qnn" if model_kinds.get(model, model).startswith("qnn") else "mlp"
        for (m, ratio), by_seed in sorted(traces.items()):
            if m != model:
                continue
            seeds = sorted(by_seed)
            raw = np.array([by_seed[s] for s in seeds])
            finite = np.isfinite(raw)
            flags = np.array([collapsed[(m, ratio)].get(s, False) for s in seeds])[finite]
            raw = raw[finite]
            row: dict[str, Any] = {
                "model": model,
                "noise_ratio": ratio,
                "runs": len(seeds),
                "nonfinite": int((~finite).sum()),
                "collapsed": int(flags.sum()),
                "paper_clean_trace_mean": ROUGHENING_CLEAN_MEAN[kind],
            }
            if (kind, ratio) in ROUGHENING_REFERENCE:
                pm, ps = ROUGHENING_REFERENCE[(kind, ratio)]
                row |= {"paper_ratio_mean": pm, "paper_ratio_std": ps}
            why = missing or (None if raw.size else f"no finite trace at noise ratio {ratio}")
            if why is not None:
                table.append(row | {"not_comparable": not_comparable(why)})
                continue
            vals = raw / clean.mean()
            row |= {"clean_trace_mean": float(clean.mean()), "ratio_mean": float(vals.mean())}
            if len(vals) >= 2:  # a spread needs two seeds
                row["ratio_std"] = float(vals.std())
            if (~flags).any():
                row["ratio_mean_excl_collapsed"] = float(vals[~flags].mean())
            row["ratios"] = [float(v) for v in vals]
            row["ratio_median"] = float(np.median(vals))
            bounds = ratio_intervals(raw, clean, same_seeds=ratio == 0.0)
            row |= {f"ratio_{k}": v for k, v in bounds.items()}
            kept_clean = clean[_kept_by_notebook_filter(clean)]
            kept = raw[_kept_by_notebook_filter(raw)]
            row["dropped_notebook_filter"] = int(len(raw) - len(kept))
            if kept.size and kept_clean.size and kept_clean.mean() > 0:
                filtered = kept / kept_clean.mean()
                row["ratio_mean_notebook_filter"] = float(filtered.mean())
                row["ratio_median_notebook_filter"] = float(np.median(filtered))
            if "paper_ratio_mean" in row:
                pm = row["paper_ratio_mean"]
                row["same_direction"] = (row["ratio_mean"] - 1) * (pm - 1) > 0
                if row["ratio_mean"] > 0:  # an order of magnitude of a negative ratio: none
                    row["same_order_of_magnitude"] = bool(abs(np.log10(row["ratio_mean"] / pm)) < 1)
            table.append(row)
    return table


def _compare_roughening_dir(
    results_dir: Path, results: list[dict], manifest: dict, tables=None
) -> dict:
    kinds = {name: spec["model"] for name, spec in manifest["config"]["models"].items()}
    table = compare_roughening(results, kinds)
    fields = [
        "model",
        "noise_ratio",
        "ratio_mean",
        "ratio_std",
        "runs",
        "collapsed",
        "ratio_mean_excl_collapsed",
        "ratio_median",
        "ratio_median_lo",
        "ratio_median_hi",
        "ratio_mean_lo",
        "ratio_mean_hi",
        "dropped_notebook_filter",
        "ratio_mean_notebook_filter",
        "ratio_median_notebook_filter",
        "clean_trace_mean",
        "paper_ratio_mean",
        "paper_ratio_std",
        "paper_clean_trace_mean",
        "same_direction",
        "same_order_of_magnitude",
        "nonfinite",
        "not_comparable",
    ]
    _write_compare_csv(results_dir / "compare.csv", table, fields)
    text = [
        f"{'model':6} {'r':>4} {'ratio (ours)':>16} {'ratio (paper)':>16} {'collapsed':>9} "
        f"{'clean trace ours/paper':>24} direction"
    ]
    for r in table:
        paper = (
            f"{r['paper_ratio_mean']:.3f}±{r['paper_ratio_std']:.3f}"
            if "paper_ratio_mean" in r
            else "-"
        )
        if "not_comparable" in r:
            text.append(f"{r['model']:6} {r['noise_ratio']:4.2f} {r['not_comparable']}")
            continue
        clean = f"{r['clean_trace_mean']:.3f}/{r['paper_clean_trace_mean']:.3f}"
        direction: dict[bool | None, str] = {True: "same", False: "OPPOSITE"}
        same = direction.get(r.get("same_direction"), "-")
        text.append(
            f"{r['model']:6} {r['noise_ratio']:4.2f} "
            f"{_mean_spread(r['ratio_mean'], r.get('ratio_std'), 'seed'):>16} "
            f"{paper:>16} {r['collapsed']:>5}/{r['runs']:<3} {clean:>24} {same}"
        )
    text.append(
        "\nper-seed spread: median and mean trace ratio with bootstrap 95 % intervals (seeds "
        "resampled, clean seeds too); notebook filter: traces with |trace - 0.25| < 0.01 dropped "
        "(clean ones too), as the reference notebook does"
    )
    for r in table:
        if "not_comparable" in r:
            continue
        paper = f"{r['paper_ratio_mean']:.3f}" if "paper_ratio_mean" in r else "-"
        filtered = (
            f"mean {r['ratio_mean_notebook_filter']:.3f}, median "
            f"{r['ratio_median_notebook_filter']:.3f}"
            if "ratio_mean_notebook_filter" in r
            else "nothing left"
        )
        text.append(
            f"{r['model']:6} {r['noise_ratio']:4.2f} median {r['ratio_median']:.3f}"
            f"{_ci(r, 'ratio_median')}, mean {r['ratio_mean']:.3f}{_ci(r, 'ratio_mean')} "
            f"(paper mean {paper}, {r['runs'] - r['nonfinite']} seeds"
            + (f", {r['nonfinite']} not finite, left out" if r["nonfinite"] else "")
            + f"); notebook filter drops {r['dropped_notebook_filter']}: {filtered}"
        )
    return {"table": table, "text": "\n".join(text)}


def _ci(row: dict, name: str) -> str:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    return "" if lo is None else f" [{lo:.3f}, {hi:.3f}]"
