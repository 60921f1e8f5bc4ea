"""XXZ-chain ground states by exact diagonalisation (protocol §1, quantum data).

    H(Δ) = Σ_i (X_i X_{i+1} + Y_i Y_{i+1} + Δ Z_i Z_{i+1}),  i+1 mod N (periodic) or i < N-1 (open).

Label 0: gapless XY phase (-1 < Δ < 1); label 1: gapped Néel phase (Δ > 1). Basis: qubit 0 is the
most significant bit of the basis index (tensorcircuit convention); Z|0> = +|0>.

Default split (the reference's indices on the 293-point grid over [-1, 2]): train label 0 =
107, 109, …, 187; train label 1 = 200, …, 280; val label 0 = 106, …, 188; val label 1 = 199, …, 281.
For any grid the same split follows from one rule (``split_indices``): the grid points inside the
reference's Δ windows [Δ_106, Δ_188] (label 0) and [Δ_199, Δ_281] (label 1), alternating val,
train, val, … within each window. Explicit indices override the rule.

Size guard: before a grid is generated, :func:`check_size` estimates the memory (the states,
``n_delta`` x 2**n complex128, held up to ``GRID_COPIES`` times while they are generated and
cached; the sparse Hamiltonian and the Lanczos vectors; the interpreter) and the time (ground
states timed here at ``min(n_spins, CALIBRATION_SPINS)`` spins, times ``SPIN_TIME_FACTOR`` per
further spin) and refuses, in one line, a grid that would not fit this machine's physical memory
or would take longer than ``QUNLEARN_XXZ_MAX_HOURS`` (default ``DEFAULT_MAX_HOURS``). Generation
longer than ``PROGRESS_AFTER_S`` shows progress on stderr: a tqdm bar on a terminal, otherwise a
plain line every 10% (no carriage returns in logs). Options are checked (type and range, one line
naming ``dataset_options.<key>``) before anything is generated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

import numpy as np
import scipy.sparse as sp

from qunlearn.data import ed
from qunlearn.data.cache import Dataset, cache_dir_path
from qunlearn.data.options import check_choice, check_int, check_real
from qunlearn.data.phases import grid_dataset
from qunlearn.errors import QunlearnError

BOUNDARIES = ed.BOUNDARIES
CACHE_FORMAT = 1
_REF_GRID = np.linspace(-1.0, 2.0, 293)
# Δ windows of the reference selection (class 0, class 1); 189-198 (around Δ = 1) and the
# ferromagnetic edge are left out.
WINDOWS = (
    (float(_REF_GRID[106]), float(_REF_GRID[188])),
    (float(_REF_GRID[199]), float(_REF_GRID[281])),
)
_WINDOW_TOL = 1e-9
PHASES = ("fixed", "random")
MAX_SPINS = 20
MAX_N_DELTA = 1_000_000

# Size guard (see the module docstring; the machinery is qunlearn.data.ed's). Measured on a 2-core
# x86 machine: one ground state takes ~0.04 s at 12 spins, ~0.35 s at 14, ~4 s at 16 and ~9 s at 17
# (2.2-2.9x per spin; the Lanczos vectors leave the CPU caches from ~16 spins on), so 3x per spin
# (ed.SPIN_TIME_FACTOR, from ed.CALIBRATION_SPINS = 12) extrapolates conservatively. Checked with
# tracemalloc: 150 states of 12 spins peaked at 28 MiB above the interpreter (estimate 33 MiB);
# 3 states of 16 spins at 36 MiB (estimate 113 MiB: the Hamiltonian part is generous).
MAX_HOURS_ENV = "QUNLEARN_XXZ_MAX_HOURS"
BASE_BYTES = ed.BASE_BYTES  # the interpreter, NumPy, SciPy and JAX themselves
PROGRESS_AFTER_S = ed.PROGRESS_AFTER_S  # generation shorter than this shows no progress


def xxz_grid(delta_min: float = -1.0, delta_max: float = 2.0, n_delta: int = 293) -> np.ndarray:
    """(n_delta,) evenly spaced anisotropies, endpoints included."""
    if not (np.isfinite(delta_min) and np.isfinite(delta_max) and delta_min < delta_max):
        raise QunlearnError(f"need finite delta_min < delta_max, got {delta_min}, {delta_max}")
    if int(n_delta) < 2:
        raise QunlearnError(f"n_delta must be >= 2, got {n_delta}")
    return np.linspace(float(delta_min), float(delta_max), int(n_delta))


def _check_chain(n_spins: int, boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise QunlearnError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if not 2 <= int(n_spins) <= MAX_SPINS:
        raise QunlearnError(f"n_spins must be in [2, {MAX_SPINS}], got {n_spins}")


def _bonds(n_spins: int, boundary: str) -> list[tuple[int, int]]:
    return ed.bonds(n_spins, boundary)


def _spins(n_spins: int) -> np.ndarray:
    return ed.spins(n_spins)


def xxz_hamiltonian(delta: float, n_spins: int, boundary: str = "periodic") -> sp.csr_matrix:
    """``(2**n, 2**n)`` real sparse H(Δ). XX + YY = 2 (σ+σ- + σ-σ+) swaps antiparallel neighbours
    with amplitude 2; ZZ is diagonal ±1."""
    _check_chain(n_spins, boundary)
    z = _spins(n_spins)
    index = np.arange(1 << n_spins)
    diag = np.zeros(1 << n_spins)
    row_parts, col_parts = [], []
    for i, j in _bonds(n_spins, boundary):
        zz = z[:, i] * z[:, j]
        diag += float(delta) * zz
        anti = index[zz < 0]
        row_parts.append(anti)
        col_parts.append(anti ^ ((1 << (n_spins - 1 - i)) | (1 << (n_spins - 1 - j))))
    rows, cols = np.concatenate(row_parts), np.concatenate(col_parts)
    hop = sp.coo_matrix((np.full(rows.size, 2.0), (rows, cols)), shape=(1 << n_spins,) * 2)
    return (hop + sp.diags(diag)).tocsr()  # duplicates (N = 2 periodic) are summed


fix_phase = ed.fix_phase


def ground_state(
    delta: float, n_spins: int, boundary: str = "periodic"
) -> tuple[float, np.ndarray]:
    """Lowest eigenpair of H(Δ): (energy, psi (2**n,) complex128, unit norm, phase fixed).

    Lanczos (ARPACK ``eigsh``) in the full 2**n space from a fixed start vector, to machine
    tolerance, so repeated calls give identical bits. At Δ = -1 the ground level is degenerate
    and psi is one (deterministic) member of it.
    """
    return ed.lowest_eigenpair(xxz_hamiltonian(delta, n_spins, boundary))


def zz_observables(
    psi: np.ndarray, n_spins: int, boundary: str = "periodic"
) -> tuple[float, float]:
    """(⟨Z_i Z_{i+1}⟩ averaged over bonds, staggered structure factor S(π)), from |psi|²:
    S(π) = (1/N) Σ_{i,j} (-1)^{i-j} ⟨Z_i Z_j⟩ = (1/N) ⟨(Σ_i (-1)^i Z_i)²⟩."""
    prob = np.abs(psi) ** 2
    z = _spins(n_spins).astype(np.float64)
    zz_nn = np.mean([prob @ (z[:, i] * z[:, j]) for i, j in _bonds(n_spins, boundary)])
    stagger = z @ ((-1.0) ** np.arange(n_spins))
    return float(zz_nn), float(prob @ stagger**2 / n_spins)


def generate_xxz_grid(
    deltas, n_spins: int = 12, boundary: str = "periodic"
) -> dict[str, np.ndarray]:
    """Ground states on a grid: deltas (G,), energies (G,), states (G, 2**n) complex128,
    zz_nn (G,), s_pi (G,). Shows progress on stderr when it takes longer than a few seconds."""
    deltas = np.asarray(deltas, dtype=np.float64)

    def observe(psi):
        zz_nn, s_pi = zz_observables(psi, n_spins, boundary)
        return {"zz_nn": zz_nn, "s_pi": s_pi}

    arrays = ed.generate_grid(
        [partial(xxz_hamiltonian, delta, n_spins, boundary) for delta in deltas],
        observe,
        n_spins,
        _GridProgress(len(deltas), f"xxz n_spins={n_spins}"),
    )
    return {"deltas": deltas, **arrays}


_duration = ed.duration


def _GridProgress(total: int, desc: str, stream=None) -> ed.GridProgress:  # noqa: N802
    """:class:`qunlearn.data.ed.GridProgress` after this module's ``PROGRESS_AFTER_S``."""
    return ed.GridProgress(total, desc, stream, after_s=PROGRESS_AFTER_S)


