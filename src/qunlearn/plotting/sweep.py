"""Fig 2 panels from a noise-sweep table: accuracy vs alpha, mean ± std over runs, MLP vs QNN."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

from qunlearn.experiments.transition import bootstrap_transition
from qunlearn.plotting.style import (
    finite_curve,
    interval_bars,
    mean_std_band,
    model_color,
    new_figure,
    readout_colors,
    save,
)

NOISE_TITLES = {"label_flip": "label flipping", "feature_randomization": "feature randomisation"}


def _series(rows, metric):
    """{(model, noise): (alphas, mean, std)} from tidy rows (finite runs: ``finite_curve``)."""
    values: defaultdict[tuple[str, str], defaultdict[float, list[float]]]
    values = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["metric"] == metric:
            values[(r["model"], r["noise"])][float(r["alpha"])].append(float(r["value"]))
    return {key: finite_curve(by_alpha) for key, by_alpha in values.items()}


def _runs(rows, metric="val_acc"):
    """{(model, noise): {alpha: [value per run]}} from tidy rows."""
    values: defaultdict[tuple[str, str], defaultdict[float, list[float]]]
    values = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["metric"] == metric:
            values[(r["model"], r["noise"])][float(r["alpha"])].append(float(r["value"]))
    return values


def mark_critical_alpha(ax, runs_by_alpha, *, color, label: str) -> dict | None:
    """α_c of the logistic fit (qunlearn.experiments.transition) as a diamond at accuracy 0.5
    with its bootstrap 95 % interval as a horizontal error bar; nothing without a crossing."""
    fit = bootstrap_transition(runs_by_alpha)
    if fit is None or fit["alpha_c"] is None:
        return None
    x = fit["alpha_c"]
    xerr = interval_bars(x, fit["alpha_c_lo"], fit["alpha_c_hi"])
    ax.errorbar(
        [x], [0.5], xerr=xerr, fmt="D", ms=6, color=color, mec="k", capsize=3, zorder=5, label=label
    )
    return fit


FIGURE = "fig2_noise_sweep"  # the file stem


def plot_noise_sweep(
    rows: list[dict], out_dir: str | Path, *, reference: list[dict] | None = None, title: str = ""
) -> list[Path]:
    """:func:`draw_noise_sweep`, saved as fig2_noise_sweep.png/.pdf in ``out_dir``."""
    return save(draw_noise_sweep(rows, reference=reference, title=title), Path(out_dir) / FIGURE)


def draw_noise_sweep(
    rows: list[dict], *, reference: list[dict] | None = None, title: str = ""
) -> Figure:
    """One panel per noise type; solid = clean validation, dashed = noisy-label training accuracy,
    diamond = α_c (logistic fit crossing 0.5) with its bootstrap 95 % interval. ``reference``
    (paper rows, our tidy format) is drawn as hollow markers."""
    noises = sorted({r["noise"] for r in rows})
    fig = new_figure(5.2 * len(noises), 4, layout=None)
    axes = fig.subplots(1, len(noises), squeeze=False)
    val, train = _series(rows, "val_acc"), _series(rows, "train_acc_noisy_labels")
    val_runs = _runs(rows)
    ref = _series(reference, "val_acc") if reference else {}
    for ax, noise in zip(axes[0], noises, strict=True):
        for (model, nz), (a, m, s) in sorted(val.items()):
            if nz != noise:
                continue
            color = model_color(model)
            line, _ = mean_std_band(
                ax,
                a,
                m,
                s,
                "o-",
                color=color,
                band_alpha=0.2,
                band_lw=None,
                label=f"{model.upper()} validation",
            )
            color = line.get_color()
            mark_critical_alpha(
                ax,
                val_runs[(model, nz)],
                color=color,
                label=rf"{model.upper()} $\alpha_c$ (fit, 95 % CI)",
            )
            if (model, nz) in train:
                ta, tm, _ = train[(model, nz)]
                ax.plot(
                    ta, tm, "--", color=color, alpha=0.7, label=f"{model.upper()} train (noisy)"
                )
            if (model, nz) in ref:
                ra, rm, rs = ref[(model, nz)]
                ax.errorbar(
                    ra,
                    rm,
                    rs,
                    fmt="s",
                    mfc="none",
                    color=color,
                    alpha=0.6,
                    label=f"{model.upper()} paper",
                )
        ax.set(
            xlabel=r"noise ratio $\alpha$",
            ylabel="accuracy",
            ylim=(-0.02, 1.02),
            title=NOISE_TITLES.get(noise, noise),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


READOUT_FIGURE = "fig2_readouts"  # the file stem of the finite-shot and circuit-noise readouts


def readout_metrics(rows) -> list[str]:
    """The ``val_acc_shots<S>`` metrics by S, then the ``val_acc_noise_<label>`` ones by label."""
    metrics = {r["metric"] for r in rows}
    shots = sorted((m for m in metrics if m.startswith("val_acc_shots")), key=lambda m: int(m[13:]))
    return shots + sorted(m for m in metrics if m.startswith("val_acc_noise_"))


def draw_readouts(rows: list[dict], *, title: str = "") -> Figure:
    """One panel per (model, noise) with readouts: clean validation accuracy of the SAME trained
    params read out exactly (black), with S shots per example (blues, darker = more shots) and
    under each circuit-noise model (dashed), mean ± std over runs, α_c of each as a diamond."""
    metrics = readout_metrics(rows)
    keys = sorted({(r["model"], r["noise"]) for r in rows if r["metric"] in metrics})
    fig = new_figure(5.2 * len(keys), 4, layout=None)
    axes = fig.subplots(1, len(keys), squeeze=False)
    shots = [m for m in metrics if m.startswith("val_acc_shots")]
    noise_models = [m for m in metrics if m.startswith("val_acc_noise_")]
    shot_colors, noise_colors = readout_colors(len(shots), len(noise_models))
    styles: dict[str, tuple] = {"val_acc": ("o-", "k", "exact")}
    for m, color in zip(shots, shot_colors, strict=True):
        styles[m] = ("o-", color, f"S = {int(m[13:])}")
    for m, color in zip(noise_models, noise_colors, strict=True):
        styles[m] = ("s--", color, f"noise {m[14:]}")
    for ax, (model, noise) in zip(axes[0], keys, strict=True):
        for metric in ("val_acc", *metrics):
            curve = _series(rows, metric).get((model, noise))
            if curve is None:
                continue
            fmt, color, label = styles[metric]
            alphas, mean, std = curve
            mean_std_band(
                ax, alphas, mean, std, fmt, color=color, band_alpha=0.12, band_lw=None, label=label
            )
            mark_critical_alpha(ax, _runs(rows, metric)[(model, noise)], color=color, label="")
        ax.set(
            xlabel=r"noise ratio $\alpha$",
            ylabel="clean validation accuracy",
            ylim=(-0.02, 1.02),
            title=f"{model.upper()}, {NOISE_TITLES.get(noise, noise)}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title=r"readout (diamond: $\alpha_c$, 95 % CI)", title_fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def reference_as_rows(reference: list[dict]) -> list[dict]:
    """Paper CSV rows (wide) -> our tidy rows (metric, value)."""
    out = []
    for r in reference:
        for metric in ("val_acc", "train_acc_noisy_labels"):
            out.append(
                {
                    "model": r["model"],
                    "noise": r["noise"],
                    "alpha": r["alpha"],
                    "metric": metric,
                    "value": r[metric],
                }
            )
    return out
