"""Where the poisoned samples sit: the training set in 2-D, clean vs label-flipped vs
feature-randomised (``qunlearn plot-data``)."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from qunlearn.plotting.style import class_colors, figure_file, new_figure, save

AXIS_NAMES = {"pca": ("PC 1", "PC 2"), "tsne": ("t-SNE 1", "t-SNE 2")}


def plot_poisoning(view, path: str | os.PathLike, *, title: str = "") -> list[Path]:
    """:func:`draw_poisoning` written to exactly ``path`` (.png, .pdf or .svg)."""
    path = figure_file(path)
    return save(draw_poisoning(view, title=title), path)


def draw_poisoning(view, *, title: str = "") -> Figure:
    """Two panels on one embedding (``view``: an experiments.poisoning_view.PoisonedView).
    Left, label flipping: every training sample, coloured by its clean label (C classes); flipped
    ones drawn as crosses in the colour of the label they were given. Right, feature
    randomisation: the samples kept (coloured by label) and the replacements (black triangles,
    coloured edge = their label)."""
    fig = new_figure(10.0, 4.4)
    left, right = fig.subplots(1, 2, sharex=True, sharey=True)
    xy, labels = view.clean_xy, view.labels
    colors = class_colors(int(labels.max()) + 1)
    for label, color in enumerate(colors):
        keep = (labels == label) & ~view.flipped
        left.scatter(*xy[keep].T, s=9, color=color, alpha=0.45, lw=0, label=f"clean, label {label}")
    flips = zip(labels[view.flipped], view.given[view.flipped], strict=True)
    pairs = sorted({(int(a), int(b)) for a, b in flips})
    for label, given in pairs:  # each (clean -> given) pair: crosses in the given label's colour
        flip = (labels == label) & (view.given == given) & view.flipped
        left.scatter(
            *xy[flip].T, s=28, marker="x", color=colors[given], lw=1.2,
            label=f"flipped {label} -> {given}",
        )  # fmt: skip
    left.set_title(f"label flipping: {int(view.flipped.sum())} of {len(labels)} flipped")
    for label, color in enumerate(colors):
        keep = (labels == label) & ~view.randomised
        right.scatter(*xy[keep].T, s=9, color=color, alpha=0.45, lw=0, label=f"kept, label {label}")
    replaced_labels = labels[view.randomised]
    for label, color in enumerate(colors):
        pts = view.random_xy[replaced_labels == label]
        right.scatter(
            *pts.T,
            s=22,
            marker="^",
            color="k",
            edgecolors=color,
            lw=0.8,
            label=f"randomised, label {label}",
        )
    right.set_title(
        f"feature randomisation: {int(view.randomised.sum())} of {len(labels)} replaced"
    )
    xname, yname = AXIS_NAMES[view.method]
    for ax in (left, right):
        ax.set(xlabel=xname)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, markerscale=1.2)
    left.set(ylabel=yname)
    if title:
        fig.suptitle(title)
    return fig
