"""Quantum neural networks simulated as exact state vectors, built for fast compilation and steps.

Conventions follow tensorcircuit-ng: qubit 0 is the most significant bit of a basis index,
``rx(t) = exp(-i t X / 2)``, ``ry(t) = exp(-i t Y / 2)``, ``rzz(t) = exp(-i t Z⊗Z / 2)``.

Why not a gate-by-gate circuit: unrolled circuits compile in minutes on a 2-core CPU and run each gate
as a small, memory-bound op. Here every layer is three large operations instead:

* the product of all single-qubit rotations, ``U_0 ⊗ ... ⊗ U_{L-1}``, is applied as two Kronecker
  factors ``M_A = ⊗_{q<L/2} U_q`` and ``M_B = ⊗_{q≥L/2} U_q`` on the state reshaped to a matrix,
  ``ψ -> M_A ψ M_Bᵀ`` (two GEMMs per example, BLAS-sized once vmapped over a batch);
* the RZZ ring is one diagonal phase vector ``exp(-i/2 Σ_j θ_j z_j z_{j+1})``;
* a CNOT ring is one fixed permutation of basis indices.

The layer matrices are built for all layers before the ``lax.scan`` that applies them, so the
compiled program does not grow with depth. ``tests/test_qnn.py`` proves outputs and gradients equal
a plain tensorcircuit-ng build of the same circuit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.errors import QunlearnError

DTYPES = {"complex128": (jnp.complex128, jnp.float64), "complex64": (jnp.complex64, jnp.float32)}


def rx(t):
    """(..., 2, 2) matrices exp(-i t X / 2)."""
    c, s = jnp.cos(t / 2), jnp.sin(t / 2)
    return jnp.stack([jnp.stack([c + 0j, -1j * s], -1), jnp.stack([-1j * s, c + 0j], -1)], -2)


def ry(t):
    """(..., 2, 2) matrices exp(-i t Y / 2)."""
    c, s = jnp.cos(t / 2), jnp.sin(t / 2)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2).astype(rx(t).dtype)


def z_signs(n_qubits: int) -> np.ndarray:
    """(2**n, n) array of z_q = ±1 for every basis index (qubit 0 = most significant bit)."""
    bits = (np.arange(2**n_qubits)[:, None] >> (n_qubits - 1 - np.arange(n_qubits))[None, :]) & 1
    return 1 - 2 * bits


def ring_pairs(n_qubits: int) -> list[tuple[int, int]]:
    return [(i, (i + 1) % n_qubits) for i in range(n_qubits)]


def cnot_ring_permutation(n_qubits: int) -> np.ndarray:
    """Index map ``perm`` with (CNOT_{L-1→0} ... CNOT_{0→1} ψ)[j] = ψ[perm[j]]."""
    idx = np.arange(2**n_qubits)
    gates = ring_pairs(n_qubits)
    perm = idx.copy()
    for control, target in reversed(gates):  # ψ_k[j] = ψ_{k-1}[g_k(j)], so compose from the end
        cbit = (perm >> (n_qubits - 1 - control)) & 1
        perm = perm ^ (cbit << (n_qubits - 1 - target))
    return perm


def _kron_all(mats):
    out = mats[0]
    for m in mats[1:]:
        out = jnp.kron(out, m)
    return out


def _qubits_for(input_dim: int, n_qubits: int | None) -> int:
    n = int(round(math.log2(input_dim))) if input_dim > 0 else -1
    if input_dim <= 0 or 2**n != input_dim:
        raise QunlearnError(
            f"QNN input must have 2**n_qubits amplitudes, got dimension {input_dim}: "
            "amplitude-encode (pad) the data to a power of two"
        )
    if n_qubits is not None and n_qubits != n:
        raise QunlearnError(
            f"n_qubits={n_qubits} does not match the data dimension {input_dim} = 2**{n}: "
            f"set n_qubits={n} or leave it out"
        )
    return n


def _state_model(n_qubits, depth, n_angles, layer_mats, *, readout_qubit, scale, dtype, init_std):
    """Shared body: ``layer_mats(theta_layer) -> (M_A, M_B, phase or None, perm or None)``."""
    if depth <= 0:
        raise QunlearnError(f"QNN depth must be a positive integer, got {depth}")
    if dtype not in DTYPES:
        raise QunlearnError(f"unknown QNN dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    cdtype, rdtype = DTYPES[dtype]
    n_a = n_qubits // 2
    shape = (2**n_a, 2 ** (n_qubits - n_a))
    readout = readout_qubit % n_qubits
    z_read = jnp.asarray(z_signs(n_qubits)[:, readout].reshape(shape), rdtype)

    def init(key):
        return init_std * jax.random.normal(key, (depth, n_qubits, n_angles), rdtype)

    def apply(params, x):
        mats = jax.vmap(layer_mats)(params.astype(rdtype))  # all layers at once, outside the scan

        def layer(psi, m):
            m_a, m_b, phase, perm = m
            psi = m_a @ psi @ m_b.T
            if phase is not None:
                psi = psi * phase
            if perm is not None:
                psi = psi.reshape(-1)[perm].reshape(shape)
            return psi, None

        psi, _ = jax.lax.scan(layer, x.astype(cdtype).reshape(shape), mats)
        expect_z = jnp.sum(z_read * (psi.real**2 + psi.imag**2))
        return jax.nn.sigmoid(scale * expect_z)

    return init, apply


def qnn(
    input_dim: int,
    complex_input: bool,
    *,
    depth: int = 6,
    n_qubits: int | None = None,
    readout_qubit: int = -1,
    scale: float = 5.0,
    dtype: str = "complex128",
    init_std: float = 0.01,
):
    """Hardware-efficient ansatz of the study (protocol §3).

    Layer: Rx(θ0) Ry(θ1) Rx(θ2) on every qubit, then RZZ(θ3) on ring pairs (i, i+1 mod L).
    Params: (depth, L, 4), init N(0, init_std²). Output p = sigmoid(scale·⟨Z_readout⟩).
    """
    del complex_input  # real inputs are cast to complex amplitudes
    n = _qubits_for(input_dim, n_qubits)
    cdtype = DTYPES.get(dtype, DTYPES["complex128"])[0]
    n_a = n // 2
    zz = np.stack([z_signs(n)[:, i] * z_signs(n)[:, j] for i, j in ring_pairs(n)], 1)
    zz = jnp.asarray(zz, jnp.float64)

    def layer_mats(theta):
        u = (rx(theta[:, 2]) @ ry(theta[:, 1]) @ rx(theta[:, 0])).astype(cdtype)
        m_a = _kron_all([u[q] for q in range(n_a)])
        m_b = _kron_all([u[q] for q in range(n_a, n)])
        phase = jnp.exp(-0.5j * (zz.astype(theta.dtype) @ theta[:, 3])).astype(cdtype)
        return m_a, m_b, phase.reshape(2**n_a, -1), None

    return _state_model(
        n, depth, 4, layer_mats,
        readout_qubit=readout_qubit, scale=scale, dtype=dtype, init_std=init_std,
    )


def qnn_cnot(
    input_dim: int,
    complex_input: bool,
    *,
    depth: int = 5,
    n_qubits: int | None = None,
    readout_qubit: int = -1,
    scale: float = 5.0,
    dtype: str = "complex128",
    init_std: float = 0.01,
):
    """The Hessian study's circuit (protocol §5): per layer Rx(θ0), Ry(θ1) on every qubit, then a
    CNOT ring i → i+1 mod L. Params: (depth, L, 2)."""
    del complex_input
    n = _qubits_for(input_dim, n_qubits)
    cdtype = DTYPES.get(dtype, DTYPES["complex128"])[0]
    n_a = n // 2
    perm = jnp.asarray(cnot_ring_permutation(n))

    def layer_mats(theta):
        u = (ry(theta[:, 1]) @ rx(theta[:, 0])).astype(cdtype)
        m_a = _kron_all([u[q] for q in range(n_a)])
        m_b = _kron_all([u[q] for q in range(n_a, n)])
        return m_a, m_b, None, perm

    return _state_model(
        n, depth, 2, layer_mats,
        readout_qubit=readout_qubit, scale=scale, dtype=dtype, init_std=init_std,
    )
