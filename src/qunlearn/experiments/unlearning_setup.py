"""The Fig 3 set-up, shared by every experiment built on a poisoned teacher (unlearning, curvature):
the forget request (which samples D_f holds, and its size), each model's plan (inputs, methods,
sweep grids, all checked), the teacher and unlearning programs, and teacher files. Keys:
:mod:`qunlearn.experiments.keys`.

Forget requests (``forget`` in unlearning and evaluation configs; docs/evaluation.md): "poison"
forgets every flipped sample (the paper's); "clean_random" a seeded share of the clean samples (a
privacy deletion request); "poison_partial" a seeded share ``known`` of the flipped samples, the
rest of the poison staying in D_r with its poisoned labels (corrective unlearning); "class" every
training sample of class ``forget_class`` (class-level deletion, on clean data: its oracles are
models that never saw the class). Where D_f is
not the whole poison, a *clean reference* (retrain on D minus all poison) differs from retraining
on D_r: :func:`reference_split` is what it trains on.
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.data import n_classes
from qunlearn.errors import QunlearnError, user_code
from qunlearn.experiments.common import build_model, model_in_dtype, model_input
from qunlearn.experiments.config import UnlearnSpec, resolve_method
from qunlearn.experiments.programs import shared
from qunlearn.models import Model
from qunlearn.noise import n_poisoned
from qunlearn.train import make_supervised_train, over_runs
from qunlearn.unlearn import METHODS, Method, make_method, make_split, make_unlearn


def forget_set_size(n_train: int, alpha: float) -> int:
    """|D_f|: the labels flipped at ``alpha``; an empty forget set fails with one line."""
    n_forget = n_poisoned(n_train, alpha, "label_flip")
    if n_forget == 0:
        raise QunlearnError(
            f"alpha = {alpha} flips no label of {n_train} samples, so the "
            "forget set is empty: raise `alpha`"
        )
    return n_forget


class ForgetRequest(NamedTuple):
    """A resolved forget request: its kind, the flipped samples' count and |D_f|."""

    kind: str  # "poison", "clean_random", "poison_partial" or "class"
    n_poison: int  # flipped samples (0 for clean_random at alpha = 0)
    n_forget: int  # |D_f|
    forget_class: int = -1  # "class": the deleted label

    @property
    def whole_poison(self) -> bool:
        """Whether D_f is all of the poison (poison_partial with known = 1 is "poison")."""
        return self.kind in ("poison", "poison_partial") and self.n_forget == self.n_poison

    @property
    def clean_reference(self) -> bool:
        """Whether retraining on D minus all poison differs from retraining on D_r: some poison
        exists and D_f is not all of it."""
        return self.n_poison > 0 and not self.whole_poison


def request_info(request: ForgetRequest) -> dict:
    """The resolved request for the manifest's data record; none for the whole poison (whose
    manifests read as before requests existed)."""
    if request.whole_poison:
        return {}
    info = {"kind": request.kind, "n_forget": request.n_forget, "n_poisoned": request.n_poison}
    if request.kind == "class":
        info["forget_class"] = request.forget_class
    return {"forget_request": info}


