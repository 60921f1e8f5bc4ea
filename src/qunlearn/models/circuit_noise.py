"""Circuit noise: the ``circuit_noise`` dict, its check, and the channels it names as matrices.

One plain dict describes the noise of a QNN circuit (the word "noise" alone means the poisoning
family). Every key is a probability in [0, 1]; a missing key is 0:

* ``depolarizing_1q``: p of ρ -> (1-p)ρ + p I/2 after every 1-qubit gate;
* ``depolarizing_2q``: p of ρ -> (1-p)ρ + p I/4 after every 2-qubit gate;
* ``amplitude_damping``: γ (Kraus [[1,0],[0,√(1-γ)]], [[0,√γ],[0,0]]) after every gate, on each
  qubit it acts on;
* ``phase_damping``: λ (Kraus [[1,0],[0,√(1-λ)]], [[0,0],[0,√λ]]) likewise;
* ``readout_p01``, ``readout_p10``: P(read 1 | prepared 0), P(read 0 | prepared 1) on the readout
  qubit; ⟨Z⟩ = P(read 0) - P(read 1).

After a gate the channels act in that order: depolarizing, then amplitude damping (each qubit of
the gate), then phase damping (each qubit). The readout error is linear in ρ: it turns the
observable Z_r into (1 - p01 - p10) Z_r + (p10 - p01) I, so on an input |x⟩ that is not
normalised (qunlearn's QNNs use amplitudes as given) the constant is (p10 - p01)·‖x‖².

tensorcircuit-ng's channels (the reference in ``tests/test_circuit_noise.py``) are parametrised
differently; the mapping:
``depolarizing_1q = p`` is ``tc.channels.depolarizingchannel(p/4, p/4, p/4)``;
``depolarizing_2q = p`` is ``tc.channels.generaldepolarizingchannel(p/16, 2)`` (tc's p is the
weight of each of the 15 non-identity Paulis); ``amplitude_damping = γ`` is
``tc.channels.amplitudedampingchannel(γ, 1.0)``; ``phase_damping = λ`` is
``tc.channels.phasedampingchannel(λ)``.

The simulators are :mod:`qunlearn.models.noisy_dm` (exact, density matrix) and
:mod:`qunlearn.models.noisy_trajectories` (Monte Carlo).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from qunlearn.errors import QunlearnError, did_you_mean

KEYS = (
    "depolarizing_1q",
    "depolarizing_2q",
    "amplitude_damping",
    "phase_damping",
    "readout_p01",
    "readout_p10",
)
"""The keys of a ``circuit_noise`` dict, each a probability in [0, 1] (missing = 0)."""


def check_circuit_noise(d) -> dict:
    """The ``circuit_noise`` dict ``d`` with every key filled in (as float), or a one-line
    :class:`QunlearnError` naming the first bad entry. ``None`` means no noise."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise QunlearnError(
            f"circuit_noise = {d!r} must be a table of probabilities, e.g. "
            f"circuit_noise = {{depolarizing_1q = 0.001}}; keys: {', '.join(KEYS)}"
        )
    out = dict.fromkeys(KEYS, 0.0)
    for key, value in d.items():
        if key not in KEYS:
            raise QunlearnError(
                f"circuit_noise.{key} is not a noise key{did_you_mean(key, KEYS)}: "
                f"valid ones are {', '.join(KEYS)}"
            )
        number = isinstance(value, int | float | np.integer | np.floating)
        if isinstance(value, bool | np.bool_) or not number or not 0 <= value <= 1:
            raise QunlearnError(
                f"circuit_noise.{key} = {value!r} must be a probability, a number in [0, 1]: "
                f"write {key} = 0.01"
            )
        out[key] = float(value)
    return out


def is_noiseless(noise: dict) -> bool:
    return not any(noise.values())


SIMULATORS = ("auto", "statevector", "density_matrix")
"""A QNN's ``simulator`` hyper: ``"auto"`` is the exact state vector without circuit noise and
the density matrix with it."""


