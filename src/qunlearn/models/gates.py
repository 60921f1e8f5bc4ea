"""Gate matrices and basis-index tables of the QNN simulator (:mod:`qunlearn.models.qnn`).

Conventions follow tensorcircuit-ng: qubit 0 is the most significant bit of a basis index,
``rx(t) = exp(-i t X / 2)``, ``ry(t) = exp(-i t Y / 2)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

DTYPES = {"complex128": (jnp.complex128, jnp.float64), "complex64": (jnp.complex64, jnp.float32)}
"""State dtype name -> (complex dtype, real dtype)."""


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
