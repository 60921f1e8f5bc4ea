"""Cluster-Ising chain ground states by exact diagonalisation (Cong, Choi & Lukin, Nat. Phys. 15,
1273 (2019), the data their QCNN was introduced on).

    H = - Σ_i Z_{i-1} X_i Z_{i+1} - h1 Σ_i X_i - h2 Σ_i X_i X_{i+1}

Open chain by default, as in the paper (the ZXZ terms on the N-2 bulk sites, XX on the N-1 bonds);
``boundary = "periodic"`` wraps every term. Grid: the paper's phase-diagram window, h1 in
[0, 1.6] x h2 in [-1.6, 1.6] (default steps 0.1: 17 x 33 points, h1 the slow index).

Labels: 0 = the Z2 x Z2 symmetry-protected topological (SPT) phase, 1 = not SPT (paramagnet or
antiferromagnet). The phase boundary away from h2 = 0 is known only numerically (the paper's
DMRG); exactly known is the h2 = 0 line, where the model is free fermions and critical at
h1 = 1. So a point is labelled by the string order parameter of its own ED state,

    S = ⟨Z_a X_{a+1} X_{a+3} ... X_{b-1} Z_b⟩,  a = ⌊N/4⌋, b = a + 2⌊N/4⌋ (the middle of the chain),

against S_c, the same quantity at the known critical point (h1, h2) = (1, 0) of the same chain:
label 0 if S > S_c + margin, label 1 if S < S_c - margin, left out otherwise. On the h2 = 0 line
this reproduces the exact labels (S falls monotonically with h1 there, tested); elsewhere it is the
finite-chain contour S = S_c, an approximation of the paper's boundary that sharpens as N grows.
S = 1 in the cluster state (h1 = h2 = 0), where the string is a product of the stabilisers ZXZ.

Stored per grid point: energy, state, ``sop`` (S), ``zxz`` (⟨Z X Z⟩ averaged over its terms) and
``mx`` (⟨X_i⟩ averaged). Sizes: the size guard of :mod:`qunlearn.data.ed`.
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

CRITICAL_POINT = (1.0, 0.0)
PHASE_NAMES = ("SPT (S > S_c)", "non-SPT (S < S_c)")
MIN_SPINS = 4  # the string needs a < b


def _zxz_sites(n_spins: int, boundary: str) -> range:
    return range(n_spins) if boundary == "periodic" else range(1, n_spins - 1)


def cluster_ising_hamiltonian(point, n_spins: int, boundary: str = "open") -> sp.csr_matrix:
    """``(2**n, 2**n)`` real sparse H(h1, h2); ``point`` = (h1, h2)."""
    h1, h2 = (float(v) for v in point)
    n = n_spins
    terms: list[ed.Term] = [
        (-1.0, (i,), ((i - 1) % n, (i + 1) % n)) for i in _zxz_sites(n, boundary)
    ]
    terms += [(-h1, (i,), ()) for i in range(n)]
    terms += [(-h2, (i, j), ()) for i, j in ed.bonds(n, boundary)]
    return ed.pauli_hamiltonian(n, terms)


def string_sites(n_spins: int) -> tuple[int, int, tuple[int, ...]]:
    """(a, b, x sites) of the string order parameter Z_a X_{a+1} X_{a+3} ... X_{b-1} Z_b."""
    a = n_spins // 4
    b = a + 2 * (n_spins // 4)
    return a, b, tuple(range(a + 1, b, 2))


def cluster_ising_observables(psi: np.ndarray, n_spins: int, boundary: str = "open") -> dict:
    """{"sop": S, "zxz": ⟨Z_{i-1} X_i Z_{i+1}⟩ averaged over the Hamiltonian's terms,
    "mx": ⟨X_i⟩ averaged}."""
    n = n_spins
    a, b, xs = string_sites(n)
    zxz = [
        ed.pauli_expectation(psi, n, (i,), ((i - 1) % n, (i + 1) % n))
        for i in _zxz_sites(n, boundary)
    ]
    mx = [ed.pauli_expectation(psi, n, (i,), ()) for i in range(n)]
    return {
        "sop": ed.pauli_expectation(psi, n, xs, (a, b)),
        "zxz": float(np.mean(zxz)),
        "mx": float(np.mean(mx)),
    }


def cluster_ising_labels(sop, critical_sop: float, margin: float) -> np.ndarray:
    """(G,) 0 (SPT) where S > S_c + margin, 1 where S < S_c - margin, -1 in between."""
    sop = np.asarray(sop, dtype=np.float64)
    labels = np.full(sop.shape, -1, np.int32)
    labels[sop > critical_sop + margin] = 0
    labels[sop < critical_sop - margin] = 1
    return labels


FAMILY = Family(
    "cluster_ising",
    cluster_ising_hamiltonian,
    cluster_ising_observables,
    lambda n: 3 * n,  # COO entries before summing: ZXZ, X and XX terms, N of each
    "n_h1 x n_h2",
)


def cluster_ising_grid(
    h1_min: float = 0.0,
    h1_max: float = 1.6,
    n_h1: int = 17,
    h2_min: float = -1.6,
    h2_max: float = 1.6,
    n_h2: int = 33,
) -> np.ndarray:
    """(n_h1 * n_h2, 2) points (h1, h2), h1 the slow index, endpoints included."""
    h1 = np.linspace(float(h1_min), float(h1_max), int(n_h1))
    h2 = np.linspace(float(h2_min), float(h2_max), int(n_h2))
    return np.stack(np.meshgrid(h1, h2, indexing="ij"), axis=-1).reshape(-1, 2)


def _grid_params(n_spins, boundary, h1_min, h1_max, n_h1, h2_min, h2_max, n_h2) -> dict:
    n_spins, boundary = check_spins(n_spins, boundary, MIN_SPINS)
    return {
        "n_spins": n_spins,
        "boundary": boundary,
        **check_axis("h1", h1_min, h1_max, n_h1),
        **check_axis("h2", h2_min, h2_max, n_h2),
    }


def _points(params: dict) -> np.ndarray:
    keys = ("h1_min", "h1_max", "n_h1", "h2_min", "h2_max", "n_h2")
    return cluster_ising_grid(*(params[k] for k in keys))


def load_cluster_ising_grid(
    *, cache_dir: str | os.PathLike | None = None, **grid
) -> tuple[dict[str, np.ndarray], dict]:
    """The grid's ground states: points (G, 2) = (h1, h2), energies, states (G, 2**n), sop, zxz,
    mx; and the cache metadata (read from the cache or generated and cached). ``grid``: the grid
    options of :func:`load_cluster_ising`, with its defaults."""
    params = _grid_params(**grid_options("cluster_ising", load_cluster_ising, grid))
    return load_grid(FAMILY, _points(params), params, cache_dir)


def critical_sop(n_spins: int, boundary: str, cache_dir=None) -> float:
    """S at the exactly known critical point (h1, h2) = (1, 0) of the same chain (cached)."""
    params = {"n_spins": n_spins, "boundary": boundary, "critical_point": list(CRITICAL_POINT)}
    arrays, _ = load_grid(FAMILY, np.array([CRITICAL_POINT]), params, cache_dir)
    return float(arrays["sop"][0])


def load_cluster_ising(
    *,
    cache_dir: str | os.PathLike | None = None,
    n_spins: int = 12,
    boundary: str = "open",
    h1_min: float = 0.0,
    h1_max: float = 1.6,
    n_h1: int = 17,
    h2_min: float = -1.6,
    h2_max: float = 1.6,
    n_h2: int = 33,
    margin: float = 0.0,
    phase: str = "fixed",
    phase_seed: int = 0,
) -> Dataset:
    """Cluster-Ising ground states, class-sorted (label 0 SPT, label 1 not; see the module
    docstring): complex128 (G, 2**n_spins). ``margin``: points with |S - S_c| <= margin are left
    out. ``phase``: as :func:`qunlearn.data.xxz.load_xxz`'s. A grid with fewer than two points in
    either phase is refused in one line (after its ground states, which the labels need)."""
    params = _grid_params(n_spins, boundary, h1_min, h1_max, n_h1, h2_min, h2_max, n_h2)
    margin, phase, phase_seed = check_label_options(margin, phase, phase_seed)
    arrays, meta = load_grid(FAMILY, _points(params), params, cache_dir)
    s_c = critical_sop(params["n_spins"], params["boundary"], cache_dir)
    split = phase_split(
        cluster_ising_labels(arrays["sop"], s_c, margin), "cluster_ising", PHASE_NAMES
    )
    info = {
        "hamiltonian": "H = -sum_i Z_{i-1} X_i Z_{i+1} - h1 sum_i X_i - h2 sum_i X_i X_{i+1}",
        "labels": f"0: SPT, string order S > S_c + margin; 1: not SPT, S < S_c - margin; S_c = "
        f"{s_c:.6f} (S at the critical point h1 = 1, h2 = 0), margin {margin}",
        "critical_sop": s_c,
    }
    return grid_dataset("cluster_ising", arrays, meta, split, phase, phase_seed, info)
