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
from qunlearn.families import Family, keyword_defaults, keyword_options
from qunlearn.surgery import (
    CURVATURES,
    add_gaussian_noise,
    last_layers_mask,
    layer_count,
    mean_square_per_example,
    newton_step,
    ssd_dampen,
    top_fraction_mask,
    trainable,
)
from qunlearn.train import (
    BCE_EPS,
    check_positive,
    cross_entropy,
    hits,
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


def teacher_kl(p, q, eps: float = BCE_EPS):
    """Per-example distance of the student's ``q`` from the teacher's ``p`` (SCRUB's KL): the
    reference's one term on class-1 probabilities (n,), the full KL over the classes for a
    C-class model's (n, C)."""
    return kl_one_term(p, q, eps) if p.ndim == 1 else jnp.sum(kl_one_term(p, q, eps), -1)


def kl_bernoulli(p, q, eps: float = BCE_EPS):
    """KL(Bern(p) ‖ Bern(q)) = p·log(p/q) + (1−p)·log((1−p)/(1−q)), elementwise, eps-guarded."""
    return kl_one_term(p, q, eps) + kl_one_term(1 - p, 1 - q, eps)


def full_kl(p, q, eps: float = BCE_EPS):
    """Per-example KL(p ‖ q): :func:`kl_bernoulli` of class-1 probabilities (n,), the categorical
    KL of a C-class model's (n, C)."""
    return kl_bernoulli(p, q, eps) if p.ndim == 1 else jnp.sum(kl_one_term(p, q, eps), -1)


def _binary_only(method: str, multi_class: bool) -> None:
    """Refuse, at trace time (the experiments trace every method before ``--out``), a C-class
    model in a method whose curvature is written for one class-1 probability."""
    if multi_class:
        raise QunlearnError(
            f"{method} uses the Bernoulli Fisher of a binary model's class-1 probability; a "
            "multi-class model needs another method (e.g. retrain, finetune, scrub, salun, ssd)"
        )


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
    p = predict(model, params, split["x_train"])
    # jnp.mean of bools is float32 even with x64; count in the data's float dtype instead
    as_true = hits(p, split["y_train_true"]).astype(f.dtype)
    as_noisy = hits(p, split["y_train_noisy"]).astype(f.dtype)
    val_hit = hits(predict(model, params, split["x_val"]), split["y_val"])
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

    ``objective(params, batch, extra) -> scalar`` (``extra["weights"]``: the traced loss weights;
    ``extra["epoch"]``: the current epoch's index, traced, for a weight on a schedule);
    ``plan(key) -> (idx, w)`` into ``data``; ``inputs(teacher_params, split) -> (data, extra)``
    (traced: teacher outputs are computed inside the program); ``start(key, teacher_params) ->
    params``; ``weights``: default weights (floats); ``form``: hashable, equal forms promise equal
    objective, plan, inputs and optimizer, so the compiled program can be shared; ``variant``:
    "reference" or "corrected"; ``steps``: optimizer updates applied per run;
    ``optimizer(lr) -> optax.GradientTransformation``; ``prepare(key, params, data, extra) ->
    (params, data, extra)``, optional: runs once inside the program, after ``start`` and before
    the first step, with the run's data (a saliency mask, random labels, a Newton step or
    Fisher dampening: what a method computes from the data before, or instead of, training).
    ``sampled``: the objective reads the model only through ``predict(model, params, x, key)``
    with keys from ``batch["key"]`` (:func:`sampled_key`), so a finite-shot model (hyper
    ``shots``/``gradient``) trains through its shot estimates and gradient estimator; False: the
    method needs the exact model (its curvature, Fisher or saliency), refused for such a model.
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
    prepare: Callable | None = None
    sampled: bool = False


FORGET_KEY_TAG = 0xF06E  # fold_in tag: an objective's draw on D_f, apart from its batch draw


def sampled_key(batch: dict, tag: int = 0):
    """The step's key for the objective's ``tag``-th draw of a finite-shot model (None: exact):
    ``batch["key"]`` is there when the engine runs with step keys (a model with ``sample``)."""
    key = batch.get("key")
    return key if key is None or tag == 0 else jax.random.fold_in(key, tag)


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


def _reference_form(
    model,
    *,
    n_retain,
    n_forget,
    epochs,
    batch_size,
    weights,
    start,
    variant,
    train_only=None,
    l1_decay=False,
    tag=(),
):
    """ce·CE(D_r batch) + kl·KL1(teacher‖student, batch) − forget_kl·KL1(teacher‖student, D_f)
    − forget_ce_poisoned·CE(D_f, poisoned labels) − forget_ce_true·CE(D_f, true labels), with all
    of D_f in every step. ``weights["l1"]`` adds l1·Σ|θ|, times 1 − e/epochs in epoch e with
    ``l1_decay``; ``train_only`` (a static mask like the params) freezes what it leaves out;
    ``tag`` names any of them in the form."""
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

    def forget_term(params, extra, key):
        wt = extra["weights"]
        q = predict(model, params, extra["x_forget"], key)
        return (
            wt["forget_kl"] * jnp.mean(teacher_kl(extra["p_teacher_forget"], q))
            + wt["forget_ce_poisoned"] * jnp.mean(cross_entropy(q, extra["y_forget_poisoned"]))
            + wt["forget_ce_true"] * jnp.mean(cross_entropy(q, extra["y_forget_true"]))
        )

    def objective(params, batch, extra):
        wt = extra["weights"]
        if train_only is not None:
            params = trainable(params, train_only)
        p = predict(model, params, batch["x"], sampled_key(batch))
        retain = wt["ce"] * weighted_mean(cross_entropy(p, batch["y"]), batch["w"]) + wt[
            "kl"
        ] * weighted_mean(teacher_kl(batch["p_teacher"], p), batch["w"])
        if "l1" in wt:
            l1 = wt["l1"] * (1.0 - extra["epoch"] / epochs) if l1_decay else wt["l1"]
            retain = retain + l1 * sum(
                jnp.sum(jnp.abs(leaf)) for leaf in jax.tree_util.tree_leaves(params)
            )
        # Retrain and fine-tune (and a sweep's fo_w = 0 points) weigh D_f by zero: skip its
        # forward and backward pass, which is as large as the retain batch's (all of D_f per
        # step). A real branch where the weights are per program (runs in a lax.map); under a
        # vmap over weights it becomes a select and both sides are computed, as before.
        uses_forget = sum(jnp.abs(wt[k]) for k in forget_weights) > 0
        forget = jax.lax.cond(
            uses_forget,
            forget_term,
            lambda params, extra, key: jnp.zeros((), jnp.result_type(retain)),
            params,
            extra,
            sampled_key(batch, FORGET_KEY_TAG),
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
        ("reference", n_retain, n_forget, bs, epochs, *tag),
        variant,
        epochs * math.ceil(n_retain / bs),
        sampled=True,
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
        p = predict(model, params, batch["x"], sampled_key(batch))
        kl = full_kl(batch["p_teacher"], p)
        w_min = batch["w"] * (batch["role"] > 0)
        w_max = batch["w"] * (batch["role"] < 0)
        return (
            wt["kl"] * weighted_mean(kl, w_min)
            + wt["ce"] * weighted_mean(cross_entropy(p, batch["y"]), w_min)
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
        sampled=True,
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
        ce = cross_entropy(predict(model, params, batch["x"], sampled_key(batch)), batch["y"])
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
        sampled=True,
    )


# --- the methods the field compares (EU-k, CF-k, random labels, SalUn, l1-sparse, SSD, Fisher
# forgetting, Newton removal): variant "benchmark". Each is the training engine's objective, data
# and start, plus (for the last five) a `prepare` step that reads the data once in the program.

BENCHMARK = "benchmark"
PREPARE_KEY = 2**32 - 1  # fold_in index of prepare's key: epochs use 0, 1, ... (make_train)


def _check_number(
    method: str, name: str, value, low: float, high: float = math.inf, *, integer=False
):
    """``low < value <= high`` (ints only if ``integer``), else one line naming the option."""
    kind = int if integer else int | float
    if not isinstance(value, kind) or isinstance(value, bool) or not (low < value <= high):
        span = f"> {low}" if high == math.inf else f"in ({low}, {high}]"
        what = "an integer" if integer else "a number"
        raise QunlearnError(f"{method} option {name} must be {what} {span}, got {value!r}")


def _last_layers(model, k, method: str):
    """The static mask of the model's last ``k`` layers; k outside [1, layers] fails in one line."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    n = layer_count(shapes)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise QunlearnError(
            f"{method} k must be an integer from 1 to the model's {n} layers, got {k!r}"
        )
    return last_layers_mask(shapes, k)


def _last_k(model, name: str, k, *, fresh: bool, **sizes) -> Method:
    """CE on D_r training only the last ``k`` layers, from the teacher with those layers
    re-initialised from the run key (``fresh``) or as they are."""
    mask = _last_layers(model, k, name)

    def start(key, teacher):
        if not fresh:
            return teacher
        return jax.tree_util.tree_map(
            lambda f, t, m: jnp.where(m, f, t), model.init(key), teacher, mask
        )

    return _reference_form(
        model,
        **sizes,
        weights={"ce": 1.0},
        start=start,
        variant=BENCHMARK,
        train_only=mask,
        tag=("last", k),
    )


def eu_k(model, *, n_retain, n_forget, epochs, batch_size, k=1):
    """EU-k (Goel et al. 2022): the teacher with its last ``k`` layers re-initialised from the run
    key, only those trained, CE on D_r. ``k`` = every layer is :func:`retrain`."""
    sizes = {"n_retain": n_retain, "n_forget": n_forget, "epochs": epochs}
    return _last_k(model, "eu_k", k, fresh=True, batch_size=batch_size, **sizes)


def cf_k(model, *, n_retain, n_forget, epochs, batch_size, k=1):
    """CF-k (Goel et al. 2022): fine-tune only the teacher's last ``k`` layers on D_r."""
    sizes = {"n_retain": n_retain, "n_forget": n_forget, "epochs": epochs}
    return _last_k(model, "cf_k", k, fresh=False, batch_size=batch_size, **sizes)


L1_SCHEDULES = ("linear", "constant")


def l1_sparse(model, *, n_retain, n_forget, epochs, batch_size, l1=1e-4, schedule="linear"):
    """ℓ1-sparse fine-tuning (Jia et al. 2023), from the teacher: CE(D_r) + l1_e·Σ|θ|. Their
    schedule by default, ``"linear"``: l1_e = l1·(1 − e/epochs) in epoch e (0-based), from l1 in
    the first epoch down to l1/epochs in the last; ``"constant"``: l1 throughout. ``l1`` is a
    traced loss weight, so a sweep over it shares one program."""
    _check_weights(l1=l1)
    if schedule not in L1_SCHEDULES:
        raise QunlearnError(
            f"l1_sparse schedule must be one of {list(L1_SCHEDULES)}, got {schedule!r}: e.g. "
            'schedule = "linear" (Jia et al.\'s decay)'
        )
    return _reference_form(
        model,
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        batch_size=batch_size,
        weights={"ce": 1.0, "l1": l1},
        start=_from_teacher,
        variant=BENCHMARK,
        l1_decay=schedule == "linear",
        tag=("l1", schedule),
    )


def _classes_of(model, params, x) -> int:
    """A model's class count from the shape of one output (shapes are static under tracing)."""
    shape = jax.eval_shape(model.apply, params, x).shape
    return 2 if shape == () else shape[0]


def _random_label_form(model, name, *, n_retain, n_forget, epochs, batch_size, saliency=None):
    """From the teacher, CE on D_r (its labels) and D_f relabelled at random (one fair coin per
    forget sample, drawn in ``prepare``), shuffled together. ``saliency`` = f: only the fraction
    f of the weights with the largest forget-loss gradient at the teacher are trained (SalUn)."""
    _check_sizes(n_retain, n_forget, epochs, batch_size)
    n = n_retain + n_forget
    bs = min(_full_batch(batch_size, n_retain), n)

    def inputs(teacher, split):
        data = {
            "x": jnp.concatenate([split["x_retain"], split["x_forget"]]),
            "y": jnp.concatenate([split["y_retain"], split["y_forget_poisoned"]]),
        }
        return data, {"x_forget": split["x_forget"], "y_forget": split["y_forget_poisoned"]}

    def prepare(key, params, data, extra):
        n_classes = _classes_of(model, params, data["x"][0])
        if n_classes == 2:  # the binary draw, unchanged
            coins = jax.random.bernoulli(key, 0.5, (n_forget,)).astype(data["y"].dtype)
        else:  # a uniformly random class per forget sample
            coins = jax.random.randint(key, (n_forget,), 0, n_classes).astype(data["y"].dtype)
        data = data | {"y": data["y"].at[n_retain:].set(coins)}
        if saliency is not None:

            def forget_loss(params):
                return jnp.mean(
                    cross_entropy(predict(model, params, extra["x_forget"]), extra["y_forget"])
                )

            grads = jax.grad(forget_loss)(params)
            mask = top_fraction_mask(jax.tree_util.tree_map(jnp.abs, grads), saliency)
            extra = extra | {"train_only": mask}
        return params, data, extra

    def objective(params, batch, extra):
        if "train_only" in extra:
            params = trainable(params, extra["train_only"])
        p = predict(model, params, batch["x"], sampled_key(batch))
        return extra["weights"]["ce"] * weighted_mean(cross_entropy(p, batch["y"]), batch["w"])

    return Method(
        objective,
        shuffled_plan(n, bs),
        inputs,
        _from_teacher,
        {"ce": 1.0},
        (name, n_retain, n_forget, bs, epochs, saliency),
        BENCHMARK,
        epochs * math.ceil(n / bs),
        optax.adam,
        prepare,
        sampled=saliency is None,  # SalUn's mask is the exact forget-loss gradient
    )


def random_label(model, *, n_retain, n_forget, epochs, batch_size):
    """Random-label fine-tuning (Golatkar et al. 2020's baseline, SalUn's "RL"): D_r with its
    labels and D_f with random ones, from the teacher."""
    return _random_label_form(
        model,
        "random_label",
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        batch_size=batch_size,
    )


def salun(model, *, n_retain, n_forget, epochs, batch_size, sparsity=0.5):
    """SalUn (Fan et al. 2024): random-label fine-tuning of only the salient weights, the
    ``sparsity`` fraction with the largest |∇ CE(D_f)| at the teacher (their default: half)."""
    _check_number("salun", "sparsity", sparsity, 0.0, 1.0)
    return _random_label_form(
        model,
        "salun",
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        batch_size=batch_size,
        saliency=float(sparsity),
    )


def _edit_form(model, name, options: tuple, *, n_retain, n_forget, epochs, edit) -> Method:
    """A method that edits the teacher once and trains no further (zero optimizer steps):
    ``edit(key, params, split) -> params`` runs as ``prepare``; the epochs only log metrics."""
    _check_sizes(n_retain, n_forget, epochs, 0)

    def inputs(teacher, split):
        return {"x": split["x_retain"], "y": split["y_retain"]}, {"edit_split": split}

    def plan(key):
        del key
        return jnp.zeros((0, 1), jnp.int32), jnp.zeros((0, 1))

    def objective(params, batch, extra):  # traced by the (empty) step scan, never run
        return weighted_mean(
            cross_entropy(predict(model, params, batch["x"]), batch["y"]), batch["w"]
        )

    def prepare(key, params, data, extra):
        return edit(key, params, extra["edit_split"]), data, extra

    return Method(
        objective,
        plan,
        inputs,
        _from_teacher,
        {},
        (name, n_retain, n_forget, epochs, *options),
        BENCHMARK,
        0,
        optax.adam,
        prepare,
    )


def _example_loss(model):
    """``(params, x, y) -> CE`` of one example: its gradient squared is the empirical Fisher."""
    return lambda params, x, y: cross_entropy(model.apply(params, x), y)


def ssd(model, *, n_retain, n_forget, epochs, batch_size, selection=None, dampening=1.0):
    """Selective Synaptic Dampening (Foster et al. 2023; their α = ``selection``, λ =
    ``dampening``): the diagonal empirical Fisher of D_f and of the whole training set D (the
    labels trained on); weights far more important to D_f are scaled down. No training.

    D holds D_f, so I_D >= (n_f / n)·I_f: no α >= n / n_f selects anything. ``selection = None``
    is their α = 10 where D_f is at most 5 % of D, else half that bound (1.67 at 30 %)."""
    del batch_size
    n_total = n_retain + n_forget
    if selection is None and n_forget > 0:
        selection = min(10.0, 0.5 * n_total / n_forget)
    _check_number("ssd", "selection", selection, 0.0)
    _check_number("ssd", "dampening", dampening, 0.0)
    if n_forget > 0 and selection >= n_total / n_forget:
        raise QunlearnError(
            f"ssd selection {selection} selects no weight when D_f is {n_forget} of the "
            f"{n_total} training samples (the Fisher of D is at least {n_forget}/{n_total} of "
            f"D_f's): use selection < {n_total / n_forget:.3g}, or leave it out for "
            f"{min(10.0, 0.5 * n_total / n_forget):.3g}"
        )
    grad_one = jax.grad(_example_loss(model))

    def edit(key, params, split):
        del key
        fisher_forget = mean_square_per_example(
            grad_one, params, split["x_forget"], split["y_forget_poisoned"]
        )
        fisher_all = mean_square_per_example(
            grad_one, params, split["x_train"], split["y_train_noisy"]
        )
        return ssd_dampen(
            params, fisher_forget, fisher_all, selection=selection, dampening=dampening
        )

    return _edit_form(
        model,
        "ssd",
        (float(selection), float(dampening)),
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        edit=edit,
    )


def fisher_forgetting(
    model, *, n_retain, n_forget, epochs, batch_size, scale=1e-6, max_inverse=1e3
):
    """Fisher forgetting (Golatkar et al. 2020): Gaussian noise on the teacher with variance
    ``scale · min(1 / (F_r + 1e-8), max_inverse)``, F_r the diagonal (true) Fisher of D_r: weights
    the retain set does not pin down are scrambled. Their defaults. No training."""
    del batch_size
    _check_number("fisher_forgetting", "scale", scale, 0.0)
    _check_number("fisher_forgetting", "max_inverse", max_inverse, 0.0)

    def score(params, x, y):  # ∇p / sqrt(p(1-p)): its square is the class-averaged Fisher
        del y
        _binary_only("fisher_forgetting", jax.eval_shape(model.apply, params, x).shape != ())
        p, grad = jax.value_and_grad(model.apply)(params, x)
        norm = jax.lax.rsqrt(jnp.maximum(p * (1 - p), BCE_EPS))
        return jax.tree_util.tree_map(lambda g: g * norm, grad)

    def edit(key, params, split):
        fisher = mean_square_per_example(score, params, split["x_retain"], split["y_retain"])
        std = jax.tree_util.tree_map(
            lambda f: jnp.sqrt(scale * jnp.minimum(1 / (f + 1e-8), max_inverse)), fisher
        )
        return add_gaussian_noise(key, params, std)

    return _edit_form(
        model,
        "fisher_forgetting",
        (float(scale), float(max_inverse)),
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        edit=edit,
    )


def retain_loss(model, x, y, l2: float = 0.0) -> Callable:
    """``params -> mean CE(D_r) + l2/2·‖θ‖²``, whose optimum Newton removal aims at."""

    def loss(params):
        ce = jnp.mean(cross_entropy(predict(model, params, x), y))
        norm = sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(params))
        return ce + 0.5 * l2 * norm

    return loss


def gauss_newton_product(model, x, l2: float = 0.0) -> Callable:
    """``params -> (v -> G v)``: the Gauss-Newton (Fisher) matrix of mean CE on ``x`` plus l2·I,
    ``Jᵀ diag(1 / (p(1-p))) J / n`` with J = ∂p/∂θ; positive semi-definite, unlike the Hessian
    of a non-convex model."""

    def at(params):
        def probs(theta):
            return predict(model, theta, x)

        p, vjp = jax.vjp(probs, params)
        _binary_only("the Gauss-Newton curvature (newton, certified_newton)", p.ndim > 1)

        def product(v):
            jv = jax.jvp(probs, (params,), (v,))[1]
            back = vjp(jv / jnp.maximum(p * (1 - p), BCE_EPS) / x.shape[0])[0]
            return jax.tree_util.tree_map(lambda b, u: b + l2 * u, back, v)

        return product

    return at


def _newton_options(method, damping, cg_steps, newton_steps, curvature, l2):
    _check_weights(damping=damping)
    _check_number(method, "cg_steps", cg_steps, 0, integer=True)
    _check_number(method, "newton_steps", newton_steps, 0, integer=True)
    _check_weights(l2=l2)
    if curvature not in CURVATURES:
        raise QunlearnError(
            f"{method} curvature must be one of {list(CURVATURES)}, got {curvature!r}"
            f"{did_you_mean(str(curvature), CURVATURES)}"
        )


def _newton_edit(model, damping, cg_steps, newton_steps, curvature, l2):
    """``(params, split) -> params``: ``newton_steps`` damped Newton steps on the retain loss."""

    def edit(params, split):
        x, y = split["x_retain"], split["y_retain"]
        loss = retain_loss(model, x, y, l2)
        product = gauss_newton_product(model, x, l2) if curvature == "gauss_newton" else None
        for _ in range(newton_steps):
            params, _ = newton_step(
                loss, params, damping=damping, cg_steps=cg_steps, gauss_newton=product
            )
        return params

    return edit


def newton(
    model,
    *,
    n_retain,
    n_forget,
    epochs,
    batch_size,
    damping=1e-3,
    cg_steps=32,
    newton_steps=1,
    curvature="gauss_newton",
    l2=0.0,
):
    """Newton (influence) removal: θ − (C_r + λI)⁻¹ ∇L_r(θ) from the teacher, L_r the mean CE on
    D_r (+ l2/2·‖θ‖²), C_r its Gauss-Newton matrix or Hessian, solved by CG on matrix-vector
    products. At the optimum of the loss on D, ∇L_r = −(n_f / n_r)·∇L_f: one step removes D_f's
    influence to second order (Koh & Liang 2017; Guo et al. 2020). No training."""
    del batch_size
    _newton_options("newton", damping, cg_steps, newton_steps, curvature, l2)
    edit = _newton_edit(model, damping, cg_steps, newton_steps, curvature, l2)
    return _edit_form(
        model,
        "newton",
        (float(damping), cg_steps, newton_steps, curvature, float(l2)),
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        edit=lambda key, params, split: edit(params, split),
    )


def certified_newton(
    model,
    *,
    n_retain,
    n_forget,
    epochs,
    batch_size,
    sigma=0.01,
    damping=1e-3,
    cg_steps=32,
    newton_steps=1,
    curvature="gauss_newton",
    l2=0.0,
):
    """Certified removal's mechanism (Guo et al. 2020): :func:`newton` then Gaussian noise of
    scale ``sigma`` on every weight (the run key). Its (ε, δ) guarantee
    (:func:`qunlearn.surgery.certified_epsilon`) holds only for strongly convex losses (an
    L2-regularised linear model); for the MLPs and QNNs it is the same mechanism, uncertified."""
    del batch_size
    _check_number("certified_newton", "sigma", sigma, 0.0)
    _newton_options("certified_newton", damping, cg_steps, newton_steps, curvature, l2)
    edit = _newton_edit(model, damping, cg_steps, newton_steps, curvature, l2)

    def noisy(key, params, split):
        return add_gaussian_noise(key, edit(params, split), sigma)

    return _edit_form(
        model,
        "certified_newton",
        (float(sigma), float(damping), cg_steps, newton_steps, curvature, float(l2)),
        n_retain=n_retain,
        n_forget=n_forget,
        epochs=epochs,
        edit=noisy,
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
        "eu_k": eu_k,
        "cf_k": cf_k,
        "random_label": random_label,
        "salun": salun,
        "l1_sparse": l1_sparse,
        "ssd": ssd,
        "fisher_forgetting": fisher_forgetting,
        "newton": newton,
        "certified_newton": certified_newton,
    },
)
"""name -> factory ``(model, *, n_retain, n_forget, epochs, batch_size, **options) -> Method``."""


