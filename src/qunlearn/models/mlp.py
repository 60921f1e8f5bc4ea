"""Multilayer perceptron with Keras defaults: Glorot-uniform weights, zero biases, relu."""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from qunlearn.errors import QunlearnError

DEFAULT_HIDDEN = (64, 16)


def mlp(input_dim: int, complex_input: bool, hidden=DEFAULT_HIDDEN, bound: float | None = None):
    """Dense(h1, relu) -> ... -> Dense(1, sigmoid). Complex inputs enter as [Re; Im] (2·input_dim).
    ``hidden = []`` is logistic regression. ``bound = b`` bounds the logit like the QNN's
    readout sigmoid(5·⟨Z⟩), ⟨Z⟩ ∈ [−1, 1]: p = sigmoid(b · tanh(z)) (a control, not the paper's).

    Returns ``(init, apply)``; params are a list of ``{"w": (n_in, n_out), "b": (n_out,)}``.
    """
    hidden = tuple(operator.index(h) for h in hidden)  # never rounds: 4.5 raises, not 4
    if any(h <= 0 for h in hidden):
        raise QunlearnError(f"MLP hidden sizes must be positive, got {list(hidden)}")
    n_in = 2 * input_dim if complex_input else input_dim
    sizes = (n_in, *hidden, 1)
    glorot = jax.nn.initializers.glorot_uniform()

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [
            {"w": glorot(k, (a, b), jnp.float64), "b": jnp.zeros((b,), jnp.float64)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]

    def apply(params, x):
        h = jnp.concatenate([x.real, x.imag]) if complex_input else x
        for layer in params[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        logit = h @ params[-1]["w"] + params[-1]["b"]
        return jax.nn.sigmoid(logit if bound is None else bound * jnp.tanh(logit))[0]

    return init, apply
