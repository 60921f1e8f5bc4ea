"""Gate-by-gate tensorcircuit-ng circuits: the reference simulator and the path for user circuits.

These unroll every gate, so they compile slowly for deep/wide circuits; qunlearn trains with the
fused simulator in :mod:`qunlearn.models.qnn` and tests it against these builds.
tensorcircuit keeps its backend and dtype in module globals; we only touch them inside its
``runtime_*`` context managers, so nothing leaks into the caller's process state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qunlearn.models.qnn import ring_pairs


@contextlib.contextmanager
def _jax_runtime(dtype: str, backend: str = "jax"):
    # tensorcircuit's dtype setter flips JAX's global x64 flag (and resets it to complex64 on exit);
    # restore the caller's setting so building a reference circuit cannot change other results.
    # backend="numpy": eager gate-by-gate density matrices (qunlearn.hardware) run ~10x faster.
    x64 = jax.config.read("jax_enable_x64")
    try:
        import tensorcircuit as tc

        with tc.runtime_backend(backend), tc.runtime_dtype(dtype):
            yield tc
    finally:
        jax.config.update("jax_enable_x64", x64)


def circuit_model(
    build: Callable[..., None],
    n_qubits: int,
    param_shape: tuple[int, ...],
    *,
    readout_qubit: int = -1,
    scale: float = 5.0,
    dtype: str = "complex128",
    init_std: float = 0.01,
):
    """A model from any circuit: ``build(circuit, params)`` appends gates to a tensorcircuit Circuit
    whose input state is the (amplitude-encoded) example. Output sigmoid(scale·⟨Z_readout⟩)."""
    readout = readout_qubit % n_qubits

    def init(key):
        return init_std * jax.random.normal(key, param_shape, jnp.float64)

    def apply(params, x):
        with _jax_runtime(dtype) as tc:
            c = tc.Circuit(
                n_qubits,
                inputs=x.astype(jnp.complex128 if dtype == "complex128" else jnp.complex64),
            )
            build(c, params)
            ez = c.expectation_ps(z=[readout])
        return jax.nn.sigmoid(scale * jnp.real(ez))

    return init, apply


def hea_build(n_qubits: int):
    """Gate-by-gate build of :func:`qunlearn.models.qnn.qnn`'s ansatz; params (depth, L, 4)."""

    def build(c, params):
        for theta in params:
            for q in range(n_qubits):
                c.rx(q, theta=theta[q, 0])
                c.ry(q, theta=theta[q, 1])
                c.rx(q, theta=theta[q, 2])
            for j, (a, b) in enumerate(ring_pairs(n_qubits)):
                c.rzz(a, b, theta=theta[j, 3])

    return build


def cnot_build(n_qubits: int):
    """Gate-by-gate build of :func:`qunlearn.models.qnn.qnn_cnot`; params (depth, L, 2)."""

    def build(c, params):
        for theta in params:
            for q in range(n_qubits):
                c.rx(q, theta=theta[q, 0])
            for q in range(n_qubits):
                c.ry(q, theta=theta[q, 1])
            for a, b in ring_pairs(n_qubits):
                c.cnot(a, b)

    return build
