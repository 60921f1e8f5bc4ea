"""Readouts: the same trained params read out with finite shots, under circuit noise, or both.

Two config switches, in the noise sweep and the evaluation: ``eval_shots = [S, ...]`` (each QNN
read out from S measurements per example, :mod:`qunlearn.models.shots`) and ``eval_circuit_noise
= {label = {...} | "fake_torino"}`` (each QNN rebuilt with that ``circuit_noise``, exact density
matrices, :mod:`qunlearn.models.circuit_noise`; a fake backend's name is that device's
calibration means over the qubits the circuit would use, :func:`resolve_circuit_noise`). The
params are trained without either: how a noiselessly trained circuit reads out on a device.
Two more read the circuit-noise models as a device does (:func:`check_readouts`, each needs
``eval_circuit_noise``): ``eval_device_shots = [S, ...]`` reads each of them with S shots too
(circuit noise and shot noise together: the binomial is drawn on the noisy, readout-corrupted
⟨Z⟩), and ``eval_mitigate_readout = true`` adds each circuit-noise readout (exact and with shots)
with its readout error undone by the calibrated inverse of the assignment matrix
(:func:`qunlearn.models.circuit_noise.mitigate_readout`; every model needs a readout error).

Readout names: ``shots<S>`` and ``noise_<label>`` (the exact readout is ``exact``), then
``noise_<label>_shots<S>`` (device shots) and ``..._mitigated``; in this order: the shot
readouts, then per noise model (each list in the config's order) exact, with each S, mitigated,
with each S mitigated.

Keys (:func:`readout_key`): a shot readout of a run draws from ``fold_in(fold_in(run key,
EVAL_SHOTS_TAG), S)``, the run key being the run's own batch-order key: seeded by the config
seed, and the same for every S apart from the fold. A device readout of noise model ``label``
draws from ``fold_in(stable_key(fold_in(run key, EVAL_DEVICE_TAG), label), S)``: its own stream,
never that of ``shots<S>`` or of another noise model (two labels of one CRC are refused). A
mitigated readout with shots reuses its unmitigated readout's draws on purpose: mitigation is
classical post-processing of the same counts, so the pair differs by the mitigation only.
MLPs have no measurement: they have no readouts (:func:`readout_models` gives none).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import build_model
from qunlearn.experiments.keys import stable_fold, stable_key
from qunlearn.models import Model
from qunlearn.models.circuit_noise import mitigation
from qunlearn.train import predict

EVAL_SHOTS_TAG = 0x5A07  # folded into a run's key before S: the shot readouts' stream
EVAL_DEVICE_TAG = 0x5A08  # folded in before the noise label and S: the device readouts' streams
MITIGATED = "_mitigated"
EXACT = "exact"


class Readout(NamedTuple):
    """A readout of trained params: the model that reads them out, its shot count (None: no
    sampling, no key) and, for a device readout, the noise label that names its stream."""

    model: Model
    shots: int | None = None
    device: str | None = None


def shot_readout(shots: int) -> str:
    return f"shots{shots}"


def noise_readout(label: str, shots: int | None = None, mitigated: bool = False) -> str:
    """``noise_<label>``, with ``_shots<S>`` (device shots) and ``_mitigated``."""
    return f"noise_{label}" + (f"_shots{shots}" if shots else "") + (MITIGATED if mitigated else "")


def has_readouts(config) -> bool:
    """Whether a config asks for any readout beside the exact one."""
    return bool(getattr(config, "eval_shots", ()) or getattr(config, "eval_circuit_noise", {}))


def readout_models(
    table: str,
    spec,
    dim: int,
    is_complex: bool,
    *,
    shots=(),
    circuit_noise=None,
    device_shots=(),
    mitigate: bool = False,
) -> dict[str, Readout]:
    """{readout name: Readout} of model table ``table`` (``spec``) for inputs of length ``dim``:
    one per shot count and per resolved circuit-noise model (:func:`resolve_circuit_noise`),
    each of those also per device shot count and mitigated where asked (module docstring); {}
    for a model that is not a built-in QNN."""
    from qunlearn.experiments.config import QNN_MODELS

    if spec.model not in QNN_MODELS:
        return {}

    def variant(extra: dict) -> Model:
        """The same model with ``extra`` hyperparameters (a readout of its trained params)."""
        hyper = spec.hyper | extra
        return build_model(table, dataclasses.replace(spec, hyper=hyper), dim, is_complex)

    out = {shot_readout(s): Readout(variant({"shots": s}), s) for s in shots}
    for label, noise in (circuit_noise or {}).items():
        if mitigate:
            _mitigable(label, noise)
        for mitigated in (False, True)[: 1 + mitigate]:
            extra = {"circuit_noise": noise} | ({"mitigate_readout": True} if mitigated else {})
            out[noise_readout(label, None, mitigated)] = Readout(variant(extra))
            for s in device_shots:
                model = variant(extra | {"shots": s})
                out[noise_readout(label, s, mitigated)] = Readout(model, s, label)
    return out


def config_readouts(config, table: str, spec, dim: int, is_complex: bool, circuit_noise):
    """:func:`readout_models` with the readout keys of ``config`` (a noise sweep or an
    evaluation) and its ``circuit_noise`` resolved for this model's width."""
    return readout_models(
        table,
        spec,
        dim,
        is_complex,
        shots=config.eval_shots,
        circuit_noise=circuit_noise,
        device_shots=config.eval_device_shots,
        mitigate=config.eval_mitigate_readout,
    )


