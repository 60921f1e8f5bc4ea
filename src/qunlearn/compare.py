"""Put a results table beside the paper's published numbers (``qunlearn/reference/*.csv``).

Statistics match the paper's plots: mean and population std (ddof = 0) over runs. A cell passes when
``|mean_ours - mean_paper| <= max(0.03, 2 * std_paper)``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np

from qunlearn.errors import QunlearnError

REFERENCE_SWEEPS = {"mnist": "fig2c_mnist_noise_sweep.csv", "xxz": "fig2d_xxz_noise_sweep.csv"}
SWEEP_METRICS = ("val_acc", "train_acc_noisy_labels")


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def reference_rows(name: str) -> list[dict]:
    return read_csv(resources.files("qunlearn") / "reference" / name)


def _stats(values) -> tuple[float, float, int]:
    v = np.asarray(values, float)
    return float(np.mean(v)), float(np.std(v)), len(v)


def critical_alpha(alphas, accs, threshold: float = 0.5) -> float | None:
    """First alpha where the mean validation accuracy crosses ``threshold`` (linear interpolation)."""
    pairs = sorted(zip(alphas, accs, strict=True))
    for (a0, v0), (a1, v1) in zip(pairs, pairs[1:], strict=False):
        if v0 >= threshold > v1:
            return a0 + (v0 - threshold) * (a1 - a0) / (v0 - v1)
    return None


def compare_sweep(results: list[dict]) -> list[dict]:
    """One row per (dataset, model, noise, alpha, metric) present in ``results``, ours vs paper."""
    ours = defaultdict(list)
    for row in results:
        if row["metric"] in SWEEP_METRICS:
            key = (row["dataset"], row["model"], row["noise"], round(float(row["alpha"]), 3),
                   row["metric"])
            ours[key].append(float(row["value"]))
    paper = defaultdict(list)
    for dataset in {k[0] for k in ours}:
        if dataset not in REFERENCE_SWEEPS:
            continue
        for row in reference_rows(REFERENCE_SWEEPS[dataset]):
            for metric in SWEEP_METRICS:
                key = (row["dataset"], row["model"], row["noise"], round(float(row["alpha"]), 3),
                       metric)
                paper[key].append(float(row[metric]))
    table = []
    for key in sorted(ours):
        mean, std, n = _stats(ours[key])
        out = dict(zip(("dataset", "model", "noise", "alpha", "metric"), key, strict=True))
        out |= {"ours_mean": mean, "ours_std": std, "ours_runs": n}
        if key in paper:
            pmean, pstd, pn = _stats(paper[key])
            tol = max(0.03, 2 * pstd)
            out |= {"paper_mean": pmean, "paper_std": pstd, "paper_runs": pn,
                    "diff": mean - pmean, "tolerance": tol, "pass": abs(mean - pmean) <= tol}
        table.append(out)
    return table


def critical_alphas(table: list[dict]) -> list[dict]:
    """alpha_c (val accuracy crossing 0.5) per (dataset, model, noise), ours and the paper's."""
    groups = defaultdict(list)
    for row in table:
        if row["metric"] == "val_acc":
            groups[(row["dataset"], row["model"], row["noise"])].append(row)
    out = []
    for (dataset, model, noise), rows in sorted(groups.items()):
        alphas = [r["alpha"] for r in rows]
        entry = {"dataset": dataset, "model": model, "noise": noise,
                 "alpha_c_ours": critical_alpha(alphas, [r["ours_mean"] for r in rows])}
        if all("paper_mean" in r for r in rows):
            entry["alpha_c_paper"] = critical_alpha(alphas, [r["paper_mean"] for r in rows])
        out.append(entry)
    return out


def format_table(table: list[dict]) -> str:
    lines = [f"{'dataset':7} {'model':5} {'noise':22} {'alpha':>5} {'metric':23} "
             f"{'ours':>14} {'paper':>14} {'diff':>7} pass"]
    for r in table:
        ours = f"{r['ours_mean']:.3f}±{r['ours_std']:.3f}"
        paper = f"{r['paper_mean']:.3f}±{r['paper_std']:.3f}" if "paper_mean" in r else "-"
        diff = f"{r['diff']:+.3f}" if "diff" in r else "-"
        ok = ("yes" if r["pass"] else "NO") if "pass" in r else "-"
        lines.append(f"{r['dataset']:7} {r['model']:5} {r['noise']:22} {r['alpha']:5.2f} "
                     f"{r['metric']:23} {ours:>14} {paper:>14} {diff:>7} {ok}")
    return "\n".join(lines)


def compare_results_dir(results_dir: str | Path) -> dict:
    """Compare ``RESULTS/results.csv``; writes ``compare.csv`` and ``compare.json`` beside it."""
    results_dir = Path(results_dir)
    table_path = results_dir / "results.csv"
    if not table_path.is_file():
        raise QunlearnError(f"no results.csv in {results_dir}: run `qunlearn run CONFIG --out "
                            f"{results_dir}` first")
    manifest = json.loads((results_dir / "manifest.json").read_text())
    kind = manifest["config"]["experiment"]
    if kind not in COMPARATORS:
        raise QunlearnError(f"no published numbers to compare a {kind!r} experiment with")
    return COMPARATORS[kind](results_dir, read_csv(table_path))


def _compare_sweep_dir(results_dir: Path, results: list[dict]) -> dict:
    from qunlearn.experiments.store import atomic_write_text

    table = compare_sweep(results)
    crit = critical_alphas(table)
    fields = ["dataset", "model", "noise", "alpha", "metric", "ours_mean", "ours_std", "ours_runs",
              "paper_mean", "paper_std", "paper_runs", "diff", "tolerance", "pass"]
    lines = [",".join(fields)] + [",".join(str(r.get(f, "")) for f in fields) for r in table]
    atomic_write_text(results_dir / "compare.csv", "\n".join(lines) + "\n")
    compared = [r for r in table if "pass" in r]
    summary = {"cells": len(compared), "passed": sum(r["pass"] for r in compared),
               "critical_alpha": crit}
    atomic_write_text(results_dir / "compare.json", json.dumps(summary, indent=2))
    text = format_table(table) + "\n\n" + f"passed {summary['passed']}/{summary['cells']} cells\n"
    text += "\n".join(
        f"alpha_c {c['dataset']} {c['model']} {c['noise']}: ours "
        f"{_fmt(c['alpha_c_ours'])}, paper {_fmt(c.get('alpha_c_paper'))}" for c in crit)
    return {"table": table, "summary": summary, "text": text}


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


COMPARATORS = {"noise_sweep": _compare_sweep_dir}
