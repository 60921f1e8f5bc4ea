"""Figures of an evaluation (ensembles against retrain oracles), per model: the per-example
distance histograms per group and split, the U-LiRA ROC curves on log-log axes, and stability
bars (val-accuracy spread, flip rate, the training seed's share of the variance)."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from qunlearn.plotting.style import (
    ENSEMBLE_STYLE,
    interval_bars,
    method_color,
    new_figure,
    ordered_methods,
)

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


COST_AREA = 80.0  # marker area (points²) of a method as costly as retrain
COST_SIZES = (0.25, 1.0, 4.0)  # the marker-size key


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (x lower, y higher are better), by x."""
    front, best = [], -np.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _errors(row: dict, stat: str):
    return interval_bars(row[stat], row.get(f"{stat}_lo"), row.get(f"{stat}_hi"))


def _marker_area(cost) -> float:
    return COST_AREA * float(np.clip(cost, 0.05, 10.0)) if cost is not None else COST_AREA


def leaderboard_figure(board: list[dict], title: str = "") -> Figure | None:
    """Forget quality (the KLoM residual, x, lower is better) against utility (val accuracy, y),
    one panel per forget request and model: a method's marker area is its cost relative to
    retrain (a ring where it is not recorded), its bars the bootstrap intervals, the dashed line
    the Pareto front of the methods; the teacher (no unlearning) for reference. None when no
    method has both values."""
    shown = [r for r in board if r["resid"] is not None and r["val_acc"] is not None]
    if not shown:
        return None
    forgets = list(dict.fromkeys(r["forget"] for r in board))
    models = list(dict.fromkeys(r["model"] for r in board))
    fig = new_figure(4.8 * len(models) + 1.6, 4.2 * len(forgets))  # + the method key
    axes = fig.subplots(len(forgets), len(models), squeeze=False)
    for (i, forget), (j, model) in itertools.product(enumerate(forgets), enumerate(models)):
        ax, rows = axes[i, j], [r for r in shown if (r["forget"], r["model"]) == (forget, model)]
        methods = [r for r in rows if r["method"] != "teacher"]
        for r in rows:
            label, color = _style(r["method"])
            ax.errorbar(
                r["resid"],
                r["val_acc"],
                xerr=_errors(r, "resid"),
                yerr=_errors(r, "val_acc"),
                fmt="none",
                ecolor=color,
                elinewidth=1.2,
                alpha=0.7,
            )
            ring = r["cost"] is None and r["method"] != "teacher"
            ax.scatter(
                r["resid"],
                r["val_acc"],
                s=_marker_area(r["cost"]),
                marker="X" if r["method"] == "teacher" else "o",
                facecolors="none" if ring else color,
                edgecolors=color if ring else "k",
                linewidths=1.2 if ring else 0.5,
                label=label,
                zorder=3,
            )
        front = pareto_front([(r["resid"], r["val_acc"]) for r in methods])
        if len(front) > 1:
            x, y = np.array(front).T
            # a staircase: what the front's methods dominate, no line between them claimed
            ax.step(x, y, "--", where="post", color="0.45", lw=1, zorder=2, label="Pareto front")
        ax.axvline(0.0, color="0.8", lw=0.8, zorder=1)
        ax.set_title(f"{model}, forget {forget}" if len(forgets) > 1 else model)
        ax.set_xlabel("KLoM residual on D_f (0 = retrain, 1 = no unlearning)")
        ax.set_ylabel("val accuracy")
    # one key for every panel, beside them: 15 methods in a panel's own legend hid its points
    key = [
        Line2D(
            [],
            [],
            ls="",
            marker="X" if method == "teacher" else "o",
            markersize=7,
            color=_style(method)[1],
            markeredgecolor="k",
            markeredgewidth=0.5,
            label=_style(method)[0],
        )
        for method in dict.fromkeys(r["method"] for r in shown)
    ]
    if any(line.get_label() == "Pareto front" for ax in axes.flat for line in ax.get_lines()):
        key.append(Line2D([], [], ls="--", color="0.45", lw=1, label="Pareto front"))
    fig.legend(handles=key, loc="outside right center", fontsize=7)
    for cost in COST_SIZES:  # the size key, once, below the panels
        axes[-1, -1].scatter([], [], s=_marker_area(cost), color="0.6", label=f"{cost:g}× retrain")
    handles = [h for h in axes[-1, -1].collections if h.get_label().endswith("× retrain")]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=len(COST_SIZES),
        fontsize=8,
        title="marker area: wall time relative to retrain",
        title_fontsize=8,
    )
    fig.suptitle(title or "unlearning leaderboard: forget quality against utility")
    return fig


def evaluation_figures(results, config: dict, per_example, roc, board=()) -> dict[str, Figure]:
    """{file stem: Figure} for every model of an evaluation, and the leaderboard's Pareto figure
    (``board``: :func:`qunlearn.compare.evaluation_leaderboard` rows)."""
    figures = {}
    pareto = leaderboard_figure(list(board), f"{config['name']}: forget quality against utility")
    if pareto is not None:
        figures["evaluation_leaderboard"] = pareto
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


