"""Monte Carlo trajectories of the built-in QNN circuits under Pauli channels, each one run of the
fused state-vector kernel (:func:`qunlearn.models.qnn._hea_program`) with perturbed gates.

A trajectory draws one Pauli error per channel location (after every gate, from the channel's
Pauli probabilities, :func:`qunlearn.models.circuit_noise.pauli_probs_1q` / ``_2q``), and
⟨Z_r⟩ of that pure circuit is an unbiased sample of the noisy ⟨Z_r⟩ for Pauli channels.
The errors never need a gate of their own:

* an error after a rotation multiplies that qubit's 2x2 unitary (P·Rx·Ry·Rx is one 2x2);
* an error after a 2-qubit gate is carried to the end of the ring as a Pauli frame F: through an
  RZZ(θ) it stays put and the gate becomes F†·RZZ(θ)·F = RZZ(±θ) (− when F has X or Y on exactly
  one of the gate's qubits); through a CNOT (a Clifford) the frame moves, x_t ^= x_c, z_c ^= z_t;
* the frame at the end of a ring is absorbed by the next layer's rotations (U·F per qubit), and
  after the last layer an X or Y on the readout qubit flips the sign of Z_r.

So a trajectory is the exact kernel with per-trajectory 2x2 unitaries and RZZ angles, vmapped
over K trajectories; the light cone, GEMM plan and tail of the kernel apply unchanged (errors
outside the light cone change gates the kernel skips). The readout error is linear in ρ and
applied exactly: α·⟨Z⟩ + β·‖x‖² (:func:`~qunlearn.models.circuit_noise.readout_observable`).

Channels: depolarizing and phase damping are Pauli channels (phase damping is a Z flip with
p = (1 - √(1-λ))/2): unbiased. **Amplitude damping is Pauli-twirled** (p_x = p_y = γ/4,
p_z = (1 - γ/2 - √(1-γ))/2): exact quantum-jump trajectories need non-unitary, state-dependent
jumps and the state's norm, which the kernel (unitary GEMMs, ⟨Z⟩ = 2‖Qψ‖² − ‖ψ‖² from the input
norm) cannot take without a second code path. The twirl keeps the damping of coherences and
populations but drops the non-unital drift towards |0⟩ (AD†(Z) = (1-γ)Z + γI, the twirl gives
(1-γ)Z), a bias of first order in γ per damping location, and a circuit has many (qnn: 5 per
qubit per layer). Measured against :mod:`qunlearn.models.noisy_dm` (qnn, 6 qubits, depth 6,
depolarizing 0.001 / 0.01, phase damping 0.002, 4 examples, K = 4000): γ = 0.002 shifts ⟨Z⟩ by
+0.03..+0.05 exactly, the twirled trajectories miss it by -0.033..-0.038 (± 0.001..0.002);
γ = 0.02 (shift +0.26..+0.41): by -0.30..-0.31. So use the density matrix whenever amplitude
damping is on and it fits; trajectories serve Pauli noise (depolarizing, phase damping,
readout) exactly.

Batches: pass the same key for every example of a batch (``vmap`` over x only). The trajectories
are then shared by the batch (each example's estimate stays unbiased), and the kernel's factor
matrices are built K times per step instead of K x batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.errors import QunlearnError
from qunlearn.models.circuit_noise import (
    PAULIS,
    check_circuit_noise,
    pauli_probs_1q,
    pauli_probs_2q,
    readout_observable,
)
from qunlearn.models.gates import DTYPES, ring_pairs
from qunlearn.models.noisy_dm import _rotations, check_ansatz
from qunlearn.models.qnn import _cnot_program, _hea_program

_X_BIT = np.array([0, 1, 1, 0], np.int32)  # I, X, Y, Z
_Z_BIT = np.array([0, 0, 1, 1], np.int32)
_FROM_BITS = np.array([0, 3, 1, 2], np.int32)  # index 2x + z -> I, Z, X, Y


def _frames(e2, ansatz: str, n: int, depth: int, r: int):
    """Per layer the Pauli frame (x, z bits, (depth, n)) entering its rotations, the RZZ sign
    per (layer, edge), and the sign of Z_r at the end; ``e2``: (depth, n) 2-qubit error indices
    4·P_a + P_b per ring edge."""
    edges = ring_pairs(n)
    zero = jnp.zeros((), jnp.int32)
    xb, zb = [zero] * n, [zero] * n
    frames_x, frames_z, signs = [], [], []
    xbit, zbit = jnp.asarray(_X_BIT), jnp.asarray(_Z_BIT)
    for layer in range(depth):
        frames_x.append(jnp.stack(xb))
        frames_z.append(jnp.stack(zb))
        xb, zb = [zero] * n, [zero] * n  # absorbed by this layer's rotations
        row = []
        for j, (a, b) in enumerate(edges):
            if ansatz == "qnn":
                row.append(1 - 2 * (xb[a] ^ xb[b]))
            else:  # the frame through CNOT(a -> b)
                xb[b] = xb[b] ^ xb[a]
                za = zb[a] ^ zb[b]
                zb[a] = za
            pa, pb = e2[layer, j] // 4, e2[layer, j] % 4
            xb[a], zb[a] = xb[a] ^ xbit[pa], zb[a] ^ zbit[pa]
            xb[b], zb[b] = xb[b] ^ xbit[pb], zb[b] ^ zbit[pb]
        signs.append(jnp.stack(row) if row else jnp.ones(n, jnp.int32))
    return jnp.stack(frames_x), jnp.stack(frames_z), jnp.stack(signs), 1 - 2 * xb[r]


def trajectory_program(
    ansatz: str,
    n: int,
    depth: int,
    readout_index: int,
    noise,
    dtype: str,
    n_trajectories: int,
) -> Callable:
    """``values(key, params, x) -> (K,)``: ⟨Z_readout⟩ of one example in each of K trajectories
    (readout error applied exactly); their mean is the estimate."""
    check_ansatz(ansatz, n)
    noise = check_circuit_noise(noise)
    if isinstance(n_trajectories, bool) or not isinstance(n_trajectories, int | np.integer):
        raise QunlearnError(f"n_trajectories = {n_trajectories!r} must be a positive integer")
    if n_trajectories < 1:
        raise QunlearnError(f"n_trajectories = {n_trajectories!r} must be a positive integer")
    cdtype, rdtype = DTYPES[dtype]
    log_p1 = jnp.log(jnp.asarray(pauli_probs_1q(noise)))
    log_p2 = jnp.log(jnp.asarray(pauli_probs_2q(noise)).reshape(16))
    alpha, beta = readout_observable(noise)
    paulis = jnp.asarray(PAULIS, cdtype)
    hea = ansatz == "qnn"
    run = (_hea_program if hea else _cnot_program)(n, depth, readout_index, dtype)

    def one(key, theta, x):
        k1, k2 = jax.random.split(key)
        n_rot = 3 if hea else 2
        e1 = jax.random.categorical(k1, log_p1, shape=(depth, n, n_rot))
        e2 = jax.random.categorical(k2, log_p2, shape=(depth, n))
        fx, fz, signs, sign_r = _frames(e2, ansatz, n, depth, readout_index)
        u = paulis[jnp.asarray(_FROM_BITS)[2 * fx + fz]]  # the incoming frame acts first
        for i, g in enumerate(_rotations(ansatz, theta)):
            u = paulis[e1[..., i]] @ g.astype(cdtype) @ u
        if hea:
            z = run(u, theta[..., 3] * signs.astype(rdtype), x)
        else:
            z = run(u, x)
        return sign_r.astype(rdtype) * z

    def values(key, params, x):
        theta = params.astype(rdtype)
        keys = jax.random.split(key, n_trajectories)
        z = jax.vmap(one, (0, None, None))(keys, theta, x)
        norm2 = jnp.sum(jnp.abs(x) ** 2).astype(rdtype)
        return alpha * z + beta * norm2

    return values


def noisy_expectation_trajectories(
    key,
    params,
    x,
    circuit_noise: dict | None,
    *,
    ansatz: str = "qnn",
    readout_qubit: int = -1,
    dtype: str = "complex128",
    n_trajectories: int = 16,
):
    """⟨Z_readout⟩ of one example under ``circuit_noise``, the mean of ``n_trajectories``
    trajectories drawn from ``key`` (unbiased for Pauli channels; amplitude damping is
    Pauli-twirled, see the module docstring). Builds the program on every call: for repeated use
    build it once with :func:`trajectory_program`."""
    depth, n = params.shape[0], params.shape[1]
    if not -n <= readout_qubit < n:
        raise QunlearnError(f"readout_qubit = {readout_qubit} is not one of the {n} qubits")
    program = trajectory_program(
        ansatz, n, depth, readout_qubit % n, circuit_noise, dtype, n_trajectories
    )
    return jnp.mean(program(key, params, x))