# ---------------------------------------------------------------------------------------------
# Size guard


def memory_limit_bytes() -> int:
    """Physical memory of this machine (``os.sysconf``), or a smaller cgroup v2 limit."""
    return ed.memory_limit_bytes()


def max_seconds() -> float:
    """The longest generation allowed: ``$QUNLEARN_XXZ_MAX_HOURS`` (default 2) hours."""
    return ed.max_seconds(MAX_HOURS_ENV)


def estimate_bytes(n_spins: int, n_delta: int) -> tuple[int, int]:
    """(bytes of one copy of the states, peak bytes of generating and caching the grid)."""
    # diagonal + at most one hop per bond and basis state
    return ed.estimate_bytes(n_spins, n_delta, n_spins + 1, BASE_BYTES)


def seconds_per_state(n_spins: int, boundary: str, delta_min: float, delta_max: float) -> float:
    """Seconds per grid point here: five Δ across the grid (ground state and observables) timed
    at ``min(n_spins, CALIBRATION_SPINS)`` spins, times ``CALIBRATION_MARGIN``, times
    ``SPIN_TIME_FACTOR`` per further spin."""
    probes = delta_min + (delta_max - delta_min) * np.array([0.02, 0.25, 0.5, 0.75, 0.98])

    def probe(n_cal):
        for delta in probes:
            zz_observables(ground_state(delta, n_cal, boundary)[1], n_cal, boundary)

    return ed.seconds_per_state(n_spins, probe, len(probes))


