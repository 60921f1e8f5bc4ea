"""Approximate unlearning (protocol §4): every method is an objective, data and starting params run
on the one training engine, :func:`qunlearn.train.make_train`.

A method factory ``METHODS[name](model, *, n_retain, n_forget, epochs, batch_size, **options)``
returns a :class:`Method`. The family is open (:mod:`qunlearn.families`, entry-point group
``qunlearn.methods``); :func:`qunlearn.testing.check_method` is the contract every member passes.
Everything that varies between runs enters as traced arrays: the teacher's params (and from them
its outputs), the poisoning, the run key and the loss ``weights`` (``extra["weights"]``), so all
runs of a method, and all methods that share a ``form``, share one compiled program; a weight
sweep is a ``vmap`` over weights. Static choices (the batch plan, which
terms the objective has) are closed over and recorded in ``form``.

The data of one run is a *split* (a dict of arrays, built by :func:`make_split`): the retain set
D_r (the labels the learner holds), the forget set D_f (the request's samples: the flipped ones by
default; held and true labels), the whole noisy training set and the clean validation set.

Variants. ``retrain``, ``finetune``, ``scrub`` and ``gradient_ascent`` are the reference code's
definitions (variant "reference"): CE(D_r batch) + kl·KL1(teacher‖student on the batch) −
forget_kl·KL1(teacher‖student on ALL of D_f) − forget_ce·CE(ALL of D_f), where KL1(p‖q) =
p·log(p/q) is the one-term "KL" of the class-1 probability only. It is not a divergence (it can be
negative), and as a forget term its gradient pushes every forget sample towards class 0, with
strength p_teacher, whatever its label: it undoes memorised poisoned 1s but reinforces poisoned 0s.
``scrub_kurmanji`` and ``neggrad_plus`` follow Kurmanji et al. 2023 (variant "corrected").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from qunlearn.errors import QunlearnError, did_you_mean, user_code
from qunlearn.families import Family, keyword_options
from qunlearn.train import (
    BCE_EPS,
    bce,
    check_positive,
    make_train,
    predict,
    shuffled_plan,
    weighted_mean,
)

METRICS = (
    "train_acc_noisy_labels",  # the whole training set against its poisoned labels
    "val_acc",  # clean validation set
    "retain_acc",  # D_r against its TRUE labels (an unidentified poisoned sample: its true one)
    "forget_acc_true",  # D_f against its TRUE labels
    # D_f predicted with its HELD label (the one trained on: poisoned, where poisoned); 1 =
    # memorised. On a clean D_f (forget = "clean_random") it equals forget_acc_true.
    "forget_frac_poisoned_label",
)
LABELS = ("poisoned", "true")


def kl_one_term(p, q, eps: float = BCE_EPS):
    """The reference's "KL": p·log((p+eps)/(q+eps)) on class-1 probabilities (elementwise)."""
    return p * jnp.log((p + eps) / (q + eps))


def kl_bernoulli(p, q, eps: float = BCE_EPS):
    """KL(Bern(p) ‖ Bern(q)) = p·log(p/q) + (1−p)·log((1−p)/(1−q)), elementwise, eps-guarded."""
    return kl_one_term(p, q, eps) + kl_one_term(1 - p, 1 - q, eps)


# ---------------------------------------------------------------------------------------------
# Data of one run and its metrics


