"""Fig 2 panels from a noise-sweep table: accuracy vs alpha, mean ± std over runs, MLP vs QNN."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from qunlearn.plotting.style import mean_std_band, model_color, new_figure, save

NOISE_TITLES = {"label_flip": "label flipping", "feature_randomization": "feature randomisation"}


def _series(rows, metric):
    """{(model, noise): (alphas, mean, std)} from tidy rows."""
    values = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["metric"] == metric:
            values[(r["model"], r["noise"])][float(r["alpha"])].append(float(r["value"]))
    out = {}
    for key, by_alpha in values.items():
        alphas = np.array(sorted(by_alpha))
        vals = [np.asarray(by_alpha[a]) for a in alphas]
        out[key] = (alphas, np.array([v.mean() for v in vals]), np.array([v.std() for v in vals]))
    return out


def plot_noise_sweep(
    rows: list[dict], out_dir: str | Path, *, reference: list[dict] | None = None, title: str = ""
) -> list[Path]:
    """One panel per noise type; solid = clean validation, dashed = noisy-label training accuracy.
    ``reference`` (paper rows, our tidy format) is drawn as hollow markers. Saves
    fig2_noise_sweep.png/.pdf."""
    out_dir = Path(out_dir)
    noises = sorted({r["noise"] for r in rows})
    fig = new_figure(5.2 * len(noises), 4, layout=None)
    axes = fig.subplots(1, len(noises), squeeze=False)
    val, train = _series(rows, "val_acc"), _series(rows, "train_acc_noisy_labels")
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
    return save(fig, out_dir / "fig2_noise_sweep")


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
