"""Transverse-field Ising chain ground states by exact diagonalisation (quantum phase data).

    H(h) = - Σ_i Z_i Z_{i+1} - h Σ_i X_i,   i+1 mod N (periodic, the default) or i < N-1 (open).

Label 0: ferromagnet (h < 1); label 1: paramagnet (h > 1); the critical point h = 1 and, by
default, the points with |h - 1| < ``margin`` are left out. Grid: ``n_h`` fields evenly spaced
over [h_min, h_max] (default 0 to 2 in steps of 0.01; margin 0.1 leaves 91 points per phase).
Split: :func:`qunlearn.data.phases.phase_split` (alternating val, train within each phase).
Basis and ground-state conventions: :mod:`qunlearn.data.ed` (qubit 0 the most significant bit,
Z|0> = +|0>, Lanczos from a fixed start vector, phase fixed).

Stored per grid point: the energy, the state, ``zz_far`` = ⟨Z_i Z_{i+⌊N/2⌋}⟩ averaged over i (the
ferromagnetic order, m² as N grows; the ground state of a finite chain is the symmetric cat state,
so ⟨Z_i⟩ = 0 and the order shows in the correlation) and ``mx`` = ⟨X_i⟩ averaged over sites.

At h = 0 the ground level is doubly degenerate (all up, all down) and psi is one deterministic
member of it; for 0 < h < 1 the two lowest levels are split by ~h^N, which Lanczos resolves.
Sizes: the size guard of :mod:`qunlearn.data.ed` (``QUNLEARN_ED_MAX_HOURS``) refuses, with its
estimate, a grid that would not fit this machine's memory or time (e.g. ``n_spins = 40``).
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from qunlearn.data import ed
from qunlearn.data.cache import Dataset
from qunlearn.data.phases import (
    Family,
    check_axis,
    check_label_options,
    check_spins,
    grid_dataset,
    grid_options,
    load_grid,
    phase_split,
)
from qunlearn.errors import QunlearnError

CRITICAL_H = 1.0
PHASE_NAMES = ("ferromagnetic (h < 1)", "paramagnetic (h > 1)")
_TOL = 1e-9


def tfim_hamiltonian(h, n_spins: int, boundary: str = "periodic") -> sp.csr_matrix:
    """``(2**n, 2**n)`` real sparse H(h); ``h`` a number or a 1-tuple (a grid point)."""
    (field,) = np.atleast_1d(np.asarray(h, dtype=np.float64))
    terms: list[ed.Term] = [(-1.0, (), (i, j)) for i, j in ed.bonds(n_spins, boundary)]
    terms += [(-float(field), (i,), ()) for i in range(n_spins)]
    return ed.pauli_hamiltonian(n_spins, terms)


def tfim_observables(psi: np.ndarray, n_spins: int, boundary: str = "periodic") -> dict:
    """{"zz_far": ⟨Z_i Z_{i+⌊N/2⌋}⟩ averaged over i, "mx": ⟨X_i⟩ averaged over i}; an open chain
    averages only the pairs inside it."""
    prob = np.abs(psi) ** 2
    z = ed.spins(n_spins).astype(np.float64)
    far = n_spins // 2
    starts = range(n_spins) if boundary == "periodic" else range(n_spins - far)
    zz = np.mean([prob @ (z[:, i] * z[:, (i + far) % n_spins]) for i in starts])
    mx = np.mean([ed.pauli_expectation(psi, n_spins, (i,), ()) for i in range(n_spins)])
    return {"zz_far": float(zz), "mx": float(mx)}


def tfim_labels(fields, margin: float) -> np.ndarray:
    """(G,) 0 where h < 1 - margin, 1 where h > 1 + margin, -1 elsewhere (and at h = 1)."""
    h = np.asarray(fields, dtype=np.float64)
    labels = np.full(h.shape, -1, np.int32)
    labels[(h < CRITICAL_H) & (h <= CRITICAL_H - margin + _TOL)] = 0
    labels[(h > CRITICAL_H) & (h >= CRITICAL_H + margin - _TOL)] = 1
    return labels


def free_fermion_energy(h: float, n_spins: int) -> float:
    """Exact ground energy of the periodic chain: the even-parity sector (antiperiodic fermions,
    k = ±(2m-1)π/N, m = 1..N/2), E0 = -Σ_k sqrt(1 + h² - 2h cos k). N even."""
    if n_spins % 2:
        raise QunlearnError(f"the closed form here is for even N, got {n_spins}")
    m = np.arange(1, n_spins // 2 + 1)
    k = np.concatenate([(2 * m - 1) * np.pi / n_spins, -(2 * m - 1) * np.pi / n_spins])
    return float(-np.sum(np.sqrt(1 + h * h - 2 * h * np.cos(k))))


FAMILY = Family(
    "tfim",
    tfim_hamiltonian,
    tfim_observables,
    lambda n: 2 * n,  # COO entries before summing: one per ZZ bond (diagonal) + one flip per site
    "n_h",
)


def _grid_params(n_spins, boundary, h_min, h_max, n_h) -> dict:
    n_spins, boundary = check_spins(n_spins, boundary)
    return {"n_spins": n_spins, "boundary": boundary, **check_axis("h", h_min, h_max, n_h)}


def tfim_grid(h_min: float = 0.0, h_max: float = 2.0, n_h: int = 201) -> np.ndarray:
    """(n_h,) evenly spaced fields, endpoints included."""
    return np.linspace(float(h_min), float(h_max), int(n_h))


def load_tfim_grid(
    *, cache_dir: str | os.PathLike | None = None, **grid
) -> tuple[dict[str, np.ndarray], dict]:
    """The grid's ground states: points (G, 1) = h, energies, states (G, 2**n) complex128, zz_far,
    mx; and the cache metadata (read from the cache or generated and cached). ``grid``: the grid
    options of :func:`load_tfim`, with its defaults."""
    params = _grid_params(**grid_options("tfim", load_tfim, grid))
    fields = tfim_grid(params["h_min"], params["h_max"], params["n_h"])
    return load_grid(FAMILY, fields[:, None], params, cache_dir)


def load_tfim(
    *,
    cache_dir: str | os.PathLike | None = None,
    n_spins: int = 12,
    boundary: str = "periodic",
    h_min: float = 0.0,
    h_max: float = 2.0,
    n_h: int = 201,
    margin: float = 0.1,
    phase: str = "fixed",
    phase_seed: int = 0,
) -> Dataset:
    """TFIM ground states, class-sorted (label 0 ferromagnet h < 1, label 1 paramagnet h > 1):
    default train (90, 4096), val (92, 4096) complex128. ``margin``: points with |h - 1| < margin
    are left out. ``phase``: as :func:`qunlearn.data.xxz.load_xxz`'s."""
    # Every option is checked, and the split made, before anything is generated.
    params = _grid_params(n_spins, boundary, h_min, h_max, n_h)
    margin, phase, phase_seed = check_label_options(margin, phase, phase_seed)
    fields = tfim_grid(params["h_min"], params["h_max"], params["n_h"])
    split = phase_split(tfim_labels(fields, margin), "tfim", PHASE_NAMES)
    arrays, meta = load_grid(FAMILY, fields[:, None], params, cache_dir)
    info = {
        "hamiltonian": "H = -sum_i Z_i Z_{i+1} - h sum_i X_i",
        "labels": f"0: ferromagnet, h < 1 - margin; 1: paramagnet, h > 1 + margin "
        f"(margin {margin})",
    }
    return grid_dataset("tfim", arrays, meta, split, phase, phase_seed, info)