def make_split(x_train, y_true, y_noisy, mask, x_val, y_val, *, n_forget: int) -> dict:
    """The arrays one unlearning run sees; traceable (``n_forget`` fixes the shapes).

    x_train (N, D); y_true (N,) true labels, y_noisy (N,) the labels the learner holds (flipped
    where poisoned); mask (N,) bool, True = D_f (the forget request; by default the flipped
    samples); x_val (M, D), y_val (M,). D_f and D_r keep the training order. D_r carries the held
    labels: an unidentified poisoned sample stays in it with its poisoned label (where D_r holds
    no poison, as for the default request, held = true). "poisoned" in a key means held.
    Methods read the ``*_retain`` and ``*_forget*`` entries, metrics the others.
    """
    n_total = y_true.shape[0]
    forget_idx = jnp.nonzero(mask, size=n_forget)[0]
    retain_idx = jnp.nonzero(~mask, size=n_total - n_forget)[0]
    dtype = jnp.finfo(jnp.asarray(x_train).real.dtype).dtype
    y_true, y_noisy = jnp.asarray(y_true, dtype), jnp.asarray(y_noisy, dtype)
    return {
        "x_retain": x_train[retain_idx],
        "y_retain": y_noisy[retain_idx],
        "x_forget": x_train[forget_idx],
        "y_forget_true": y_true[forget_idx],
        "y_forget_poisoned": y_noisy[forget_idx],
        "x_train": x_train,
        "y_train_noisy": y_noisy,
        "y_train_true": y_true,
        "forget_mask": jnp.asarray(mask, dtype),
        "x_val": x_val,
        "y_val": jnp.asarray(y_val, dtype),
    }


def unlearning_metrics(model, params, split: dict) -> dict:
    """The :data:`METRICS` of ``params`` on a split (scalars). One pass over the training set
    serves the train, retain and forget metrics."""
    f = split["forget_mask"]
    r = 1 - f
    hit = predict(model, params, split["x_train"]) > 0.5
    # jnp.mean of bools is float32 even with x64; count in the data's float dtype instead
    as_true = (hit == (split["y_train_true"] > 0.5)).astype(f.dtype)
    as_noisy = (hit == (split["y_train_noisy"] > 0.5)).astype(f.dtype)
    val_hit = (predict(model, params, split["x_val"]) > 0.5) == (split["y_val"] > 0.5)
    return {
        "train_acc_noisy_labels": jnp.mean(as_noisy),
        "val_acc": jnp.mean(val_hit.astype(f.dtype)),
        "retain_acc": weighted_mean(as_true, r),
        "forget_acc_true": weighted_mean(as_true, f),
        "forget_frac_poisoned_label": weighted_mean(as_noisy, f),
    }


# ---------------------------------------------------------------------------------------------
# The family


class Method(NamedTuple):
    """What the engine needs to run one unlearning method.

    ``objective(params, batch, extra) -> scalar`` (``extra["weights"]``: the traced loss weights);
    ``plan(key) -> (idx, w)`` into ``data``; ``inputs(teacher_params, split) -> (data, extra)``
    (traced: teacher outputs are computed inside the program); ``start(key, teacher_params) ->
    params``; ``weights``: default weights (floats); ``form``: hashable, equal forms promise equal
    objective, plan, inputs and optimizer, so the compiled program can be shared; ``variant``:
    "reference" or "corrected"; ``steps``: optimizer updates applied per run;
    ``optimizer(lr) -> optax.GradientTransformation``.
    """

    objective: Callable
    plan: Callable
    inputs: Callable
    start: Callable
    weights: dict
    form: tuple
    variant: str
    steps: int
    optimizer: Callable = optax.adam


def _from_teacher(key, teacher):
    del key
    return teacher


def _full_batch(batch_size: int, n_retain: int) -> int:
    """0 (or anything ≥ n_retain) means the whole retain set per step."""
    return n_retain if batch_size == 0 else min(batch_size, n_retain)


def _check_sizes(n_retain, n_forget, epochs, batch_size):
    if n_forget <= 0:
        raise QunlearnError(
            "the forget set is empty (no label was flipped): raise alpha so that "
            "label flipping poisons at least two samples"
        )
    check_positive(n_retain=n_retain, epochs=epochs)
    if not isinstance(batch_size, int) or batch_size < 0:
        raise QunlearnError(
            f"batch_size must be a non-negative integer (0 = whole retain set), got {batch_size!r}"
        )


def _check_weights(**weights) -> None:
    for name, value in weights.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            # a weight scales a term whose sign the objective fixes: a negative one turns e.g.
            # "stay close to the teacher" into "move away from it"
            raise QunlearnError(
                f"loss weight {name} must be a finite number >= 0, got {value!r}: e.g. {name} = 0.2"
            )


