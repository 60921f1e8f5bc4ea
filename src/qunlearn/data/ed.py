"""Exact diagonalisation shared by the spin-chain data sets (XXZ, TFIM, cluster-Ising).

Basis: qubit 0 is the most significant bit of the basis index (tensorcircuit convention);
Z|0> = +|0>. Hamiltonians are real sparse sums of Pauli strings without Y
(:func:`pauli_hamiltonian`); ground states come from Lanczos (ARPACK ``eigsh``) from a fixed
start vector with a fixed phase (:func:`lowest_eigenpair`), so repeated calls give identical bits.

Also here: a grid of ground states generated with progress (:func:`generate_grid`,
:class:`GridProgress`), read from or written to the checksummed cache (:func:`cached_grid`), and
the size guard every family runs before generating (:func:`check_size`: memory of the states, the
sparse Hamiltonian and the Lanczos vectors against this machine's memory; time extrapolated from
ground states timed here at a few spins).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from tqdm.auto import tqdm

from qunlearn.data.cache import (
    check_writable,
    read_npz,
    resolve_cache_dir,
    sha256_bytes,
    write_npz,
)
from qunlearn.errors import QunlearnError

BOUNDARIES = ("periodic", "open")
GENERATOR = "scipy.sparse.linalg.eigsh(k=1, which='SA', tol=0, v0=default_rng(0))"
PROGRESS_AFTER_S = 3.0  # generation shorter than this shows no progress

# Size guard defaults (see xxz.py for the measurements behind them).
CALIBRATION_SPINS = 12
SPIN_TIME_FACTOR = 3.0
CALIBRATION_MARGIN = 1.5
GRID_COPIES = 3  # states: the generated array, np.savez's in-memory buffer and its bytes copy
SOLVER_BYTES_PER_NNZ = 64  # COO rows/cols lists and arrays, CSR, the diagonal added to it
LANCZOS_VECTORS = 24  # ARPACK's ncv = 20 basis vectors + its work vectors, float64
BASE_BYTES = 512 * 2**20  # the interpreter, NumPy, SciPy and JAX themselves
DEFAULT_MAX_HOURS = 2.0


# ---------------------------------------------------------------------------------------------
# Chains, Pauli strings, eigenpairs


def bonds(n_spins: int, boundary: str) -> list[tuple[int, int]]:
    """Nearest-neighbour pairs (i, i+1), plus (n-1, 0) when periodic."""
    pairs = [(i, i + 1) for i in range(n_spins - 1)]
    return pairs + [(n_spins - 1, 0)] if boundary == "periodic" else pairs


def spins(n_spins: int) -> np.ndarray:
    """(2**n, n) int8: z_i(b) = ±1, the Z eigenvalue of qubit i (MSB first) in basis state b."""
    bits = (np.arange(1 << n_spins)[:, None] >> (n_spins - 1 - np.arange(n_spins))) & 1
    return (1 - 2 * bits).astype(np.int8)


def _mask(n_spins: int, sites: Sequence[int]) -> int:
    return sum(1 << (n_spins - 1 - i) for i in sites)


def _signs(z: np.ndarray, sites: Sequence[int]) -> np.ndarray:
    out = np.ones(z.shape[0])
    for i in sites:
        out = out * z[:, i]
    return out


Term = tuple[float, Sequence[int], Sequence[int]]
"""(coefficient, sites of X, sites of Z) of one Pauli string."""


def pauli_hamiltonian(n_spins: int, terms: Sequence[Term]) -> sp.csr_matrix:
    """``(2**n, 2**n)`` real sparse Σ c · X_{xs} Z_{zs} over ``terms`` = (c, x sites, z sites),
    the x and z sites disjoint (no Y: the matrix is real). X_{xs} Z_{zs}|b> = z_{zs}(b) |b ^ xs>."""
    z = spins(n_spins)
    index = np.arange(1 << n_spins)
    rows, cols, data = [], [], []
    for coeff, xs, zs in terms:
        if set(xs) & set(zs):
            raise ValueError(f"x sites {xs} and z sites {zs} overlap (a Y): not a real term")
        rows.append(index ^ _mask(n_spins, xs))
        cols.append(index)
        data.append(float(coeff) * _signs(z, zs))
    shape = (1 << n_spins,) * 2
    matrix = sp.coo_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=shape
    )
    return matrix.tocsr()  # repeated (row, col) pairs are summed


def pauli_expectation(psi: np.ndarray, n_spins: int, xs: Sequence[int], zs: Sequence[int]) -> float:
    """⟨psi| X_{xs} Z_{zs} |psi⟩ (x and z sites disjoint), real part."""
    signs = _signs(spins(n_spins), zs) if zs else 1.0
    flipped = psi[np.arange(psi.size) ^ _mask(n_spins, xs)]
    return float(np.real(np.vdot(flipped, signs * psi)))


def fix_phase(psi: np.ndarray) -> np.ndarray:
    """psi times the conjugate phase of its largest amplitude, so that amplitude is real > 0.
    Amplitudes within 1e-8 (relative) of the largest count as ties; the lowest index wins, so the
    choice does not hinge on round-off between symmetry-equivalent amplitudes."""
    mag = np.abs(psi)
    pivot = psi[np.flatnonzero(mag >= mag.max() * (1 - 1e-8))[0]]
    return psi * (np.conj(pivot) / np.abs(pivot))


def lowest_levels(h: sp.spmatrix, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` lowest eigenpairs of a real symmetric sparse ``h``, ascending: energies (k,),
    vectors (dim, k). Lanczos from a fixed start vector to machine tolerance (repeatable bits)."""
    v0 = np.random.default_rng(0).standard_normal(h.shape[0])
    energies, vectors = sla.eigsh(h, k=k, which="SA", v0=v0 / np.linalg.norm(v0), tol=0)
    order = np.argsort(energies)
    return energies[order], vectors[:, order]


