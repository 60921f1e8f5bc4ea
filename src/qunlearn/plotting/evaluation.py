"""Figures of an evaluation (ensembles against retrain oracles), per model: the per-example
distance histograms per group and split, the U-LiRA ROC curves on log-log axes, and stability
bars (val-accuracy spread, flip rate, the training seed's share of the variance)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure

from qunlearn.plotting.style import ENSEMBLE_STYLE, method_color, new_figure, ordered_methods

SPLITS = ("forget", "retain", "val")
REFERENCES = ("oracle", "clean_oracle")  # drawn last, where a figure shows them


def _groups(names) -> list[str]:
    """Calibration groups first, then the methods in the house order."""
    names = set(names) - set(REFERENCES)
    first = [g for g in ("oracle_half", "oracle_null", "teacher") if g in names]
    return first + ordered_methods(names - set(first))


def _style(group: str) -> tuple[str, str | None]:
    return ENSEMBLE_STYLE.get(group, (group, method_color(group)))


def distance_histograms(per_example: list[dict], model: str, title: str = "") -> Figure:
    """Per split, the histogram of per-example KLoM distances of every group (log-spaced bins)."""
    rows = [r for r in per_example if r["model"] == model]
    values = defaultdict(list)
    for r in rows:
        if np.isfinite(float(r["klom"])):  # a diverged model's NaN distance is not drawn
            values[(r["group"], r["split"])].append(float(r["klom"]))
    every = np.array([v for vs in values.values() for v in vs] or [1e-3])
    positive = every[every > 0]
    lo = positive.min() if positive.size else 1e-3
    bins = np.geomspace(max(lo, 1e-4), max(every.max(), lo * 10), 40)
    fig = new_figure(12, 3.6)
    axes = fig.subplots(1, len(SPLITS))  # own y scales: D_f has 150 examples, val 2144
    for ax, split in zip(axes, SPLITS, strict=True):
        for group in _groups(g for g, s in values if s == split):
            label, color = _style(group)
            data = np.clip(values[(group, split)], bins[0], None)
            ax.hist(data, bins=bins, histtype="step", lw=1.6, label=label, color=color)
        ax.set_xscale("log")
        ax.set_title(f"{split}")
        ax.set_xlabel("KLoM distance to the oracles (nats)")
    axes[0].set_ylabel("examples")
    axes[-1].legend(fontsize=8)
    fig.suptitle(title or f"{model}: per-example distance to retrain oracles")
    return fig


def roc_curves(roc: list[dict], model: str, title: str = "") -> Figure:
    """The U-LiRA ROC of every group, log-log, with the chance diagonal."""
    curves = defaultdict(list)
    for r in roc:
        point = (float(r["fpr"]), float(r["tpr"]))
        if r["model"] == model and np.isfinite(point).all():
            curves[r["group"]].append(point)
    fig = new_figure(5, 4.5)
    ax = fig.subplots()
    grid = np.logspace(-3, 0, 50)
    ax.plot(grid, grid, ":", color="0.6", label="chance")
    for group in _groups(curves):
        label, color = _style(group)
        f, t = np.array(sorted(curves[group])).T
        ax.plot(f, np.clip(t, 1e-3, None), label=label, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(1e-3, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    ax.set_title(title or f"{model}: membership attack on D_f (U-LiRA style)")
    return fig


STABILITY = (
    ("acc_true_std", "val accuracy std"),
    ("flip_rate", "prediction flip rate (val)"),
    ("margin_var_share_training_seed", "training seed's share of margin variance"),
)


def stability_bars(results: list[dict], model: str, title: str = "") -> Figure:
    """Per group: val-accuracy spread, pairwise flip rate and the training seed's variance share."""
    value = {
        (r["group"], r["metric"]): float(r["value"])
        for r in results
        if r["model"] == model and r["split"] == "val" and np.isfinite(float(r["value"]))
    }
    groups = [g for g in _groups({g for g, _ in value}) if not g.startswith("oracle_")]
    groups += [r for r in REFERENCES if any(g == r for g, _ in value)]
    fig = new_figure(12, 3.6)
    axes = fig.subplots(1, len(STABILITY))
    for ax, (metric, label) in zip(axes, STABILITY, strict=True):
        shown = [g for g in groups if (g, metric) in value]
        colors = [_style(g)[1] for g in shown]
        ax.bar(range(len(shown)), [value[(g, metric)] for g in shown], color=colors)
        ax.set_xticks(range(len(shown)), [_style(g)[0] for g in shown], rotation=30, ha="right")
        ax.set_title(label, fontsize=10)
    fig.suptitle(title or f"{model}: stability over training and unlearning seeds")
    return fig


def evaluation_figures(results, config: dict, per_example, roc) -> dict[str, Figure]:
    """{file stem: Figure} for every model of an evaluation."""
    figures = {}
    for model in config["models"]:
        name = config["name"]
        figures[f"evaluation_{model}_distances"] = distance_histograms(
            per_example, model, f"{name}, {model}: per-example distance to retrain oracles"
        )
        figures[f"evaluation_{model}_mia_roc"] = roc_curves(
            roc, model, f"{name}, {model}: U-LiRA-style attack on D_f"
        )
        figures[f"evaluation_{model}_stability"] = stability_bars(
            results, model, f"{name}, {model}: stability"
        )
    return figures