def _reference_form(model, *, n_retain, n_forget, epochs, batch_size, weights, start, variant):
    """ce·CE(D_r batch) + kl·KL1(teacher‖student, batch) − forget_kl·KL1(teacher‖student, D_f)
    − forget_ce_poisoned·CE(D_f, poisoned labels) − forget_ce_true·CE(D_f, true labels), with all
    of D_f in every step."""
    _check_sizes(n_retain, n_forget, epochs, batch_size)
    bs = _full_batch(batch_size, n_retain)
    plan = shuffled_plan(n_retain, bs)

    def inputs(teacher, split):
        data = {
            "x": split["x_retain"],
            "y": split["y_retain"],
            "p_teacher": predict(model, teacher, split["x_retain"]),
        }
        extra = {
            "x_forget": split["x_forget"],
            "p_teacher_forget": predict(model, teacher, split["x_forget"]),
            "y_forget_poisoned": split["y_forget_poisoned"],
            "y_forget_true": split["y_forget_true"],
        }
        return data, extra

    forget_weights = ("forget_kl", "forget_ce_poisoned", "forget_ce_true")

    def forget_term(params, extra):
        wt = extra["weights"]
        q = predict(model, params, extra["x_forget"])
        return (
            wt["forget_kl"] * jnp.mean(kl_one_term(extra["p_teacher_forget"], q))
            + wt["forget_ce_poisoned"] * jnp.mean(bce(q, extra["y_forget_poisoned"]))
            + wt["forget_ce_true"] * jnp.mean(bce(q, extra["y_forget_true"]))
        )

    def objective(params, batch, extra):
        wt = extra["weights"]
        p = predict(model, params, batch["x"])
        retain = wt["ce"] * weighted_mean(bce(p, batch["y"]), batch["w"]) + wt[
            "kl"
        ] * weighted_mean(kl_one_term(batch["p_teacher"], p), batch["w"])
        # Retrain and fine-tune (and a sweep's fo_w = 0 points) weigh D_f by zero: skip its
        # forward and backward pass, which is as large as the retain batch's (all of D_f per
        # step). A real branch where the weights are per program (runs in a lax.map); under a
        # vmap over weights it becomes a select and both sides are computed, as before.
        uses_forget = sum(jnp.abs(wt[k]) for k in forget_weights) > 0
        forget = jax.lax.cond(
            uses_forget,
            forget_term,
            lambda params, extra: jnp.zeros((), jnp.result_type(retain)),
            params,
            extra,
        )
        return retain - forget

    full = {
        "ce": 1.0,
        "kl": 0.0,
        "forget_kl": 0.0,
        "forget_ce_poisoned": 0.0,
        "forget_ce_true": 0.0,
    } | weights
    return Method(
        objective,
        plan,
        inputs,
        start,
        {k: float(v) for k, v in full.items()},
        ("reference", n_retain, n_forget, bs, epochs),
        variant,
        epochs * math.ceil(n_retain / bs),
    )


def retrain(model, *, n_retain, n_forget, epochs, batch_size, ce_w=1.0):
    """From a fresh initialisation (the run key), CE on D_r."""
    _check_weights(ce_w=ce_w)
    return _reference_form(
        model,
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        batch_size=batch_size,
        weights={"ce": ce_w},
        start=lambda key, teacher: model.init(key),
        variant="reference",
    )


def finetune(model, *, n_retain, n_forget, epochs, batch_size, ce_w=1.0):
    """From the teacher, CE on D_r ("catastrophic forgetting")."""
    _check_weights(ce_w=ce_w)
    return _reference_form(
        model,
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        batch_size=batch_size,
        weights={"ce": ce_w},
        start=_from_teacher,
        variant="reference",
    )


