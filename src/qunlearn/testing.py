"""One public contract check per family, as scikit-learn's ``check_estimator``: run it on your own
member in your own tests, before a long run. The built-ins' contract tests call these same
functions, and ``qunlearn run`` runs the quick part of them on every member that is not built in
before ``--out`` is touched.

    from qunlearn.testing import check_model, check_method, check_dataset, check_noise

    check_model(my_ansatz, input_dim=64, hyper={"depth": 2})
    check_method(my_method, options={"strength": 0.5})

Each returns the names of the checks it ran; the first breach raises :class:`ContractError`, a
:class:`~qunlearn.errors.QunlearnError` whose one-line message names the member and the contract
it broke. They turn on ``jax_enable_x64`` for the process, as ``qunlearn.run`` does (the models
and their finite-difference checks are float64).
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.data import Dataset, check_loaded
from qunlearn.errors import QunlearnError, first_line
from qunlearn.models import Model, call_factory
from qunlearn.models.mlp import mlp
from qunlearn.noise import check_poisoned, flip_labels
from qunlearn.unlearn import (
    RESERVED,
    check_method_options,
    check_method_value,
    make_split,
    make_unlearn,
)

__all__ = ["ContractError", "check_dataset", "check_method", "check_model", "check_noise"]


class ContractError(QunlearnError):
    """A member breaks its family's contract; ``str(err)`` is one line naming both."""


def _name_of(factory, name: str | None) -> str:
    return name or f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', '?')}"


def _breach(member: str, name: str, contract: str):
    def fail(what: str):
        raise ContractError(f"{member} {name!r} breaks the {contract} contract: {what}")

    return fail


