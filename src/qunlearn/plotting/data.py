"""Figure of the XXZ data: where the train and validation ground states sit on the phase diagram."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qunlearn.data.xxz import load_xxz_grid, split_indices
from qunlearn.errors import QunlearnError
from qunlearn.plotting.style import CLASS_COLORS, figure_file, new_figure, save

_GRID_OPTIONS = ("n_spins", "boundary", "delta_min", "delta_max", "n_delta")


def plot_xxz_phase_diagram(
    deltas,
    energies,
    observable,
    train_deltas: Sequence,
    val_deltas: Sequence,
    excluded_window: tuple[float, float],
    path: str | os.PathLike,
) -> list[Path]:
    """Two panels against Δ: ground-state energy per site and the staggered structure factor S(π).

    deltas, energies (per site), observable: (G,), deltas increasing. train_deltas / val_deltas:
    (Δ of label 0, Δ of label 1), marked on the curves (colour = class, marker = split).
    excluded_window: (lo, hi) shaded. Writes exactly ``path``, whose suffix must be .png, .pdf or
    .svg (else ``QunlearnError``), creating its directory. Returns ``[path]``.
    """
    path = figure_file(path)
    deltas, energies, observable = (
        np.asarray(a, dtype=np.float64) for a in (deltas, energies, observable)
    )
    fig = new_figure(9.0, 3.6)
    axes = fig.subplots(1, 2, sharex=True)
    panels = (
        (energies, r"ground-state energy per site $E_0/N$"),
        (observable, r"staggered $S(\pi)$"),
    )
    for ax, (values, ylabel) in zip(axes, panels, strict=True):
        ax.axvspan(*excluded_window, color="0.88", lw=0, label="excluded")
        ax.plot(deltas, values, color="0.35", lw=1.0, zorder=1)
        for label, colour in enumerate(CLASS_COLORS):
            for split, points, marker in (("train", train_deltas, "o"), ("val", val_deltas, "x")):
                d = np.asarray(points[label], dtype=np.float64)
                ax.plot(
                    d,
                    np.interp(d, deltas, values),
                    marker,
                    color=colour,
                    ms=3.5,
                    ls="none",
                    mfc="none" if marker == "o" else None,
                    label=f"{split}, label {label}",
                    zorder=2,
                )
        ax.set_xlabel(r"anisotropy $\Delta$")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("XXZ chain ground states: data selection", fontsize=10)
    return save(fig, path)


def xxz_figure(
    cache_dir: str | os.PathLike | None = None,
    path: str | os.PathLike = "xxz_phase_diagram.png",
    *,
    train_idx=None,
    val_idx=None,
    **grid_options,
) -> list[Path]:
    """Load (or generate) the XXZ grid and plot it with its train/val selection into exactly
    ``path`` (.png, .pdf or .svg; any other suffix is refused before any data is loaded); see
    ``load_xxz`` for the options. The excluded window spans the gap between the two classes'
    points. Returns the written paths."""
    path = figure_file(path)
    unknown = sorted(set(grid_options) - set(_GRID_OPTIONS))
    if unknown:
        raise QunlearnError(
            f"unknown option(s) {', '.join(unknown)} for the XXZ figure: valid options are "
            f"{', '.join(_GRID_OPTIONS + ('train_idx', 'val_idx'))}"
        )
    arrays, meta = load_xxz_grid(cache_dir=cache_dir, **grid_options)
    deltas = arrays["deltas"]
    split = split_indices(deltas, train_idx, val_idx)
    train = [deltas[idx] for idx in split["train"]]
    val = [deltas[idx] for idx in split["val"]]
    window = (
        max(d.max() for d in (train[0], val[0])),
        min(d.min() for d in (train[1], val[1])),
    )
    n_spins = meta["parameters"]["n_spins"]
    return plot_xxz_phase_diagram(
        deltas, arrays["energies"] / n_spins, arrays["s_pi"], train, val, window, path
    )