def scrub(model, *, n_retain, n_forget, epochs, batch_size, kl_w=0.0, fo_w=0.2, ce_w=1.0):
    """The reference's SCRUB, from the teacher: ce·CE(D_r batch) + kl_w·KL1(teacher‖student on
    the batch) − fo_w·KL1(teacher‖student on all of D_f), one min-step per batch."""
    _check_weights(kl_w=kl_w, fo_w=fo_w, ce_w=ce_w)
    return _reference_form(
        model,
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        batch_size=batch_size,
        weights={"ce": ce_w, "kl": kl_w, "forget_kl": fo_w},
        start=_from_teacher,
        variant="reference",
    )


def gradient_ascent(
    model, *, n_retain, n_forget, epochs, batch_size, fo_w=0.2, labels="poisoned", ce_w=1.0
):
    """From the teacher: ce·CE(D_r batch) − fo_w·CE(all of D_f). ``labels="poisoned"`` (the
    reference) ascends on the labels the teacher memorised; ``"true"`` ascends on the clean labels,
    which pushes D_f TOWARDS its poisoned labels (a contrast, not a fix)."""
    _check_weights(fo_w=fo_w, ce_w=ce_w)
    if labels not in LABELS:
        raise QunlearnError(f"gradient_ascent labels must be one of {list(LABELS)}, got {labels!r}")
    return _reference_form(
        model,
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        batch_size=batch_size,
        weights={"ce": ce_w, f"forget_ce_{labels}": fo_w},
        start=_from_teacher,
        variant="reference",
    )


# --- corrected variants: D_r and D_f rows in one data array, a role column tells them apart


def _cut(perm, width: int, steps: int, offset: int):
    """Indices ``perm + offset`` cut into (steps, width), padded with weight 0."""
    pad = steps * width - perm.shape[0]
    idx = jnp.concatenate([perm + offset, jnp.full((pad,), offset, perm.dtype)])
    w = jnp.concatenate([jnp.ones(perm.shape[0]), jnp.zeros(pad)])
    return idx.reshape(steps, width), w.reshape(steps, width)


def alternating_plan(n_retain: int, n_forget: int, width: int) -> Callable:
    """Per epoch: ceil(n_f/width) steps over D_f (rows n_r..), then ceil(n_r/width) over D_r."""
    s_f, s_r = math.ceil(n_forget / width), math.ceil(n_retain / width)

    def plan(key):
        k_f, k_r = jax.random.split(key)
        i_f, w_f = _cut(jax.random.permutation(k_f, n_forget), width, s_f, n_retain)
        i_r, w_r = _cut(jax.random.permutation(k_r, n_retain), width, s_r, 0)
        return jnp.concatenate([i_f, i_r]), jnp.concatenate([w_f, w_r])

    return plan


def joint_plan(n_retain: int, n_forget: int, bs_retain: int) -> Callable:
    """Each step: a D_r batch of ``bs_retain`` rows next to a D_f batch; one epoch covers each set
    once (D_f batches of ceil(n_f / steps) rows)."""
    steps = math.ceil(n_retain / bs_retain)
    bs_forget = math.ceil(n_forget / steps)

    def plan(key):
        k_f, k_r = jax.random.split(key)
        i_r, w_r = _cut(jax.random.permutation(k_r, n_retain), bs_retain, steps, 0)
        i_f, w_f = _cut(jax.random.permutation(k_f, n_forget), bs_forget, steps, n_retain)
        return jnp.concatenate([i_r, i_f], 1), jnp.concatenate([w_r, w_f], 1)

    return plan


def _joined(model, teacher, split, forget_labels: str) -> dict:
    """D_r then D_f as one data array: x, y (D_r held, D_f ``forget_labels``), role (+1 / −1) and
    the teacher's class-1 probability."""
    x = jnp.concatenate([split["x_retain"], split["x_forget"]])
    n_r, n_f = split["x_retain"].shape[0], split["x_forget"].shape[0]
    return {
        "x": x,
        "y": jnp.concatenate([split["y_retain"], split[f"y_forget_{forget_labels}"]]),
        "role": jnp.concatenate([jnp.ones(n_r), -jnp.ones(n_f)]),
        "p_teacher": predict(model, teacher, x),
    }


