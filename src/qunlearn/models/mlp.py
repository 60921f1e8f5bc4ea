"""Multilayer perceptron with Keras defaults: Glorot-uniform weights, zero biases, relu."""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from qunlearn.errors import QunlearnError
from qunlearn.models.classes import check_n_classes

DEFAULT_HIDDEN = (64, 16)

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}


def mlp(
    input_dim: int,
    complex_input: bool,
    hidden=DEFAULT_HIDDEN,
    bound: float | None = None,
    dtype: str = "float64",
    n_classes: int = 2,
):
    """Dense(h1, relu) -> ... -> Dense(1, sigmoid); with ``n_classes`` C ≥ 3,
    Dense(C, softmax) and ``apply`` gives the (C,) class probabilities. Complex inputs enter
    as [Re; Im] (2·input_dim).
    ``hidden = []`` is logistic regression. ``bound = b`` bounds the logit like the QNN's
    readout sigmoid(5·⟨Z⟩), ⟨Z⟩ ∈ [−1, 1]: p = sigmoid(b · tanh(z)) (a control, not the paper's).

    ``dtype``: the weights' and the layers' arithmetic. ``"float32"`` (the reference's Keras
    default) runs the GEMMs ~2x faster on a CPU than float64; the logit is lifted to float64
    before the sigmoid either way, because the BCE's eps (1e-14) is below float32's resolution
    near p = 1 and a float32 probability of exactly 1 makes log(1 - p + eps) infinite.

    Returns ``(init, apply)``; params are a list of ``{"w": (n_in, n_out), "b": (n_out,)}``.
    """
    hidden = tuple(operator.index(h) for h in hidden)  # never rounds: 4.5 raises, not 4
    if any(h <= 0 for h in hidden):
        raise QunlearnError(f"MLP hidden sizes must be positive, got {list(hidden)}")
    check_n_classes(n_classes)
    if dtype not in DTYPES:
        raise QunlearnError(f"unknown MLP dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    wdtype = DTYPES[dtype]
    n_in = 2 * input_dim if complex_input else input_dim
    sizes = (n_in, *hidden, 1 if n_classes == 2 else n_classes)
    glorot = jax.nn.initializers.glorot_uniform()

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [
            {"w": glorot(k, (a, b), wdtype), "b": jnp.zeros((b,), wdtype)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]

    def apply(params, x):
        h = (jnp.concatenate([x.real, x.imag]) if complex_input else x).astype(wdtype)
        # weights of another dtype (a float64 teacher's) are rounded on entry, as the QNN's angles
        layers = [{k: v.astype(wdtype) for k, v in layer.items()} for layer in params]
        for layer in layers[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        logit = (h @ layers[-1]["w"] + layers[-1]["b"]).astype(jnp.float64)
        logit = logit if bound is None else bound * jnp.tanh(logit)
        return jax.nn.sigmoid(logit)[0] if n_classes == 2 else jax.nn.softmax(logit)

    return init, apply
