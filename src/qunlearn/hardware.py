"""A trained QNN on a real device's noise: Qiskit export, qiskit-aer under an IBM calibration
snapshot, and our channel model (issue 29, item 4) parametrised from the same snapshot.

Needs the optional extra ``qunlearn[hardware]`` (qiskit, qiskit-aer, qiskit-ibm-runtime, whose
``fake_provider`` ships real devices' snapshots offline); every import of those is inside a
function, and a missing one is the one line :data:`MISSING`.

Decisions:

* **Bit order.** qunlearn's qubit q is the most significant bit of a basis index; Qiskit is
  little-endian (qubit j is bit j). Our qubit q is Qiskit's qubit ``n-1-q``, so the input vector
  is prepared as is and every gate is relabelled (tests/test_hardware.py checks ⟨Z⟩ to 1e-10).
* **Amplitude encoding.** The models use x unnormalised: ⟨Z⟩(x) = ‖x‖²·⟨Z⟩(x/‖x‖). The circuit
  prepares x/‖x‖ (``StatePreparation``) and every estimate returned here is multiplied back by
  ‖x‖², so it is the model's ⟨Z⟩ and plugs into ``CircuitParts.to_prob``.
* **Preparing the input on a device.** ``prepare="gates"`` transpiles the state preparation with
  the ansatz (what a device runs: ~2**n CNOTs before routing, so it dominates the noise);
  ``prepare="ideal"`` loads the input exactly (one ``unitary`` instruction on the laid-out
  qubits, which the backend's noise model leaves noiseless) and puts device noise on the ansatz
  only: the like-for-like comparison with our channel model, which treats the input as given.
* **Where on the device** (:func:`device_qubits`). Circuits are routed inside one connected
  region of n physical qubits, the one with the lowest mean 2-qubit and readout error (Qiskit's
  own layout spread a 6-qubit ring over 12 heavy-hex qubits, 50x slower to simulate). Aer then
  simulates n qubits, and the channel model averages over exactly those.
* **The snapshot as our channel model.** The schema's probabilities are per *logical* gate; a
  snapshot's are per *physical* gate. :func:`circuit_noise_from_backend` maps one physical gate
  to one logical gate of the same arity (spec of issue 29); :func:`circuit_noise_for_circuit`
  calibrates the same figures to one transpiled circuit (N physical gates for L logical ones:
  on a heavy-hex device a 6-qubit ring ansatz has ~5x the 2-qubit and ~8x the 1-qubit gates,
  SWAPs included). Means are over all qubits, or over ``qubits`` (2-qubit gates between two of
  them); gate entries with error ≥ 1 (IBM's mark of a switched-off gate) are left out.
  The remaining model error is mostly *where* the noise acts, not its averaged size: on
  fake_sherbrooke (6 qubits, depth 3, 12 XXZ inputs, exact density matrices) aer's device noise
  moves ⟨Z⟩ by −0.114 on average, a uniform T1/T2 relaxation on the *physical* circuit alone by
  −0.100 (so the per-qubit spread is worth ~0.01), our logical model calibrated to the same
  totals by +0.001: relaxation towards |0⟩ in the physical gates' frames (ECR/SWAP
  decompositions) is not relaxation after each logical gate. ``bench/device_check.py`` and
  tests/test_hardware.py measure the gap.

  - damping: after every gate, for the mean 1-qubit gate duration t (``sx``/``x``):
    amplitude_damping γ = 1 − exp(−t/T1); phase_damping λ = 1 − exp(−2t/Tφ) with
    1/Tφ = 1/T2 − 1/(2·T1) (T2 capped at 2·T1, as qiskit-aer does), because amplitude damping
    alone already scales the coherence by √(1−γ) = exp(−t/2T1) and the phase damping Kraus pair
    scales it by √(1−λ): together exp(−t/T2).
  - depolarizing: the snapshot's error e is an average gate infidelity 1 − F_avg of the whole
    gate (relaxation included). F_avg is affine in the channel and F_avg(I/d) = 1/d, so
    depolarizing p composed with a relaxation channel R has F = (1−p)·F_R + p/d; solving for
    the snapshot's F = 1 − e gives p = d·(F_R − 1 + e) / (d·F_R − 1), and without relaxation
    (F_R = 1) p = e·d/(d−1): 2e for one qubit, 4e/3 for two. F_R is computed for the damping
    above (F_avg = (d·F_pro + 1)/(d + 1), F_pro = Σ|Tr K|²/d², a product over qubits), so each
    logical gate's total infidelity equals the snapshot's mean gate error for both arities (a
    2-qubit gate's longer relaxation ends up in its depolarizing part).
  - readout: readout_p01 = mean prob_meas1_prep0, readout_p10 = mean prob_meas0_prep1 (the
    symmetric ``readout_error`` where a snapshot lacks them).

:func:`channel_model_expectation` evaluates the channel model gate by gate with
tensorcircuit-ng's ``DMCircuit`` (order after each gate: depolarizing, amplitude damping, phase
damping), an independent reference for :mod:`qunlearn.models.noisy_dm`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import numpy as np

from qunlearn.errors import QunlearnError
from qunlearn.models.circuit_noise import check_circuit_noise
from qunlearn.models.gates import ring_pairs
from qunlearn.models.qnn import _readout_index

MISSING = "qiskit-aer is not installed: pip install 'qunlearn[hardware]'"
MODELS = {"qnn": 4, "qnn_cnot": 2}  # model name -> angles per qubit per layer
PREPARES = ("gates", "ideal")
_ONE_QUBIT_GATES = ("sx", "x")
_TWO_QUBIT_GATES = ("ecr", "cx", "cz")


def _qiskit():
    """The optional packages, or the one-line :data:`MISSING` error."""
    try:
        import qiskit
        import qiskit_aer
        import qiskit_ibm_runtime.fake_provider
    except ImportError:
        raise QunlearnError(MISSING) from None
    return qiskit, qiskit_aer, qiskit_ibm_runtime.fake_provider


def _params(model_name: str, params, n_qubits: int) -> np.ndarray:
    if model_name not in MODELS:
        raise QunlearnError(
            f"no Qiskit export for model {model_name!r}: choose one of {', '.join(MODELS)}"
        )
    theta = np.asarray(params, np.float64)
    if theta.ndim != 3 or theta.shape[1:] != (n_qubits, MODELS[model_name]):
        raise QunlearnError(
            f"{model_name} params must have shape (depth, {n_qubits}, {MODELS[model_name]}), "
            f"got {theta.shape}"
        )
    return theta


def _inputs(x, n_qubits: int) -> np.ndarray:
    arr = np.asarray(x)
    arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[1] != 2**n_qubits:
        raise QunlearnError(
            f"inputs must have 2**{n_qubits} = {2**n_qubits} amplitudes per example, "
            f"got shape {np.shape(x)}"
        )
    if not np.all(np.linalg.norm(arr, axis=1) > 0):
        raise QunlearnError("an input has zero norm: it encodes no quantum state")
    return arr


def _batch(x) -> tuple[np.ndarray, int]:
    """(N, 2**n) inputs and n from one example or a batch."""
    dim = int(np.shape(x)[-1]) if np.ndim(x) else 0
    n_qubits = int(round(math.log2(dim))) if dim > 0 else 0
    return _inputs(x, n_qubits), n_qubits


def _logical_gates(model_name: str, theta: np.ndarray, n_qubits: int):
    """The ansatz as ``(name, angle or None, qubits)`` in qunlearn's qubit numbering, in the
    order of :mod:`qunlearn.models.qnn_tc`'s gate-by-gate builds."""
    pairs = ring_pairs(n_qubits)
    for layer in theta:
        if model_name == "qnn":
            for q in range(n_qubits):
                yield from (("rx", layer[q, 0], (q,)), ("ry", layer[q, 1], (q,)))
                yield "rx", layer[q, 2], (q,)
            for j, (a, b) in enumerate(pairs):
                yield "rzz", layer[j, 3], (a, b)
        else:
            yield from (("rx", layer[q, 0], (q,)) for q in range(n_qubits))
            yield from (("ry", layer[q, 1], (q,)) for q in range(n_qubits))
            yield from (("cx", None, pair) for pair in pairs)