READOUTS_FIGURE = "evaluation_readouts"  # the file stem of the shot and circuit-noise readouts
READOUT_PANELS = (  # (statistic in qunlearn.compare.readout_summary rows, axis label)
    ("klom_p50", "KLoM P50 on D_f (nats)"),
    ("resid", "KLoM residual on D_f\n(0 = retrain, 1 = no unlearning)"),
    ("ulira_auc", "U-LiRA AUC on D_f"),
    ("ulira_tpr_at_1pct_fpr", "U-LiRA TPR at 1 % FPR"),
    ("mia_loss_auc_mean", "population loss-attack AUC"),
    ("val_acc", "val accuracy"),
)


def readouts_figure(summary: list[dict], *, title: str = "") -> Figure:
    """Per model with readouts (one row of panels each), the key scores of the same params read
    out with S shots (left, by S), exactly (S = inf, the reference) and under each circuit-noise
    model (right, squares), one line per group. Bars: the 95 % bootstrap intervals over the
    teachers where the evaluation has them; the grey band on the U-LiRA AUC: the oracle null band
    (20 draws of oracles posing as a group); dotted: chance. ``summary``:
    :func:`qunlearn.compare.readout_summary` rows."""
    from qunlearn.compare import readout_label, readout_rank

    models = [m for m in dict.fromkeys(r["model"] for r in summary) if _has_readouts(summary, m)]
    fig = new_figure(3.3 * len(READOUT_PANELS) + 1.4, 3.4 * len(models))
    axes = fig.subplots(len(models), len(READOUT_PANELS), squeeze=False)
    for row, model in zip(axes, models, strict=True):
        rows = [r for r in summary if r["model"] == model]
        readouts = sorted({r["readout"] for r in rows}, key=readout_rank)
        x = {k: i for i, k in enumerate(readouts)}
        labels = [
            "exact\n(S = inf)" if k == "exact" else readout_label(k).replace(" ", "\n")
            for k in readouts
        ]
        null = {r["readout"]: r for r in rows if r["group"] == "oracle_null"}
        for ax, (stat, label) in zip(row, READOUT_PANELS, strict=True):
            if stat in ("klom_p50", "ulira_auc") and null:
                band = [null.get(k, {}) for k in readouts]
                lo = [b.get(f"{stat}_lo", np.nan) for b in band]
                hi = [b.get(f"{stat}_hi", np.nan) for b in band]
                ax.fill_between(range(len(readouts)), lo, hi, color="0.85", label="oracle null")
            if stat in ("ulira_auc", "mia_loss_auc_mean"):
                ax.axhline(0.5, ls=":", color="0.5", lw=1)
            groups = _groups({r["group"] for r in rows} - {"oracle_null"})
            for j, group in enumerate(groups):
                name, color = _style(group)
                points = sorted(
                    (x[r["readout"]], r)
                    for r in rows
                    if r["group"] == group and r.get(stat) is not None
                )
                if not points:
                    continue
                shift = 0.06 * (j - (len(groups) - 1) / 2)  # overlapping bars side by side
                xs = [i + shift for i, _ in points]
                ys = [r[stat] for _, r in points]
                # shots -> exact is one series (S -> inf); a noise model stands on its own
                chain = [i for i, (_, r) in enumerate(points) if not _is_noise(r["readout"])]
                ax.plot([xs[i] for i in chain], [ys[i] for i in chain], "o-", color=color, ms=4)
                alone = [i for i in range(len(points)) if i not in chain]
                ax.plot([xs[i] for i in alone], [ys[i] for i in alone], "s", color=color, ms=5)
                ax.plot([], [], "o-", color=color, label=name, ms=4)  # one legend entry
                for xi, (_, r) in zip(xs, points, strict=True):
                    bars = interval_bars(r[stat], r.get(f"{stat}_lo"), r.get(f"{stat}_hi"))
                    if bars is not None:
                        ax.errorbar(xi, r[stat], yerr=bars, color=color, lw=1, capsize=2)
            if stat == "resid":  # undefined where teacher and retrain coincide: keep it readable
                ax.set_ylim(*RESID_RANGE)
                _mark_off_scale(ax, rows, x, groups)
            if "exact" in x:
                ax.axvline(x["exact"], color="0.8", lw=6, zorder=0)  # the reference
            ax.set_xticks(range(len(readouts)), labels, fontsize=8)
            ax.set_title(f"{model}: {label}" if stat == READOUT_PANELS[0][0] else label, fontsize=9)
            ax.grid(alpha=0.3)
        row[-1].legend(fontsize=7, loc="best")
    what = "the same params read out with S shots, exactly and under device noise"
    fig.suptitle(f"{title}: {what}" if title else what)
    return fig


RESID_RANGE = (-0.5, 2.5)  # the residual panel's y range; values beyond are marked at its edge


def _mark_off_scale(ax, rows: list[dict], x: dict, groups: list[str]) -> None:
    """A hollow triangle at the residual panel's edge for each value beyond it."""
    lo, hi = RESID_RANGE
    for r in rows:
        v = r.get("resid")
        if r["group"] in groups and v is not None and not lo <= v <= hi:
            edge, marker = (hi, "^") if v > hi else (lo, "v")
            ax.plot(x[r["readout"]], edge, marker, mfc="none", color=_style(r["group"])[1], ms=8)
    ax.text(0.02, 0.97, "off scale: triangles", transform=ax.transAxes, fontsize=7, va="top")


def _is_noise(readout: str) -> bool:
    return readout.startswith("noise_")


def _has_readouts(summary: list[dict], model: str) -> bool:
    return any(r["model"] == model and r["readout"] != "exact" for r in summary)