def method_defaults(name: str) -> dict:
    """Method ``name``'s option defaults (its factory's keyword defaults)."""
    return keyword_defaults(METHODS.resolve(name), 1)


RESERVED = ("n_retain", "n_forget", "epochs", "batch_size")  # from the model's unlearn_* settings


def check_method_options(name: str, factory: Callable, options: dict) -> None:
    """A method factory's keyword arguments (``RESERVED``, then its own) and the names of
    ``options`` against them, before it is called: one line each."""
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


def make_method(
    name: str, model, *, n_retain: int, n_forget: int, epochs: int, batch_size: int, **options
) -> Method:
    """``METHODS[name](...)`` with one-line errors for unknown names and options, and for a
    user's method that raises or returns something other than a :class:`Method`."""
    factory = METHODS.resolve(name)
    check_method_options(name, factory, options)
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
    if method.prepare is not None and not callable(method.prepare):
        fail("Method.prepare must be a function or None")
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
    if not isinstance(method.sampled, bool):
        fail(f"Method.sampled must be True or False, got {method.sampled!r}")


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
        epoch_index=True,  # extra["epoch"]: a method's loss weights may follow a schedule
        step_keys=getattr(model, "sample", None) is not None,  # finite shots: batch["key"]
    )

    def unlearn(key, params, teacher, split, weights):
        data, extra = method.inputs(teacher, split)
        if method.prepare is not None:
            prepare_key = jax.random.fold_in(key, PREPARE_KEY)
            params, data, extra = method.prepare(prepare_key, params, data, extra)
        params, log = train(key, params, data, extra | {"weights": weights, "split": split})
        return params, log | {"final": unlearning_metrics(model, params, split)}

    return unlearn