def to_qiskit(
    model_name: str,
    params,
    n_qubits: int,
    readout_qubit: int = -1,
    *,
    x=None,
    measure: bool = False,
):
    """The trained ansatz as a ``qiskit.QuantumCircuit`` (our qubit q is Qiskit's ``n-1-q``).

    With ``x``, the normalised input is prepared first (``metadata["norm2"]`` = ‖x‖², the factor
    that turns the circuit's ⟨Z⟩ into the model's); ``measure`` adds one classical bit that reads
    the readout qubit (``metadata["readout_qubit"]``, in Qiskit's numbering)."""
    qiskit, _, _ = _qiskit()
    theta = _params(model_name, params, n_qubits)
    readout = _readout_index(readout_qubit, n_qubits)
    circuit = qiskit.QuantumCircuit(n_qubits, 1 if measure else 0)
    norm2 = 1.0
    if x is not None:
        (vec,) = _inputs(x, n_qubits)
        norm2 = float(np.vdot(vec, vec).real)
        circuit.prepare_state(vec / math.sqrt(norm2), range(n_qubits))
    for name, angle, qubits in _logical_gates(model_name, theta, n_qubits):
        wires = [n_qubits - 1 - q for q in qubits]
        getattr(circuit, name)(*([float(angle)] if angle is not None else []), *wires)
    if measure:
        circuit.measure(n_qubits - 1 - readout, 0)
    circuit.metadata = {"readout_qubit": n_qubits - 1 - readout, "norm2": norm2}
    return circuit


