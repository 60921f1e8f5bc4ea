"""Fig 3: unlearning trajectories beside the paper's."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from qunlearn.atomic import atomic_write_text
from qunlearn.compare.common import (
    _finite,
    _mean_spread,
    _write_compare_csv,
    mean_interval,
    not_comparable,
)
from qunlearn.compare.paper import protocol_check, reference_rows, request_line

REFERENCE_UNLEARNING = {
    ("mnist", "mlp"): "fig3a_mnist_mlp_unlearning.csv",
    ("mnist", "qnn"): "fig3a_mnist_qnn_unlearning.csv",
    ("xxz", "mlp"): "fig3b_xxz_mlp_unlearning.csv",
    ("xxz", "qnn"): "fig3b_xxz_qnn_unlearning.csv",
}
PAPER_METHODS = ("retrain", "finetune", "scrub", "gradient_ascent")
FINAL_EPOCH = 49  # the paper logs at the START of each epoch: its last point is after 49 epochs
FINAL_TOL, START_TOL = 0.04, 0.03
ORDER_GAP = 0.02  # paper methods closer than this count as tied when checking the ordering
CURVE_METRICS = ("val_acc", "forget_frac_poisoned_label")


def _curves(rows, metric: str) -> dict:
    """{key: {epoch: [values over runs]}} with key = (dataset, model, method)."""
    out: defaultdict[tuple[str, str, str], defaultdict[int, list[float]]]
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[(r["dataset"], r["model"], r["method"])][int(r["epoch"])].append(float(r[metric]))
    return out


def diverged_as_nan(results: list[dict]) -> list[dict]:
    """``results`` with the metrics of a run at an epoch whose loss is not finite set to NaN: the
    accuracy of NaN parameters is a number, but not a measurement."""
    bad = {
        (r["dataset"], r["model"], r["method"], r["run"], r["epoch"])
        for r in results
        if r["metric"] == "loss" and not np.isfinite(float(r["value"]))
    }
    if not bad:
        return results
    return [
        r | {"value": "nan"}
        if (r["dataset"], r["model"], r["method"], r["run"], r["epoch"]) in bad
        else r
        for r in results
    ]


def compare_unlearning(
    results: list[dict], model_kinds: dict[str, str], judged: set | None = None
) -> dict:
    """Our Fig 3 rows (tidy) against the paper's, per (dataset, model, method).

    ``model_kinds`` maps our model names to "mlp" / "qnn" (which reference file). Returns
    {"table": [...], "ordering": [...]}: final (epoch 49) and starting (epoch 0) val acc, mean ± std
    (ddof 0; the std needs two runs), the mean absolute difference of the mean val-acc curves over
    epochs 0..49, and whether the methods rank the same (pairs the paper separates by more than
    ORDER_GAP; the ordering needs two of the paper's methods). Only models in ``judged`` (default:
    all) are set beside the paper; the others report their own last logged epoch as "final". Runs
    whose loss is not finite (diverged) are left out of every statistic and counted; a method with
    any gets no pass mark but ``not_comparable`` (why).
    """
    results = diverged_as_nan(results)
    ours: dict[str, defaultdict[tuple[str, str, str], defaultdict[int, list[float]]]]
    ours = {m: defaultdict(lambda: defaultdict(list)) for m in CURVE_METRICS}
    variants = {}
    for r in results:
        if r["metric"] in CURVE_METRICS:
            key = (r["dataset"], r["model"], r["method"])
            ours[r["metric"]][key][int(r["epoch"])].append(float(r["value"]))
            variants[key] = r["variant"]
    paper: dict[str, dict[tuple[str, str, str], defaultdict[int, list[float]]]]
    paper = {m: {} for m in CURVE_METRICS}
    for dataset, model in {(k[0], k[1]) for k in variants}:
        name = REFERENCE_UNLEARNING.get((dataset, model_kinds.get(model, model)))
        if name is not None:
            ref = [r | {"model": model} for r in reference_rows(name)]  # under our model name
            for m in CURVE_METRICS:
                paper[m].update(_curves(ref, m))
    table = []
    for key in sorted(variants, key=lambda k: (k[0], k[1], _method_rank(k[2]))):
        val = ours["val_acc"][key]
        epochs = sorted(e for e in val if e <= FINAL_EPOCH)
        final_epoch = FINAL_EPOCH if FINAL_EPOCH in val else epochs[-1]
        out = dict(zip(("dataset", "model", "method"), key, strict=True))
        out["variant"] = variants[key]
        out |= _pair("final", val[final_epoch])
        out |= {f"final_ours_{k}": v for k, v in mean_interval(_finite(val[final_epoch])).items()}
        out |= _pair("start", val[0])
        forget = _finite(ours["forget_frac_poisoned_label"][key][final_epoch])
        if forget.size:
            out["forget_final_ours"] = float(forget.mean())
        out["epochs"] = len(epochs)
        out["final_epoch"] = final_epoch
        out["nonfinite_runs"] = len(val[final_epoch]) - _finite(val[final_epoch]).size
        comparable = (
            key[2] in PAPER_METHODS
            and variants[key] == "reference"
            and (judged is None or key[1] in judged)
        )
        if comparable and key in paper["val_acc"]:
            pval = paper["val_acc"][key]
            out |= _pair("final", pval[FINAL_EPOCH], "paper")
            out |= _pair("start", pval[0], "paper")
            pforget = paper["forget_frac_poisoned_label"][key]
            out["forget_final_paper"] = float(np.mean(pforget[FINAL_EPOCH]))
            diverged = out["nonfinite_runs"] or "start_ours" not in out
            if diverged:  # no verdict on the runs that happened to converge
                out["not_comparable"] = not_comparable(
                    f"{out['nonfinite_runs']} of {out['final_ours_runs']} runs not finite "
                    "(diverged)"
                )
                table.append(out)
                continue
            out["final_diff"] = out["final_ours"] - out["final_paper"]
            out["final_pass"] = abs(out["final_diff"]) <= FINAL_TOL
            out["start_diff"] = out["start_ours"] - out["start_paper"]
            # retrain starts from a fresh initialisation: its start is a draw, not a checkpoint
            out["start_pass"] = None if key[2] == "retrain" else abs(out["start_diff"]) <= START_TOL
            common = [e for e in epochs if e in pval and _finite(val[e]).size]
            out["curve_mad"] = float(
                np.mean([abs(np.mean(_finite(val[e])) - np.mean(pval[e])) for e in common])
            )
        table.append(out)
    return {"table": table, "ordering": _orderings(table)}


def _method_rank(method: str) -> tuple:
    if method in PAPER_METHODS:
        return PAPER_METHODS.index(method), ""
    return len(PAPER_METHODS), method


def _pair(what: str, values, who: str = "ours") -> dict:
    """Mean (of the finite values) and std (of two or more) as ``<what>_<who>[_std]``, and how
    many values there were (``_runs``)."""
    finite = _finite(values)
    out: dict[str, Any] = {f"{what}_{who}_runs": len(values)}
    if finite.size:
        out[f"{what}_{who}"] = float(finite.mean())
    if finite.size >= 2:
        out[f"{what}_{who}_std"] = float(finite.std())
    return out


def _orderings(table: list[dict]) -> list[dict]:
    """Per (dataset, model): methods by final val acc, ours and the paper's, and the pairs that
    the paper separates by more than ORDER_GAP but we rank the other way. An ordering needs two
    methods set beside the paper; with fewer it is ``not_comparable``."""
    groups = defaultdict(list)
    for r in table:
        if "final_paper" in r:
            groups[(r["dataset"], r["model"])].append(r)
    out = []
    for (dataset, model), rows in sorted(groups.items()):
        by = {r["method"]: r for r in rows if "not_comparable" not in r}
        entry: dict[str, Any] = {"dataset": dataset, "model": model}
        if len(by) < 2:
            entry["not_comparable"] = not_comparable(
                f"{len(by)} method(s) with a finite final beside the paper's: an ordering needs 2"
            )
            out.append(entry)
            continue
        flips = [
            f"{a}>{b}"
            for a in by
            for b in by
            if by[a]["final_paper"] - by[b]["final_paper"] > ORDER_GAP
            and by[a]["final_ours"] <= by[b]["final_ours"]
        ]
        out.append(
            entry
            | {
                "ours": [m for m in sorted(by, key=lambda m: -by[m]["final_ours"])],
                "paper": [m for m in sorted(by, key=lambda m: -by[m]["final_paper"])],
                "same": not flips,
                "violated_paper_pairs": flips,
            }
        )
    return out


def format_unlearning(table: list[dict], ordering: list[dict]) -> str:
    head = (
        f"{'dataset':7} {'model':6} {'method':16} {'variant':9} {'final ours':>12} "
        f"{'[95 % CI]':>14} {'paper':>12} {'diff':>7} pass  {'start ours':>10} {'paper':>6} pass  "
        f"{'curve|d|':>8} {'forget o/p':>11}"
    )
    finals = sorted({r.get("final_epoch", FINAL_EPOCH) for r in table}) or [FINAL_EPOCH]
    lines = [
        f"val acc at epoch {'/'.join(map(str, finals))} (final, |diff| <= {FINAL_TOL}) and "
        f"epoch 0 (start, "
        f"|diff| <= {START_TOL}); curve|d| = mean over epochs of |mean ours - mean paper|; "
        "forget = fraction of D_f still predicted with its poisoned label; [95 % CI] = bootstrap "
        "interval of our mean final over runs",
        head,
    ]
    yn = {True: "yes", False: "NO", None: "-"}
    notes = []
    for r in table:
        has = "final_diff" in r
        final = "-"
        if "final_ours" in r:
            final = _mean_spread(r["final_ours"], r.get("final_ours_std"), "run")
        ci = (
            f"[{r['final_ours_lo']:.3f}, {r['final_ours_hi']:.3f}]" if "final_ours_lo" in r else "-"
        )
        pfinal = f"{r['final_paper']:.3f}±{r['final_paper_std']:.3f}" if has else "-"
        diff = f"{r['final_diff']:+.3f}" if has else "-"
        pstart = f"{r['start_paper']:.3f}" if has else "-"
        mad = f"{r['curve_mad']:.3f}" if "curve_mad" in r else "-"
        forget = (f"{r['forget_final_ours']:.2f}" if "forget_final_ours" in r else "-") + "/"
        forget += f"{r['forget_final_paper']:.2f}" if has else "-"
        start = f"{r['start_ours']:.3f}" if "start_ours" in r else "-"
        lines.append(
            f"{r['dataset']:7} {r['model']:6} {r['method']:16} {r['variant']:9} {final:>12} "
            f"{ci:>14} {pfinal:>12} {diff:>7} {yn[r.get('final_pass')]:4}  "
            f"{start:>10} {pstart:>6} {yn[r.get('start_pass')]:4}  {mad:>8} "
            f"{forget:>11}"
        )
        if "not_comparable" in r:
            notes.append(f"{r['dataset']} {r['model']} {r['method']}: {r['not_comparable']}")
        elif r["nonfinite_runs"]:
            notes.append(
                f"{r['dataset']} {r['model']} {r['method']}: {r['nonfinite_runs']} of "
                f"{r['final_ours_runs']} runs not finite (diverged), left out"
            )
    lines += notes
    for o in ordering:
        if "not_comparable" in o:
            lines.append(f"ordering {o['dataset']} {o['model']}: {o['not_comparable']}")
            continue
        lines.append(
            f"ordering {o['dataset']} {o['model']}: ours {' > '.join(o['ours'])}; paper "
            f"{' > '.join(o['paper'])}: "
            + ("consistent" if o["same"] else f"DIFFERS on {', '.join(o['violated_paper_pairs'])}")
        )
    return "\n".join(lines)


def _compare_unlearning_dir(
    results_dir: Path, results: list[dict], manifest: dict, tables=None
) -> dict:
    check = protocol_check(manifest["config"])
    judged = {t for t, d in check["differences"].items() if not d}
    out = compare_unlearning(results, {t: k for t, k in check["kinds"].items() if k}, judged)
    table = out["table"]
    fields = list(dict.fromkeys(k for r in table for k in r))
    _write_compare_csv(results_dir / "compare.csv", table, fields)
    compared = [r for r in table if "final_pass" in r]
    starts = [r for r in compared if r["start_pass"] is not None]
    summary = {
        "cells": len(compared),
        "final_passed": sum(r["final_pass"] for r in compared),
        "start_checked": len(starts),
        "start_passed": sum(r["start_pass"] for r in starts),
        "not_comparable": sum("not_comparable" in r for r in table),
        "ordering": out["ordering"],
    }
    atomic_write_text(results_dir / "compare.json", json.dumps(summary, indent=2))
    text = request_line(manifest["config"]) + format_unlearning(table, out["ordering"])
    text += (
        f"\n\nfinal val acc: passed {summary['final_passed']}/{summary['cells']}; "
        f"start: passed {summary['start_passed']}/{summary['start_checked']}"
        + (f"; {summary['not_comparable']} not comparable" if summary["not_comparable"] else "")
    )
    timings = manifest.get("timings", {})
    if timings:
        text += (
            "\nwall time (s; all runs of a cell in one vmap; * = includes compilation) and "
            "optimizer steps per run:"
        )
        for cell, t in sorted(timings.items()):
            mark = "*" if t.get("includes_compile") else " "
            text += f"\n  {cell:34} {t['seconds']:9.1f}{mark} {t.get('optimizer_steps', '-'):>6}"
    if not table:
        text = "no unlearning trajectories here (a sweep-only run?): nothing to compare"
    return {"table": table, "summary": summary, "text": text}
