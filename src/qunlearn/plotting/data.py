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
    chosen = {"train": train_deltas, "val": val_deltas}
    for ax, (values, ylabel) in zip(axes, panels, strict=True):
        ax.axvspan(*excluded_window, color="0.88", lw=0, label="excluded")
        ax.plot(deltas, values, color="0.35", lw=1.0, zorder=1)

        def at(split, label, v=values):
            d = np.asarray(chosen[split][label], dtype=np.float64)
            return d, np.interp(d, deltas, v)

        mark_points(ax, at, ms=3.5, zorder=2)
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


def mark_points(ax, at, *, ms: float = 3.0, zorder: int = 3) -> None:
    """Mark train (o) and val (x) points of each class, coloured by class; ``at(split, label)``
    gives their (x, y) plot coordinates."""
    for label, colour in enumerate(CLASS_COLORS):
        for split, marker in (("train", "o"), ("val", "x")):
            px, py = at(split, label)
            ax.plot(
                px,
                py,
                marker,
                color=colour,
                ms=ms,
                ls="none",
                mfc="none" if marker == "o" else None,
                label=f"{split}, label {label}",
                zorder=zorder,
            )


def _split_at(info: dict, to_xy):
    """``at(split, label)`` for :func:`mark_points` from a data set's train/val grid indices."""
    return lambda split, label: to_xy(np.asarray(info[f"{split}_idx"][label], dtype=np.int64))


def tfim_figure(
    cache_dir: str | os.PathLike | None = None,
    path: str | os.PathLike = "tfim_phase_diagram.png",
    **options,
) -> list[Path]:
    """The TFIM data against the field: the ferromagnetic order ⟨Z_i Z_{i+N/2}⟩ and ⟨X⟩, the
    train/val points of each class marked, the left-out window shaded and h = 1 drawn; options
    as :func:`qunlearn.data.tfim.load_tfim`'s. Writes exactly ``path``; returns it."""
    from qunlearn.data import load_dataset
    from qunlearn.data.tfim import load_tfim_grid

    path = figure_file(path)
    dataset = load_dataset("tfim", cache_dir=cache_dir, **options)
    grid_options = {k: v for k, v in options.items() if k not in ("margin", "phase", "phase_seed")}
    arrays, meta = load_tfim_grid(cache_dir=cache_dir, **grid_options)
    h = arrays["points"][:, 0]
    margin = float(options.get("margin", 0.1))
    fig = new_figure(9.0, 3.6)
    axes = fig.subplots(1, 2, sharex=True)
    panels = (
        (arrays["zz_far"], r"order $\langle Z_i Z_{i+N/2}\rangle$"),
        (arrays["mx"], r"transverse magnetisation $\langle X_i\rangle$"),
    )
    for ax, (values, ylabel) in zip(axes, panels, strict=True):
        ax.axvspan(1 - margin, 1 + margin, color="0.88", lw=0, label="left out")
        ax.axvline(1.0, color="0.3", lw=0.8, ls="--", label="critical $h = 1$")
        ax.plot(h, values, color="0.35", lw=1.0, zorder=1)
        mark_points(ax, _split_at(dataset.info, lambda idx, v=values: (h[idx], v[idx])))
        ax.set_xlabel("transverse field $h$")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7, frameon=False, loc="lower left")
    params = meta["parameters"]
    fig.suptitle(
        f"TFIM ground states, N = {params['n_spins']} ({params['boundary']}): label 0 "
        "ferromagnet (h < 1), label 1 paramagnet (h > 1)",
        fontsize=10,
    )
    return save(fig, path)


def cluster_ising_figure(
    cache_dir: str | os.PathLike | None = None,
    path: str | os.PathLike = "cluster_ising_phase_diagram.png",
    **options,
) -> list[Path]:
    """The cluster-Ising data: the string order parameter S over (h1, h2) with the labelling
    contour S = S_c and the train points of each class; and S along h2 = 0 (where the exact
    transition is h1 = 1). Options as :func:`qunlearn.data.cluster_ising.load_cluster_ising`'s.
    Writes exactly ``path``; returns it."""
    from qunlearn.data import load_dataset
    from qunlearn.data.cluster_ising import load_cluster_ising_grid

    path = figure_file(path)
    dataset = load_dataset("cluster_ising", cache_dir=cache_dir, **options)
    grid_options = {k: v for k, v in options.items() if k not in ("margin", "phase", "phase_seed")}
    arrays, meta = load_cluster_ising_grid(cache_dir=cache_dir, **grid_options)
    params = meta["parameters"]
    n1, n2 = params["n_h1"], params["n_h2"]
    points, sop = arrays["points"], arrays["sop"]
    h1, h2 = points[:, 0].reshape(n1, n2)[:, 0], points[:, 1].reshape(n1, n2)[0]
    s_c = dataset.info["critical_sop"]
    fig = new_figure(10.5, 5.0)
    ax, cut = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    mesh = ax.pcolormesh(h1, h2, sop.reshape(n1, n2).T, cmap="Greys", vmin=0, vmax=1, zorder=0)
    fig.colorbar(mesh, ax=ax, label="string order $S$")
    ax.contour(h1, h2, sop.reshape(n1, n2).T, levels=[s_c], colors="goldenrod", linewidths=1.5)
    ax.plot([], [], color="goldenrod", label=f"$S = S_c = {s_c:.3f}$")
    ax.plot([1.0], [0.0], "*", color="goldenrod", ms=10, mec="k", label="exact critical point")
    mark_points(ax, _split_at(dataset.info, lambda idx: (points[idx, 0], points[idx, 1])))
    ax.set_xlabel("$h_1$")
    ax.set_ylabel("$h_2$")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.6, -0.13), ncol=3, frameon=False)
    on_line = np.abs(points[:, 1]) < 1e-12
    if on_line.any():
        cut.plot(points[on_line, 0], sop[on_line], "o-", color="0.35", ms=3)
    cut.axhline(s_c, color="goldenrod", lw=1.0, label="$S_c$: label threshold")
    cut.axvline(1.0, color="0.3", lw=0.8, ls="--", label="exact transition $h_1 = 1$")
    cut.set_xlabel("$h_1$ (on $h_2 = 0$)")
    cut.set_ylabel("string order $S$")
    cut.legend(fontsize=7, frameon=False)
    fig.suptitle(
        f"Cluster-Ising ground states, N = {params['n_spins']} ({params['boundary']}): "
        "label 0 SPT ($S > S_c$), label 1 not",
        fontsize=10,
    )
    return save(fig, path)
