"""Ground-state data sets on a field grid (TFIM, cluster-Ising): the parts they share.

A family gives its grid points, a Hamiltonian per point, the observables to store and a label per
point (0, 1, or -1 = left out near the transition). This module generates and caches the grid
(:func:`load_grid`, through :mod:`qunlearn.data.ed`: size guard, checksummed cache, progress),
splits it (:func:`phase_split`) and assembles the class-sorted :class:`Dataset`
(:func:`grid_dataset`, with the XXZ loader's ``phase`` option).

Split rule: within each class, in grid order, the points alternate val, train, val, ...; the
larger class's training points are then thinned, evenly over the grid, to the smaller class's
count (the data contract's equal halves); the thinned points are used nowhere.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import numpy as np
import scipy.sparse as sp

from qunlearn.data import ed
from qunlearn.data.cache import Dataset, cache_dir_path
from qunlearn.data.options import check_choice, check_int, check_real
from qunlearn.errors import QunlearnError

MAX_HOURS_ENV = "QUNLEARN_ED_MAX_HOURS"
PHASES = ("fixed", "random")
MAX_POINTS = 1_000_000
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Family:
    """A ground-state family on a grid: its name, Hamiltonian ``(point, n_spins, boundary)``,
    observables ``(psi, n_spins, boundary) -> {name: value}``, nonzeros per Hamiltonian row at n
    spins, and the name of its grid-size option (for the size guard's advice)."""

    name: str
    hamiltonian: Callable[..., sp.spmatrix]
    observe: Callable[..., dict[str, float]]
    nnz_per_row: Callable[[int], int]
    points_option: str


def check_spins(n_spins, boundary, minimum: int = 3) -> tuple[int, str]:
    """n_spins an integer >= minimum (no upper bound here: the size guard refuses what does not fit,
    with its estimate), boundary 'periodic' or 'open'."""
    return check_int("n_spins", n_spins, minimum), check_choice("boundary", boundary, ed.BOUNDARIES)


def check_axis(axis: str, lo, hi, count) -> dict:
    """One field axis of a grid: ``{axis}_min`` < ``{axis}_max``, finite, ``n_{axis}`` >= 2."""
    lo_value, hi_value = check_real(f"{axis}_min", lo), check_real(f"{axis}_max", hi)
    if not lo_value < hi_value:
        raise QunlearnError(
            f"dataset_options.{axis}_min must be below dataset_options.{axis}_max, got {lo} and "
            f"{hi}: the grid runs from {axis}_min to {axis}_max"
        )
    return {
        f"{axis}_min": lo_value,
        f"{axis}_max": hi_value,
        f"n_{axis}": check_points(f"n_{axis}", count),
    }


LABEL_OPTIONS = ("cache_dir", "margin", "phase", "phase_seed")  # a loader's non-grid options


def grid_options(dataset: str, loader, given: dict) -> dict:
    """The grid options of ``loader`` (its keyword options other than :data:`LABEL_OPTIONS`, with
    their defaults) updated with ``given``, refusing in one line a key that is not one of them
    (the ``load_<name>_grid`` functions take the grid options of their data set's loader)."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(loader).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in LABEL_OPTIONS
    }
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise QunlearnError(
            f"unknown grid option(s) {', '.join(unknown)} for {dataset}: valid options are "
            f"{', '.join(defaults)}"
        )
    return {**defaults, **given}


def check_label_options(margin, phase, phase_seed) -> tuple[float, str, int]:
    """The options every phase data set shares: ``margin`` >= 0 (points that close to the
    transition are left out), ``phase`` and ``phase_seed`` (as XXZ's)."""
    margin = check_real("margin", margin)
    if margin < 0:
        raise QunlearnError(f"dataset_options.margin must be >= 0, got {margin}")
    check_choice("phase", phase, PHASES)
    return margin, phase, check_int("phase_seed", phase_seed, -(2**63), 2**63 - 1)


def load_grid(
    family: Family, points: np.ndarray, params: dict, cache_dir: str | os.PathLike | None
) -> tuple[dict[str, np.ndarray], dict]:
    """Ground states and observables at ``points`` (G, p) for ``params`` (n_spins, boundary and
    the grid options, checked), from the cache or generated (size guard first) and cached."""
    n_spins, boundary = params["n_spins"], params["boundary"]
    params = {**params, "format": CACHE_FORMAT}

    def build(n):
        return [partial(family.hamiltonian, tuple(p), n, boundary) for p in points]

    def probe(n_cal):
        picks = points[np.linspace(0, len(points) - 1, 3).round().astype(int)]
        for p in picks:
            family.observe(
                ed.lowest_eigenpair(family.hamiltonian(tuple(p), n_cal, boundary))[1],
                n_cal,
                boundary,
            )

    def guard() -> float:
        job = ed.SizeJob(
            family.name,
            n_spins,
            len(points),
            family.nnz_per_row,
            family.points_option,
            MAX_HOURS_ENV,
        )
        per_state = ed.seconds_per_state(n_spins, probe, 3)
        return ed.check_size(job, per_state, ed.memory_limit_bytes(), ed.max_seconds(MAX_HOURS_ENV))

    def generate():
        arrays = ed.generate_grid(
            build(n_spins),
            lambda psi: family.observe(psi, n_spins, boundary),
            n_spins,
            ed.GridProgress(len(points), f"{family.name} n_spins={n_spins}"),
        )
        return {"points": np.asarray(points, dtype=np.float64), **arrays}

    return ed.cached_grid(
        cache_dir_path(cache_dir) / ed.cache_name(family.name, params),
        params,
        guard=guard,
        generate=generate,
        announce=lambda seconds: (
            f"{family.name}: exact diagonalisation of {len(points)} ground states of {n_spins} "
            f"spins ({boundary}), ~{ed.duration(seconds)} here"
        ),
    )


def phase_split(
    labels, dataset: str, names: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (idx label 0, idx label 1), "val": (...)} into the grid, by the rule in the
    module docstring. ``labels`` (G,) in {0, 1, -1}; ``dataset`` and ``names`` (the two phases)
    name the one-line error when a class has fewer than two grid points (one for val, one for
    train)."""
    labels = np.asarray(labels)
    members = [np.flatnonzero(labels == label) for label in (0, 1)]
    for label, idx in enumerate(members):
        if idx.size < 2:
            raise QunlearnError(
                f"{dataset}: the grid has {idx.size} point(s) in the {names[label]} phase (label "
                f"{label}); each phase needs at least 2 (one to validate, one to train): widen "
                "the grid or lower dataset_options.margin"
            )
    val = [idx[0::2] for idx in members]
    train = [idx[1::2] for idx in members]
    keep = min(len(t) for t in train)
    train = [t[np.linspace(0, len(t) - 1, keep).round().astype(int)] for t in train]
    return {"train": (train[0], train[1]), "val": (val[0], val[1])}


def random_phases(count: int, seed: int) -> np.ndarray:
    """(count,) e^{iφ}, φ uniform in [0, 2π) drawn from ``PRNGKey(seed)``: one per grid point."""
    phis = jax.random.uniform(jax.random.PRNGKey(seed), (count,), maxval=2 * np.pi)
    return np.exp(1j * np.asarray(phis))


def take_split(
    states: np.ndarray, split: dict, phase: str, phase_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val), class-sorted, from the grid's ``states`` (G, D) and
    ``split``; ``phase == "random"`` multiplies every state by its grid point's random phase."""
    rotate = random_phases(len(states), phase_seed) if phase == "random" else None
    out = []
    for name in ("train", "val"):
        idx = np.concatenate(split[name])
        labels = np.concatenate(
            [np.full(len(i), label, np.int32) for label, i in enumerate(split[name])]
        )
        x = states[idx] if rotate is None else states[idx] * rotate[idx][:, None]
        out += [x, labels]
    return out[0], out[1], out[2], out[3]


def grid_dataset(
    name: str,
    arrays: dict[str, np.ndarray],
    meta: dict,
    split: dict,
    phase: str,
    phase_seed: int,
    info: dict,
) -> Dataset:
    """The class-sorted data set of a split grid, with the provenance every loader records."""
    x_train, y_train, x_val, y_val = take_split(arrays["states"], split, phase, phase_seed)
    info = {
        "dataset": name,
        "source": {"kind": "exact-diagonalisation", "generator": meta["generator"]},
        "cache_path": meta["cache_path"],
        "cache_sha256": meta["sha256"],
        "parameters": meta["parameters"],
        **info,
        "train_idx": [s.tolist() for s in split["train"]],
        "val_idx": [s.tolist() for s in split["val"]],
        "phase": phase if phase == "fixed" else f"random (PRNGKey({phase_seed}))",
        "n_train_per_class": [len(s) for s in split["train"]],
        "n_val_per_class": [len(s) for s in split["val"]],
    }
    return Dataset(name, x_train, y_train, x_val, y_val, info)


def check_points(key: str, value) -> int:
    return check_int(key, value, 2, MAX_POINTS)
