"""Readouts: the same trained params read out with finite shots or under circuit noise.

Two config switches, in the noise sweep and the evaluation: ``eval_shots = [S, ...]`` (each QNN
read out from S measurements per example, :mod:`qunlearn.models.shots`) and ``eval_circuit_noise
= {label = {...} | "fake_torino"}`` (each QNN rebuilt with that ``circuit_noise``, exact density
matrices, :mod:`qunlearn.models.circuit_noise`; a fake backend's name is that device's
calibration means over the qubits the circuit would use, :func:`resolve_circuit_noise`). The
params are trained without either: how a noiselessly trained circuit reads out on a device.

Readout names: ``shots<S>`` and ``noise_<label>`` (the exact readout is ``exact``); shots come
first by S, then the noise models in the config's order. A shot readout of a run draws from
``fold_in(fold_in(run key, EVAL_SHOTS_TAG), S)`` (:func:`readout_key`), the run key being the
run's own batch-order key: seeded by the config seed, and the same for every S apart from the
fold. MLPs have no measurement: they have no readouts (:func:`readout_models` gives none).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

from qunlearn.experiments.common import build_model
from qunlearn.models import Model
from qunlearn.train import predict

EVAL_SHOTS_TAG = 0x5A07  # folded into a run's key before S: the shot readouts' stream
EXACT = "exact"


class Readout(NamedTuple):
    """A readout of trained params: the model that reads them out, and its shot count (None:
    no sampling, no key)."""

    model: Model
    shots: int | None = None


def shot_readout(shots: int) -> str:
    return f"shots{shots}"


def noise_readout(label: str) -> str:
    return f"noise_{label}"


def has_readouts(config) -> bool:
    """Whether a config asks for any readout beside the exact one."""
    return bool(getattr(config, "eval_shots", ()) or getattr(config, "eval_circuit_noise", {}))


def readout_models(
    table: str, spec, dim: int, is_complex: bool, *, shots=(), circuit_noise=None
) -> dict[str, Readout]:
    """{readout name: Readout} of model table ``table`` (``spec``) for inputs of length ``dim``:
    one per shot count and per resolved circuit-noise model (:func:`resolve_circuit_noise`);
    {} for a model that is not a built-in QNN."""
    from qunlearn.experiments.config import QNN_MODELS

    if spec.model not in QNN_MODELS:
        return {}

    def variant(extra: dict) -> Model:
        """The same model with ``extra`` hyperparameters (a readout of its trained params)."""
        hyper = spec.hyper | extra
        return build_model(table, dataclasses.replace(spec, hyper=hyper), dim, is_complex)

    out = {shot_readout(s): Readout(variant({"shots": s}), s) for s in shots}
    for label, noise in (circuit_noise or {}).items():
        out[noise_readout(label)] = Readout(variant({"circuit_noise": noise}))
    return out


def readout_key(key, shots: int):
    """The key of a run's readout with ``shots`` shots, from the run's own ``key``."""
    return jax.random.fold_in(jax.random.fold_in(key, EVAL_SHOTS_TAG), shots)


def read_out(readout: Readout, params, x, key):
    """Class-1 probabilities of the batch ``x`` under ``readout`` (``key``: the run's key)."""
    if readout.shots is None:
        return predict(readout.model, params, x)
    return predict(readout.model, params, x, readout_key(key, readout.shots))


def resolve_circuit_noise(models: dict, dim: int) -> dict:
    """{label: circuit_noise dict}, a fake backend's name resolved for a circuit of log2(dim)
    qubits (:func:`qunlearn.hardware.circuit_noise_on_device`: one line if it is too wide)."""
    resolved = {}
    for label, noise in models.items():
        if isinstance(noise, str):
            from qunlearn.hardware import circuit_noise_on_device

            noise = circuit_noise_on_device(noise, max(int(dim).bit_length() - 1, 1))
        resolved[label] = noise
    return resolved