def resolve_simulator(simulator: str, circuit_noise) -> str:
    """``"statevector"`` or ``"density_matrix"`` for a QNN's ``simulator`` and ``circuit_noise``
    hypers (checked here too: one line each)."""
    noise = check_circuit_noise(circuit_noise)
    if simulator not in SIMULATORS:
        raise QunlearnError(
            f"unknown QNN simulator {simulator!r}{did_you_mean(simulator, SIMULATORS)}: "
            f"choose one of {', '.join(SIMULATORS)}"
        )
    if simulator == "auto":
        return "statevector" if is_noiseless(noise) else "density_matrix"
    if simulator == "statevector" and not is_noiseless(noise):
        raise QunlearnError(
            'simulator = "statevector" cannot simulate circuit_noise (it keeps a pure state): '
            'write simulator = "density_matrix" or leave simulator out'
        )
    return simulator


# ---- channels as matrices (numpy, complex128; built once per model) ------------------------------

PAULIS = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])
"""I, X, Y, Z."""


def _superop(kraus) -> np.ndarray:
    """S with ρ' = Σ_k K ρ K† as ``vec(ρ') = S vec(ρ)``, row-major vec (ket index first)."""
    return np.sum([np.kron(k, k.conj()) for k in kraus], axis=0)


def depolarizing_kraus(p: float, n_qubits: int) -> list[np.ndarray]:
    """ρ -> (1-p)ρ + p I/d as d² Pauli Kraus operators, weights 1 - p + p/d² and p/d²."""
    d2 = 4**n_qubits
    paulis = [np.eye(1)]
    for _ in range(n_qubits):
        paulis = [np.kron(a, b) for a in paulis for b in PAULIS]
    weights = [1 - p + p / d2] + [p / d2] * (d2 - 1)
    return [math.sqrt(w) * m for w, m in zip(weights, paulis, strict=True)]


def amplitude_damping_kraus(gamma: float) -> list[np.ndarray]:
    return [
        np.array([[1, 0], [0, math.sqrt(1 - gamma)]]),
        np.array([[0, math.sqrt(gamma)], [0, 0]]),
    ]


def phase_damping_kraus(lam: float) -> list[np.ndarray]:
    return [np.array([[1, 0], [0, math.sqrt(1 - lam)]]), np.array([[0, 0], [0, math.sqrt(lam)]])]


def gate_noise_superop(noise: dict, n_qubits: int) -> np.ndarray:
    """The superoperator of the channels after one ``n_qubits``-qubit gate (1 or 2), in the
    order depolarizing, amplitude damping, phase damping: (4**n, 4**n), vec as in :func:`_superop`
    with the gate's qubits in order (a 2-qubit ρ's indices are (ket a, ket b, bra a, bra b))."""
    dep = noise["depolarizing_1q" if n_qubits == 1 else "depolarizing_2q"]
    s = _superop(depolarizing_kraus(dep, n_qubits))
    for one in (
        _superop(amplitude_damping_kraus(noise["amplitude_damping"])),
        _superop(phase_damping_kraus(noise["phase_damping"])),
    ):
        s = _on_each_qubit(one, n_qubits) @ s
    return s


def _on_each_qubit(s1: np.ndarray, n_qubits: int) -> np.ndarray:
    """A 1-qubit superoperator applied to every qubit of an ``n_qubits`` ρ (1 or 2)."""
    if n_qubits == 1:
        return s1
    t = s1.reshape(2, 2, 2, 2)  # [i', j', i, j]
    both = np.einsum("acAC,bdBD->abcdABCD", t, t)  # ket a, ket b, bra a, bra b
    return both.reshape(16, 16)


def readout_observable(noise: dict) -> tuple[float, float]:
    """(α, β) with the measured ⟨Z⟩ = tr(ρ (α Z_r + β I)) under the readout error."""
    p01, p10 = noise["readout_p01"], noise["readout_p10"]
    return 1.0 - p01 - p10, p10 - p01


def mitigation(noise: dict) -> tuple[float, float]:
    """(α, β) of :func:`readout_observable` for readout-error mitigation, or one line where
    there is nothing to invert: no readout error (mitigation would be the identity, a readout
    equal to the unmitigated one) or p01 + p10 >= 1 (α <= 0: the assignment matrix is singular
    or swaps the outcomes)."""
    noise = check_circuit_noise(noise)
    p01, p10 = noise["readout_p01"], noise["readout_p10"]
    if p01 == p10 == 0:
        raise QunlearnError(
            "readout-error mitigation needs a readout error: this circuit_noise has "
            "readout_p01 = readout_p10 = 0 (give them, or leave mitigation out)"
        )
    if p01 + p10 >= 1:
        raise QunlearnError(
            f"readout_p01 + readout_p10 = {p01 + p10:g} >= 1: the readout's assignment matrix "
            "has no usable inverse (its outcomes say nothing), so it cannot be mitigated"
        )
    return readout_observable(noise)