def lowest_eigenpair(h: sp.spmatrix) -> tuple[float, np.ndarray]:
    """(energy, psi (dim,) complex128, unit norm, phase fixed by :func:`fix_phase`)."""
    energies, vectors = lowest_levels(h, 1)
    psi = vectors[:, 0]
    return float(energies[0]), fix_phase(psi / np.linalg.norm(psi)).astype(np.complex128)


# ---------------------------------------------------------------------------------------------
# Grids and progress


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def size_text(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}" if unit == "MiB" else f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.0f} KiB"


class GridProgress:
    """Progress over the grid points on ``stream`` (stderr): a tqdm bar on a terminal that
    appears after ``after_s``; elsewhere (a log, a pipe) one plain line per 10% once ``after_s``
    have passed, never a carriage return."""

    def __init__(self, total: int, desc: str, stream=None, after_s: float = PROGRESS_AFTER_S):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.desc, self.done, self.decile = total, desc, 0, 0
        self.after_s = after_s
        self.start = time.perf_counter()
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = (
            tqdm(
                total=total,
                desc=desc,
                unit="state",
                file=self.stream,
                leave=False,
                delay=self.after_s,
            )
            if tty
            else None
        )

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - self.start
        decile = self.done * 10 // self.total
        if decile > self.decile and elapsed >= self.after_s:
            self.decile = decile
            left = elapsed / self.done * (self.total - self.done)
            print(
                f"{self.desc}: {self.done}/{self.total} ground states "
                f"({100 * self.done // self.total}%), {duration(elapsed)} elapsed, "
                f"~{duration(left)} left",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def generate_grid(
    hamiltonians: Sequence[Callable[[], sp.spmatrix]],
    observe: Callable[[np.ndarray], dict[str, float]],
    n_spins: int,
    progress: GridProgress,
) -> dict[str, np.ndarray]:
    """Ground states of each Hamiltonian (built lazily, one at a time): energies (G,), states
    (G, 2**n) complex128, and every observable ``observe(psi)`` names, (G,) each."""
    count = len(hamiltonians)
    energies = np.empty(count)
    states = np.empty((count, 1 << n_spins), dtype=np.complex128)  # one copy, filled in place
    observed: dict[str, np.ndarray] = {}
    try:
        for k, build in enumerate(hamiltonians):
            energies[k], states[k] = lowest_eigenpair(build())
            for name, value in observe(states[k]).items():
                observed.setdefault(name, np.empty(count))[k] = value
            progress.update()
    finally:
        progress.close()
    return {"energies": energies, "states": states, **observed}


def cache_name(prefix: str, params: dict) -> str:
    """File name of a parameter set: readable prefix + 12 hex digits of its canonical JSON."""
    tag = sha256_bytes(json.dumps(params, sort_keys=True).encode())[:12]
    return f"{prefix}_N{params['n_spins']}_{params['boundary']}_{tag}.npz"


def cached_grid(
    path: Path,
    params: dict,
    *,
    guard: Callable[[], float],
    generate: Callable[[], dict[str, np.ndarray]],
    announce: Callable[[float], str],
    after_s: float = PROGRESS_AFTER_S,
) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and metadata of ``path`` if it holds ``params``' grid (checksum verified), else
    ``guard()`` (the size guard: raises, or returns the estimated seconds), then ``generate()``,
    cached. Nothing is created or written before the guard and the writability check pass."""
    cached = read_npz(path)
    if cached is not None and cached[1].get("parameters") == params:
        arrays, meta = cached
    else:
        seconds = guard()
        check_writable(resolve_cache_dir(path.parent))
        if seconds > after_s:
            print(f"{announce(seconds)}; cached in {path.parent}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        arrays = generate()
        meta = {
            "parameters": params,
            "generator": GENERATOR,
            "seconds": round(time.perf_counter() - start, 3),
        }
        meta["sha256"] = write_npz(path, arrays, meta)
    return arrays, {**meta, "cache_path": str(path)}


# ---------------------------------------------------------------------------------------------
# Size guard


def memory_limit_bytes() -> int:
    """Physical memory of this machine (``os.sysconf``), or a smaller cgroup v2 limit."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        cgroup = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        cgroup = "max"
    return min(limit, int(cgroup)) if cgroup.isdigit() else limit


def max_seconds(env: str) -> float:
    """The longest generation allowed: ``$env`` hours (default ``DEFAULT_MAX_HOURS``)."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return DEFAULT_MAX_HOURS * 3600
    try:
        hours = float(raw)
    except ValueError:
        hours = math.nan
    if not hours > 0 or not math.isfinite(hours):
        raise QunlearnError(
            f"{env}={raw!r} is not a positive number of hours: "
            f"set it to e.g. {DEFAULT_MAX_HOURS:g} or unset it"
        )
    return hours * 3600


def estimate_bytes(
    n_spins: int, n_points: int, nnz_per_row: int, base: int = BASE_BYTES
) -> tuple[int, int]:
    """(bytes of one copy of the states, peak bytes of generating and caching the grid):
    ``nnz_per_row`` nonzeros per row of the sparse Hamiltonian."""
    dim = 1 << n_spins
    grid = 16 * dim * n_points
    solver = SOLVER_BYTES_PER_NNZ * dim * nnz_per_row + 8 * dim * (LANCZOS_VECTORS + 3 * n_spins)
    return grid, base + GRID_COPIES * grid + solver


def seconds_per_state(n_spins: int, probe: Callable[[int], None], n_probes: int) -> float:
    """Seconds per grid point here: ``probe(n)`` (``n_probes`` ground states and observables at
    ``n = min(n_spins, CALIBRATION_SPINS)`` spins) timed, times ``CALIBRATION_MARGIN``, times
    ``SPIN_TIME_FACTOR`` per further spin."""
    n_cal = min(n_spins, CALIBRATION_SPINS)
    start = time.perf_counter()
    probe(n_cal)
    per_state = max(time.perf_counter() - start, 1e-6) / n_probes * CALIBRATION_MARGIN
    return per_state * SPIN_TIME_FACTOR ** (n_spins - n_cal)


@dataclass(frozen=True)
class SizeJob:
    """What a grid's generation needs, for :func:`check_size`: the family's name, spins, points,
    nonzeros per Hamiltonian row, the name of the grid-size option, the hours variable."""

    name: str
    n_spins: int
    n_points: int
    nnz_per_row: Callable[[int], int]
    points_option: str
    env: str
    base: int = BASE_BYTES


def check_size(job: SizeJob, per_state: float, have: int, limit: float) -> float:
    """Refuse a grid whose generation would not fit ``have`` bytes or would take longer than
    ``limit`` seconds (one-line ``QunlearnError`` with the estimates and the fix). Returns the
    estimated seconds."""
    n_spins, n_points = job.n_spins, job.n_points

    def need_of(n, g):
        return estimate_bytes(n, g, job.nnz_per_row(n), job.base)

    grid, need = need_of(n_spins, n_points)
    seconds = per_state * n_points
    if need <= have and seconds <= limit:
        return seconds

    def fits(n, g):
        slower = per_state * SPIN_TIME_FACTOR ** (n - n_spins)
        return need_of(n, g)[1] <= have and slower * g <= limit

    fixes = []
    fitting = [n for n in range(min(n_spins - 1, 64), 1, -1) if fits(n, n_points)]
    if fitting:
        fixes.append(f"use n_spins <= {fitting[0]}")
    per_point = GRID_COPIES * 16 * (1 << n_spins)  # memory and time are linear in the points
    points = min(
        n_points - 1,
        (have - (need - GRID_COPIES * grid)) // per_point,
        math.floor(limit / per_state),
    )
    if points >= 2:
        fixes.append(f"{job.points_option} <= {points}")
    if need <= have:
        fixes.append(f"set {job.env}={math.ceil(seconds / 3600)} to wait that long")
    raise QunlearnError(
        f"{job.name} with n_spins = {n_spins} needs ~{size_text(need)} for {n_points} ground "
        f"states ({size_text(grid)} of states, held up to {GRID_COPIES} times while generated and "
        f"cached; this machine has {size_text(have)}) and ~{duration(seconds)} of exact "
        f"diagonalisation here (limit {duration(limit)}, {job.env}): "
        + (", or ".join(fixes) if fixes else "use a machine with more memory")
    )
