"""Models: each is a pair of pure functions ``init(key) -> params`` and ``apply(params, x) -> p``.

``apply`` maps ONE example to the probability of class 1; batches and runs come from ``jax.vmap``.
Every factory in :data:`MODELS` takes ``(input_dim, complex_input, **hyper)``, so the experiments
can build any model from a dataset's shape. A contract test runs over every member.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from qunlearn.errors import QunlearnError
from qunlearn.models.mlp import mlp
from qunlearn.models.qnn import qnn, qnn_cnot

Params = Any


class Model(NamedTuple):
    """A classifier as two pure functions plus a description of what they are."""

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    name: str
    hyper: dict


MODELS: dict[str, Callable] = {"mlp": mlp, "qnn": qnn, "qnn_cnot": qnn_cnot}
"""name -> factory ``(input_dim, complex_input, **hyper) -> (init, apply)``."""


def make_model(name: str, input_dim: int, complex_input: bool, **hyper) -> Model:
    """Build model ``name`` for inputs of length ``input_dim``; unknown names fail with a hint."""
    if name not in MODELS:
        hint = difflib.get_close_matches(name, MODELS, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise QunlearnError(f"unknown model {name!r}{did}: choose one of {sorted(MODELS)}")
    valid = list(inspect.signature(MODELS[name]).parameters)[2:]
    for key in hyper:
        if key not in valid:
            hint = difflib.get_close_matches(key, valid, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise QunlearnError(
                f"unknown hyperparameter {key!r}{did} for model {name!r}: valid ones are {valid}"
            )
    init, apply = MODELS[name](input_dim, complex_input, **hyper)
    return Model(init, apply, name, dict(hyper))


def n_params(params: Params) -> int:
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
