"""Quantum neural networks simulated as exact state vectors, built for fast training steps on CPU.

Conventions follow tensorcircuit-ng: qubit 0 is the most significant bit of a basis index,
``rx(t) = exp(-i t X / 2)``, ``ry(t) = exp(-i t Y / 2)``, ``rzz(t) = exp(-i t Z⊗Z / 2)``.
``tests/test_qnn.py`` proves outputs, gradients and Hessian-vector products equal a plain
gate-by-gate tensorcircuit-ng build of the same circuit.

A gate-by-gate circuit compiles in minutes on a 2-core CPU and runs each gate as a small,
memory-bound op. Here a layer is one or two GEMMs. The design, each part measured with
``bench/bench_qnn_kernel.py`` on the 2-core AVX2 EPYC this project targets (10 qubits, depth 6,
batch 256, complex128: 132 -> 25 ms per value_and_grad step):

* **Ring segments as real GEMMs.** One example's state is stored as real numbers, (re, im)
  interleaved (the bytes of a complex vector). The rotations on a *segment* of w ring-adjacent
  qubits whose bits are the trailing ones of the current bit order are one GEMM,
  ``state.reshape(-1, 2·2**w) @ R``, R the real (2·2**w)² form of the complex 2**w matrix;
  vmapped over a batch, one tall GEMM. XLA's float64 GEMMs run ~2.5x faster than its complex128
  ones here, and real arithmetic keeps conjugates and complex transposes out of the backward pass.
* **Rotating bit orders, never transposing back.** A segment is made trailing by a cyclic rotation
  of the bit order (one block transpose) and the state stays in that order, so the next GEMM acts
  on a segment that is already trailing: a two-segment layer costs one transpose.
* **Light cone.** ⟨Z_r⟩ = ⟨ψ|V† Z_r V|ψ⟩ is unchanged by the last layer's RZZ ring (diagonal,
  commutes with Z_r) and by its rotations on qubits other than r (V†V = 1 there). One layer back
  the observable's support grows by a qubit on each side of the ring: in layer ``depth-1-k`` only
  rotations within ring distance k of r and RZZ edges touching distance ≤ k-1 matter. The other
  gates are skipped; their angles get exactly zero gradient (tensorcircuit: ~1e-17).
* **Tail observable.** Once the light cone fits one segment S (≤ 7 qubits), the remaining layers
  are folded into one unitary U on S and ⟨Z_r⟩ = 2‖Qψ‖² − ‖ψ‖², Q the half of U's rows whose bit r
  is 0: one GEMM with half-width output instead of a GEMM per layer.
* **RZZ phases inside GEMMs.** RZZs on edges inside a segment scale the rows of its matrix. An edge
  split between two segments is *deferred*: a diagonal phase commutes with everything up to the
  next gate on its qubits, so it scales the columns of the next segment that holds both of them.
  A dynamic program over (bit order, deferred edges) chooses every layer's segments to minimise a
  cost model of measured GEMM, transpose, phase-pass and stored-state costs (``_GEMM_COST`` ...);
  an elementwise phase pass is the fallback (never needed for ≤ 16 qubits, depth ≤ 12).
* **CNOT ring** (``qnn_cnot``): one gather in the current bit order per layer; the last layer's
  ring is folded into the readout as the ±1 signs ``z_r(perm⁻¹(i))``.

Measured and rejected: a custom VJP (un-computing states with inverse layers) would break
forward-over-reverse Hessians (``jax.jvp`` of ``jax.grad``, used by :mod:`qunlearn.hessian`) and
needs more GEMMs than autodiff here (un-compute + adjoint + gradient vs adjoint + gradient); a
custom JVP that reorders the weight-gradient GEMM is normalised away by XLA; ``jax.checkpoint`` did
not shrink XLA's temporaries; phase passes written with ``reverse`` or ``stack`` of (re, im) are
5-7x slower in XLA's backward than the complex multiply used here; per-amplitude ``cos``/``sin``
must not fuse into the batch loop (XLA recomputes them per example), so the 2**m distinct phases
are expanded by a one-hot GEMM, which XLA materialises once. Everything is plain JAX (no custom
derivative rules): ``grad``, ``jvp``, ``hessian`` and ``vmap`` over examples and runs all work.

Code layout, imports flowing one way: :mod:`qunlearn.models.gates` (gate matrices, index tables)
-> :mod:`qunlearn.models.qnn_plan` (the planner: segments, light cone, RZZ folding, bit-order
rotations, cost model) -> :mod:`qunlearn.models.qnn_exec` (factor matrices and ``_run``, which
applies a plan to one example) -> this module (the factories :func:`qnn` and :func:`qnn_cnot`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.errors import QunlearnError
from qunlearn.models import qnn_plan as plan
from qunlearn.models.circuit_noise import SIMULATORS, resolve_simulator
from qunlearn.models.classes import check_n_classes
from qunlearn.models.gates import DTYPES, cnot_ring_permutation, ring_pairs, rx, ry, z_signs
from qunlearn.models.noisy_dm import dm_program
from qunlearn.models.qnn_exec import _factor_matrices, _realrep, _run

__all__ = [  # the gate helpers are re-exported: callers import them from here
    "DTYPES",
    "READOUTS",
    "SIMULATORS",
    "CircuitParts",
    "cnot_ring_permutation",
    "qnn",
    "qnn_cnot",
    "qnn_cnot_parts",
    "qnn_parts",
    "ring_pairs",
    "rx",
    "ry",
    "z_signs",
]


def _qubits_for(input_dim: int, n_qubits: int | None) -> int:
    """The circuit's width: the data's 2**n amplitudes, or ``n_qubits`` ≥ n (the extra qubits
    lead, in |0⟩: :func:`_pad_amplitudes`)."""
    n = int(round(math.log2(input_dim))) if input_dim > 0 else -1
    if input_dim <= 0 or 2**n != input_dim:
        raise QunlearnError(
            f"QNN input must have 2**n_qubits amplitudes, got dimension {input_dim}: "
            "amplitude-encode (pad) the data to a power of two"
        )
    if n_qubits is not None and n_qubits < n:
        raise QunlearnError(
            f"n_qubits={n_qubits} is fewer than the data's {n} qubits ({input_dim} = 2**{n} "
            f"amplitudes): set n_qubits >= {n} or leave it out"
        )
    return n if n_qubits is None else n_qubits


def _pad_amplitudes(x, n: int):
    """One example's amplitudes on ``n`` qubits: zeros appended, i.e. the leading (most
    significant) qubits the data does not fill start in |0⟩."""
    return x if x.shape[-1] == 2**n else jnp.pad(x, (0, 2**n - x.shape[-1]))


def _check(depth: int, dtype: str):
    if depth <= 0:
        raise QunlearnError(f"QNN depth must be a positive integer, got {depth}")
    if dtype not in DTYPES:
        raise QunlearnError(f"unknown QNN dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _readout_index(readout_qubit: int, n: int) -> int:
    """``readout_qubit`` in [-n, n) as an index in [0, n); anything else is refused, not wrapped."""
    if not -n <= readout_qubit < n:
        raise QunlearnError(
            f"hyper.readout_qubit = {readout_qubit} is not one of the {n} qubits: "
            f"write an integer in [{-n}, {n - 1}] (-1 is the last qubit)"
        )
    return readout_qubit % n


def _readout_indices(readout_qubit: int, n: int, n_classes: int) -> list[int]:
    """The qubits read out: ``readout_qubit`` for a binary model; for C ≥ 3 classes the C
    qubits ending at it on the ring (class k reads the k-th; default: the last C qubits)."""
    last = _readout_index(readout_qubit, n)
    check_n_classes(n_classes)
    if n_classes == 2:
        return [last]
    if n_classes > n:
        raise QunlearnError(
            f"a QNN with n_classes = {n_classes} reads one qubit per class but has {n} qubits: "
            f"set hyper.n_qubits = {n_classes} (extra qubits start in |0>)"
        )
    return [(last - n_classes + 1 + k) % n for k in range(n_classes)]


READOUTS = ("sigmoid", "linear")
READOUT_DTYPES = ("state", "float64")


def _readout(readout: str, scale: float, readout_dtype: str = "state", n_classes: int = 2):
    """⟨Z⟩ -> probability; for C ≥ 3 classes the C readout qubits' ⟨Z⟩ -> softmax(scale·⟨Z⟩),
    the (C,) class probabilities (``"sigmoid"`` readout only). ``"sigmoid"``:
    sigmoid(scale·⟨Z⟩) (protocol §3). ``"linear"``:
    (1 + ⟨Z⟩) / 2, the reference code's earlier readout (left commented out in its ``models.py``
    next to the sigmoid marked "Newly added"); ``scale`` is unused there.

    ``readout_dtype``: ``"state"`` computes it in the state's real dtype; ``"float64"`` lifts ⟨Z⟩
    to float64 first (mixed precision for complex64). That matters where the readout saturates:
    with the reference MNIST encoding scale·⟨Z⟩ reaches ±140, float32 rounds sigmoid above ~17
    to exactly 1, and the second derivative of the BCE's log(1 - p + eps) there is NaN (found
    in complex64 curvature Hessians after gradient ascent; tests/test_curvature.py)."""
    if readout_dtype not in READOUT_DTYPES:
        options = ", ".join(READOUT_DTYPES)
        raise QunlearnError(f"unknown QNN readout_dtype {readout_dtype!r}: choose one of {options}")
    lift = (lambda z: z.astype(jnp.float64)) if readout_dtype == "float64" else (lambda z: z)
    if readout == "sigmoid" and n_classes > 2:
        return lambda z: jax.nn.softmax(scale * lift(z))
    if readout == "sigmoid":
        return lambda z: jax.nn.sigmoid(scale * lift(z))
    if readout == "linear" and n_classes == 2:
        return lambda z: 0.5 + 0.5 * lift(z)
    if readout == "linear":
        raise QunlearnError('hyper.readout = "linear" is for binary models: leave it out')
    raise QunlearnError(f"unknown QNN readout {readout!r}: choose one of {', '.join(READOUTS)}")


class CircuitParts(NamedTuple):
    """A QNN factory's pieces: ``init(key)``, ``expectation(params, x) -> ⟨Z_readout⟩`` (one
    example, exact) and ``to_prob(z) -> p`` (the readout). ``apply = to_prob ∘ expectation``;
    finite-shot and noisy evaluation (estimators of ⟨Z⟩) replace only the expectation."""

    init: Callable
    expectation: Callable
    to_prob: Callable


def qnn(input_dim: int, complex_input: bool, **hyper):
    """Hardware-efficient ansatz of the study (protocol §3).

    Layer: Rx(θ0) Ry(θ1) Rx(θ2) on every qubit, then RZZ(θ3) on ring pairs (i, i+1 mod L).
    Params: (depth, L, 4), init N(0, init_std²). Output p = sigmoid(scale·⟨Z_readout⟩), or
    (1 + ⟨Z⟩) / 2 with ``readout="linear"``; ``readout_dtype = "float64"`` computes that scalar
    in float64 from a complex64 state (:func:`_readout`). ``n_classes`` C ≥ 3 reads ⟨Z⟩ on C
    qubits, one fused program each, and gives softmax(scale·⟨Z⟩) (:func:`_readout_indices`);
    ``n_qubits`` above the data's width adds leading qubits in |0⟩.

    ``circuit_noise`` (a dict, :mod:`qunlearn.models.circuit_noise`) adds gate, damping and
    readout noise; ``simulator``: ``"auto"`` (the exact state vector without noise, the exact
    density matrix of :mod:`qunlearn.models.noisy_dm` with it), ``"statevector"`` or
    ``"density_matrix"``. The density matrix is deterministic (no key) and trains like the rest.

    The input's amplitudes are used as given, never renormalised, as the reference's simulator
    did: ⟨Z⟩ here is ⟨x|U†ZU|x⟩, so ⟨Z⟩(c·x) = c²·⟨Z⟩(x) (tested). With the reference MNIST
    encoding (‖x‖² = number of non-blank columns) the readout is sigmoid(scale·‖x‖²·⟨Z⟩_unit).
    """
    return _compose(qnn_parts(input_dim, complex_input, **hyper))


def qnn_cnot(input_dim: int, complex_input: bool, **hyper):
    """The Hessian study's circuit (protocol §5): per layer Rx(θ0), Ry(θ1) on every qubit, then a
    CNOT ring i → i+1 mod L. Params: (depth, L, 2). ``readout``, ``circuit_noise`` and
    ``simulator`` as for :func:`qnn`."""
    return _compose(qnn_cnot_parts(input_dim, complex_input, **hyper))


def _compose(parts: CircuitParts):
    expectation, to_prob = parts.expectation, parts.to_prob

    def apply(params, x):
        return to_prob(expectation(params, x))

    return parts.init, apply


def _hea_program(n: int, depth: int, readout_index: int, dtype: str) -> Callable:
    """``run(u, zz, x) -> ⟨Z_readout⟩`` of :func:`qnn`'s circuit with its per-qubit rotations
    given as 2x2 unitaries ``u`` (depth, n, 2, 2) and its RZZ angles ``zz`` (depth, n): the seam
    where Monte Carlo trajectories put their Pauli errors
    (:mod:`qunlearn.models.noisy_trajectories`)."""
    cdtype, rdtype = DTYPES[dtype]
    cones = plan._light_cone(n, depth, readout_index)
    ops = plan._hea_plan(n, depth, readout_index, plan._STORE_COST[dtype])
    consts = {}
    for i, (op, order) in enumerate(zip(ops, plan._orders(ops, n), strict=True)):
        if op[0] == "phase":  # which sign pattern of the edges' z_a z_b each amplitude has
            z = z_signs(n)
            pos = {q: k for k, q in enumerate(order)}
            pattern = np.zeros(2**n, np.int64)
            for t, (_, j) in enumerate(op[1]):
                pattern |= (z[:, pos[j]] * z[:, pos[(j + 1) % n]] < 0).astype(np.int64) << t
            signs = 1 - 2 * ((np.arange(2 ** len(op[1]))[:, None] >> np.arange(len(op[1]))) & 1)
            consts[i] = (np.eye(2 ** len(op[1]))[pattern], signs)

    specs: list[tuple] = []  # factor specs
    uses: list[int | list[int] | None] = []  # per op: None, a factor index, or a list (tail)
    for op in ops:
        if op[0] == "gemm":
            _, layer, seg, deferred = op
            qubits, edges = cones[layer]
            uses.append(len(specs))
            specs.append(plan._factor_spec(n, depth, layer, seg, qubits, edges, deferred))
        elif op[0] == "tail":
            _, layer0, seg, deferred = op
            uses.append(list(range(len(specs), len(specs) + depth - layer0)))
            for lay in range(layer0, depth):  # deferred RZZs go first, into the first factor
                specs.append(
                    plan._factor_spec(
                        n, depth, lay, seg, *cones[lay], deferred if lay == layer0 else ()
                    )
                )
        else:
            uses.append(None)

    def run(u, zz, x):
        # all matrices depend on the params only: computed once per call, outside the batch
        factors = _factor_matrices(specs, u.astype(cdtype), zz, cdtype)
        mats, real = [], not jnp.iscomplexobj(x)
        for i, (op, use) in enumerate(zip(ops, uses, strict=True)):
            kind = op[0]
            if kind == "gemm":
                mats.append(_realrep(factors[use], real).astype(rdtype))
                real = False
            elif kind == "phase":
                onehot, signs = consts[i]
                items = op[1]
                ang = (
                    -0.5
                    * jnp.asarray(signs, rdtype)
                    @ zz[np.array([lay for lay, _ in items]), np.array([j for _, j in items])]
                )
                # expand the 2**m distinct phases with a GEMM: XLA materialises them once
                # instead of fusing (and recomputing) cos/sin into every example's loop
                mats.append(
                    jnp.asarray(onehot, rdtype) @ jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1)
                )
            elif kind == "tail":
                assert isinstance(use, list)  # a tail folds several factors
                mat = factors[use[0]]
                for f in use[1:]:
                    mat = factors[f] @ mat
                mats.append(
                    _realrep(mat[plan._readout_rows(op[2], readout_index)], real).astype(rdtype)
                )
            else:
                mats.append(None)
        return _run(ops, mats, x, rdtype, cdtype)

    return run


def qnn_parts(
    input_dim: int,
    complex_input: bool,
    *,
    depth: int = 6,
    n_qubits: int | None = None,
    readout_qubit: int = -1,
    scale: float = 5.0,
    dtype: str = "complex128",
    init_std: float = 0.01,
    readout: str = "sigmoid",
    readout_dtype: str = "state",
    circuit_noise: dict | None = None,
    simulator: str = "auto",
    n_classes: int = 2,
):
    """The :class:`CircuitParts` of :func:`qnn` (same options)."""
    del complex_input  # real inputs are treated as complex amplitudes with zero imaginary part

    def gates(theta):  # Rx Ry Rx per qubit, then the RZZ ring's angles
        return rx(theta[..., 2]) @ ry(theta[..., 1]) @ rx(theta[..., 0]), theta[..., 3]

    return _circuit_parts(
        "qnn",
        4,
        _hea_program,
        gates,
        input_dim,
        depth=depth,
        n_qubits=n_qubits,
        readout_qubit=readout_qubit,
        scale=scale,
        dtype=dtype,
        init_std=init_std,
        readout=readout,
        readout_dtype=readout_dtype,
        circuit_noise=circuit_noise,
        simulator=simulator,
        n_classes=n_classes,
    )


def _circuit_parts(
    name: str,
    angles: int,
    program: Callable,
    gates: Callable,
    input_dim: int,
    *,
    depth: int,
    n_qubits: int | None,
    readout_qubit: int,
    scale: float,
    dtype: str,
    init_std: float,
    readout: str,
    readout_dtype: str,
    circuit_noise: dict | None,
    simulator: str,
    n_classes: int,
) -> CircuitParts:
    """The :class:`CircuitParts` of ansatz ``name``: params (depth, n, ``angles``); ``gates``
    maps them to the arguments of ``program(n, depth, readout, dtype)``'s ``run`` (per-qubit
    2x2 unitaries first), one program per readout qubit, or the density matrix with noise."""
    n = _qubits_for(input_dim, n_qubits)
    _, rdtype = _check(depth, dtype)
    to_prob = _readout(readout, scale, readout_dtype, n_classes)
    readouts = _readout_indices(readout_qubit, n, n_classes)

    def init(key):
        return init_std * jax.random.normal(key, (depth, n, angles), rdtype)

    if _density_matrix(simulator, circuit_noise, n_classes):
        dm = dm_program(name, n, depth, readouts[0], circuit_noise, dtype)
        return CircuitParts(init, dm, to_prob)
    runs = [program(n, depth, r, dtype) for r in readouts]

    def expectation(params, x):
        args = gates(params.astype(rdtype))
        return _stack([run(*args, _pad_amplitudes(x, n)) for run in runs])

    return CircuitParts(init, expectation, to_prob)


def _density_matrix(simulator: str, circuit_noise, n_classes: int) -> bool:
    """Whether the circuit runs as a density matrix (binary models only)."""
    if resolve_simulator(simulator, circuit_noise) != "density_matrix":
        return False
    if n_classes > 2:
        raise QunlearnError(
            "circuit noise and the density-matrix simulator are for binary models: leave "
            "circuit_noise and simulator out with n_classes > 2"
        )
    return True


def _stack(expectations: list):
    """One readout's ⟨Z⟩ as a scalar (binary), several as a (C,) vector."""
    return expectations[0] if len(expectations) == 1 else jnp.stack(expectations)