def to_qasm3(model_name: str, params, n_qubits: int, readout_qubit: int = -1, **kw) -> str:
    """OpenQASM 3 text of :func:`to_qiskit`'s circuit (same arguments)."""
    qiskit, _, _ = _qiskit()
    return qiskit.qasm3.dumps(to_qiskit(model_name, params, n_qubits, readout_qubit, **kw))


def _backend_classes() -> dict[str, type]:
    """``fake_<device>`` -> the snapshot's backend class (name-only: nothing is instantiated)."""
    _, _, fake_provider = _qiskit()
    out = {}
    for attr in dir(fake_provider):
        if not attr.startswith("Fake") or "Provider" in attr or "Fractional" in attr:
            continue
        device = attr[len("Fake") :].removesuffix("V2").lower()
        out[f"fake_{device}"] = getattr(fake_provider, attr)
    return out


def fake_backend(name: str):
    """A ``qiskit_ibm_runtime`` fake backend by name: ``fake_sherbrooke``, ``FakeSherbrooke``,
    ``sherbrooke`` and ``FakeLagosV2`` all work."""
    classes = _backend_classes()
    key = str(name).strip().lower().removesuffix("v2").replace("_", "")
    key = "fake_" + key.removeprefix("fake")
    if key not in classes:
        close = difflib.get_close_matches(key, list(classes), n=4, cutoff=0.5)
        hint = (
            f" (close: {', '.join(close)})" if close else f" (e.g. {', '.join(list(classes)[:4])})"
        )
        raise QunlearnError(
            f"unknown fake backend {name!r}{hint}: see qiskit_ibm_runtime.fake_provider"
        )
    return classes[key]()


def _check_width(n_qubits: int, backend) -> None:
    if n_qubits > backend.num_qubits:
        raise QunlearnError(
            f"the circuit has {n_qubits} qubits but {backend.name} has {backend.num_qubits}: "
            "choose a wider fake backend"
        )


