"""The noise sweep (Fig 2) beside the paper: per-cell means within tolerance, the transition
(α_c and its width with bootstrap intervals) and the readouts' own transitions.

Statistics match the paper's plots: mean and population std (ddof = 0) over runs. A cell passes
when ``|mean_ours - mean_paper| <= max(0.03, 2 * std_paper)``."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from qunlearn.atomic import atomic_write_text
from qunlearn.compare.common import (
    _finite,
    _fmt,
    _mean_spread,
    _stats,
    _write_compare_csv,
    not_comparable,
)
from qunlearn.compare.paper import protocol_check, reference_rows

REFERENCE_SWEEPS = {"mnist": "fig2c_mnist_noise_sweep.csv", "xxz": "fig2d_xxz_noise_sweep.csv"}
SWEEP_METRICS = ("val_acc", "train_acc_noisy_labels")


def critical_alpha(alphas, accs, threshold: float = 0.5) -> float | None:
    """First alpha where mean validation accuracy crosses ``threshold`` (linearly interpolated)."""
    pairs = sorted(zip(alphas, accs, strict=True))
    for (a0, v0), (a1, v1) in zip(pairs, pairs[1:], strict=False):
        if v0 >= threshold > v1:
            return a0 + (v0 - threshold) * (a1 - a0) / (v0 - v1)
    return None


def compare_sweep(
    results: list[dict],
    model_kinds: dict | None = None,
    judged: set | None = None,
    with_paper: bool = True,
) -> list[dict]:
    """One row per (dataset, model, noise, alpha, metric) present in ``results``, ours vs paper.

    ``model_kinds`` maps our model table names to the paper's model ("mlp"/"qnn"; default: the
    table name); only tables in ``judged`` (default: all) get a pass mark; ``with_paper=False``
    (other data than the paper's, e.g. MNIST 3 vs 5): ours only."""
    model_kinds = model_kinds or {}
    ours = defaultdict(list)
    for row in results:
        if row["metric"] in SWEEP_METRICS:
            key = (
                row["dataset"],
                row["model"],
                row["noise"],
                round(float(row["alpha"]), 3),
                row["metric"],
            )
            ours[key].append(float(row["value"]))
    paper = defaultdict(list)
    for dataset in {k[0] for k in ours}:
        if dataset not in REFERENCE_SWEEPS or not with_paper:
            continue
        for row in reference_rows(REFERENCE_SWEEPS[dataset]):
            for metric in SWEEP_METRICS:
                key = (
                    row["dataset"],
                    row["model"],
                    row["noise"],
                    round(float(row["alpha"]), 3),
                    metric,
                )
                paper[key].append(float(row[metric]))
    table = []
    for key in sorted(ours):
        finite = _finite(ours[key])
        out = dict(zip(("dataset", "model", "noise", "alpha", "metric"), key, strict=True))
        out["ours_runs"] = len(ours[key])
        out["ours_nonfinite"] = len(ours[key]) - finite.size
        if finite.size:  # diverged (NaN) runs are counted, not averaged
            out["ours_mean"] = float(finite.mean())
        if finite.size >= 2:  # a spread needs two runs
            out["ours_std"] = float(finite.std())
        paper_key = (key[0], model_kinds.get(key[1], key[1]), *key[2:])
        if paper_key in paper:
            pmean, pstd, pn = _stats(paper[paper_key])
            tol = max(0.03, 2 * pstd)
            out |= {"paper_mean": pmean, "paper_std": pstd, "paper_runs": pn, "tolerance": tol}
            if out["ours_nonfinite"]:  # no verdict on the runs that happened to converge
                out["not_comparable"] = not_comparable(
                    f"{out['ours_nonfinite']} of {out['ours_runs']} runs not finite (diverged)"
                )
                table.append(out)
                continue
            out["diff"] = out["ours_mean"] - pmean
            if judged is None or key[1] in judged:
                out["pass"] = abs(out["diff"]) <= tol
        table.append(out)
    return table


def sweep_runs(rows: list[dict], model_kinds: dict | None = None, metric: str = "val_acc") -> dict:
    """{(dataset, model, noise): {alpha: [``metric`` per run]}} from tidy rows (metric, value) or
    the paper's wide rows (a ``val_acc`` column); ``model_kinds`` renames models (ours ->
    paper's)."""
    model_kinds = model_kinds or {}
    out: defaultdict[tuple[str, str, str], defaultdict[float, list[float]]]
    out = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if "metric" in row and row["metric"] != metric:
            continue
        value = row["value"] if "metric" in row else row[metric]
        key = (row["dataset"], model_kinds.get(row["model"], row["model"]), row["noise"])
        out[key][round(float(row["alpha"]), 3)].append(float(value))
    return out


def _transition_fields(runs: dict | None, who: str) -> dict:
    """α_c fitted to the mean curve with bootstrap 95 % intervals (qunlearn.experiments.
    transition), as ``alpha_c_fit_<who>``, ``..._lo/_hi``, ``width_<who>``, ``..._lo/_hi``."""
    from qunlearn.experiments.transition import bootstrap_transition

    if not runs:  # no curve at all (e.g. no paper row): "-" says so
        return {}
    fit = bootstrap_transition(runs)
    if fit is None:
        alphas = sum(bool(_finite(v).size) for v in runs.values())
        why = "did not converge" if alphas >= 4 else f"needs 4+ noise ratios, here {alphas}"
        return {f"fit_{who}_not_comparable": not_comparable(f"the logistic fit {why}")}
    note = {}
    if fit["alpha_c"] is not None and fit["alpha_c_lo"] is None and fit["runs"] < 2:
        note = {f"interval_{who}_not_comparable": not_comparable("1 run per noise ratio")}
    return note | {
        f"alpha_c_fit_{who}": fit["alpha_c"],
        f"alpha_c_fit_{who}_lo": fit["alpha_c_lo"],
        f"alpha_c_fit_{who}_hi": fit["alpha_c_hi"],
        f"width_{who}": fit["width"],
        f"width_{who}_lo": fit["width_lo"],
        f"width_{who}_hi": fit["width_hi"],
        f"crossing_fraction_{who}": fit["crossing_fraction"],
        f"resolved_{who}": fit["resolved"],
    }


def critical_alphas(
    table: list[dict],
    runs: dict | None = None,
    paper_runs: dict | None = None,
    model_kinds: dict | None = None,
) -> list[dict]:
    """alpha_c (val accuracy crossing 0.5) per (dataset, model, noise), ours and the paper's.

    ``alpha_c_ours`` / ``alpha_c_paper`` interpolate the mean curves linearly (the paper's point
    value). With per-run values (``runs`` ours, ``paper_runs`` the paper's, both from
    :func:`sweep_runs`; the paper's keyed by its model kind, ``model_kinds`` maps ours to it) each
    side also gets the logistic fit's α_c and width with bootstrap 95 % intervals."""
    model_kinds = model_kinds or {}
    paper_fits: dict[tuple, dict] = {}
    groups = defaultdict(list)
    for row in table:
        if row["metric"] == "val_acc":
            groups[(row["dataset"], row["model"], row["noise"])].append(row)
    out = []
    for (dataset, model, noise), rows in sorted(groups.items()):
        finite = [r for r in rows if "ours_mean" in r]  # an alpha with only NaN runs: none
        alphas = [r["alpha"] for r in finite]
        entry = {
            "dataset": dataset,
            "model": model,
            "noise": noise,
            "alpha_c_ours": critical_alpha(alphas, [r["ours_mean"] for r in finite]),
        }
        if len(alphas) < 2:
            entry["alpha_c_ours_not_comparable"] = not_comparable(
                f"{len(alphas)} noise ratio(s) with finite runs: a crossing needs 2 or more"
            )
        paper = (paper_runs or {}).get((dataset, model_kinds.get(model, model), noise))
        if paper:  # the paper's own grid, whatever extra alphas we ran
            grid = sorted(paper)
            entry["alpha_c_paper"] = critical_alpha(grid, [np.mean(paper[a]) for a in grid])
        elif all("paper_mean" in r for r in rows):
            entry["alpha_c_paper"] = critical_alpha(alphas, [r["paper_mean"] for r in rows])
        if runs is not None:
            entry |= _transition_fields(runs.get((dataset, model, noise)), "ours")
            paper_key = (dataset, model_kinds.get(model, model), noise)
            if paper_key not in paper_fits:  # one bootstrap per paper curve, not per table
                paper_fits[paper_key] = _transition_fields(paper, "paper")
            entry |= paper_fits[paper_key]
        out.append(entry)
    return out


NO_CROSSING = not_comparable("the fitted curve never crosses 0.5")
"""In place of α_c and width where a fit stays on one side of 0.5 (a poison a model shrugs off):
its width and resolution would mean nothing."""

READOUT_METRIC = re.compile(r"val_acc_(?:shots(?P<shots>\d+)|noise_(?P<noise>[a-z0-9_]+))$")


def readout_transitions(rows: list[dict]) -> list[dict]:
    """α_c and transition width per (dataset, model, noise) and readout, from a sweep's
    ``val_acc_shots<S>`` (``eval_shots``) and ``val_acc_noise_<label>`` (``eval_circuit_noise``)
    metrics, the same trained params read out with S shots or under a circuit-noise model,
    beside the exact ``val_acc``; each with its bootstrap 95 % intervals over runs
    (:func:`qunlearn.experiments.transition.bootstrap_transition`). ``readout``: ``"exact"``,
    ``"S=<S>"`` or ``"noise <label>"``; [] without such metrics."""
    found = {
        m.group(0): m for r in rows if "metric" in r and (m := READOUT_METRIC.match(r["metric"]))
    }
    if not found:
        return []

    def order(metric):  # shots by count, then noise models by name
        m = found[metric]
        return (0, int(m["shots"]), "") if m["shots"] else (1, 0, m["noise"])

    out = []
    for metric in (*sorted(found, key=order), "val_acc"):
        m = found.get(metric)
        readout = (
            "exact" if m is None else f"S={m['shots']}" if m["shots"] else f"noise {m['noise']}"
        )
        for (dataset, model, noise), runs in sorted(sweep_runs(rows, metric=metric).items()):
            out.append(
                {"dataset": dataset, "model": model, "noise": noise, "readout": readout}
                | _transition(runs)
            )
    return out


def _transition(runs: dict | None) -> dict:
    """:func:`_transition_fields` of one curve, unprefixed: ``alpha_c``, ``alpha_c_lo/_hi``,
    ``width``, ``width_lo/_hi``, ``resolved``, ... or ``fit_not_comparable``."""
    fields = _transition_fields(runs, "ours")
    return {k.replace("_fit_ours", "").replace("_ours", ""): v for k, v in fields.items()}


def format_readout_transitions(rows: list[dict]) -> str:
    """One line per (dataset, model, noise, readout): α_c and width with their intervals."""
    lines = [
        "readouts (eval_shots, eval_circuit_noise: the same trained params, read out with S "
        "shots per example or under a circuit-noise model):"
    ]
    width = max(16, *(len(r["readout"]) for r in rows))  # device readouts' names are long
    for r in rows:
        head = f"  {r['dataset']} {r['model']} {r['noise']} {r['readout']:>{width}}:"
        if "fit_not_comparable" in r:
            lines.append(f"{head} fit {r['fit_not_comparable']}")
            continue
        if "alpha_c" in r and r["alpha_c"] is None:  # no crossing: no width either
            lines.append(f"{head} fit {NO_CROSSING}")
            continue
        lines.append(
            f"{head} alpha_c {_fmt(r.get('alpha_c'))}{_interval(r, 'alpha_c')}, width "
            f"{_fmt(r.get('width'))}{_interval(r, 'width')}"
        )
    return "\n".join(lines)


def format_critical(crit: list[dict]) -> str:
    """One line per (dataset, model, noise): interpolated α_c, then the fit with 95 % intervals."""

    def fit(c, who):
        if f"fit_{who}_not_comparable" in c:
            return f" (fit {c[f'fit_{who}_not_comparable']})"
        if f"alpha_c_fit_{who}" not in c:
            return ""
        if c[f"alpha_c_fit_{who}"] is None:  # no crossing: its width and resolution mean nothing
            return f" (fit {NO_CROSSING})"
        ci = _interval(c, f"alpha_c_fit_{who}")
        if f"interval_{who}_not_comparable" in c:
            ci = f" [interval {c[f'interval_{who}_not_comparable']}]"
        width = _interval(c, f"width_{who}")
        sharp = "" if c.get(f"resolved_{who}", True) else ", sharper than the grid: refine it"
        return (
            f" (fit {_fmt(c[f'alpha_c_fit_{who}'])}{ci}, width {_fmt(c[f'width_{who}'])}{width}"
            f"{sharp})"
        )

    def ours(c):
        if "alpha_c_ours_not_comparable" in c:
            return c["alpha_c_ours_not_comparable"]
        if c["alpha_c_ours"] is None:
            return f"- ({not_comparable('the mean curve never crosses 0.5')})"
        return _fmt(c["alpha_c_ours"])

    return "\n".join(
        f"alpha_c {c['dataset']} {c['model']} {c['noise']}: ours {ours(c)}"
        f"{fit(c, 'ours')}, paper {_fmt(c.get('alpha_c_paper'))}{fit(c, 'paper')}"
        for c in crit
    )


def _interval(c: dict, name: str) -> str:
    lo, hi = c.get(f"{name}_lo"), c.get(f"{name}_hi")
    return "" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]"


