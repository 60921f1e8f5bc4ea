"""A control sweep (configs/control_*.toml): how val(α) and α_c move across its model variants."""

from __future__ import annotations

from collections import defaultdict

from matplotlib.figure import Figure

from qunlearn.experiments.transition import bootstrap_transition
from qunlearn.plotting.style import finite_curve, interval_bars, mean_std_band, new_figure

FIGURE = "control_variants"  # the file stem
MIN_VARIANTS = 3  # a sweep with more model tables than the paper's two is a control


def variant_runs(rows: list[dict], noise: str = "label_flip") -> dict:
    """{model table: {alpha: [val acc per run]}} of one noise, tables in first-seen order."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["metric"] == "val_acc" and r["noise"] == noise:
            out[r["model"]][float(r["alpha"])].append(float(r["value"]))
    return out


def draw_control(rows: list[dict], *, noise: str = "label_flip", title: str = "") -> Figure:
    """Left: clean validation accuracy against α per variant (mean ± std over runs). Right: each
    variant's α_c (logistic fit crossing 0.5) with its bootstrap 95 % interval, labelled with the
    fit's 90 %..10 % width (under label flipping α_c sits near 0.5 by symmetry: the width says
    how sharp the drop is); a variant whose fit never crosses 0.5 inside the grid is listed as
    "no crossing"."""
    runs = variant_runs(rows, noise)
    names = list(runs)
    colors = [f"C{i % 10}" for i in range(len(names))]
    fig = new_figure(10.0, 4.2)
    curves, marks = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
    for name, color in zip(names, colors, strict=True):
        alphas, mean, std = finite_curve(runs[name])
        mean_std_band(curves, alphas, mean, std, "o-", color=color, ms=3, label=name)
    curves.axhline(0.5, color="0.5", lw=0.8, ls=":")
    curves.set(xlabel=r"noise ratio $\alpha$", ylabel="validation accuracy", ylim=(-0.02, 1.02))
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7)
    labels = []
    for i, (name, color) in enumerate(zip(names, colors, strict=True)):
        fit = bootstrap_transition(runs[name])
        if fit is None or fit["alpha_c"] is None:
            labels.append(f"{name} (no crossing)")
            continue
        labels.append(f"{name}\nwidth {fit['width']:.2f}")  # α_c alone is pinned near 0.5
        x, lo, hi = fit["alpha_c"], fit["alpha_c_lo"], fit["alpha_c_hi"]
        marks.errorbar(
            [x], [i], xerr=interval_bars(x, lo, hi), fmt="D", color=color, mec="k", capsize=3
        )
    marks.set_yticks(range(len(names)), labels, fontsize=8)
    marks.invert_yaxis()
    marks.set(xlabel=r"$\alpha_c$ (fit, 95 % CI)")
    marks.grid(alpha=0.3)
    curves.set_title(f"{noise.replace('_', ' ')}: val(α) per variant")
    marks.set_title(r"$\alpha_c$ per variant")
    if title:
        fig.suptitle(title)
    return fig
