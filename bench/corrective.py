"""Corrective unlearning (Goel et al. 2024): how much of the poison must be identified before
unlearning restores clean accuracy? A study driver, not a timing benchmark.

For each share ``known`` = ρ of the flipped labels that the user identifies, runs Fig 3a's
set-up (``fig3a_mnist``: the same poisoning, teacher and run keys for every ρ) with
``forget = "poison_partial"``: D_f is the identified ρ-fraction, the rest of the poison stays in
D_r with its flipped labels. Each run directory is an ordinary results directory (resumable;
``qunlearn compare`` reads it). The summary: the recovery of clean validation accuracy,

    recovery = (val(method) − val(teacher)) / (val(clean retrain) − val(teacher)),

0 = no better than the poisoned teacher, 1 = as good as retraining on D minus ALL poison (the
``clean_retrain`` reference each run trains; at ρ = 1 that is ``retrain`` itself), with a 95 %
bootstrap interval over the runs. Writes ``recovery.csv`` and ``recovery.png`` under ``--out``.

    .venv/bin/python bench/corrective.py --tiny                   # minutes: the smoke settings
    .venv/bin/python bench/corrective.py --models mlp --runs 5
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

import qunlearn

KNOWN = (0.25, 0.5, 0.75, 1.0)
METHODS = ("retrain", "finetune", "scrub_kurmanji", "neggrad_plus", "salun", "eu_k")


def final_val(results_dir: Path) -> tuple[dict, dict]:
    """({(model, method): [final val acc per run]}, {model: teacher val acc})."""
    runs: dict = defaultdict(list)
    with open(results_dir / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["epoch"]) for r in rows)
    for r in rows:
        if r["metric"] == "val_acc" and int(r["epoch"]) == last:
            runs[(r["model"], r["method"])].append(float(r["value"]))
    teacher = {}
    with open(results_dir / "teacher.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["metric"] == "val_acc" and r["teacher"] == "0":
                teacher[r["model"]] = float(r["value"])
    return runs, teacher


GAP = 0.01  # the least val-accuracy gap (clean retrain - teacher) a recovery is a share of


def recovery(vals, clean, teacher, rng, resamples: int = 1000) -> tuple[float, float, float]:
    """Point value and 95 % bootstrap interval (runs of the method and of the reference drawn
    with replacement, paired by run index as they share keys); NaN where retraining without the
    poison beats the teacher by less than ``GAP``: then there is nothing to recover."""
    vals, clean = np.asarray(vals), np.asarray(clean)
    if clean.mean() - teacher < GAP:
        return math.nan, math.nan, math.nan

    def stat(v, c):
        return (v.mean() - teacher) / (c.mean() - teacher)

    idx = rng.integers(0, len(vals), (resamples, len(vals)))
    draws = [stat(vals[i], clean[i]) for i in idx]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(stat(vals, clean)), float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fig3a_mnist")
    parser.add_argument("--models", nargs="+", default=["mlp", "qnn"])
    parser.add_argument("--known", nargs="+", type=float, default=list(KNOWN))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--runs", type=int, default=0, help="0: the config's")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/corrective_mnist"))
    parser.add_argument("overrides", nargs="*", help="more k=v overrides for every run")
    args = parser.parse_args()

    methods = "[" + ", ".join(f'"{m}"' for m in args.methods) + "]"
    rows = []
    rng = np.random.default_rng(0)
    for known in args.known:
        overrides = ["forget=poison_partial", f"known={known}", f"methods={methods}"]
        overrides += [f"runs={args.runs}"] if args.runs else []
        out = args.out / f"known_{known:g}"
        qunlearn.run(
            args.config,
            out,
            [*overrides, *args.overrides],
            tiny=args.tiny,
            models=args.models,
            progress=False,
        )
        runs, teacher = final_val(out)
        for model in args.models:
            clean = runs.get((model, "clean_retrain")) or runs[(model, "retrain")]
            for method in args.methods:
                point, lo, hi = recovery(runs[(model, method)], clean, teacher[model], rng)
                rows.append(
                    {
                        "model": model,
                        "method": method,
                        "known": known,
                        "val_acc": float(np.mean(runs[(model, method)])),
                        "clean_val_acc": float(np.mean(clean)),
                        "teacher_val_acc": teacher[model],
                        "recovery": point,
                        "recovery_lo": lo,
                        "recovery_hi": hi,
                    }
                )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "recovery.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("recovery of clean val accuracy (0 = teacher, 1 = retrain without any poison) [95 %]")
    print(
        f"{'model':5s} {'method':16s} "
        + " ".join(f"{'ρ = ' + format(k, 'g'):>20s}" for k in args.known)
    )
    for model in args.models:
        for method in args.methods:
            cells = [
                f"{r['recovery']:+.2f} [{r['recovery_lo']:+.2f}, {r['recovery_hi']:+.2f}]"
                if math.isfinite(r["recovery"])
                else f"n/a (val {r['val_acc']:.3f})"
                for r in rows
                if (r["model"], r["method"]) == (model, method)
            ]
            print(f"{model:5s} {method:16s} " + " ".join(f"{c:>20s}" for c in cells))
        gaps = {
            r["known"]: r["clean_val_acc"] - r["teacher_val_acc"]
            for r in rows
            if r["model"] == model
        }
        if any(gap < GAP for gap in gaps.values()):
            teacher = next(r["teacher_val_acc"] for r in rows if r["model"] == model)
            print(
                f"{model}: n/a where retraining without any poison beats the teacher's val "
                f"{teacher:.3f} by less than {GAP}: nothing to recover"
            )
    plot(rows, args.models, args.methods, args.out / "recovery.png")


def plot(rows, models, methods, path: Path) -> None:
    from qunlearn.plotting.style import interval_bars, method_color, new_figure

    fig = new_figure(4.2 * len(models) + 1.4, 3.6)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        for method in methods:
            mine = [r for r in rows if (r["model"], r["method"]) == (model, method)]
            x = [r["known"] for r in mine]
            y = np.array([r["recovery"] for r in mine])
            err = np.hstack(
                [interval_bars(r["recovery"], r["recovery_lo"], r["recovery_hi"]) for r in mine]
            )
            ax.errorbar(
                x,
                y,
                yerr=err,
                marker="o",
                ms=4,
                capsize=2,
                color=method_color(method),
                label=method,
            )
        ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(model)
        ax.set_xlabel("share of the poison identified, ρ")
        ax.set_ylabel("clean val accuracy recovered")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.suptitle("corrective unlearning")
    fig.savefig(path, dpi=130)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