def mitigate_readout(z, norm2, alpha: float, beta: float):
    """⟨Z⟩ with the readout error undone: the calibrated inverse of the readout qubit's 2x2
    assignment matrix, (⟨Z⟩_meas − β‖x‖²)/α (``norm2`` = ‖x‖², the scale of qunlearn's
    unnormalised inputs: per unit norm it is (⟨Z⟩ − β)/α). Clipped to [−‖x‖², ‖x‖²], the
    physical range: exact values lie there already (up to rounding), so the clip binds only
    where shot noise pushes an estimate outside, which biases it toward 0 where ⟨Z⟩ is near
    ±1 (elsewhere the estimate is unbiased, its variance the binomial one over α²)."""
    return jnp.clip((z - beta * norm2) / alpha, -norm2, norm2)


# ---- Pauli channels for trajectories ------------------------------------------------------------


def pauli_probs_1q(noise: dict) -> np.ndarray:
    """(4,) probabilities of I, X, Y, Z of the channels after a 1-qubit gate as ONE Pauli
    channel: depolarizing exact, phase damping exact (a Z flip with p = (1 - √(1-λ))/2),
    amplitude damping Pauli-twirled (p_x = p_y = γ/4, p_z = (1 - γ/2 - √(1-γ))/2; the twirl
    drops its non-unital part, see :mod:`qunlearn.models.noisy_trajectories`)."""
    p = noise["depolarizing_1q"]
    return _compose_paulis(
        [np.array([1 - 3 * p / 4, p / 4, p / 4, p / 4]), *_damping_paulis(noise)]
    )


def _damping_paulis(noise: dict) -> list[np.ndarray]:
    g, lam = noise["amplitude_damping"], noise["phase_damping"]
    pz_ad = (1 - g / 2 - math.sqrt(1 - g)) / 2
    pz_pd = (1 - math.sqrt(1 - lam)) / 2
    return [
        np.array([1 - g / 2 - pz_ad, g / 4, g / 4, pz_ad]),
        np.array([1 - pz_pd, 0.0, 0.0, pz_pd]),
    ]


def _compose_paulis(channels: list[np.ndarray]) -> np.ndarray:
    """Probabilities of the product of independent 1-qubit Pauli errors (up to phase)."""
    out = np.array([1.0, 0.0, 0.0, 0.0])
    for probs in channels:
        new = np.zeros(4)
        for a in range(4):
            for b in range(4):
                new[_pauli_product(a, b)] += out[a] * probs[b]
        out = new
    return np.clip(out, 0.0, 1.0)


def _pauli_product(a: int, b: int) -> int:
    """Index of P_a P_b up to phase (I, X, Y, Z = 0..3): XOR of the (x, z) bits."""
    xa, za = a in (1, 2), a in (2, 3)
    xb, zb = b in (1, 2), b in (2, 3)
    x, z = xa ^ xb, za ^ zb
    return {(0, 0): 0, (1, 0): 1, (1, 1): 2, (0, 1): 3}[(int(x), int(z))]


def pauli_probs_2q(noise: dict) -> np.ndarray:
    """(4, 4) probabilities of P_a ⊗ P_b after a 2-qubit gate: the 2-qubit depolarizing channel,
    then each qubit's damping channels (as in :func:`pauli_probs_1q`)."""
    p = noise["depolarizing_2q"]
    dep = np.full((4, 4), p / 16)
    dep[0, 0] = 1 - 15 * p / 16
    one = _compose_paulis(_damping_paulis(noise))
    out = np.zeros((4, 4))
    for a in range(4):
        for b in range(4):
            for c in range(4):
                for e in range(4):
                    out[_pauli_product(a, c), _pauli_product(b, e)] += dep[a, b] * one[c] * one[e]
    return np.clip(out, 0.0, 1.0)
