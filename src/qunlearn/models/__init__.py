"""Models: each is a pair of pure functions ``init(key) -> params`` and ``apply(params, x) -> p``.

``apply`` maps ONE example to the probability of class 1; batches and runs come from ``jax.vmap``.
Every factory in :data:`MODELS` takes ``(input_dim, complex_input, **hyper)`` so the experiment layer
can build any model from a dataset's shape. A contract test runs over every member.
"""

from __future__ import annotations

import difflib
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


MODELS: dict[str, Callable[..., Model]] = {
    "mlp": lambda input_dim, complex_input, **hyper: Model(
        *mlp(input_dim, complex_input, **hyper), "mlp", hyper
    ),
    "qnn": lambda input_dim, complex_input, **hyper: Model(
        *qnn(input_dim, complex_input, **hyper), "qnn", hyper
    ),
    "qnn_cnot": lambda input_dim, complex_input, **hyper: Model(
        *qnn_cnot(input_dim, complex_input, **hyper), "qnn_cnot", hyper
    ),
}


def make_model(name: str, input_dim: int, complex_input: bool, **hyper) -> Model:
    """Build model ``name`` for inputs of length ``input_dim``; unknown names fail with a hint."""
    if name not in MODELS:
        hint = difflib.get_close_matches(name, MODELS, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise QunlearnError(f"unknown model {name!r}{did}: choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](input_dim, complex_input, **hyper)
    except TypeError as err:  # unexpected hyperparameter name
        raise QunlearnError(f"bad hyperparameters for model {name!r}: {err}") from None


def n_params(params: Params) -> int:
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