def _check_shots(shots, seed) -> None:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots <= 0:
        raise QunlearnError(f"shots must be a positive integer, got {shots!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise QunlearnError(f"seed must be a non-negative integer, got {seed!r}")


def _z_from_counts(counts: dict, shots: int) -> float:
    return (counts.get("0", 0) - counts.get("1", 0)) / shots


def evaluate_on_backend(
    model_name: str,
    params,
    x,
    *,
    backend: str | None,
    shots: int,
    seed: int,
    readout_qubit: int = -1,
    prepare: str = "gates",
    optimization_level: int = 1,
) -> np.ndarray:
    """The model's ⟨Z⟩ (‖x‖²·(P(read 0) − P(read 1))) of every example of ``x`` (N, 2**n),
    from ``shots`` measurements on qiskit-aer.

    ``backend``: a fake backend's name (transpiled to its coupling map and basis, seeded, and
    simulated under its noise model, ``AerSimulator.from_backend``), or None for a noiseless
    ideal simulator. ``prepare``: ``"gates"`` or ``"ideal"`` (see the module docstring)."""
    qiskit, qiskit_aer, _ = _qiskit()
    inputs, n_qubits = _batch(x)
    _check_shots(shots, seed)
    if prepare not in PREPARES:
        raise QunlearnError(f"unknown prepare {prepare!r}: choose one of {', '.join(PREPARES)}")
    if backend is None:
        sim, device = qiskit_aer.AerSimulator(), None
    else:
        device = fake_backend(backend)
        _check_width(n_qubits, device)
        sim = qiskit_aer.AerSimulator.from_backend(device)
    norm2 = np.einsum("ij,ij->i", inputs.conj(), inputs).real

    def transpile(circuits):
        if device is None:
            return qiskit.transpile(
                circuits, sim, seed_transpiler=seed, optimization_level=optimization_level
            )
        return transpile_onto_device(
            circuits, device, n_qubits, seed=seed, optimization_level=optimization_level
        )

    if prepare == "gates":
        circuits = transpile(
            [
                to_qiskit(model_name, params, n_qubits, readout_qubit, x=vec, measure=True)
                for vec in inputs
            ]
        )
    else:
        routed = transpile(to_qiskit(model_name, params, n_qubits, readout_qubit, measure=True))
        layout = (
            routed.layout.initial_index_layout()[:n_qubits]
            if routed.layout is not None
            else list(range(n_qubits))
        )
        circuits = []
        for vec, n2 in zip(inputs, norm2, strict=True):
            full = qiskit.QuantumCircuit(routed.num_qubits, 1)
            full.unitary(_preparing_unitary(vec / math.sqrt(n2)), layout)
            circuits.append(full.compose(routed))
    result = sim.run(circuits, shots=shots, seed_simulator=seed).result()
    z = np.array([_z_from_counts(result.get_counts(i), shots) for i in range(len(circuits))])
    return norm2 * z


def _preparing_unitary(state: np.ndarray) -> np.ndarray:
    """A unitary whose first column is ``state``: loaded as one ``unitary`` instruction, which a
    backend's noise model leaves noiseless and Aer's density-matrix method runs natively (Aer's
    ``initialize`` would force slow per-shot trajectories)."""
    basis = np.eye(len(state), dtype=np.complex128)
    basis[:, 0] = state
    q, r = np.linalg.qr(basis)
    return q * (r[0, 0] / abs(r[0, 0]))  # QR fixes column 0 up to a phase: undo it


def _two_qubit_errors(device) -> dict[tuple[int, int], float]:
    """(control, target) -> error of every calibrated, switched-on 2-qubit gate."""
    out = {}
    for gate in _TWO_QUBIT_GATES:
        if gate in device.target.operation_names:
            for qargs, props in device.target[gate].items():
                if props is not None and props.error is not None and props.error < 1:
                    out[tuple(qargs)] = float(props.error)
    return out


def device_qubits(backend, n_qubits: int) -> list[int]:
    """The ``n_qubits`` connected physical qubits a circuit runs on: of the regions grown
    breadth-first from every qubit, the one with the lowest mean 2-qubit gate error plus mean
    readout error (a noise-aware layout, as device users pick one). Transpiling onto this region
    only keeps routing SWAPs inside it (Qiskit's own layout spread a 6-qubit ring over 12 qubits
    of a heavy-hex device, which Aer then simulated 50x slower) and gives
    :func:`circuit_noise_from_backend` the exact qubits to average over."""
    device = fake_backend(backend) if isinstance(backend, str) else backend
    _check_width(n_qubits, device)
    errors = _two_qubit_errors(device)
    neighbours: dict[int, set[int]] = {q: set() for q in range(device.num_qubits)}
    for a, b in errors:
        neighbours[a].add(b)
        neighbours[b].add(a)
    readout = [device.target["measure"][(q,)].error or 0.0 for q in range(device.num_qubits)]
    best, best_score = None, math.inf
    for start in range(device.num_qubits):
        region, frontier = [start], [start]
        while frontier and len(region) < n_qubits:
            for q in sorted(neighbours[frontier.pop(0)] - set(region))[: n_qubits - len(region)]:
                region.append(q)
                frontier.append(q)
        inside = [e for pair, e in errors.items() if set(pair) <= set(region)]
        if len(region) < n_qubits or (n_qubits > 1 and not inside):
            continue
        score = float(np.mean(inside or [0.0]) + np.mean([readout[q] for q in region]))
        if score < best_score:
            best, best_score = sorted(region), score
    if best is None:
        raise QunlearnError(f"{device.name} has no {n_qubits} connected working qubits")
    return best


def transpile_onto_device(
    circuits, backend, n_qubits: int, *, seed: int, optimization_level: int = 1
):
    """``qiskit.transpile`` (seeded) to ``backend``'s basis and couplings, routed inside
    :func:`device_qubits`' region."""
    import warnings

    qiskit, _, _ = _qiskit()
    device = fake_backend(backend) if isinstance(backend, str) else backend
    region = set(device_qubits(device, n_qubits))
    edges = [pair for pair in _two_qubit_errors(device) if set(pair) <= region]
    with warnings.catch_warnings():
        # a coupling map with the backend "invalidates its durations and error rates" for the
        # transpiler's noise-aware passes only; we choose the region ourselves (device_qubits)
        warnings.filterwarnings("ignore", message="Providing `coupling_map`")
        return qiskit.transpile(
            circuits,
            backend=device,
            coupling_map=qiskit.transpiler.CouplingMap(edges),
            seed_transpiler=seed,
            optimization_level=optimization_level,
        )


def _relaxation_fidelity(gamma: float, lam: float, n_qubits: int) -> float:
    """Average gate fidelity of amplitude damping γ then phase damping λ on each of n qubits."""
    f_pro_1 = ((1 + math.sqrt((1 - gamma) * (1 - lam))) ** 2 + (1 - gamma) * lam) / 4
    d = 2**n_qubits
    return (d * f_pro_1**n_qubits + 1) / (d + 1)


def _depolarizing(error: float, relax_fid: float, n_qubits: int) -> float:
    d = 2**n_qubits
    p = d * (relax_fid - 1 + error) / (d * relax_fid - 1)
    return float(min(max(p, 0.0), 1.0))


def _snapshot_means(device, chosen: set[int]) -> dict:
    """Means over ``chosen`` qubits (gates: between two of them) of a snapshot's figures."""
    target = device.target

    def entries(names, arity):
        out = []
        for gate in names:
            if gate not in target.operation_names:
                continue
            for qargs, props in target[gate].items():
                usable = props is not None and props.error is not None and props.error < 1
                if usable and len(qargs) == arity and set(qargs) <= chosen:
                    out.append(props)
        if not out:
            raise QunlearnError(f"{device.name} has no calibrated {arity}-qubit gate on {chosen}")
        return out

    one, two = entries(_ONE_QUBIT_GATES, 1), entries(_TWO_QUBIT_GATES, 2)
    props = [device.qubit_properties(q) for q in sorted(chosen)]
    t1 = float(np.mean([p.t1 for p in props if p.t1]))
    return {
        **_readout_means(device, chosen),
        "t1": t1,
        "t2": min(float(np.mean([p.t2 for p in props if p.t2])), 2 * t1),
        "t_1q": float(np.mean([p.duration for p in one])),
        "t_2q": float(np.mean([p.duration for p in two])),
        "e_1q": float(np.mean([p.error for p in one])),
        "e_2q": float(np.mean([p.error for p in two])),
    }


def _readout_means(device, chosen: set[int]) -> dict:
    calib = device.properties()
    p01, p10 = [], []
    for q in sorted(chosen):
        qp = calib.qubit_property(q)
        sym = qp.get("readout_error", (0.0,))[0]
        p01.append(qp.get("prob_meas1_prep0", (sym,))[0])
        p10.append(qp.get("prob_meas0_prep1", (sym,))[0])
    return {"readout_p01": float(np.mean(p01)), "readout_p10": float(np.mean(p10))}


def _damping(t: float, means: dict) -> tuple[float, float]:
    """(γ, λ) of amplitude then phase damping over a time t (module docstring)."""
    t1, t2 = means["t1"], means["t2"]
    return 1 - math.exp(-t / t1), 1 - math.exp(-2 * t * (1 / t2 - 1 / (2 * t1)))


def _chosen(device, qubits) -> set[int]:
    chosen = set(range(device.num_qubits) if qubits is None else qubits)
    if not chosen or not chosen <= set(range(device.num_qubits)):
        raise QunlearnError(
            f"qubits must be a non-empty subset of {device.name}'s 0..{device.num_qubits - 1}"
        )
    return chosen


def circuit_noise_from_backend(name: str, *, qubits: Sequence[int] | None = None) -> dict:
    """The ``circuit_noise`` dict (round-4 schema) of a fake backend's calibration snapshot, one
    physical gate per logical gate; the derivation and the choices are in the module docstring."""
    device = fake_backend(name)
    means = _snapshot_means(device, _chosen(device, qubits))
    gamma, lam = _damping(means["t_1q"], means)
    return {
        "depolarizing_1q": _depolarizing(means["e_1q"], _relaxation_fidelity(gamma, lam, 1), 1),
        "depolarizing_2q": _depolarizing(means["e_2q"], _relaxation_fidelity(gamma, lam, 2), 2),
        "amplitude_damping": gamma,
        "phase_damping": lam,
        "readout_p01": means["readout_p01"],
        "readout_p10": means["readout_p10"],
    }


def circuit_noise_on_device(name: str, n_qubits: int) -> dict:
    """The ``circuit_noise`` dict of an ``n_qubits`` circuit on fake backend ``name``: the
    snapshot's means over the connected region it would run on (:func:`device_qubits`); a
    circuit wider than the device is refused in one line."""
    device = fake_backend(name)
    _check_width(n_qubits, device)
    return circuit_noise_from_backend(name, qubits=device_qubits(device, n_qubits))


def circuit_noise_for_circuit(
    name: str, model_name: str, params, n_qubits: int, *, seed: int, readout_qubit: int = -1
) -> dict:
    """The ``circuit_noise`` dict of one trained circuit as ``name`` runs it: calibrated to the
    transpiled ansatz (:func:`transpile_onto_device`, as :func:`evaluate_on_backend` with
    ``prepare="ideal"`` transpiles it) instead of one physical gate per logical gate.

    The transpiled circuit has N1 noisy 1-qubit gates (``sx``/``x``; ``rz`` is virtual) and N2
    2-qubit gates where the ansatz has L1 and L2 logical ones. Each physical gate's depolarizing
    part is p (module docstring, relaxation over its own duration taken out), and depolarizing
    channels compose as (1 − p)'s multiply, so one logical gate carries
    1 − (1 − p)^(N/L). Damping: T = the mean over the region's qubits of the summed durations of
    the physical gates on each (Aer's device noise relaxes qubits during gates only), spread over
    the k logical gates per qubit: γ, λ for the time T/k. Readout: the measured physical qubit's
    own prob_meas1_prep0 / prob_meas0_prep1."""
    device = fake_backend(name)
    region = device_qubits(device, n_qubits)
    means = _snapshot_means(device, set(region))
    routed = transpile_onto_device(
        to_qiskit(model_name, params, n_qubits, readout_qubit, measure=True),
        device,
        n_qubits,
        seed=seed,
    )
    busy = dict.fromkeys(region, 0.0)
    physical = {1: 0, 2: 0}
    measured = None
    for inst in routed.data:
        qargs = tuple(routed.find_bit(q).index for q in inst.qubits)
        if inst.name == "measure":
            measured = qargs[0]
        if inst.name in _ONE_QUBIT_GATES + _TWO_QUBIT_GATES:
            physical[len(qargs)] += 1
            for q in qargs:
                busy[q] += device.target[inst.name][qargs].duration
    logical = list(_logical_gates(model_name, _params(model_name, params, n_qubits), n_qubits))
    counts = {k: sum(len(g[2]) == k for g in logical) for k in (1, 2)}
    per_qubit = sum(len(g[2]) for g in logical) / n_qubits
    depol = {}
    for k, t in ((1, means["t_1q"]), (2, means["t_2q"])):
        p = _depolarizing(means[f"e_{k}q"], _relaxation_fidelity(*_damping(t, means), k), k)
        depol[k] = 1 - (1 - p) ** (physical[k] / counts[k])
    gamma, lam = _damping(float(np.mean(list(busy.values()))) / per_qubit, means)
    readout = _readout_means(device, {measured} if measured is not None else set(region))
    return {
        "depolarizing_1q": depol[1],
        "depolarizing_2q": depol[2],
        "amplitude_damping": gamma,
        "phase_damping": lam,
        "readout_p01": readout["readout_p01"],
        "readout_p10": readout["readout_p10"],
    }


def _readout_z(z, noise: dict):
    """⟨Z⟩ through the assignment error: P(read 0) − P(read 1) = (p10 − p01) + (1 − p01 − p10)·z."""
    p01, p10 = noise["readout_p01"], noise["readout_p10"]
    return (p10 - p01) + (1 - p01 - p10) * z


def _pauli_kraus_2q(p: float) -> list[np.ndarray]:
    """Kraus operators of ρ -> (1−p)ρ + p·I/4: √(1 − 15p/16)·I and √(p/16)·P for the 15 other
    two-qubit Paulis (Σ over all 16 of PρP/16 = I/4 for a unit-trace ρ)."""
    paulis = [
        np.eye(2),
        np.array([[0, 1], [1, 0]]),
        np.array([[0, -1j], [1j, 0]]),
        np.diag([1, -1]),
    ]
    kraus = []
    for i, a in enumerate(paulis):
        for j, b in enumerate(paulis):
            weight = 1 - 15 * p / 16 if i == j == 0 else p / 16
            kraus.append(math.sqrt(weight) * np.kron(a, b).astype(np.complex128))
    return kraus


def channel_model_expectation(
    model_name: str, params, x, circuit_noise: dict, *, readout_qubit: int = -1
) -> np.ndarray:
    """The model's ⟨Z⟩ of every example of ``x`` under our channel model ``circuit_noise``,
    exactly (density matrices, tensorcircuit-ng ``DMCircuit`` built gate by gate; small n only),
    readout error included."""
    from qunlearn.models.qnn_tc import _jax_runtime

    noise = check_circuit_noise(circuit_noise)
    inputs, n = _batch(x)
    theta = _params(model_name, params, n)
    readout = _readout_index(readout_qubit, n)
    gates = list(_logical_gates(model_name, theta, n))
    out = []
    with _jax_runtime("complex128", backend="numpy") as tc:
        kraus2 = [
            tc.gates.Gate(k.reshape(2, 2, 2, 2)) for k in _pauli_kraus_2q(noise["depolarizing_2q"])
        ]
        for vec in inputs:
            norm2 = float(np.vdot(vec, vec).real)
            c = tc.DMCircuit(n, inputs=np.asarray(vec / math.sqrt(norm2), np.complex128))
            for name, angle, qubits in gates:
                getattr(c, name)(*qubits, **({} if angle is None else {"theta": float(angle)}))
                if len(qubits) == 1:
                    p = noise["depolarizing_1q"]
                    c.depolarizing(qubits[0], px=p / 4, py=p / 4, pz=p / 4)
                else:
                    c.apply_general_kraus(kraus2, *qubits)
                for q in qubits:
                    c.amplitudedamping(q, gamma=noise["amplitude_damping"], p=1.0)
                    c.phasedamping(q, gamma=noise["phase_damping"])
            z = float(np.real(np.asarray(c.expectation_ps(z=[readout]))))
            out.append(norm2 * _readout_z(z, noise))
    return np.array(out)


def noise_model(circuit_noise: dict):
    """A qiskit-aer ``NoiseModel`` of our channel model on the logical gates (rx, ry, rzz, cx),
    readout error on every qubit: run :func:`to_qiskit`'s circuits under it without
    transpiling to a device (the cross-check of :func:`channel_model_expectation`)."""
    _, qiskit_aer, _ = _qiskit()
    nz = qiskit_aer.noise
    noise = check_circuit_noise(circuit_noise)

    def relax():
        return nz.amplitude_damping_error(noise["amplitude_damping"]).compose(
            nz.phase_damping_error(noise["phase_damping"])
        )

    model = nz.NoiseModel(basis_gates=["rx", "ry", "rzz", "cx"])
    one = nz.depolarizing_error(noise["depolarizing_1q"], 1).compose(relax())
    two = nz.depolarizing_error(noise["depolarizing_2q"], 2).compose(relax().tensor(relax()))
    model.add_all_qubit_quantum_error(one, ["rx", "ry"])
    model.add_all_qubit_quantum_error(two, ["rzz", "cx"])
    p01, p10 = noise["readout_p01"], noise["readout_p10"]
    model.add_all_qubit_readout_error(nz.ReadoutError([[1 - p01, p01], [p10, 1 - p10]]))
    return model
