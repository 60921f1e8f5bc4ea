"""Fig 3 from an unlearning results directory: validation accuracy and forgetting vs epoch per
method (mean ± std band over runs), one column per model; the paper's means as thin dashed lines.
Weight sweeps (``sweep.csv``): a heatmap per two-weight sweep, a curve per one-weight sweep.
Figures only read tables; drawn with :mod:`qunlearn.plotting.style` (no pyplot, no global
state)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from qunlearn.compare import REFERENCE_UNLEARNING, diverged_as_nan, read_csv, reference_rows
from qunlearn.plotting.style import (
    finite_curve,
    mean_std_band,
    method_color,
    new_figure,
    ordered_methods,
    save,
)

PANELS = (
    ("val_acc", "validation accuracy"),
    ("forget_frac_poisoned_label", "forget set: poisoned label kept"),
)


def _mean_std(rows, metric: str) -> dict:
    """{(model, method): (epochs, mean, std)} over the finite runs (population std)."""
    values: defaultdict[tuple[str, str], defaultdict[int, list[float]]]
    values = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("metric", metric) == metric:
            v = r["value"] if "value" in r else r[metric]
            values[(r["model"], r["method"])][int(r["epoch"])].append(float(v))
    return {key: finite_curve(by_epoch) for key, by_epoch in values.items()}


def plot_unlearning(rows: list[dict], out_dir: str | Path, **options) -> list[Path]:
    """:func:`draw_unlearning`, saved as fig3_unlearning.png/.pdf in ``out_dir``."""
    return save(draw_unlearning(rows, **options), Path(out_dir) / "fig3_unlearning")


def draw_unlearning(
    rows: list[dict],
    *,
    models: dict[str, str],
    dataset: str,
    title: str = "",
    reference: bool = True,
) -> Figure:
    """Fig 3 panels: rows = (validation accuracy, forgetting), columns = ``models`` (our name ->
    kind "mlp"/"qnn", used to find the paper's curves)."""
    names = [m for m in models if any(r["model"] == m for r in rows)]
    methods = ordered_methods(r["method"] for r in rows)
    variant = {r["method"]: r["variant"] for r in rows}
    fig = new_figure(4.6 * max(len(names), 1), 6.4)
    axes = fig.subplots(2, max(len(names), 1), squeeze=False, sharex=True)
    for (metric, label), ax_row in zip(PANELS, axes, strict=True):
        ours = _mean_std(rows, metric)
        for name, ax in zip(names, ax_row, strict=False):
            paper = {}
            ref_file = REFERENCE_UNLEARNING.get((dataset, models[name]))
            if reference and ref_file:
                paper = _mean_std([r | {"model": name} for r in reference_rows(ref_file)], metric)
            for method in methods:
                if (name, method) not in ours:
                    continue
                e, m, s = ours[(name, method)]
                style = "-" if variant[method] == "reference" else "-."
                line, _ = mean_std_band(
                    ax,
                    e,
                    m,
                    s,
                    style,
                    color=method_color(method),
                    lw=1.6,
                    label=f"{method} ({variant[method]})",
                )
                color = line.get_color()
                if (name, method) in paper and variant[method] == "reference":
                    pe, pm, _ = paper[(name, method)]
                    ax.plot(pe, pm, "--", color=color, lw=0.9, alpha=0.8)
            ax.set(ylim=(-0.02, 1.02), ylabel=label, title=f"{dataset} {name.upper()}")
            ax.grid(alpha=0.3)
            if metric == PANELS[-1][0]:
                ax.set_xlabel("epoch (metrics at the start of each epoch)")
    if names:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if reference:
            handles.append(axes[0, 0].plot([], [], "--", color="0.3", lw=0.9)[0])
            labels.append("paper (mean)")
        axes[0, 0].legend(handles, labels, fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def plot_sweeps(rows: list[dict], out_dir: str | Path, **options) -> list[Path]:
    """:func:`draw_sweeps`, saved as fig3_sweep.png/.pdf in ``out_dir``."""
    return save(draw_sweeps(rows, **options), Path(out_dir) / "fig3_sweep")


def draw_sweeps(rows: list[dict], *, axes: dict | None = None, title: str = "") -> Figure:
    """Mean final validation accuracy over runs at every sweep point: rows = models, columns =
    swept methods; two weights -> heatmap (first weight on the y axis), one weight -> curve ± std.
    ``axes``: {method: [weight names]}, e.g. the config's sweep table (else from the table)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    present = set(r["method"] for r in rows)
    methods = [m for m in (axes or {}) if m in present] + sorted(present - set(axes or {}))
    skip = {"dataset", "model", "method", "variant", "run", "epoch", "metric", "value", "seed"}
    axes_of = {
        m: list(
            (axes or {}).get(m)
            or [
                k
                for k in rows[0]
                if k not in skip and any(r["method"] == m and r[k] != "" for r in rows)
            ]
        )
        for m in methods
    }
    fig = new_figure(4.4 * len(methods), 3.8 * len(models))
    grid = fig.subplots(len(models), len(methods), squeeze=False)
    for i, model in enumerate(models):
        for j, method in enumerate(methods):
            ax, names = grid[i, j], axes_of[method]
            vals = defaultdict(list)
            for r in rows:
                if r["model"] == model and r["method"] == method and r["metric"] == "val_acc":
                    vals[tuple(float(r[k]) for k in names)].append(float(r["value"]))
            if len(names) == 2:
                xs = sorted({k[1] for k in vals})
                ys = sorted({k[0] for k in vals})
                z = np.full((len(ys), len(xs)), np.nan)
                for (a, b), v in vals.items():
                    finite = np.asarray(v)[np.isfinite(v)]
                    if finite.size:
                        z[ys.index(a), xs.index(b)] = finite.mean()
                im = ax.imshow(
                    np.ma.masked_invalid(z),  # a point without a finite run: blank, not NaN
                    origin="lower",
                    cmap="viridis",
                    vmin=0.5,
                    vmax=1.0,
                    extent=(xs[0] - 0.05, xs[-1] + 0.05, ys[0] - 0.05, ys[-1] + 0.05),
                    aspect="auto",
                )
                for a in ys:
                    for b in xs:
                        if not np.isnan(z[ys.index(a), xs.index(b)]):
                            ax.text(
                                b,
                                a,
                                f"{z[ys.index(a), xs.index(b)]:.2f}",
                                ha="center",
                                va="center",
                                fontsize=5,
                                color="w",
                            )
                ax.set(xlabel=names[1], ylabel=names[0])
                fig.colorbar(im, ax=ax, label="final val acc (mean over runs)")
            elif len(names) == 1:
                x, m, s = finite_curve({k[0]: v for k, v in vals.items()})
                mean_std_band(ax, x, m, s, "o-", color=method_color(method), band_alpha=0.2)
                ax.set(xlabel=names[0], ylabel="final val acc", ylim=(-0.02, 1.02))
                ax.grid(alpha=0.3)
            else:
                ax.text(
                    0.5,
                    0.5,
                    f"{len(names)}-weight sweep: see sweep.csv",
                    ha="center",
                    transform=ax.transAxes,
                )
            ax.set_title(f"{model.upper()} {method}", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def unlearning_figures(rows: list[dict], config: dict, sweep_rows: list[dict]) -> dict:
    """Every figure of an unlearning result, {file stem: Figure}: ``rows`` = its results table,
    ``sweep_rows`` its sweep table (either may be empty)."""
    models = {name: spec["model"] for name, spec in config["models"].items()}
    rows = diverged_as_nan(rows)  # a diverged run's accuracies are not drawn
    figures = {}
    if rows:
        figures["fig3_unlearning"] = draw_unlearning(
            rows, models=models, dataset=config["dataset"], title=config["name"]
        )
    if sweep_rows:
        figures["fig3_sweep"] = draw_sweeps(
            sweep_rows, axes=config.get("sweep"), title=f"{config['name']}: weight sweeps"
        )
    return figures


def plot_unlearning_dir(
    results_dir: str | Path, rows: list[dict], config: dict, sweep_rows: list[dict] | None = None
) -> list[Path]:
    """Every figure of an unlearning results directory, written into ``results_dir``; ``rows`` =
    its results table, ``sweep_rows`` its sweep table (read from ``sweep.csv`` when None)."""
    results_dir = Path(results_dir)
    sweep = results_dir / "sweep.csv"
    if sweep_rows is None and sweep.is_file():
        sweep_rows = read_csv(sweep)
    figures = unlearning_figures(rows, config, sweep_rows or [])
    return [p for stem, fig in figures.items() for p in save(fig, results_dir / stem)]