def _call(fail, what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; any exception of user code becomes the one-line breach."""
    try:
        return fn(*args, **kwargs)
    except ContractError:
        raise
    except Exception as err:
        fail(f"{what} raised {first_line(err)}")


def _parameters(fail, factory) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        fail("its signature cannot be read; write a plain function")
        raise  # unreachable: fail raises


def _leaves(tree) -> list:
    return jax.tree_util.tree_leaves(tree)


def _same(a, b, *, rtol: float = 0.0, atol: float = 0.0) -> bool:
    la, lb = _leaves(a), _leaves(b)
    same_tree = str(jax.tree_util.tree_structure(a)) == str(jax.tree_util.tree_structure(b))
    return same_tree and all(
        np.shape(x) == np.shape(y) and np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=False)
        for x, y in zip(la, lb, strict=True)
    )


def _example(key, dim: int, complex_input: bool, n: int | None = None):
    """Unit-norm example(s) of length ``dim`` (complex when asked): what the data sets give."""
    shape = (dim,) if n is None else (n, dim)
    k_re, k_im = jax.random.split(key)
    x = jax.random.normal(k_re, shape, jnp.float64)
    if complex_input:
        x = x + 1j * jax.random.normal(k_im, shape, jnp.float64)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


# --- models ----------------------------------------------------------------------------------


def check_model_pair(
    name: str,
    init: Callable,
    apply: Callable,
    input_dim: int,
    complex_input: bool,
    *,
    full=True,
    n_classes: int = 2,
) -> list[str]:
    """The contract of a built model ``(init, apply)``: pure in the key, a finite probability
    per example (the class-1 probability, or for ``n_classes`` C ≥ 3 a (C,) vector of class
    probabilities summing to 1), traceable by ``jax.jit`` and pure (two calls, each traced afresh,
    agree), ``vmap`` = a loop, and (``full``) the gradient against central finite differences."""
    fail = _breach("model", name, "model")
    ran = []
    params = _call(fail, "init(key)", init, jax.random.PRNGKey(0))
    if not _leaves(params):
        fail("init(key) returned no arrays (params must be a pytree of float arrays)")
    for leaf in _leaves(params):
        if not (hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)):
            fail(f"params must be float arrays, got a leaf {type(leaf).__name__}")
    if not _same(params, _call(fail, "init(key)", init, jax.random.PRNGKey(0))):
        fail("init is not pure in its key: init(PRNGKey(0)) twice gave different params")
    if not all(np.all(np.isfinite(leaf)) for leaf in _leaves(params)):
        fail("init(key) gave NaN or infinite params")
    ran.append("init pure in the key, finite float params")
    x = _example(jax.random.PRNGKey(1), input_dim, complex_input)
    # Every call is traced by jax.jit, as the training engine calls apply: NumPy on traced values
    # or a Python branch on them fails here. Purity is two calls traced afresh agreeing: hidden
    # state or Python/NumPy randomness is baked into each trace differently. (Eager calls would
    # see the same, but dispatch op by op: seconds for a gate-by-gate circuit, ~10x its compile.)
    jitted = jax.jit(apply)
    p = _call(fail, "jax.jit(apply)", jitted, params, x)
    shape = () if n_classes == 2 else (n_classes,)
    if not hasattr(p, "shape") or np.shape(p) != shape:
        what = (
            "a scalar (the class-1 probability)"
            if n_classes == 2
            else f"a ({n_classes},) vector of class probabilities"
        )
        fail(
            f"apply(params, x) of ONE example must be {what} for the data's {n_classes} "
            f"classes, got shape {np.shape(p)}: batches come from jax.vmap"
        )
    if not jnp.issubdtype(jnp.result_type(p), jnp.floating):
        fail(f"apply must return a real float, got {jnp.result_type(p)}")
    tol = 1e-5 if jnp.result_type(p) == jnp.float64 else 1e-3
    p = np.asarray(p, np.float64)
    if not np.all(np.isfinite(p)):
        fail(f"apply(params, x) is {p} (NaN or infinite)")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        fail(f"apply(params, x) = {p} is outside [0, 1]: return a probability")
    if n_classes > 2 and not np.isclose(p.sum(), 1.0, atol=1e-6):
        fail(f"apply(params, x) sums to {p.sum():.8g} over the classes: return probabilities")
    ran.append("one example -> a finite probability")
    retraced = jax.jit(lambda q, e: apply(q, e))  # a new function: traced again, not cached
    again = np.asarray(_call(fail, "jax.jit(apply)", retraced, params, x), np.float64)
    if not np.array_equal(again, p):  # a pure apply traces to the same program: the same bits
        fail(
            "apply is not pure: two calls with the same params and input gave "
            f"{p} and {again}, each traced afresh by jax.jit (hidden state or randomness?)"
        )
    ran.append("pure: two traces agree")
    xs = _example(jax.random.PRNGKey(2), input_dim, complex_input, n=3)
    batch = _call(fail, "jax.vmap(apply)", jax.jit(jax.vmap(apply, (None, 0))), params, xs)
    loop = np.stack([np.asarray(jitted(params, row)) for row in xs])
    if np.shape(batch) != (3, *shape) or not np.allclose(batch, loop, rtol=tol, atol=tol):
        fail(f"jax.vmap(apply) over 3 examples gave {np.asarray(batch)}, a loop {loop}")
    ran.append("vmap = loop")
    if full:
        # a scalar of every class's probability, so one directional derivative checks them all
        weights = jnp.arange(1.0, n_classes + 1.0) if n_classes > 2 else None
        scalar = jitted if weights is None else jax.jit(lambda q, e: apply(q, e) @ weights)
        ran.append(_check_gradient(fail, scalar, params, x))
    return ran


def _check_gradient(fail, apply, params, x, eps: float = 1e-5) -> str:
    """jax.grad along a random direction against a central difference (float64 params only)."""
    grads = _call(fail, "jax.grad(apply)", jax.jit(jax.grad(apply)), params, x)
    if not all(np.all(np.isfinite(g)) for g in _leaves(grads)):
        fail("jax.grad(apply) has NaN or infinite entries")
    if any(leaf.dtype != jnp.float64 for leaf in _leaves(params)):
        return "gradient finite (float32 params: no finite-difference check)"
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    direction = [
        jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves, strict=True)
    ]
    norm = np.sqrt(sum(float(jnp.sum(d**2)) for d in direction))
    direction = jax.tree_util.tree_unflatten(tree, [d / norm for d in direction])
    along = sum(
        float(jnp.sum(g * d)) for g, d in zip(_leaves(grads), _leaves(direction), strict=True)
    )

    def moved(sign):
        return jax.tree_util.tree_map(lambda p, d: p + sign * eps * d, params, direction)

    numeric = (float(apply(moved(1), x)) - float(apply(moved(-1), x))) / (2 * eps)
    if not np.isclose(along, numeric, rtol=1e-4, atol=1e-7):
        fail(
            f"jax.grad(apply) along a random direction is {along:.8g}, a central finite "
            f"difference {numeric:.8g}: the gradient is wrong (a stop_gradient or a custom rule?)"
        )
    return "gradient = finite differences"


def check_model(
    factory: Callable,
    *,
    input_dim: int = 16,
    complex_input: bool = False,
    hyper: dict | None = None,
    name: str | None = None,
    n_classes: int | None = None,
) -> list[str]:
    """The model contract of ``factory(input_dim, complex_input, **hyper) -> (init, apply)``:
    its signature, then :func:`check_model_pair` on what it builds (``input_dim`` = 16 suits the
    built-ins: a QNN needs a power of two). ``n_classes``: the classes it must output
    (default: ``hyper["n_classes"]``, else 2)."""
    jax.config.update("jax_enable_x64", True)
    name = _name_of(factory, name)
    fail = _breach("model", name, "model")
    params = _parameters(fail, factory)
    positional = [p for p in params[:2] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2:
        fail(
            "wrong signature: a model factory is factory(input_dim, complex_input, **hyper), got "
            f"({', '.join(p.name for p in params)})"
        )
    required = [p.name for p in params[2:] if p.default is p.empty and p.kind != p.VAR_KEYWORD]
    if required:
        fail(f"wrong signature: hyperparameters {required} need defaults")
    try:
        init, apply = call_factory(name, factory, input_dim, complex_input, dict(hyper or {}))
    except QunlearnError as err:
        raise ContractError(str(err)) from None
    return ["signature (input_dim, complex_input, **hyper)", "returns (init, apply)"] + (
        check_model_pair(
            name,
            init,
            apply,
            input_dim,
            complex_input,
            n_classes=n_classes or (hyper or {}).get("n_classes", 2),
        )
    )


# --- unlearning methods ----------------------------------------------------------------------


def _method_case(n_classes: int = 2):
    """A tiny poisoned task and model: 8 class-sorted examples of 4 features per class, a quarter
    of the labels flipped, an MLP teacher with ``n_classes`` outputs (one probability for two).
    What :func:`check_method` runs a method on."""
    n, dim = 8 * n_classes, 4
    x = _example(jax.random.PRNGKey(10), dim, False, n=n)
    y = jnp.repeat(jnp.arange(n_classes), n // n_classes)
    _, y_noisy, mask = flip_labels(jax.random.PRNGKey(11), x, y, 0.25)
    split = make_split(x, y, y_noisy, mask, x, y, n_forget=int(mask.sum()))
    init, apply = mlp(dim, False, hidden=(4,), n_classes=n_classes)
    model = Model(init, apply, "mlp", {"hidden": (4,), "n_classes": n_classes})
    return model, split, model.init(jax.random.PRNGKey(12)), int(mask.sum())


def check_method(
    factory: Callable,
    *,
    options: dict | None = None,
    name: str | None = None,
    n_classes: int = 2,
) -> list[str]:
    """The method contract of ``factory(model, *, n_retain, n_forget, epochs, batch_size,
    **options) -> Method``: its signature, the names in ``options``, and
    :class:`~qunlearn.unlearn.Method`, then two epochs on a tiny poisoned task of ``n_classes``
    classes through the training engine: the plan indexes the method's data, ``start`` gives the
    model's params, the loss and params stay finite, and a fixed key gives the same params
    twice. A method meant for multi-class data: check it with ``n_classes=3`` as well."""
    jax.config.update("jax_enable_x64", True)
    name = _name_of(factory, name)
    fail = _breach("unlearning method", name, "method")
    params = _parameters(fail, factory)
    by_name = {p.name: p for p in params}
    missing = [k for k in RESERVED if k not in by_name]
    if not params or missing:
        fail(
            "wrong signature: a method factory is factory(model, *, n_retain, n_forget, epochs, "
            f"batch_size, **options); it lacks {missing or ['model']}"
        )
    try:  # option names, as a run checks them
        check_method_options(name, factory, options or {})
    except QunlearnError as err:
        raise ContractError(str(err)) from None
    model, split, teacher, n_forget = _method_case(n_classes)
    n_retain, epochs = len(split["y_train_true"]) - n_forget, 2
    method = _call(
        fail,
        "the factory",
        factory,
        model,
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        batch_size=4,
        **(options or {}),
    )
    try:
        check_method_value(name, method)
    except QunlearnError as err:
        raise ContractError(str(err)) from None
    ran = ["signature", "returns a Method"]
    start = _call(fail, "Method.start(key, teacher)", method.start, jax.random.PRNGKey(0), teacher)
    if str(jax.tree_util.tree_structure(start)) != str(jax.tree_util.tree_structure(teacher)):
        fail("Method.start(key, teacher) must return params of the model's structure")
    data, _ = _call(fail, "Method.inputs(teacher, split)", method.inputs, teacher, split)
    rows = {np.shape(v)[0] for v in _leaves(data)}
    idx, w = _call(fail, "Method.plan(key)", method.plan, jax.random.PRNGKey(0))
    if len(rows) != 1 or np.shape(idx) != np.shape(w) or np.ndim(idx) < 1:
        fail(f"Method.plan(key) -> (idx, w) of one shape into data of one length, got {rows}")
    if np.size(idx) and (int(jnp.min(idx)) < 0 or int(jnp.max(idx)) >= rows.pop()):
        fail("Method.plan(key) indexes rows outside the method's data")
    if np.size(idx) == 0 and method.steps != 0:
        fail(f"Method.plan(key) has no steps but Method.steps is {method.steps}")
    ran.append("start, inputs and plan fit the model and its data")
    unlearn = jax.jit(make_unlearn(model, method, lr=0.01, epochs=epochs, trajectory=False))
    weights = dict(method.weights)

    def once():
        key = jax.random.PRNGKey(1)
        return _call(fail, "two epochs", unlearn, key, start, teacher, split, weights)

    out, log = once()
    # a method that only edits the params (steps = 0) takes no step, so it has no loss
    if method.steps and not np.all(np.isfinite(np.asarray(log["loss"]))):
        fail(f"the objective is not finite on the tiny task: loss per epoch {log['loss']}")
    if not all(np.all(np.isfinite(leaf)) for leaf in _leaves(out)):
        fail("two epochs of unlearning gave NaN or infinite params")
    if not _same(out, once()[0]):
        fail("not deterministic: the same key gave different params twice")
    ran += ["finite objective and params", "deterministic under a fixed key"]
    return ran


# --- data sets -------------------------------------------------------------------------------


def check_dataset(loader: Callable, *, name: str | None = None, **options) -> list[str]:
    """The data contract of ``loader(*, cache_dir=None, **options) -> Dataset``: its signature,
    :func:`qunlearn.data.check_loaded` (labels 0..C-1 class-sorted in equal blocks, finite
    features, ...), and
    the same arrays from a second load (from the cache the first one wrote, in a fresh
    directory)."""
    name = _name_of(loader, name)
    fail = _breach("dataset", name, "data")
    params = {p.name: p for p in _parameters(fail, loader)}
    if "cache_dir" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        fail("wrong signature: a loader is loader(*, cache_dir=None, **options)")
    required = [p.name for p in params.values() if p.default is p.empty and p.kind != p.VAR_KEYWORD]
    if required:
        fail(f"wrong signature: options {required} need defaults")
    with tempfile.TemporaryDirectory(prefix="qunlearn-check-") as cache:
        # the second load reads what the first one cached (if the loader caches)
        loads = [_call(fail, "the loader", loader, cache_dir=cache, **options) for _ in range(2)]
    try:
        check_loaded(name, loads[0])
    except QunlearnError as err:
        raise ContractError(str(err)) from None
    first, second = loads
    if not isinstance(second, Dataset) or not all(
        np.array_equal(getattr(first, f), getattr(second, f))
        for f in ("x_train", "y_train", "x_val", "y_val")
    ):
        fail("not deterministic: two loads with the same options gave different arrays")
    return ["signature", "a class-sorted, finite Dataset of labels 0..C-1", "deterministic"]


# --- noise kinds -----------------------------------------------------------------------------


def check_noise(
    fn: Callable, *, name: str | None = None, n_classes: int = 2, **options
) -> list[str]:
    """The noise contract of ``fn(key, x, y, alpha, **options) -> (x', y', mask)`` on a small
    class-sorted set of ``n_classes`` classes, real and complex:
    :func:`qunlearn.noise.check_poisoned` at alpha 0 and 0.3, the same output for the same key,
    and ``jax.vmap`` over keys = a loop (how the sweeps call it)."""
    jax.config.update("jax_enable_x64", True)
    name = _name_of(fn, name)
    fail = _breach("noise kind", name, "noise")
    y = jnp.repeat(jnp.arange(n_classes), 10)
    for complex_input in (False, True):
        x = _example(jax.random.PRNGKey(20), 8, complex_input, n=10 * n_classes)
        for alpha in (0.0, 0.3):
            key = jax.random.PRNGKey(0)
            out = _call(fail, f"fn(key, x, y, {alpha})", fn, key, x, y, alpha, **options)
            try:
                check_poisoned(name, x, y, alpha, out)
            except QunlearnError as err:
                raise ContractError(str(err)) from None
            if not _same(out, fn(key, x, y, alpha, **options)):
                fail("not deterministic: the same key gave different outputs")
        keys = jax.random.split(jax.random.PRNGKey(1), 3)
        # as the sweeps call it (experiments.noise_sweep.poison_runs): x and y closed over
        mapped = _call(
            fail,
            "jax.vmap over keys",
            jax.vmap(lambda k, x=x: fn(k, x, y, 0.3, **options)),  # x of this pass
            keys,
        )
        loop = [fn(k, x, y, 0.3, **options) for k in keys]
        rows = [[np.asarray(a)[i] for a in mapped] for i in range(3)]
        if not all(_same(rows[i], list(loop[i])) for i in range(3)):
            fail("jax.vmap over keys differs from a loop over them")
    return [
        "a triple of the right shapes and dtypes",
        "rows outside the mask kept",
        "alpha 0 = nothing poisoned",
        "deterministic",
        "vmap over keys = loop",
    ]
