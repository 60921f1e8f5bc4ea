"""Curvature figures: curvature vs unlearning epoch and spectral densities (curvature results
directory), and the trace-ratio bar chart of the roughening study (protocol §5). Figures only
read tables; every figure is drawn with :mod:`qunlearn.plotting.style` inside a
``matplotlib.rc_context``, so the global rcParams are never changed, and uses no pyplot."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from qunlearn.compare import compare_roughening, read_csv
from qunlearn.plotting.style import (
    TEACHER_STYLE,
    interval_bars,
    mean_std_band,
    method_color,
    model_color,
    new_figure,
    ordered_methods,
    save,
)
from qunlearn.plotting.unlearning import _mean_std

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

STYLE: dict[RcKeyType, Any] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "legend.fontsize": 6.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.4,
}
LOSS_TITLES = {
    "retain": "retain loss (D_r, true labels)",
    "forget": "forget loss (D_f, poisoned labels)",
    "validation": "validation loss (clean)",
}
METRIC_TITLES = {"eig_1": "top Hessian eigenvalue", "trace": "Hessian trace"}


def _figure(n_rows: int, n_cols: int, width: float, height: float):
    fig = new_figure(width * n_cols, height * n_rows, style=STYLE)
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def plot_curvature_vs_epoch(
    rows: list[dict], out_dir: str | Path, *, metric: str, title: str = ""
) -> list[Path]:
    """:func:`draw_curvature_vs_epoch`, saved as curvature_<metric>.png/.pdf in ``out_dir``."""
    fig = draw_curvature_vs_epoch(rows, metric=metric, title=title)
    return save(fig, Path(out_dir) / f"curvature_{metric}")


def draw_curvature_vs_epoch(rows: list[dict], *, metric: str, title: str = "") -> Figure:
    """``metric`` (e.g. "eig_1", "trace") vs unlearning epoch: rows = models, columns = losses,
    one line per method (mean ± std band over runs); the clean and the poisoned teacher's levels
    as horizontal lines."""
    rows = [r for r in rows if r["metric"] == metric]
    models = list(dict.fromkeys(r["model"] for r in rows))
    losses = [loss for loss in LOSS_TITLES if any(r["loss"] == loss for r in rows)]
    methods = ordered_methods(r["method"] for r in rows if r["method"] not in TEACHER_STYLE)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(max(len(models), 1), max(len(losses), 1), 3.6, 2.8)
        for i, model in enumerate(models):
            for j, loss in enumerate(losses):
                ax = axes[i, j]
                mine = [r for r in rows if r["model"] == model and r["loss"] == loss]
                series = _mean_std(mine, metric)
                for method in methods:
                    if (model, method) not in series:
                        continue
                    e, m, s = series[(model, method)]
                    mean_std_band(
                        ax, e, m, s, "o-", ms=2.5, color=method_color(method), label=method
                    )
                for teacher, (label, color, style) in TEACHER_STYLE.items():
                    if (model, teacher) in series and len(series[(model, teacher)][1]):
                        ax.axhline(
                            series[(model, teacher)][1][0], color=color, ls=style, lw=1, label=label
                        )
                ax.set_title(f"{model.upper()}: {LOSS_TITLES[loss]}")
                ax.set_xlabel("unlearning epoch")
                ax.set_ylabel(METRIC_TITLES.get(metric, metric))
        if models and losses:
            axes[0, 0].legend(loc="best")
        if title:
            fig.suptitle(title)
        return fig


def _mean_density(rows: list[dict]) -> dict:
    """{(model, loss, method, epoch): (grid, mean density over the runs with finite values)}."""
    values: defaultdict[tuple, defaultdict[int, list[tuple[float, float]]]]
    values = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (r["model"], r["loss"], r["method"], int(r["epoch"]))
        values[key][int(r["run"])].append((float(r["eigenvalue"]), float(r["density"])))
    out = {}
    for key, by_run in values.items():
        curves = [c for c in map(np.array, by_run.values()) if np.isfinite(c).all()]
        if curves:  # a run with a NaN density (a diverged snapshot) is left out, not drawn
            out[key] = (curves[0][:, 0], np.mean([c[:, 1] for c in curves], axis=0))
    return out


def plot_densities(rows: list[dict], out_dir: str | Path, *, title: str = "") -> list[Path]:
    """:func:`draw_densities`, saved as curvature_density.png/.pdf in ``out_dir``."""
    return save(draw_densities(rows, title=title), Path(out_dir) / "curvature_density")


def draw_densities(rows: list[dict], *, title: str = "") -> Figure:
    """Spectral densities (density.csv): rows = models, columns = losses; before poisoning,
    after poisoning, and after unlearning with each method (last epoch, mean over runs), on a log
    density axis."""
    curves = _mean_density(rows)
    models = list(dict.fromkeys(k[0] for k in curves))
    losses = [loss for loss in LOSS_TITLES if any(k[1] == loss for k in curves)]
    methods = ordered_methods(k[2] for k in curves if k[2] not in TEACHER_STYLE)
    last: dict[tuple[str, str], int] = {}  # (model, method) -> its last epoch
    for model, _, method, epoch in curves:
        last[(model, method)] = max(epoch, last.get((model, method), epoch))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(max(len(models), 1), max(len(losses), 1), 3.6, 2.8)
        for i, model in enumerate(models):
            for j, loss in enumerate(losses):
                ax, peak = axes[i, j], 0.0
                for teacher, (label, color, style) in TEACHER_STYLE.items():
                    if (model, loss, teacher, 0) in curves:
                        grid, d = curves[(model, loss, teacher, 0)]
                        ax.plot(grid, d, ls=style, color=color, label=label)
                        peak = max(peak, float(d.max()))
                for method in methods:
                    key = (model, loss, method, last.get((model, method), -1))
                    if key in curves:
                        grid, d = curves[key]
                        ax.plot(
                            grid,
                            d,
                            color=method_color(method),
                            lw=1.0,
                            alpha=0.85,
                            label=f"{method}, epoch {key[3]}",
                        )
                        peak = max(peak, float(d.max()))
                ax.set_yscale("log")
                if peak > 0:
                    ax.set_ylim(peak * 1e-6, peak * 3)
                ax.set_title(f"{model.upper()}: {LOSS_TITLES[loss]}")
                ax.set_xlabel("Hessian eigenvalue")
                ax.set_ylabel("spectral density")
        if models and losses:
            axes[0, 0].legend(loc="upper right")
        if title:
            fig.suptitle(title)
        return fig


def curvature_figures(rows: list[dict], config: dict, density_rows: list[dict]) -> dict:
    """Every figure of a curvature result, {file stem: Figure}: ``rows`` = its results table,
    ``density_rows`` its density table (may be empty)."""
    figures = {
        f"curvature_{metric}": draw_curvature_vs_epoch(rows, metric=metric, title=config["name"])
        for metric in METRIC_TITLES
    }
    if density_rows:
        figures["curvature_density"] = draw_densities(
            density_rows, title=f"{config['name']}: Hessian spectral densities"
        )
    return figures


def plot_curvature_dir(
    results_dir: str | Path, rows: list[dict], config: dict, density_rows: list[dict] | None = None
) -> list[Path]:
    """Every figure of a curvature results directory, written into ``results_dir``; ``rows`` =
    its results table, ``density_rows`` its density table (read from ``density.csv`` when None)."""
    results_dir = Path(results_dir)
    density = results_dir / "density.csv"
    if density_rows is None and density.is_file():
        density_rows = read_csv(density)
    figures = curvature_figures(rows, config, density_rows or [])
    return [p for stem, fig in figures.items() for p in save(fig, results_dir / stem)]


def plot_roughening(
    rows: list[dict], out_dir: str | Path, *, models: dict[str, str], title: str = ""
) -> list[Path]:
    """:func:`draw_roughening`, saved as roughening_trace_ratio.png/.pdf in ``out_dir``."""
    fig = draw_roughening(rows, models=models, title=title)
    return save(fig, Path(out_dir) / "roughening_trace_ratio")


def draw_roughening(rows: list[dict], *, models: dict[str, str], title: str = "") -> Figure:
    """Trace ratio (noisy trace / mean clean trace) per noise ratio, one panel per model
    (``models``: our name -> model kind), mean ± std over seeds with every seed as a dot and the
    median with its bootstrap 95 % interval, the paper's values as hatched bars beside ours;
    collapsed runs are counted above the bars."""
    table = compare_roughening(rows, models)
    names = list(dict.fromkeys(r["model"] for r in table))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(1, max(len(names), 1), 3.8, 3.2)
        for ax, name in zip(axes[0], names, strict=False):
            missing = [r for r in table if r["model"] == name and "not_comparable" in r]
            mine = [r for r in table if r["model"] == name and "not_comparable" not in r]
            if missing:  # no bar, no NaN: the reason where the bars would be
                ax.text(
                    0.5,
                    0.5,
                    "\n".join(f"r {r['noise_ratio']:.1f}: {r['not_comparable']}" for r in missing),
                    ha="center",
                    va="center",
                    wrap=True,
                    fontsize=6,
                    transform=ax.transAxes,
                )
            x = np.arange(len(mine))
            color = model_color(models.get(name, name))
            ours = ax.bar(
                x - 0.2,
                [r["ratio_mean"] for r in mine],
                0.38,
                yerr=[r.get("ratio_std", 0.0) for r in mine],  # one seed: no spread
                color=color,
                capsize=2,
                label="ours",
            )
            for i, r in enumerate(mine):  # every seed, and the median with its 95 % interval
                ratios = np.asarray(r["ratios"])
                jitter = np.linspace(-0.12, 0.12, len(ratios)) if len(ratios) > 1 else [0.0]
                ax.scatter(
                    i - 0.2 + np.asarray(jitter),
                    ratios,
                    s=6,
                    color="k",
                    alpha=0.55,
                    lw=0,
                    zorder=3,
                    label="seeds" if i == 0 else None,
                )
                if "ratio_median_lo" in r:
                    med = r["ratio_median"]
                    ax.errorbar(
                        [i - 0.2],
                        [med],
                        yerr=interval_bars(med, r["ratio_median_lo"], r["ratio_median_hi"]),
                        fmt="_",
                        color="k",
                        ms=12,
                        capsize=3,
                        zorder=4,
                        label="median, 95 % CI" if i == 0 else None,
                    )
            paper = [(i, r) for i, r in enumerate(mine) if "paper_ratio_mean" in r]
            if paper:
                ax.bar(
                    [i + 0.2 for i, _ in paper],
                    [r["paper_ratio_mean"] for _, r in paper],
                    0.38,
                    yerr=[r["paper_ratio_std"] for _, r in paper],
                    color="white",
                    edgecolor=color,
                    hatch="///",
                    capsize=2,
                    label="paper",
                )
            for bar, r in zip(ours, mine, strict=True):
                if r["collapsed"]:
                    ax.annotate(
                        f"{r['collapsed']}/{r['runs']} collapsed",
                        (
                            bar.get_x() + bar.get_width() / 2,
                            r["ratio_mean"] + r.get("ratio_std", 0.0),
                        ),
                        xytext=(0, 6),
                        textcoords="offset points",
                        ha="center",
                        fontsize=6,
                    )
            ax.axhline(1.0, color="0.4", lw=0.8, ls="--")
            ax.set_xticks(x, [f"{r['noise_ratio']:.1f}" for r in mine])
            ax.set(
                xlabel="noise ratio r",
                ylabel="trace ratio (noisy / clean mean)",
                title=f"{name.upper()} ({(mine or missing)[0]['runs']} seeds)",
            )
            if mine:
                ax.legend(loc="upper left")
        if title:
            fig.suptitle(title)
        return fig