def format_table(table: list[dict]) -> str:
    lines = [
        f"{'dataset':7} {'model':5} {'noise':22} {'alpha':>5} {'metric':23} "
        f"{'ours':>14} {'paper':>14} {'diff':>7} pass"
    ]
    for r in table:
        ours = "-"
        if "ours_mean" in r:
            ours = _mean_spread(r["ours_mean"], r.get("ours_std"), "run")
        paper = f"{r['paper_mean']:.3f}±{r['paper_std']:.3f}" if "paper_mean" in r else "-"
        diff = f"{r['diff']:+.3f}" if "diff" in r else "-"
        ok = ("yes" if r["pass"] else "NO") if "pass" in r else r.get("not_comparable", "-")
        if ok == "-" and r["ours_nonfinite"]:
            ok = f"{r['ours_nonfinite']} of {r['ours_runs']} runs not finite, left out"
        lines.append(
            f"{r['dataset']:7} {r['model']:5} {r['noise']:22} {r['alpha']:5.2f} "
            f"{r['metric']:23} {ours:>14} {paper:>14} {diff:>7} {ok}"
        )
    return "\n".join(lines)


def _compare_sweep_dir(results_dir: Path, results: list[dict], manifest: dict, tables=None) -> dict:
    check = protocol_check(manifest["config"])
    judged = {t for t, d in check["differences"].items() if not d}
    kinds = {t: k for t, k in check["kinds"].items() if k}
    table = compare_sweep(results, kinds, judged, with_paper=check["same_data"])
    paper_runs: dict[tuple[str, str, str], dict[float, list[float]]] = {}
    for dataset in {r["dataset"] for r in results} & set(REFERENCE_SWEEPS):
        if check["same_data"]:  # other data (e.g. MNIST 3 vs 5): the paper's curve is not its
            paper_runs |= sweep_runs(reference_rows(REFERENCE_SWEEPS[dataset]))
    crit = critical_alphas(table, sweep_runs(results), paper_runs, kinds)
    fields = [
        "dataset",
        "model",
        "noise",
        "alpha",
        "metric",
        "ours_mean",
        "ours_std",
        "ours_runs",
        "paper_mean",
        "paper_std",
        "paper_runs",
        "diff",
        "tolerance",
        "pass",
        "ours_nonfinite",
        "not_comparable",
    ]
    _write_compare_csv(results_dir / "compare.csv", table, fields)
    compared = [r for r in table if "pass" in r]
    summary = {
        "cells": len(compared),
        "passed": sum(r["pass"] for r in compared),
        "not_comparable": sum("not_comparable" in r for r in table),
        "critical_alpha": crit,
    }
    readouts = readout_transitions(results)
    if readouts:
        summary["readouts"] = readouts
    atomic_write_text(results_dir / "compare.json", json.dumps(summary, indent=2))
    text = format_table(table) + "\n\n" + f"passed {summary['passed']}/{summary['cells']} cells"
    if summary["not_comparable"]:
        text += f"; {summary['not_comparable']} not comparable (runs not finite)"
    text += "\n"
    text += (
        "alpha_c: mean val acc crossing 0.5, linearly interpolated (the paper's point value); "
        "fit: the same crossing of a logistic fit, bootstrap 95 % interval over runs per alpha "
        "[lo, hi]; width: its 90 %..10 % drop\n"
    )
    text += format_critical(crit)
    if readouts:
        text += "\n\n" + format_readout_transitions(readouts)
    return {"table": table, "summary": summary, "text": text}