def check_readouts(config) -> None:
    """The readout keys of a config, before anything is built: ``eval_device_shots`` and
    ``eval_mitigate_readout`` need ``eval_circuit_noise``; every readout name and stream is its
    own; each noise model given as a table has a readout error to mitigate (a device's is
    checked once resolved, :func:`readout_models`). One line each."""
    noise = config.eval_circuit_noise
    for key in ("eval_device_shots", "eval_mitigate_readout"):
        if getattr(config, key) and not noise:
            raise QunlearnError(
                f"config.{key} reads out the eval_circuit_noise models, but there are none: add "
                'eval_circuit_noise = {torino = "fake_torino"} (or a table) or drop ' + key
            )
    names = [shot_readout(s) for s in config.eval_shots]
    for label in noise:
        for mitigated in (False, True)[: 1 + config.eval_mitigate_readout]:
            names += [noise_readout(label, s, mitigated) for s in (None, *config.eval_device_shots)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise QunlearnError(
            f"config.eval_circuit_noise: the readout {twice[0]!r} would be named twice (a label "
            "ending in _shots<S> or _mitigated): rename that noise model"
        )
    streams: dict[int, str] = {}
    for label in noise:
        crc = stable_fold(label)
        if crc in streams:
            raise QunlearnError(
                f"config.eval_circuit_noise: labels {streams[crc]!r} and {label!r} would share "
                "one random stream (the same CRC-32): rename one"
            )
        streams[crc] = label
    if config.eval_mitigate_readout:
        for label, model in noise.items():
            if not isinstance(model, str):
                _mitigable(label, model)


def _mitigable(label: str, noise) -> None:
    try:
        mitigation(noise)
    except QunlearnError as err:
        raise QunlearnError(f"eval_mitigate_readout: eval_circuit_noise.{label}: {err}") from None


def readout_key(key, shots: int, device: str | None = None):
    """The key of a run's readout with ``shots`` shots, from the run's own ``key``; ``device``:
    the noise label of a device readout (its own stream, module docstring)."""
    if device is None:
        return jax.random.fold_in(jax.random.fold_in(key, EVAL_SHOTS_TAG), shots)
    return jax.random.fold_in(stable_key(jax.random.fold_in(key, EVAL_DEVICE_TAG), device), shots)


def read_out(readout: Readout, params, x, key):
    """Class-1 probabilities of the batch ``x`` under ``readout`` (``key``: the run's key)."""
    if readout.shots is None:
        return predict(readout.model, params, x)
    return predict(readout.model, params, x, readout_key(key, readout.shots, readout.device))


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
