"""Refuse a model that cannot fit this machine, before any work (planning, compiling, training).

The rule is a floor, not a promise that a model fits: a model is refused when its *unit* (one
example's state vector for a QNN, the weights for an MLP) times a safety factor exceeds
:data:`MEMORY_FRACTION` of the physical memory (``os.sysconf``; no check where that is unknown).

* QNN: the state of one example is 2**n amplitudes of 16 bytes (complex128; 8 for complex64).
  A training step holds a batch of them, and autodiff keeps each GEMM's input state for the
  backward pass: :data:`QNN_STATE_COPIES` = 256, e.g. a batch of 32 x 8 kept states (a depth-6
  circuit keeps about that many). On a 16 GiB machine this allows 21 qubits in complex128.
* QNN with the density-matrix simulator (``circuit_noise``, :mod:`qunlearn.models.noisy_dm`): the
  unit is the evolved observable, 4**n real Pauli coefficients of 8 bytes (4 for complex64). It
  is evolved once per step, not per example (Heisenberg picture; the batch only adds 2**n per
  example), and autodiff keeps one per ring-edge block: depth x n copies, e.g. 10 qubits,
  depth 6: 8 MiB x 60 = 480 MiB; 12 qubits: 128 MiB x 72 = 9 GiB.
* MLP: ``n_in·h1 + h1 + h1·h2 + ...`` float64 weights; training holds the parameters, their
  gradients and the optimiser's moments for every vmapped run of a cell:
  :data:`MLP_WEIGHT_COPIES` = 32. Activations (a few widths per example) are negligible.
"""

from __future__ import annotations

import math
import os

from qunlearn.errors import QunlearnError
from qunlearn.models.circuit_noise import resolve_simulator
from qunlearn.models.mlp import DEFAULT_HIDDEN
from qunlearn.models.qnn import _qubits_for

MEMORY_FRACTION = 0.5
"""Share of the physical memory one model's training may be planned to need."""
QNN_STATE_COPIES = 256
"""Example states a QNN training step holds at the least (batch x states kept for the gradient)."""
MLP_WEIGHT_COPIES = 32
"""Copies of an MLP's weights training holds (params, gradients, optimiser moments, x runs)."""


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where the OS does not say."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _size(n_bytes: float) -> str:
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n_bytes >= 2**power:
            return f"{n_bytes / 2**power:.3g} {unit}"
    return f"{n_bytes:.0f} bytes"


def _mlp_weights(input_dim: int, complex_input: bool, hidden) -> tuple[int, list[int]]:
    sizes = [2 * input_dim if complex_input else input_dim, *hidden, 1]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True)), sizes


def _footprint(name: str, input_dim: int, complex_input: bool, hyper: dict):
    """(unit bytes, copies, why that many, what the unit is, how to shrink it given the allowed
    unit bytes)."""
    if name == "mlp":
        weights, sizes = _mlp_weights(input_dim, complex_input, hyper.get("hidden", DEFAULT_HIDDEN))
        what = (
            f"an MLP with layers {' -> '.join(map(str, sizes))} has {weights:,} weights "
            f"x 8 bytes = {_size(8 * weights)}"
        )

        def mlp_fix(allowed):
            return f"use smaller hidden sizes (at most {int(allowed // 8):,} weights here)"

        why = "params, gradients, optimiser moments, runs"
        return 8 * weights, MLP_WEIGHT_COPIES, why, what, mlp_fix
    n = _qubits_for(input_dim, hyper.get("n_qubits"))
    dtype = hyper.get("dtype", "complex128")
    item = 16 if dtype == "complex128" else 8
    simulator = resolve_simulator(hyper.get("simulator", "auto"), hyper.get("circuit_noise"))
    if simulator == "density_matrix":  # real coefficients: half a complex amplitude's bytes
        depth = hyper.get("depth", 6 if name == "qnn" else 5)
        return _density_matrix_footprint(n, depth, item // 2)
    what = (
        f"a QNN on {n} qubits needs 2^{n} amplitudes x {item} bytes = {_size(item * 2**n)} "
        f"per example state ({dtype})"
    )

    def qnn_fix(allowed):
        most = int(math.floor(math.log2(allowed / item))) if allowed >= item else 0
        half = ' or write dtype = "complex64" (8 bytes)' if 8 * 2**n <= allowed else ""
        return f"use at most {most} qubits here (a smaller input){half}"

    why = "a batch of 32 x 8 states kept for the gradient"
    return item * 2**n, QNN_STATE_COPIES, why, what, qnn_fix


def _density_matrix_footprint(n: int, depth: int, item: int):
    what = (
        f"a noisy QNN's density-matrix simulation on {n} qubits evolves 4^{n} coefficients x "
        f"{item} bytes = {_size(item * 4**n)}"
    )

    def fix(allowed):
        most = int(math.floor(math.log(allowed / item, 4))) if allowed >= item else 0
        return f"use at most {most} qubits with circuit_noise here (a smaller input)"

    why = f"{depth} layers x {n} ring blocks kept for the gradient"
    return item * 4**n, depth * n, why, what, fix


def estimate_bytes(name: str, input_dim: int, complex_input: bool, **hyper) -> int:
    """The least memory (bytes) a training step of model ``name`` needs, by the rule of
    :mod:`qunlearn.models.memory` (a floor: the unit of the model times a safety factor)."""
    unit, copies, *_ = _footprint(name, input_dim, complex_input, hyper)
    return unit * copies


def check_fits(name: str, input_dim: int, complex_input: bool, hyper: dict) -> None:
    """Raise :class:`QunlearnError` when ``estimate_bytes`` exceeds the bound of this machine."""
    memory = physical_memory()
    if memory is None:
        return
    bound = MEMORY_FRACTION * memory
    unit, copies, why, what, fix = _footprint(name, input_dim, complex_input, hyper)
    if unit * copies > bound:
        share = "half" if MEMORY_FRACTION == 0.5 else f"{MEMORY_FRACTION:g}"
        raise QunlearnError(
            f"{what}, x {copies} ({why}: the least a training step holds) = "
            f"{_size(unit * copies)}, over {share} of this machine's {_size(memory)} of memory: "
            f"{fix(bound / copies)}"
        )
