"""A fixed QNN on real devices' noise (not a test): exact ⟨Z⟩ vs our channel model parametrised
from each device's calibration snapshot vs qiskit-aer under that snapshot's noise model.

    PYTHONPATH=src .venv/bin/python bench/device_check.py                 # ~5 min on 2 cores
    PYTHONPATH=src .venv/bin/python bench/device_check.py --backends fake_torino --examples 8

Nothing is trained: the QNN (``--qubits`` 6, ``--depth`` 3, ring RZZ ansatz) has fixed random
angles (``--seed``) and classifies ``--examples`` ground states of the 6-spin XXZ chain (train
and val of qunlearn.data, built in a temporary cache), so its accuracy against the labels is
near chance; the column that matters is ``agree``, the share of examples whose class (⟨Z⟩ > 0)
matches the exact model's. Per backend (all on :func:`qunlearn.hardware.device_qubits`' region):
our channel model (``channel_model_expectation``, DMCircuit) parametrised one physical gate per
logical gate (``circuit_noise_from_backend``) and calibrated to the transpiled ansatz
(``circuit_noise_for_circuit``); aer with the input loaded noiselessly (``prepare="ideal"``:
noise on the ansatz only, like ours) and with the state preparation transpiled too
(``"gates"``: what a device runs). |Δ| columns: means over examples of |⟨Z⟩ − exact| and
|⟨Z⟩ − ours| per unit-norm input. Transpiled ``sx``/``x`` and 2-qubit gate counts are printed
beside the logical ones.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn import hardware
from qunlearn.data import load_xxz
from qunlearn.models.qnn import qnn_parts


def _counts(circuit) -> tuple[int, int]:
    one = sum(
        1 for inst in circuit.data if inst.operation.num_qubits == 1 and inst.name != "measure"
    )
    two = sum(1 for inst in circuit.data if inst.operation.num_qubits == 2)
    return one, two


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=["fake_sherbrooke", "fake_torino"])
    ap.add_argument("--qubits", type=int, default=6)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--shots", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    n = args.qubits

    with tempfile.TemporaryDirectory() as cache:
        data = load_xxz(cache_dir=cache, n_spins=n, n_delta=61)
    pool_x = np.concatenate([data.x_train, data.x_val])
    pool_y = np.concatenate([data.y_train, data.y_val])
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(pool_x), size=min(args.examples, len(pool_x)), replace=False)
    x, y = pool_x[pick], pool_y[pick]
    params = rng.normal(size=(args.depth, n, 4))
    parts = qnn_parts(2**n, True, depth=args.depth)
    exact = np.asarray(jax.vmap(parts.expectation, (None, 0))(jnp.asarray(params), jnp.asarray(x)))
    scale = np.einsum("ij,ij->i", x.conj(), x).real  # ‖x‖² (1 for these states)

    def row(label, z, seconds):
        acc = np.mean((z > 0) == (y == 1))
        agree = np.mean((z > 0) == (exact > 0))
        d_exact = np.mean(np.abs(z - exact) / scale)
        print(f"{label:<34} acc {acc:5.3f}  agree {agree:5.3f}  |Δ exact| {d_exact:6.4f}", end="")
        return agree

    logical = (3 * n * args.depth, n * args.depth)
    print(
        f"{n} qubits, depth {args.depth}, {len(x)} XXZ examples, {args.shots} shots, "
        f"logical gates 1q/2q = {logical[0]}/{logical[1]}"
    )
    row("exact", exact, 0.0)
    print()
    for backend in args.backends:
        qubits = hardware.device_qubits(backend, n)
        noise = hardware.circuit_noise_from_backend(backend, qubits=qubits)
        print(
            f"{backend}: physical qubits {qubits}; circuit_noise "
            + ", ".join(f"{k} {v:.4g}" for k, v in noise.items())
        )
        t0 = time.perf_counter()
        ours = hardware.channel_model_expectation("qnn", params, x, noise)
        row("  ours, 1 physical gate per logical", ours, 0)
        print(f"  {time.perf_counter() - t0:6.1f} s")
        calibrated = hardware.circuit_noise_for_circuit(backend, "qnn", params, n, seed=args.seed)
        print(
            "  calibrated to the transpiled ansatz: "
            + ", ".join(f"{k} {v:.4g}" for k, v in calibrated.items())
        )
        t0 = time.perf_counter()
        fitted = hardware.channel_model_expectation("qnn", params, x, calibrated)
        row("  ours, calibrated to the circuit", fitted, 0)
        print(f"  {time.perf_counter() - t0:6.1f} s")
        for prepare in ("ideal", "gates"):
            t0 = time.perf_counter()
            aer = hardware.evaluate_on_backend(
                "qnn", params, x, backend=backend, shots=args.shots, seed=args.seed, prepare=prepare
            )
            seconds = time.perf_counter() - t0
            row(f"  aer, prepare={prepare}", aer, seconds)
            gaps = [np.mean(np.abs(aer - z) / scale) for z in (ours, fitted)]
            print(f"  |Δ ours| {gaps[0]:6.4f}  |Δ calibrated| {gaps[1]:6.4f}  {seconds:6.1f} s")
        counts = _transpiled_counts(params, x[0], n, backend, args.seed)
        print(
            f"  transpiled 1q/2q gates: ansatz {counts[0][0]}/{counts[0][1]}, "
            f"with state preparation {counts[1][0]}/{counts[1][1]}"
        )
    sigma = 1 / np.sqrt(args.shots)
    print(f"shot error of one ⟨Z⟩ ≤ {sigma:.4f} (1σ); of a mean of |Δ| over examples ~ that")


def _transpiled_counts(params, x0, n, backend, seed):
    out = []
    for vec in (None, x0):
        circuit = hardware.to_qiskit("qnn", params, n, x=vec, measure=True)
        out.append(_counts(hardware.transpile_onto_device(circuit, backend, n, seed=seed)))
    return out


if __name__ == "__main__":
    main()