def scrub_kurmanji(
    model, *, n_retain, n_forget, epochs, batch_size, kl_w=1.0, ce_w=1.0, fo_w=1.0, max_epochs=5
):
    """SCRUB of Kurmanji et al. 2023, from the teacher, with the Bernoulli KL. Each epoch: max-steps
    over D_f batches, loss −fo_w·KL(teacher‖student) (only in the first ``max_epochs`` epochs),
    then min-steps over D_r batches, loss kl_w·KL(teacher‖student) + ce_w·CE."""
    _check_weights(kl_w=kl_w, ce_w=ce_w, fo_w=fo_w)
    _check_sizes(n_retain, n_forget, epochs, batch_size)
    if not isinstance(max_epochs, int) or max_epochs < 0:
        raise QunlearnError(f"max_epochs must be a non-negative integer, got {max_epochs!r}")
    max_epochs = min(max_epochs, epochs)
    width = _full_batch(batch_size, n_retain)
    s_f, s_r = math.ceil(n_forget / width), math.ceil(n_retain / width)

    def inputs(teacher, split):
        return _joined(model, teacher, split, "true"), {}

    def objective(params, batch, extra):
        wt = extra["weights"]
        p = predict(model, params, batch["x"])
        kl = kl_bernoulli(batch["p_teacher"], p)
        w_min = batch["w"] * (batch["role"] > 0)
        w_max = batch["w"] * (batch["role"] < 0)
        return (
            wt["kl"] * weighted_mean(kl, w_min)
            + wt["ce"] * weighted_mean(bce(p, batch["y"]), w_min)
            - wt["forget_kl"] * weighted_mean(kl, w_max)
        )

    def optimizer(lr):
        # Max-steps after `max_epochs` leave params and Adam state untouched (as if not run).
        def applied(step):
            return (step % (s_f + s_r) >= s_f) | (step // (s_f + s_r) < max_epochs)

        return optax.transforms.conditionally_mask(optax.adam(lr), applied)

    return Method(
        objective,
        alternating_plan(n_retain, n_forget, width),
        inputs,
        _from_teacher,
        {"ce": float(ce_w), "kl": float(kl_w), "forget_kl": float(fo_w)},
        ("scrub_kurmanji", n_retain, n_forget, width, epochs, max_epochs),
        "corrected",
        max_epochs * s_f + epochs * s_r,
        optimizer,
    )


def neggrad_plus(model, *, n_retain, n_forget, epochs, batch_size, beta=0.9):
    """NegGrad+ (Kurmanji et al. 2023), from the teacher: each step β·CE(D_r batch) −
    (1−β)·CE(D_f batch, poisoned labels), the two batches drawn jointly."""
    _check_weights(beta=beta)
    _check_sizes(n_retain, n_forget, epochs, batch_size)
    if not 0.0 <= beta <= 1.0:
        raise QunlearnError(f"neggrad_plus beta must be in [0, 1], got {beta!r}")
    bs = _full_batch(batch_size, n_retain)

    def inputs(teacher, split):
        return _joined(model, teacher, split, "poisoned"), {}

    def objective(params, batch, extra):
        wt = extra["weights"]
        ce = bce(predict(model, params, batch["x"]), batch["y"])
        return wt["ce"] * weighted_mean(ce, batch["w"] * (batch["role"] > 0)) - wt[
            "forget_ce_poisoned"
        ] * weighted_mean(ce, batch["w"] * (batch["role"] < 0))

    return Method(
        objective,
        joint_plan(n_retain, n_forget, bs),
        inputs,
        _from_teacher,
        {"ce": float(beta), "forget_ce_poisoned": float(1 - beta)},
        ("neggrad_plus", n_retain, n_forget, bs, epochs),
        "corrected",
        epochs * math.ceil(n_retain / bs),
    )


METHODS = Family(
    "unlearning method",
    "qunlearn.methods",
    {
        "retrain": retrain,
        "finetune": finetune,
        "scrub": scrub,
        "gradient_ascent": gradient_ascent,
        "scrub_kurmanji": scrub_kurmanji,
        "neggrad_plus": neggrad_plus,
    },
)
"""name -> factory ``(model, *, n_retain, n_forget, epochs, batch_size, **options) -> Method``."""


RESERVED = ("n_retain", "n_forget", "epochs", "batch_size")  # from the model's unlearn_* settings


def make_method(
    name: str, model, *, n_retain: int, n_forget: int, epochs: int, batch_size: int, **options
) -> Method:
    """``METHODS[name](...)`` with one-line errors for unknown names and options, and for a
    user's method that raises or returns something other than a :class:`Method`."""
    factory = METHODS.resolve(name)
    named, takes_any = keyword_options(factory, 1)
    options_of = [p for p in named if p not in RESERVED]
    missing = [p for p in RESERVED if p not in named]
    if missing and not takes_any:
        raise QunlearnError(
            f"unlearning method {name!r} breaks the method contract: its factory must take "
            f"(model, *, n_retain, n_forget, epochs, batch_size, **options); it lacks {missing}"
        )
    for option in options:
        if option not in options_of and not takes_any:
            raise QunlearnError(
                f"unlearning method {name!r} has no option {option!r}"
                f"{did_you_mean(option, options_of)}: its options are {options_of}"
            )
    built = f"unlearning method {name!r} failed to build with options {options}"
    with user_code(f"unlearning method {name!r}", built):
        method = factory(
            model,
            n_retain=n_retain,
            n_forget=n_forget,
            epochs=epochs,
            batch_size=batch_size,
            **options,
        )
    check_method_value(name, method)
    return method


def check_method_value(name: str, method) -> None:
    """The structure of a :class:`Method` (what the engine relies on before it traces anything),
    one line per breach naming ``name``."""

    def fail(what: str):
        raise QunlearnError(f"unlearning method {name!r} breaks the method contract: {what}")

    if not isinstance(method, Method):
        fail(f"its factory must return a qunlearn.unlearn.Method, got {type(method).__name__}")
    for field in ("objective", "plan", "inputs", "start", "optimizer"):
        if not callable(getattr(method, field)):
            fail(f"Method.{field} must be a function")
    if not isinstance(method.weights, dict) or not all(
        isinstance(k, str) and isinstance(v, float) and math.isfinite(v)
        for k, v in method.weights.items()
    ):
        fail("Method.weights must map names to finite floats")
    try:
        hash(method.form)
    except TypeError:
        fail(f"Method.form must be hashable (it keys the compiled program), got {method.form!r}")
    if not isinstance(method.steps, int) or isinstance(method.steps, bool) or method.steps < 0:
        fail(f"Method.steps must be a non-negative int, got {method.steps!r}")
    if not isinstance(method.variant, str):
        fail(f"Method.variant must be a string, got {method.variant!r}")


def make_unlearn(
    model,
    method: Method,
    *,
    lr: float,
    epochs: int,
    trajectory: bool = True,
    on_epoch: Callable | None = None,
    snapshot_every: int = 0,
) -> Callable:
    """``unlearn(key, params, teacher_params, split, weights) -> (params, log)`` on the engine.

    ``log["start"][metric]``: (epochs,) :data:`METRICS` at the START of every epoch (index 0 = the
    starting params; only if ``trajectory``); ``log["final"]``: after the last epoch;
    ``log["loss"]``: (epochs,) mean objective. ``weights``: dict of scalars, traced.
    ``snapshot_every = k > 0``: ``log["snapshots"]``, params every k epochs (see ``make_train``).
    """
    evaluate = None
    if trajectory:

        def evaluate(params, data, extra):
            return unlearning_metrics(model, params, extra["split"])

    train = make_train(
        method.objective,
        method.optimizer(lr),
        epochs=epochs,
        plan=method.plan,
        evaluate=evaluate,
        on_epoch=on_epoch,
        snapshot_every=snapshot_every,
    )

    def unlearn(key, params, teacher, split, weights):
        data, extra = method.inputs(teacher, split)
        params, log = train(key, params, data, extra | {"weights": weights, "split": split})
        return params, log | {"final": unlearning_metrics(model, params, split)}

    return unlearn