def check_size(
    n_spins: int, boundary: str, delta_min: float, delta_max: float, n_delta: int
) -> float:
    """Refuse a grid whose generation would not fit this machine's memory or would take longer
    than :func:`max_seconds` (one-line ``QunlearnError`` with the estimates and the fix). Returns
    the estimated seconds."""
    job = ed.SizeJob("xxz", n_spins, n_delta, lambda n: n + 1, "n_delta", MAX_HOURS_ENV, BASE_BYTES)
    per_state = seconds_per_state(n_spins, boundary, delta_min, delta_max)
    return ed.check_size(job, per_state, memory_limit_bytes(), max_seconds())


def _grid_params(n_spins, boundary, delta_min, delta_max, n_delta) -> dict:
    """The grid options, type- and range-checked (one line naming ``dataset_options.<key>``)."""
    lo, hi = check_real("delta_min", delta_min), check_real("delta_max", delta_max)
    params = {
        "n_spins": check_int("n_spins", n_spins, 2, MAX_SPINS),
        "boundary": check_choice("boundary", boundary, BOUNDARIES),
        "delta_min": lo,
        "delta_max": hi,
        "n_delta": check_int("n_delta", n_delta, 2, MAX_N_DELTA),
        "format": CACHE_FORMAT,
    }
    if not lo < hi:
        raise QunlearnError(
            f"dataset_options.delta_min must be below dataset_options.delta_max, got "
            f"{delta_min} and {delta_max}: the grid runs from delta_min to delta_max"
        )
    return params


def cache_name(params: dict) -> str:
    """File name of a parameter set: readable prefix + 12 hex digits of its canonical JSON."""
    return ed.cache_name("xxz", params)


def load_xxz_grid(
    *,
    cache_dir: str | os.PathLike | None = None,
    n_spins: int = 12,
    boundary: str = "periodic",
    delta_min: float = -1.0,
    delta_max: float = 2.0,
    n_delta: int = 293,
) -> tuple[dict[str, np.ndarray], dict]:
    """All ground states of a grid (see ``generate_xxz_grid``) and the cache metadata, read from
    the cache or generated and cached (missing or checksum mismatch -> regenerate)."""
    params = _grid_params(n_spins, boundary, delta_min, delta_max, n_delta)
    n_spins, boundary, n_delta = params["n_spins"], params["boundary"], params["n_delta"]
    delta_min, delta_max = params["delta_min"], params["delta_max"]
    return ed.cached_grid(
        cache_dir_path(cache_dir) / cache_name(params),
        params,
        # Refused before anything is created or written, and before any long computation.
        guard=lambda: check_size(n_spins, boundary, delta_min, delta_max, n_delta),
        generate=lambda: generate_xxz_grid(
            xxz_grid(delta_min, delta_max, n_delta), n_spins, boundary
        ),
        announce=lambda seconds: (
            f"xxz: exact diagonalisation of {n_delta} ground states of {n_spins} spins "
            f"({boundary}), ~{_duration(seconds)} here"
        ),
        after_s=PROGRESS_AFTER_S,
    )


