"""A 6-qubit hardware-efficient ansatz with a CZ-ladder entangler, written gate by gate in
tensorcircuit-ng (qunlearn's built-in QNN uses an RZZ ring and a fused simulator)."""

import math

from qunlearn.errors import QunlearnError
from qunlearn.models.qnn_tc import circuit_model


def cz_ansatz(input_dim: int, complex_input: bool, depth: int = 2, scale: float = 5.0):
    """Amplitude-encoded input on log2(input_dim) qubits; per layer RY and RZ on every qubit,
    then CZ on neighbours (a chain). Output sigmoid(scale * <Z> of the last qubit)."""
    n_qubits = int(round(math.log2(input_dim)))
    if 2**n_qubits != input_dim:
        raise QunlearnError(f"cz_ansatz needs a power-of-two input size, got {input_dim}")

    def build(circuit, params):
        for layer in params:
            for q in range(n_qubits):
                circuit.ry(q, theta=layer[q, 0])
                circuit.rz(q, theta=layer[q, 1])
            for q in range(n_qubits - 1):
                circuit.cz(q, q + 1)

    return circuit_model(build, n_qubits, (depth, n_qubits, 2), scale=scale, init_std=0.1)
