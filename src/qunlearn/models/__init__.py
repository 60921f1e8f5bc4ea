"""Models: each is a pair of pure functions ``init(key) -> params`` and ``apply(params, x) -> p``.

``apply`` maps ONE example to the probability of class 1; batches and runs come from ``jax.vmap``.
Every factory in :data:`MODELS` takes ``(input_dim, complex_input, **hyper)``, so the experiments
can build any model from a dataset's shape. The family is open (:mod:`qunlearn.families`): a config
may name ``"package.module:factory"``, a registered name or an installed entry point
(group ``qunlearn.models``); :func:`qunlearn.testing.check_model` is the contract every member,
built-in or not, passes.

:func:`make_model` is the checked way in: before any work it refuses unknown names, any
hyperparameter of the wrong type or out of range (:mod:`qunlearn.models.hyper`, nothing is
coerced) and a model too large for this machine (:mod:`qunlearn.models.memory`), each with one line.

Finite shots (:mod:`qunlearn.models.shots`): the built-in QNNs also take ``shots`` (a positive
integer, or None = exact) and ``gradient`` (one of :data:`~qunlearn.models.shots.SHOT_GRADIENTS`).
Either one gives the model a ``sample(params, x, key) -> p`` for a batch ``x``: class-1
probabilities read out from ⟨Z⟩ estimated with ``shots`` measurements, differentiable with that
gradient estimator. ``apply`` stays the exact model, bit for bit; a model without them has
``sample = None`` and is exactly today's. ``mitigate_readout = true`` (with a ``circuit_noise``
that has a readout error) undoes that error in both: each ⟨Z⟩, exact or estimated from shots,
goes through the calibrated inverse of the readout's assignment matrix before the readout
(:func:`qunlearn.models.circuit_noise.mitigate_readout`). Who uses ``sample``:
:func:`qunlearn.train.predict` and ``accuracy`` given a key, the supervised objective in training
(step keys) and the unlearning methods whose objective samples
(:attr:`qunlearn.unlearn.Method.sampled`); everything else (curvature- or Fisher-based methods,
Hessians, oracle ensembles) calls ``apply``, so the experiment configs accept ``shots`` and
``gradient`` in the noise sweep and the unlearning kind only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from qunlearn.errors import QunlearnError, did_you_mean, user_code
from qunlearn.families import Family, keyword_options
from qunlearn.models.circuit_noise import mitigate_readout, mitigation
from qunlearn.models.hyper import check_hyper
from qunlearn.models.memory import check_fits, estimate_bytes
from qunlearn.models.mlp import mlp
from qunlearn.models.qnn import qnn, qnn_cnot, qnn_cnot_parts, qnn_parts
from qunlearn.models.shots import check_gradient, check_shots, measure_batch, measured_expectation

Params = Any

__all__ = ["MODELS", "Model", "Params", "call_factory", "estimate_bytes", "make_model", "n_params"]


class Model(NamedTuple):
    """A classifier as two pure functions plus a description of what they are."""

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    name: str
    hyper: dict
    sample: Callable[[Params, jax.Array, jax.Array], jax.Array] | None = None
    """A batch's probabilities from finite shots, ``sample(params, x, key)``; None: exact only."""


MODELS = Family("model", "qunlearn.models", {"mlp": mlp, "qnn": qnn, "qnn_cnot": qnn_cnot})
"""name -> factory ``(input_dim, complex_input, **hyper) -> (init, apply)``; open (see above)."""

SHOT_HYPER = ("shots", "gradient")
"""Hyperparameters of the built-in QNNs that :func:`make_model` handles (finite shots)."""
READOUT_HYPER = (*SHOT_HYPER, "mitigate_readout")
"""All that :func:`make_model` handles around a built-in QNN's circuit (shots, mitigation)."""
_CIRCUIT_PARTS = {"qnn": qnn_parts, "qnn_cnot": qnn_cnot_parts}