def split_indices(deltas, train_idx=None, val_idx=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (idx label 0, idx label 1), "val": (...)} into ``deltas``.

    A split left as None follows the rule in the module docstring (reproduces the reference's
    indices on the default grid). Given splits are pairs of index sequences and are validated:
    in range, label 0 in -1 < Δ < 1, label 1 in Δ > 1, train and val disjoint.
    """
    deltas = np.asarray(deltas)
    rule: dict[str, list[np.ndarray]] = {"val": [], "train": []}
    for lo, hi in WINDOWS:
        inside = np.flatnonzero((deltas >= lo - _WINDOW_TOL) & (deltas <= hi + _WINDOW_TOL))
        rule["val"].append(inside[0::2])
        rule["train"].append(inside[1::2])
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, given in (("train", train_idx), ("val", val_idx)):
        pair = rule[split] if given is None else _as_pair(given, split, len(deltas))
        for label, idx in enumerate(pair):
            if idx.size == 0:
                raise QunlearnError(
                    f"{split} label {label} has no grid points: widen the grid or pass "
                    f"dataset_options.{split}_idx = (indices label 0, indices label 1)"
                )
            d = deltas[idx]
            ok = np.all((d > -1) & (d < 1)) if label == 0 else np.all(d > 1)
            if not ok:
                phase = "-1 < Δ < 1" if label == 0 else "Δ > 1"
                raise QunlearnError(
                    f"{split} label {label} indices must lie in {phase}, got Δ in "
                    f"[{d.min():.4g}, {d.max():.4g}]: fix dataset_options.{split}_idx"
                )
        out[split] = (pair[0], pair[1])
    if np.intersect1d(np.concatenate(out["train"]), np.concatenate(out["val"])).size:
        raise QunlearnError(
            "train and val indices overlap: pass disjoint "
            "dataset_options.train_idx and dataset_options.val_idx"
        )
    return out


def _as_pair(given, split: str, n_delta: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        pair = tuple(np.asarray(idx).reshape(-1) for idx in given)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or any(i.size and not np.issubdtype(i.dtype, np.integer) for i in pair):
        raise QunlearnError(
            f"dataset_options.{split}_idx must be a pair of integer index lists "
            f"(indices label 0, indices label 1), got {given!r}"
        )
    pair = (pair[0].astype(np.int64), pair[1].astype(np.int64))
    for idx in pair:
        if idx.size and (idx.min() < 0 or idx.max() >= n_delta):
            raise QunlearnError(
                f"dataset_options.{split}_idx has indices outside [0, {n_delta}): "
                f"fix dataset_options.{split}_idx"
            )
        if np.unique(idx).size != idx.size:
            raise QunlearnError(
                f"dataset_options.{split}_idx repeats an index: pass each grid index once"
            )
    return pair


def load_xxz(
    *,
    cache_dir: str | os.PathLike | None = None,
    n_spins: int = 12,
    boundary: str = "periodic",
    delta_min: float = -1.0,
    delta_max: float = 2.0,
    n_delta: int = 293,
    train_idx: Sequence[Sequence[int]] | None = None,
    val_idx: Sequence[Sequence[int]] | None = None,
    phase: str = "fixed",
    phase_seed: int = 0,
) -> Dataset:
    """XXZ ground states, class-sorted: default train (82, 4096), val (84, 4096) complex128.

    ``train_idx`` / ``val_idx``: (indices of label 0, indices of label 1) into
    ``xxz_grid(delta_min, delta_max, n_delta)``; None follows ``split_indices``' rule.

    ``phase``: ``"fixed"`` (protocol §1: the deterministic phase of :func:`fix_phase`) or
    ``"random"``: every state times its own uniform e^{iφ}, φ drawn from ``PRNGKey(phase_seed)``,
    as an eigensolver that does not fix phases returns them. A global phase is physically
    meaningless and invisible to the QNN (⟨Z⟩ ignores it) but moves the MLP's [Re; Im] input: with
    fixed phases neighbouring ground states are nearly the same vector (overlap > 0.999), which an
    MLP cannot fit with flipped labels; random phases spread them apart.
    """
    # Every option is checked before anything is generated (which can take long).
    grid = _grid_params(n_spins, boundary, delta_min, delta_max, n_delta)
    check_choice("phase", phase, PHASES)
    phase_seed = check_int("phase_seed", phase_seed, -(2**63), 2**63 - 1)
    split = split_indices(
        xxz_grid(grid["delta_min"], grid["delta_max"], grid["n_delta"]), train_idx, val_idx
    )
    arrays, meta = load_xxz_grid(
        cache_dir=cache_dir,
        n_spins=n_spins,
        boundary=boundary,
        delta_min=delta_min,
        delta_max=delta_max,
        n_delta=n_delta,
    )

    info = {"hamiltonian": "H = sum_i X_i X_{i+1} + Y_i Y_{i+1} + Delta Z_i Z_{i+1}"}
    return grid_dataset("xxz", arrays, meta, split, phase, phase_seed, info)