def _cnot_program(n: int, depth: int, readout_index: int, dtype: str) -> Callable:
    """``run(u, x) -> ⟨Z_readout⟩`` of :func:`qnn_cnot`'s circuit with its per-qubit rotations
    given as 2x2 unitaries ``u`` (depth, n, 2, 2) (see :func:`_hea_program`)."""
    cdtype, rdtype = DTYPES[dtype]
    ops = plan._cnot_plan(n, depth)
    perm = cnot_ring_permutation(n)
    consts = {}
    for i, (op, order) in enumerate(zip(ops, plan._orders(ops, n), strict=True)):
        if op[0] == "perm":  # ψ'[j] = ψ[perm[j]] in natural indices, mapped to this order
            natural = plan._index_map(order)
            consts[i] = jnp.asarray(np.argsort(natural)[perm[natural]])
        elif op[0] == "parity":  # ⟨ψ'|Z_r|ψ'⟩ = Σ_i z_r(perm⁻¹[i]) |ψ_i|²
            z_r = z_signs(n)[:, readout_index]
            consts[i] = jnp.asarray(z_r[np.argsort(perm)][plan._index_map(order)], rdtype)

    specs: list[tuple] = []
    uses: list[int | None] = []
    for op in ops:
        uses.append(len(specs) if op[0] == "gemm" else None)
        if op[0] == "gemm":
            specs.append((tuple(op[1] * n + q for q in op[2]), (), ()))

    def run(u, x):
        u = u.astype(cdtype)
        factors = _factor_matrices(specs, u, jnp.zeros(u.shape[:2], rdtype), cdtype)
        mats, real = [], not jnp.iscomplexobj(x)
        for i, (op, use) in enumerate(zip(ops, uses, strict=True)):
            if op[0] == "gemm":
                mats.append(_realrep(factors[use], real).astype(rdtype))
                real = False
            else:
                mats.append(consts.get(i))
        return _run(ops, mats, x, rdtype, cdtype)

    return run


