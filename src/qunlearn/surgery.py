"""Parameter-space tools of the unlearning methods that edit weights instead of (only) training.

Pure functions of a params pytree and arrays, traceable (they run inside the unlearning program,
``vmap``-ed over runs), each checked against an exact reference in ``tests/test_surgery.py``:

* layers: :func:`layer_count`, :func:`last_layers_mask` (EU-k, CF-k). A model's *layers* are the
  items of its params when they are a list or tuple (the MLP: one ``{"w", "b"}`` per layer), else
  the leading axis of its one array (the QNNs: ``(depth, n_qubits, angles)``);
* :func:`trainable` freezes the params a mask leaves out (their gradient is zero, so Adam leaves
  them exactly where they are);
* :func:`mean_square_per_example`: the diagonal of an (empirical or true) Fisher information,
  summed in chunks so memory stays (chunk x params) whatever the data size (SSD, Fisher
  forgetting, SalUn's saliency);
* :func:`top_fraction_mask` (SalUn), :func:`ssd_dampen` (Foster et al. 2023),
  :func:`add_gaussian_noise` (Fisher forgetting, certified removal);
* :func:`newton_step`: ``θ − (H + λI)⁻¹ ∇L(θ)``, solved matrix-free by conjugate gradients on
  Hessian-vector products (:func:`qunlearn.hessian.flat_hvp`) or on Gauss-Newton products;
  :func:`certified_epsilon` is Guo et al. 2020's privacy level of Gaussian noise on top of it,
  :func:`removal_epsilon` that of certified_newton's noise on the weights, where
  :func:`certificate_gap` finds the loss strongly convex.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from qunlearn.errors import QunlearnError
from qunlearn.hessian import flat_hvp
from qunlearn.models.mlp import DEFAULT_HIDDEN

Params = Any
CURVATURES = ("hessian", "gauss_newton")


# ---------------------------------------------------------------------------------------------
# Layers


def layer_count(params: Params) -> int:
    """How many layers ``params`` has: its items if a list or tuple, else its one array's leading
    axis (works on ``jax.eval_shape`` output, so a method can check ``k`` before any work)."""
    if isinstance(params, list | tuple):
        return len(params)
    leaves = jax.tree_util.tree_leaves(params)
    if len(leaves) == 1 and len(leaves[0].shape) >= 1:
        return int(leaves[0].shape[0])
    raise QunlearnError(
        "layer-wise methods (eu_k, cf_k) need params that are a list of layers or one array with "
        f"a leading layer axis; this model's params are {jax.tree_util.tree_structure(params)}"
    )


def last_layers_mask(params: Params, k: int) -> Params:
    """A pytree of bools like ``params``: True on the last ``k`` layers (numpy arrays: a mask is
    a constant of the program, not a traced value)."""
    n = layer_count(params)
    if isinstance(params, list | tuple):
        return type(params)(
            jax.tree_util.tree_map(lambda p, on=i >= n - k: np.full(p.shape, on), layer)
            for i, layer in enumerate(params)
        )

    def mask(p):
        on = np.arange(p.shape[0]) >= n - k
        return np.broadcast_to(on.reshape(-1, *([1] * (len(p.shape) - 1))), p.shape)

    return jax.tree_util.tree_map(mask, params)


def trainable(params: Params, mask: Params) -> Params:
    """``params`` with the entries outside ``mask`` cut off from the gradient: the values are
    exactly ``params``, the gradient of anything computed from them is zero off the mask."""
    return jax.tree_util.tree_map(
        lambda p, m: jnp.where(m, p, jax.lax.stop_gradient(p)), params, mask
    )


# ---------------------------------------------------------------------------------------------
# Fisher diagonals and masks


def mean_square_per_example(
    per_example: Callable, params: Params, xs, ys, *, chunk: int = 64
) -> Params:
    """``mean_i per_example(params, xs[i], ys[i]) ** 2`` leaf by leaf (a pytree like params),
    ``chunk`` examples at a time in a ``lax.scan``. With ``per_example = grad(loss of one
    example)`` this is the empirical Fisher diagonal."""
    n = int(xs.shape[0])
    width = max(1, min(chunk, n))
    steps = math.ceil(n / width)
    slots = jnp.arange(steps * width)
    idx = (slots % n).reshape(steps, width)
    w = (slots < n).reshape(steps, width)

    def body(acc, idx_w):
        i, keep = idx_w
        g = jax.vmap(per_example, (None, 0, 0))(params, xs[i], ys[i])
        # summed in the params' dtype: a float64 readout's score must not widen float32 params
        return jax.tree_util.tree_map(
            lambda a, gi: a + jnp.tensordot(keep, jnp.abs(gi) ** 2, 1).astype(a.dtype), acc, g
        ), None

    zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.result_type(p)), params)
    total, _ = jax.lax.scan(body, zeros, (idx, w))
    return jax.tree_util.tree_map(lambda t: t / n, total)


def top_fraction_mask(scores: Params, fraction: float) -> Params:
    """True on the ``fraction`` of all entries with the largest ``scores`` (one threshold over
    every leaf, as SalUn's global saliency threshold); ties at the threshold are kept."""
    flat = ravel_pytree(scores)[0]
    keep = max(1, round(fraction * flat.size))
    threshold = jnp.sort(flat)[flat.size - keep]
    return jax.tree_util.tree_map(lambda s: s >= threshold, scores)


def ssd_dampen(
    params: Params, fisher_forget: Params, fisher_all: Params, *, selection: float, dampening: float
) -> Params:
    """Selective Synaptic Dampening (Foster et al. 2023): where ``I_f > selection · I_D``, scale
    the parameter by ``min(dampening · I_D / I_f, 1)``; elsewhere leave it."""

    def dampen(p, i_f, i_d):
        chosen = i_f > selection * i_d
        beta = jnp.minimum(dampening * i_d / jnp.where(chosen, i_f, 1.0), 1.0)
        return jnp.where(chosen, beta * p, p)

    return jax.tree_util.tree_map(dampen, params, fisher_forget, fisher_all)


def add_gaussian_noise(key: jax.Array, params: Params, std) -> Params:
    """``params + std · N(0, 1)`` in each leaf's dtype, one key per leaf (``jax.random.split``);
    ``std``: a scalar or a pytree like ``params`` (Fisher forgetting's per-weight scales)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    stds = [std] * len(leaves) if isinstance(std, int | float) else jax.tree_util.tree_leaves(std)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        tree,
        [
            p + s * jax.random.normal(k, p.shape, p.dtype)
            for p, s, k in zip(leaves, stds, keys, strict=True)
        ],
    )


# ---------------------------------------------------------------------------------------------
# Newton removal


def newton_step(
    loss_fn: Callable[[Params], jax.Array],
    params: Params,
    *,
    damping: float,
    cg_steps: int,
    gauss_newton: Callable[[Params], Callable] | None = None,
) -> tuple[Params, jax.Array]:
    """One damped Newton step ``θ − (C + λI)⁻¹ ∇L(θ)`` and the norm of the gradient it started
    from; ``C`` = the Hessian of ``loss_fn`` (Hessian-vector products), or the Gauss-Newton
    matrix whose products ``gauss_newton(params)(v_tree) -> tree`` gives. CG runs at most
    ``cg_steps`` iterations (JAX's ``cg``)."""
    grad, unravel = ravel_pytree(jax.grad(loss_fn)(params))
    if gauss_newton is None:
        hvp, _, _ = flat_hvp(loss_fn, params)
    else:
        product = gauss_newton(params)

        def hvp(v):
            return ravel_pytree(product(unravel(v)))[0]

    def matvec(v):
        return hvp(v) + damping * v

    # tol: CG's default (1e-5 relative residual) would cap Newton at linear convergence
    direction, _ = jax.scipy.sparse.linalg.cg(matvec, grad, tol=1e-12, maxiter=cg_steps)
    step = unravel(direction)
    return jax.tree_util.tree_map(lambda p, d: p - d, params, step), jnp.linalg.norm(grad)


def certified_epsilon(residual_norm: float, sigma: float, delta: float) -> float:
    """ε of Guo et al. 2020 (Theorem 3): Gaussian noise of scale ``sigma`` masks a gradient
    residual of norm ``residual_norm`` with ``(ε, δ)``, ``ε = c · residual / σ`` and
    ``c = sqrt(2 ln(1.5 / δ))``. Valid only for a strongly convex (L2-regularised, linear) loss."""
    if not (sigma > 0 and 0 < delta < 1):
        raise QunlearnError(
            f"certified removal needs sigma > 0 and 0 < delta < 1, got {sigma}, {delta}"
        )
    return math.sqrt(2 * math.log(1.5 / delta)) * float(residual_norm) / sigma


def certificate_gap(model_name: str, hyper: dict, l2: float) -> str | None:
    """Why certified removal's (ε, δ) does not hold for model ``model_name`` with hyperparameters
    ``hyper``, or None where it does: the certificate needs a strongly convex retain loss, i.e.
    logistic regression (the MLP with ``hidden = []`` and an unbounded logit) with ``l2 > 0``."""
    hidden = tuple(hyper.get("hidden", DEFAULT_HIDDEN))
    if model_name != "mlp" or hidden or hyper.get("bound") is not None:
        return "the loss is not convex (only logistic regression, the MLP with hidden = [])"
    if not l2 > 0:
        return "l2 = 0: the loss is not strongly convex"
    return None


def removal_epsilon(gradient_norm: float, l2: float, sigma: float, delta: float) -> float:
    """ε of certified_newton on an ``l2``-strongly convex retain loss L_r: the removal θ⁻ (the
    Newton step, before its noise) lies within ``‖∇L_r(θ⁻)‖ / l2`` of L_r's optimum (strong
    convexity), and Gaussian noise ``sigma`` on every weight masks that residual:
    :func:`certified_epsilon` of it, against retraining to the optimum plus the same noise."""
    if not l2 > 0:
        raise QunlearnError(f"a removal certificate needs l2 > 0, got {l2}")
    return certified_epsilon(gradient_norm / l2, sigma, delta)
