"""Models: each is a pair of pure functions ``init(key) -> params`` and ``apply(params, x) -> p``.

``apply`` maps ONE example to the probability of class 1; batches and runs come from ``jax.vmap``.
Every factory in :data:`MODELS` takes ``(input_dim, complex_input, **hyper)``, so the experiments
can build any model from a dataset's shape. A contract test runs over every member.

:func:`make_model` is the checked way in: before any work it refuses unknown names, any
hyperparameter of the wrong type or out of range (:mod:`qunlearn.models.hyper`, nothing is
coerced) and a model too large for this machine (:mod:`qunlearn.models.memory`), each with one line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from qunlearn.errors import QunlearnError, did_you_mean
from qunlearn.models.hyper import check_hyper
from qunlearn.models.memory import check_fits, estimate_bytes
from qunlearn.models.mlp import mlp
from qunlearn.models.qnn import qnn, qnn_cnot

Params = Any

__all__ = ["MODELS", "Model", "Params", "estimate_bytes", "make_model", "n_params"]


class Model(NamedTuple):
    """A classifier as two pure functions plus a description of what they are."""

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    name: str
    hyper: dict


MODELS: dict[str, Callable] = {"mlp": mlp, "qnn": qnn, "qnn_cnot": qnn_cnot}
"""name -> factory ``(input_dim, complex_input, **hyper) -> (init, apply)``."""


def make_model(name: str, input_dim: int, complex_input: bool, **hyper) -> Model:
    """Build model ``name`` for inputs of length ``input_dim``; unknown names fail with a hint,
    bad hyperparameters and models too large for this machine before any work."""
    if name not in MODELS:
        raise QunlearnError(
            f"unknown model {name!r}{did_you_mean(name, MODELS)}: choose one of {sorted(MODELS)}"
        )
    valid = list(inspect.signature(MODELS[name]).parameters)[2:]
    for key in hyper:
        if key not in valid:
            raise QunlearnError(
                f"unknown hyperparameter {key!r}{did_you_mean(key, valid)} for model {name!r}: "
                f"valid ones are {valid}"
            )
    check_hyper(name, hyper)
    check_fits(name, input_dim, complex_input, hyper)
    init, apply = MODELS[name](input_dim, complex_input, **hyper)
    return Model(init, apply, name, dict(hyper))


def n_params(params: Params) -> int:
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