def qnn_cnot_parts(
    input_dim: int,
    complex_input: bool,
    *,
    depth: int = 5,
    n_qubits: int | None = None,
    readout_qubit: int = -1,
    scale: float = 5.0,
    dtype: str = "complex128",
    init_std: float = 0.01,
    readout: str = "sigmoid",
    readout_dtype: str = "state",
    circuit_noise: dict | None = None,
    simulator: str = "auto",
    n_classes: int = 2,
):
    """The :class:`CircuitParts` of :func:`qnn_cnot` (same options)."""
    del complex_input

    def gates(theta):  # Rx Ry per qubit (the CNOT ring has no angles)
        return (ry(theta[..., 1]) @ rx(theta[..., 0]),)

    return _circuit_parts(
        "qnn_cnot",
        2,
        _cnot_program,
        gates,
        input_dim,
        depth=depth,
        n_qubits=n_qubits,
        readout_qubit=readout_qubit,
        scale=scale,
        dtype=dtype,
        init_std=init_std,
        readout=readout,
        readout_dtype=readout_dtype,
        circuit_noise=circuit_noise,
        simulator=simulator,
        n_classes=n_classes,
    )


# One signature per ansatz: make_model and the docs read a factory's options from it.
qnn.__signature__ = inspect.signature(qnn_parts)  # type: ignore[attr-defined]
qnn_cnot.__signature__ = inspect.signature(qnn_cnot_parts)  # type: ignore[attr-defined]