def make_model(name: str, input_dim: int, complex_input: bool, **hyper) -> Model:
    """Build model ``name`` for inputs of length ``input_dim``; unknown names fail with a hint,
    bad hyperparameters and models too large for this machine before any work (a user's model:
    its factory's own errors, each one line naming the model)."""
    factory = MODELS.resolve(name)
    valid, takes_any = keyword_options(factory, 2)
    circuit = MODELS.is_builtin(name) and name in _CIRCUIT_PARTS
    if circuit:
        valid = [*valid, *READOUT_HYPER]
    for key in hyper:
        if key not in valid and not takes_any:
            raise QunlearnError(
                f"unknown hyperparameter {key!r}{did_you_mean(key, valid)} for model {name!r}: "
                f"valid ones are {valid}"
            )
    readout_hyper = {k: hyper[k] for k in READOUT_HYPER if k in hyper} if circuit else {}
    circuit_hyper = {k: v for k, v in hyper.items() if k not in readout_hyper}
    sample = mitigated = None
    if MODELS.is_builtin(name):
        check_hyper(name, circuit_hyper)
        if readout_hyper:
            mitigated, sample = _readouts(
                name, input_dim, complex_input, circuit_hyper, **readout_hyper
            )
        check_fits(name, input_dim, complex_input, circuit_hyper)
        init, apply = factory(input_dim, complex_input, **circuit_hyper)
        apply = mitigated or apply
    else:
        init, apply = call_factory(name, factory, input_dim, complex_input, hyper)
    return Model(init, apply, name, dict(hyper), sample)


def _readouts(
    name, input_dim, complex_input, hyper, shots=None, gradient="exact", mitigate_readout=False
):
    """(``apply`` or None, ``sample(params, x, key)`` or None) of a built-in QNN: the mitigated
    exact model where ``mitigate_readout``, the shot sampler where ``shots``/``gradient`` ask
    for one (one line for bad values)."""
    try:
        shots, gradient = check_shots(shots), check_gradient(gradient)
    except QunlearnError as err:
        raise QunlearnError(f"hyper.{err}") from None
    if not isinstance(mitigate_readout, bool):
        raise QunlearnError(f"hyper.mitigate_readout = {mitigate_readout!r} must be true or false")
    sampled = not (shots is None and gradient == "exact")
    if not (sampled or mitigate_readout):
        return None, None
    if sampled and hyper.get("n_classes", 2) > 2:
        raise QunlearnError(
            "hyper.shots and hyper.gradient are for binary models (one readout qubit's binomial "
            f"counts); a model with n_classes = {hyper['n_classes']} is exact: leave them out"
        )
    parts = _CIRCUIT_PARTS[name](input_dim, complex_input, **hyper)
    post = _mitigator(hyper.get("circuit_noise")) if mitigate_readout else lambda z, x: z
    apply = None
    if mitigate_readout:

        def apply(params, x):
            return parts.to_prob(post(parts.expectation(params, x), x))

    sample = None
    if sampled:
        f = measured_expectation(parts.expectation, shots=shots, gradient=gradient)

        def sample(params, x, key):
            return parts.to_prob(jax.vmap(post)(measure_batch(f, params, x, key), x))

    return apply, sample


def _mitigator(circuit_noise) -> Callable:
    """``post(z, x)``: one example's ⟨Z⟩ (exact or a shot estimate) with the readout error of
    ``circuit_noise`` undone (:func:`~qunlearn.models.circuit_noise.mitigate_readout`)."""
    try:
        alpha, beta = mitigation(circuit_noise)
    except QunlearnError as err:
        raise QunlearnError(f"hyper.mitigate_readout: {err}") from None

    def post(z, x):
        return mitigate_readout(z, jnp.sum(jnp.abs(x) ** 2).astype(z.dtype), alpha, beta)

    return post


def call_factory(name: str, factory: Callable, input_dim: int, complex_input: bool, hyper: dict):
    """``factory(input_dim, complex_input, **hyper)`` of a user's model, every failure one line
    that names the model and the contract it broke."""
    built = f"input_dim = {input_dim}, complex_input = {complex_input}, hyper = {hyper}"
    with user_code(f"model {name!r}", f"model {name!r} failed to build for {built}"):
        pair = factory(input_dim, complex_input, **hyper)
    if (
        isinstance(pair, Model)
        or not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(map(callable, pair))
    ):
        raise QunlearnError(
            f"model {name!r}: its factory must return a pair of functions (init, apply), got "
            f"{type(pair).__name__}"
        )
    return tuple(pair)


def n_params(params: Params) -> int:
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