def forget_request(config, n_train: int, n_classes: int = 2) -> ForgetRequest:
    """The request of an unlearning-style config on ``n_train`` class-sorted samples of
    ``n_classes`` classes; a D_f of fewer than two samples, or a ``forget_class`` that is not
    one of the classes, fails with one line (for "poison": an empty one, as before requests
    existed)."""
    kind = getattr(config, "forget", "poison")
    if kind == "class":
        forget_class = config.forget_class
        if not 0 <= forget_class < n_classes:
            raise QunlearnError(
                f"forget_class = {forget_class} is not one of the data set's {n_classes} classes: "
                f"choose one in 0..{n_classes - 1}"
            )
        if n_classes < 3:
            raise QunlearnError(
                'forget = "class" on a binary data set leaves one class to learn: use a data '
                "set of three or more classes (e.g. iris with classes = [0, 1, 2])"
            )
        return ForgetRequest(kind, 0, n_train // n_classes, forget_class)
    if kind == "poison":
        n_forget = forget_set_size(n_train, config.alpha)
        return ForgetRequest(kind, n_forget, n_forget)
    n_poison = n_poisoned(n_train, config.alpha, "label_flip")
    if kind == "poison_partial":
        n_forget = math.floor(config.known * n_poison + 1e-9)
        what, fix = (
            f"known = {config.known} of the {n_poison} flipped samples",
            "raise known or alpha",
        )
    else:
        fraction = config.forget_fraction
        n_clean = n_train - n_poison
        n_forget = math.floor(fraction * n_clean + 1e-9) if fraction else n_poison
        what = (
            f"forget_fraction = {fraction} of the {n_clean} clean samples"
            if fraction
            else f"as many clean samples as alpha = {config.alpha} flips"
        )
        fix = "raise forget_fraction" if fraction else "raise alpha or set forget_fraction"
    if n_forget < 2:
        raise QunlearnError(
            f'forget = "{kind}" leaves D_f with {n_forget} sample(s) ({what}); unlearning needs '
            f"at least 2: {fix}"
        )
    return ForgetRequest(kind, n_poison, n_forget)


def forget_mask(key, poison_mask, request: ForgetRequest, labels=None):
    """(N,) bool, True = D_f of ``request`` under one poisoning (``poison_mask``, (N,) bool):
    the poison itself, the training samples whose true ``labels`` are the deleted class, or the
    ``n_forget`` eligible samples (clean, or flipped) of smallest uniform score under ``key``.
    One key serves every share: D_f grows nested with it. Traceable (``n_forget`` fixes the
    shapes)."""
    if request.kind == "poison":
        return poison_mask
    if request.kind == "class":
        return jnp.asarray(labels) == request.forget_class
    eligible = poison_mask if request.kind == "poison_partial" else ~poison_mask
    score = jnp.where(eligible, jax.random.uniform(key, poison_mask.shape), jnp.inf)
    chosen = jnp.argsort(score)[: request.n_forget]
    return jnp.zeros(poison_mask.shape, bool).at[chosen].set(True)


def forget_masks(request: ForgetRequest, keys, poison_masks, labels=None):
    """:func:`forget_mask` per row of ``keys`` (T,) and ``poison_masks`` (T, N)."""
    return jax.vmap(lambda k, m: forget_mask(k, m, request, labels))(keys, poison_masks)


def shared_split(shared: dict, y_noisy, mask, n_forget: int) -> dict:
    """:func:`qunlearn.unlearn.make_split` of a plan's ``shared`` arrays (x_train, y_true, x_val,
    y_val) under one poisoning (``y_noisy``, ``mask``)."""
    return make_split(
        shared["x_train"],
        shared["y_true"],
        y_noisy,
        mask,
        shared["x_val"],
        shared["y_val"],
        n_forget=n_forget,
    )


TRAINED_ON = ("x_retain", "y_retain", "x_forget", "y_forget_true", "y_forget_poisoned")
"""The split entries a method reads (the others are the metrics')."""


def reference_split(shared: dict, y_noisy, masks, n_forget: int, n_removed: int) -> dict:
    """The split of a clean reference: it trains on D minus the ``n_removed`` rows of
    ``masks[1]`` (all the poison) and is judged, like every run, on the request's D_f
    (``masks[0]``, ``n_forget`` rows)."""
    forget, removed = masks
    judged = shared_split(shared, y_noisy, forget, n_forget)
    trained = shared_split(shared, y_noisy, removed, n_removed)
    return judged | {k: trained[k] for k in TRAINED_ON}


def run_split(shared: dict, y_noisy, mask, n_forget: int, n_removed: int | None) -> dict:
    """The split one run of a program sees: ``mask`` is D_f, or with ``n_removed`` the pair
    (D_f, the rows a clean reference leaves out) of :func:`reference_split`."""
    if n_removed is None:
        return shared_split(shared, y_noisy, mask, n_forget)
    return reference_split(shared, y_noisy, mask, n_forget, n_removed)


def teacher_program(
    model: Model,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    n_train: int,
    on_epoch=None,
    run_chunk: int = 0,
    batching: str = "epoch",
):
    """``fn(init_keys, shuffle_keys, x, y_noisy) -> params`` over a leading teacher axis."""
    train = make_supervised_train(
        model,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        n_train=n_train,
        batching=batching,
        on_epoch=on_epoch,
    )

    def one(init_key, shuffle_key, x, y):
        return train(
            shuffle_key, model.init(init_key), {"x": x, "y": y.astype(x.real.dtype)}, None
        )[0]

    return jax.jit(over_runs(one, (0, 0, None, 0), run_chunk))


def train_teachers(mp: ModelPlan, keys, y_noisy, *, on_epoch=None):
    """Params of the teachers of model plan ``mp`` (a leading teacher axis): one per row of
    ``keys`` ((T, 2, ...): init and batch-order key) and of ``y_noisy`` ((T, N) training labels),
    trained on ``mp.shared["x_train"]`` with the model table's teacher settings."""
    spec = mp.spec
    program = shared(teacher_program)(
        mp.model,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        lr=spec.lr,
        n_train=y_noisy.shape[1],
        on_epoch=on_epoch,
        run_chunk=spec.run_chunk,
        batching=spec.batching,
    )
    return jax.block_until_ready(program(keys[:, 0], keys[:, 1], mp.shared["x_train"], y_noisy))


def _start_program(start, in_axes):
    return jax.jit(jax.vmap(start, in_axes=in_axes))


def start_program(start, in_axes=(0, 0)):
    """``fn(keys, teachers) -> params``: a method's ``start`` over a leading run axis (``in_axes``:
    ``(0, None)`` for one teacher shared by every run). Shared
    (:func:`~qunlearn.experiments.programs.shared`): the methods, cells and runs of one process
    with the same start use one compiled program."""
    return shared(_start_program)(start, in_axes)


def unlearning_program(
    model: Model,
    method: Method,
    *,
    lr: float,
    epochs: int,
    n_forget: int,
    shared_teacher: bool,
    trajectory: bool = True,
    on_epoch=None,
    run_chunk: int = 0,
    snapshot_every: int = 0,
    n_removed: int | None = None,
):
    """``fn(keys, start, teacher, y_noisy, mask, weights, shared) -> log`` over a leading run axis.

    ``keys`` (R,) batch-order keys, ``start`` (R, ...) starting params, ``weights`` {name: (R,)};
    ``teacher``, ``y_noisy``, ``mask`` (D_f; with ``n_removed`` the pair of
    :func:`reference_split`) are shared (``shared_teacher``) or per run; ``shared`` =
    {x_train, y_true, x_val, y_val}. Jitted once; ``.traces`` counts its tracings.
    ``snapshot_every = k > 0`` adds ``log["snapshots"]`` (R, S, ...): params every k epochs.
    """
    unlearn = make_unlearn(
        model,
        method,
        lr=lr,
        epochs=epochs,
        trajectory=trajectory,
        on_epoch=on_epoch,
        snapshot_every=snapshot_every,
    )
    traces = []

    def run_one(key, start, teacher, y_noisy, mask, weights, shared):
        traces.append(1)
        split = run_split(shared, y_noisy, mask, n_forget, n_removed)
        return unlearn(key, start, teacher, split, weights)[1]

    t = None if shared_teacher else 0
    fn = jax.jit(over_runs(run_one, (0, 0, t, t, t, 0, None), run_chunk))
    # jit's wrapper takes attributes; jax's stubs declare none
    fn.traces = traces  # type: ignore[attr-defined]
    return fn


def teacher_npz(params, y_noisy, mask) -> bytes:
    """The ``.npz`` bytes (no pickle) that :func:`load_teacher_npz` reads back: params with a
    leading teacher axis, the poisoned labels and the poisoning mask."""
    arrays = {
        f"param_{i:03d}": np.asarray(leaf)
        for i, leaf in enumerate(jax.tree_util.tree_leaves(params))
    }
    buf = io.BytesIO()
    y_noisy, mask = np.asarray(y_noisy, np.int32), np.asarray(mask, bool)
    np.savez(buf, allow_pickle=False, **arrays, y_noisy=y_noisy, mask=mask)
    return buf.getvalue()


def load_teacher_npz(path: Path, model: Model):
    """(params, y_noisy, mask) with a leading teacher axis from a file the store verified."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    treedef = jax.tree_util.tree_structure(shapes)
    leaves = [jnp.asarray(arrays[f"param_{i:03d}"]) for i in range(len(jax.tree.leaves(shapes)))]
    return (
        jax.tree_util.tree_unflatten(treedef, leaves),
        jnp.asarray(arrays["y_noisy"]),
        jnp.asarray(arrays["mask"]),
    )


class ModelPlan(NamedTuple):
    """What one model runs: its inputs, trajectory methods and sweep grids, all checked."""

    model: Model
    spec: UnlearnSpec  # or a subclass (EvalSpec)
    shared: dict  # x_train, y_true, x_val, y_val
    methods: dict  # name -> (base method, options, Method)
    sweeps: dict  # name -> (grid points, [Method] per point), built on ``sweep_model``
    sweep_model: Model  # ``model``, or its circuit in the config's ``sweep_dtype``


def plan_model(config, name: str, spec, dataset, n_retain: int, n_forget: int) -> ModelPlan:
    """Model ``models.<name>`` of an unlearning-style config (``methods``, ``method_options`` and
    an optional ``sweep``), with every method and sweep point built, so all is checked here."""
    try:
        x_train, x_val, dim, is_complex = model_input(dataset, spec.input)
    except QunlearnError as err:
        raise QunlearnError(f"models.{name}: {err}") from None
    classes = n_classes(dataset)
    model = build_model(name, spec, dim, is_complex, classes)
    sweep_dtype = getattr(config, "sweep_dtype", "model")
    sweep_model = model_in_dtype(name, spec, dim, is_complex, sweep_dtype, classes) or model

    def method_for(method: str, on=model, **override) -> tuple[str, dict, Method]:
        base, options = resolve_method(config.method_options, method)
        options |= override
        return (
            base,
            options,
            make_method(
                base,
                on,
                n_retain=n_retain,
                n_forget=n_forget,
                epochs=spec.unlearn_epochs,
                batch_size=spec.unlearn_batch_size,
                **options,
            ),
        )

    methods = {method: method_for(method) for method in config.methods}
    if model.sample is not None:  # finite shots: every method must train through them
        exact = [m for m, (_, _, built) in methods.items() if not built.sampled]
        if exact:
            sampled = [m for m in METHODS.names() if METHODS.is_builtin(m) and _samples(m, model)]
            raise QunlearnError(
                f"models.{name} measures with finite shots (hyper.shots/gradient), but method "
                f"{exact[0]!r} needs the exact model (its curvature, Fisher or saliency): use "
                f"methods that train through shots, {sampled}, or drop the shots"
            )
    shared = {
        "x_train": jnp.asarray(x_train),
        "y_true": jnp.asarray(dataset.y_train),
        "x_val": jnp.asarray(x_val),
        "y_val": jnp.asarray(dataset.y_val),
    }
    for method, (base, _, built) in methods.items():
        # a user's method, or any on C classes (some built-ins are binary only): traced here,
        # so what breaks fails before --out is touched
        if not METHODS.is_builtin(base) or classes > 2:
            trace_method(name, method, model, built, shared, n_forget, spec.unlearn_epochs)
    sweeps = {}
    for method, axes in getattr(config, "sweep", {}).items():
        grid = [
            dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
        ]
        try:
            members = [method_for(method, sweep_model, **point)[2] for point in grid]
        except QunlearnError as err:
            raise QunlearnError(f"sweep.{method}: {err}") from None
        if len({m.form for m in members}) > 1:
            raise QunlearnError(
                f"sweep.{method}: only loss weights can be swept (options "
                f"{sorted(axes)} change the method's shape)"
            )
        sweeps[method] = (grid, members)
    return ModelPlan(model, spec, shared, methods, sweeps, sweep_model)


def _samples(method: str, model) -> bool:
    """Whether built-in ``method`` with its default options trains through ``model``'s shots."""
    try:
        built = make_method(method, model, n_retain=4, n_forget=2, epochs=1, batch_size=2)
    except QunlearnError:
        return False
    return built.sampled


def trace_method(table, name, model, method: Method, shared: dict, n_forget: int, epochs: int):
    """Trace (not run) a user's method on ``models.<table>`` and the real data shapes, before
    ``--out`` is touched: an objective, plan or input that fails, or a loss that is not a
    scalar, is one line naming the method."""
    n = shared["y_true"].shape[0]
    mask = jnp.zeros(n, bool).at[jnp.arange(n_forget)].set(True)  # any n_forget rows will do
    y_noisy = jnp.where(mask, 1 - shared["y_true"], shared["y_true"])
    split = shared_split(shared, y_noisy, mask, n_forget)
    unlearn = make_unlearn(model, method, lr=0.01, epochs=epochs, trajectory=False)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    failed = f"unlearning method {name!r} fails on models.{table} (traced on the data's shapes)"
    with user_code(f"methods[{name!r}] on models.{table}", failed):
        _, log = jax.eval_shape(
            unlearn, jax.random.PRNGKey(0), params, params, split, dict(method.weights)
        )
    if log["loss"].shape != (epochs,):
        raise QunlearnError(
            f"unlearning method {name!r} breaks the method contract: its objective must return "
            f"a scalar loss (got a per-epoch loss of shape {log['loss'].shape})"
        )


def plan_models(config, dataset) -> tuple[ForgetRequest, dict[str, ModelPlan]]:
    """(the forget request, {table: ModelPlan}) of every ``models.<table>`` of a config on
    ``dataset``."""
    n_train = len(dataset.y_train)
    request = forget_request(config, n_train, n_classes(dataset))
    n_forget = request.n_forget
    plans = {
        name: plan_model(config, name, spec, dataset, n_train - n_forget, n_forget)
        for name, spec in config.models.items()
    }
    return request, plans


def retrain_method(config, mp: ModelPlan, n_removed: int) -> tuple[dict, Method]:
    """(options, Method) of ``retrain`` (with ``method_options.retrain``) on D minus
    ``n_removed`` rows: D_f's for the oracles, all the poison's for a clean reference."""
    _, options = resolve_method(config.method_options, "retrain")
    method = make_method(
        "retrain",
        mp.model,
        n_retain=mp.shared["y_true"].shape[0] - n_removed,
        n_forget=n_removed,
        epochs=mp.spec.unlearn_epochs,
        batch_size=mp.spec.unlearn_batch_size,
        **options,
    )
    return options, method
