"""The resilience study across data sets: α_c and the transition width of several noise sweeps,
per data set and model, with their bootstrap 95 % intervals (``qunlearn plot ... --across``)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from qunlearn.compare import learns_little, read_across
from qunlearn.plotting.style import figure_paths, interval_bars, model_color, new_figure, save

OFFSET = 0.22  # vertical spacing of the models within one data set's row


def row_label(dataset: str, size: str) -> str:
    """A data set's tick label: its name over its size (spins, digits, encoding)."""
    return f"{dataset}\n{size}" if size else dataset


def draw_across(rows: list[dict], *, title: str = "") -> Figure:
    """Three panels sharing the data sets as rows (top to bottom in the order of
    :func:`qunlearn.compare.across_rows`: TFIM by spins): α_c, the 90 %..10 % width (one axis
    for every data set, so the widths compare directly) and the clean validation accuracy at
    α = 0. One marker per model (MLP, QNN, the logistic-regression control), bars the 95 %
    intervals. A model that learns little (:func:`qunlearn.compare.learns_little`, hollow: its
    fit describes a curve near chance) or
    whose fit never crosses 0.5 gets the reason written in place of its markers."""
    sets = list(dict.fromkeys((r["dataset"], r["size"]) for r in rows))
    slots = {
        s: [(r["results"], r["model"], r["noise"]) for r in rows if (r["dataset"], r["size"]) == s]
        for s in sets
    }  # the models of a data set, from one sweep or several
    fig = new_figure(11.0, 1.4 + 0.62 * len(sets))
    alpha_ax, width_ax, clean_ax = fig.subplots(
        1, 3, sharey=True, gridspec_kw={"width_ratios": [1.2, 1.2, 0.7]}
    )
    for r in rows:
        group = slots[(r["dataset"], r["size"])]
        step = min(OFFSET, 0.8 / len(group))
        slot = group.index((r["results"], r["model"], r["noise"]))
        y = sets.index((r["dataset"], r["size"])) + step * (slot - (len(group) - 1) / 2)
        color = model_color(r["role"])
        clean = r.get("val_acc_alpha0")
        learnt = not learns_little(r)
        if clean is not None:
            face, edge = (color, "k") if learnt else ("white", color)
            clean_ax.plot([clean], [y], "o", color=color, mfc=face, mec=edge, ms=5)
        if not learnt or r.get("alpha_c") is None:  # no transition to draw: say why
            why = "no crossing" if learnt else f"learns little (val {clean:.2f} at α = 0)"
            alpha_ax.text(0.02, y, f"{r['role']}: {why}", va="center", fontsize=7)
            continue
        for ax, name in ((alpha_ax, "alpha_c"), (width_ax, "width")):
            x = r[name]
            bars = interval_bars(x, r.get(f"{name}_lo"), r.get(f"{name}_hi"))
            ax.errorbar([x], [y], xerr=bars, fmt="D", color=color, mec="k", ms=5, capsize=3)
    alpha_ax.set_yticks(range(len(sets)), [row_label(*s) for s in sets], fontsize=8)
    alpha_ax.invert_yaxis()
    alpha_ax.axvline(0.5, color="0.5", lw=0.8, ls=":")
    alpha_ax.set(xlabel=r"$\alpha_c$ (fit, 95 % CI)", xlim=(0.0, 1.0))
    width_ax.set(xlabel="transition width, 90 %..10 % (95 % CI)")
    width_ax.set_xlim(left=0.0)
    cleans = [r["val_acc_alpha0"] for r in rows if r.get("val_acc_alpha0") is not None]
    clean_ax.axvline(0.5, color="0.5", lw=0.8, ls=":")
    clean_ax.set(xlabel=r"val acc at $\alpha$ = 0", xlim=(min([0.4, *cleans]) - 0.02, 1.02))
    for ax in (alpha_ax, width_ax, clean_ax):
        ax.grid(alpha=0.3)
    roles = dict.fromkeys(r["role"] for r in rows)
    handles = [
        Line2D([], [], ls="none", marker="D", color=model_color(role), mec="k") for role in roles
    ]
    fig.legend(handles, list(roles), loc="outside lower center", ncols=len(roles), fontsize=8)
    alpha_ax.set_title(r"critical noise ratio $\alpha_c$")
    width_ax.set_title("width of the drop")
    clean_ax.set_title("clean accuracy")
    if title:
        fig.suptitle(title)
    return fig


def plot_across(results_dirs: list, path: str | Path) -> list[Path]:
    """The across-data figure of noise-sweep results directories (read only) into ``path`` (a
    file name ending in .png/.pdf/.svg, or a stem for PNG and PDF); returns the files written."""
    figure_paths(path)  # an unsupported suffix before any directory is read
    return save(draw_across(read_across(list(results_dirs))), path)
