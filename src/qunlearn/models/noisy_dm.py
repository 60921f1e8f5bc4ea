"""Exact ⟨Z_readout⟩ of the built-in QNN circuits under :mod:`~qunlearn.models.circuit_noise`
channels: a density-matrix simulator, run in the Heisenberg picture.

tr(Φ(ρ) Z_r) = tr(ρ Φ†(Z_r)) for every channel Φ, so instead of evolving each example's ρ = |x⟩⟨x|
(4**n numbers per example, per gate) the observable is evolved backwards through the adjoint
channels once per parameter set, and each example costs one quadratic form x† O x. Under
``jax.vmap`` over examples with shared params, O does not depend on the batched input, so JAX
computes it once for the whole batch: a training step costs one observable evolution plus a
(batch x 2**n) @ (2**n x 2**n) product, instead of a batch of density-matrix evolutions.

* **Blocks.** A layer's per-qubit gates and the channels after each of them fold into one 4x4
  superoperator per qubit (computed on 4x4 matrices, cheap); it is merged into the superoperator
  of the first 2-qubit gate (+ its channels) of the ring that touches the qubit, so a layer is one
  16x16 contraction per ring edge on the big tensor.
* **Light cone.** O starts on the readout qubit. A CPTP map on qubits outside O's support leaves
  it unchanged (Φ†(I) = I), so blocks off the support are skipped, and a block touching it grows
  it (O ⊗ I on the new qubit). For ``qnn``'s last layer the support stays {r}: there O is diagonal
  (Z_r, I and the damping maps keep it so), the RZZs commute with it, and the channels after an
  RZZ edge (r, b) act on O ⊗ I_b as a map on r alone (2-qubit depolarizing on O ⊗ I is the 1-qubit
  one on O): the edge is applied to O ⊗ I_b and b traced out again (exact; tested).
  Measured (``bench/bench_channels.py``): at 10 qubits, depth 6 the support reaches all qubits in
  the first layers, so the saving is in the later layers only.
* **Conventions** as :mod:`qunlearn.models.qnn`: qubit 0 most significant, rx(t) = exp(-i t X/2);
  the input amplitudes are used as given (ρ = |x⟩⟨x|, not renormalised). The evolved tensor is
  T = Oᵀ with axes (ket of each support qubit, then bra of each), so a Schrödinger superoperator
  S[i', j', i, j] acts by T'[i, j] = Σ T[i', j'] S[i', j', i, j] (no conjugation).

Plain JAX: ``jit``, ``vmap``, ``grad`` and forward-over-reverse all apply; complex128 and
complex64. Tested against tensorcircuit-ng's ``DMCircuit`` in ``tests/test_circuit_noise.py``.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from qunlearn.errors import QunlearnError
from qunlearn.models.circuit_noise import (
    check_circuit_noise,
    gate_noise_superop,
    readout_observable,
)
from qunlearn.models.gates import DTYPES, ring_pairs, rx, ry

ANSATZE = ("qnn", "qnn_cnot")
_CNOT = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], complex)
_ZZ = np.array([1.0, -1.0, -1.0, 1.0])  # z_a z_b of |00>, |01>, |10>, |11>


def check_ansatz(ansatz: str, n: int) -> None:
    if ansatz not in ANSATZE:
        raise QunlearnError(f"unknown noisy ansatz {ansatz!r}: choose one of {', '.join(ANSATZE)}")
    if n < 2:
        raise QunlearnError(f"a noisy QNN needs at least 2 qubits (a ring), got {n}")


def _unitary_superop(u):
    """(..., d, d) unitaries -> (..., d², d²) superoperators U ⊗ Ū (row-major vec of ρ)."""
    d = u.shape[-1]
    s = jnp.einsum("...ik,...jl->...ijkl", u, jnp.conj(u))
    return s.reshape(*u.shape[:-2], d * d, d * d)


def _pair(sa, sb):
    """Two 1-qubit superoperators (..., 4, 4) as one on (ket a, ket b, bra a, bra b)."""
    ta = sa.reshape(*sa.shape[:-2], 2, 2, 2, 2)
    tb = sb.reshape(*sb.shape[:-2], 2, 2, 2, 2)
    both = jnp.einsum("...acAC,...bdBD->...abcdABCD", ta, tb)
    return both.reshape(*sa.shape[:-2], 16, 16)


def _plan(ansatz: str, n: int, depth: int, r: int) -> tuple[list[tuple], list[int]]:
    """Heisenberg-order steps on the evolving observable, and its final support (qubit list).

    ``("block", layer, j, merged)``: ring edge j's gate and channels, preceded by the rotation
    blocks of the qubits in ``merged``; ``("edge_on_r", layer, j)``: edge j applied to O ⊗ I and
    the other qubit traced out (``qnn``'s last layer); ``("rot", layer, q)``: one rotation block;
    ``("expand", q)``: O -> O ⊗ I_q."""
    edges = ring_pairs(n)
    first: dict[int, int] = {}
    for j, pair in enumerate(edges):
        for q in pair:
            first.setdefault(q, j)
    support: list[int] = [r]
    steps: list[tuple] = []
    for layer in reversed(range(depth)):
        diagonal_last = ansatz == "qnn" and layer == depth - 1
        for j in reversed(range(n)):
            a, b = edges[j]
            if a not in support and b not in support:
                continue  # outside the light cone: CPTP maps there trace out
            if diagonal_last:
                steps.append(("edge_on_r", layer, j))
                continue
            for q in (a, b):
                if q not in support:
                    support.append(q)
                    steps.append(("expand", q))
            steps.append(("block", layer, j, tuple(q for q in (a, b) if first[q] == j)))
        if diagonal_last:
            steps.append(("rot", layer, r))
    return steps, support


def _rotations(ansatz: str, theta) -> list:
    """The per-qubit rotation gates of a layer in time order, each (depth, n, 2, 2)."""
    axes = (rx, ry, rx) if ansatz == "qnn" else (rx, ry)
    return [gate(theta[..., i]) for i, gate in enumerate(axes)]


def _letters(count: int) -> list[str]:
    return list((string.ascii_letters)[:count])


def _apply(t, s, pos: list[int], k: int):
    """T'[i, j] = Σ T[i', j'] S[i', j', i, j] on the support positions ``pos`` (1 or 2)."""
    m = len(pos)
    names = _letters(2 * k + 4 * m)
    t_in = names[: 2 * k]
    new = names[2 * k :]
    contracted = list(t_in)
    for i, p in enumerate(pos):
        contracted[p], contracted[k + p] = new[i], new[m + i]
    s_idx = [new[i] for i in range(2 * m)] + [t_in[p] for p in pos] + [t_in[k + p] for p in pos]
    spec = f"{''.join(contracted)},{''.join(s_idx)}->{''.join(t_in)}"
    return jnp.einsum(spec, t, s.reshape((2,) * (4 * m)))


def _expand(t, k: int):
    """O -> O ⊗ I on a new last qubit (axes: kets, new ket, bras, new bra)."""
    eye = jnp.eye(2, dtype=t.dtype)
    n_ = _letters(2 * k + 2)
    spec = f"{''.join(n_[: 2 * k])},{n_[-2]}{n_[-1]}->"
    spec += "".join(n_[:k]) + n_[-2] + "".join(n_[k : 2 * k]) + n_[-1]
    return jnp.einsum(spec, t, eye)


def _trace_out(t, p: int, k: int):
    """Partial trace over support position p, divided by 2 (exact when O = O' ⊗ I there)."""
    n_ = _letters(2 * k)
    ins = list(n_)
    ins[k + p] = ins[p]
    out = [c for i, c in enumerate(n_) if i not in (p, k + p)]
    return 0.5 * jnp.einsum(f"{''.join(ins)}->{''.join(out)}", t)


def dm_program(ansatz: str, n: int, depth: int, readout_index: int, noise, dtype: str) -> Callable:
    """``expectation(params, x) -> ⟨Z_readout⟩`` of one example under ``noise`` (a
    ``circuit_noise`` dict), exact. ``ansatz``: ``"qnn"`` (params (depth, n, 4)) or
    ``"qnn_cnot"`` (params (depth, n, 2))."""
    check_ansatz(ansatz, n)
    noise = check_circuit_noise(noise)
    cdtype, rdtype = DTYPES[dtype]
    c1 = jnp.asarray(gate_noise_superop(noise, 1), cdtype)
    c2 = jnp.asarray(gate_noise_superop(noise, 2), cdtype)
    alpha, beta = readout_observable(noise)
    steps, support = _plan(ansatz, n, depth, readout_index)
    edges = ring_pairs(n)
    eye4 = jnp.eye(4, dtype=cdtype)
    cnot = _unitary_superop(jnp.asarray(_CNOT, cdtype))

    def rotation_blocks(theta):
        """(depth, n, 4, 4): each qubit's rotations, each followed by the 1-qubit channels."""
        s = None
        for g in _rotations(ansatz, theta):
            step = c1 @ _unitary_superop(g.astype(cdtype))
            s = step if s is None else step @ s
        return s

    def edge_block(theta, layer, j):
        if ansatz == "qnn":
            phases = jnp.exp(-0.5j * theta[layer, j, 3] * jnp.asarray(_ZZ, rdtype)).astype(cdtype)
            gate = _unitary_superop(jnp.diag(phases))
        else:
            gate = cnot
        return c2 @ gate

    def observable(theta):
        rots = rotation_blocks(theta)
        z = jnp.asarray([alpha + beta, -alpha + beta], cdtype)
        t = jnp.diag(z)  # T = Oᵀ = O (diagonal)
        sup = [readout_index]
        for step in steps:
            k = len(sup)
            if step[0] == "expand":
                t = _expand(t, k)
                sup.append(step[1])
            elif step[0] == "rot":
                t = _apply(t, rots[step[1], step[2]], [sup.index(step[2])], k)
            elif step[0] == "edge_on_r":
                _, layer, j = step
                other = next(q for q in edges[j] if q != readout_index)
                pair = [readout_index, other]  # support order after the expand
                a, b = edges[j]
                t2 = _apply(
                    _expand(t, 1), edge_block(theta, layer, j), [pair.index(a), pair.index(b)], 2
                )
                t = _trace_out(t2, 1, 2)
            else:
                _, layer, j, merged = step
                a, b = edges[j]
                ra = rots[layer, a] if a in merged else eye4
                rb = rots[layer, b] if b in merged else eye4
                block = edge_block(theta, layer, j) @ _pair(ra, rb)
                t = _apply(t, block, [sup.index(a), sup.index(b)], k)
        return t

    perm = support + [q for q in range(n) if q not in support]
    k_final = len(support)

    def expectation(params, x):
        t = observable(params.astype(rdtype)).reshape(2**k_final, 2**k_final)
        xs = jnp.transpose(x.astype(cdtype).reshape((2,) * n), perm)
        xs = xs.reshape(2**k_final, 2 ** (n - k_final))
        # ⟨O⟩ = Σ T[i, j] x_i conj(x_j), summed over the qubits outside the support too
        return jnp.real(jnp.sum((t.T @ xs) * jnp.conj(xs)))

    return expectation


def noisy_expectation_dm(
    params,
    x,
    circuit_noise: dict | None,
    *,
    ansatz: str = "qnn",
    readout_qubit: int = -1,
    dtype: str = "complex128",
):
    """Exact ⟨Z_readout⟩ of one amplitude-encoded example ``x`` (2**n amplitudes, used as given)
    through the ``ansatz`` circuit with ``params`` under ``circuit_noise``. Builds the program on
    every call: for repeated use (training), build it once with :func:`dm_program`."""
    depth, n = params.shape[0], params.shape[1]
    if x.shape[-1] != 2**n:
        raise QunlearnError(f"x has {x.shape[-1]} amplitudes, the circuit has {n} qubits")
    if not -n <= readout_qubit < n:
        raise QunlearnError(f"readout_qubit = {readout_qubit} is not one of the {n} qubits")
    program = dm_program(ansatz, n, depth, readout_qubit % n, circuit_noise, dtype)
    return program(params, x)
