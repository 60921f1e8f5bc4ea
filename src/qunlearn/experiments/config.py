"""Typed, frozen experiment configs read from TOML, with dotted command-line overrides.

A config file names its ``experiment`` kind; :data:`CONFIG_TYPES` maps the kind to a frozen
dataclass. Unknown keys, wrong types and bad values fail with one line naming the key and the fix.
A ``[tiny]`` table of dotted overrides is applied by ``--tiny`` (smoke runs).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

from qunlearn.data import DATASETS
from qunlearn.errors import QunlearnError, did_you_mean
from qunlearn.families import is_reference
from qunlearn.models import MODELS, SHOT_HYPER
from qunlearn.models.circuit_noise import check_circuit_noise
from qunlearn.noise import NOISE
from qunlearn.train import BATCHINGS
from qunlearn.unlearn import METHODS, RESERVED


@dataclass(frozen=True)
class ModelSpec:
    """A model and how to train it."""

    model: str
    epochs: int
    # examples per step, at most: one >= the training set is one full batch per epoch (as
    # tf.data's batch(bs) of the reference), every example used, never an error
    batch_size: int
    lr: float
    hyper: dict = field(default_factory=dict)
    run_chunk: int = 0  # runs per vmap, lax.map over chunks; 0 = all at once (see EXECUTION_ONLY)
    # (a TOML table without run_chunk gets default_run_chunk: by model and JAX backend)
    batching: str = "epoch"  # or "stream": the reference's repeat.shuffle(128).batch stream
    weight_decay: float = 0.0  # AdamW's decoupled decay (train.adam_optimizer); 0 = Adam
    label_smoothing: float = 0.0  # BCE targets y(1 - e) + e/2; 0 = the paper's
    devices: str = "one"  # "all": the runs split over every local device (see EXECUTION_ONLY)


@dataclass(frozen=True)
class NoiseSweepConfig:
    """Fig 2: train every model at every (noise, alpha), ``runs`` times each."""

    experiment: str
    name: str
    dataset: str
    models: dict[str, ModelSpec]
    noises: tuple[str, ...]
    alphas: tuple[float, ...]
    runs: int
    seed: int = 0
    dataset_options: dict = field(default_factory=dict)
    # {name: {noise = "pkg.module:fn" or a kind, option = value, ...}}: a name in `noises` for a
    # user's noise kind or a kind with options (as method_options does for methods)
    noise_options: dict = field(default_factory=dict)
    # finite shots at inference: each QNN's validation accuracy also from S shots per example
    # (metric val_acc_shots<S>), for each S listed, from the same exact-trained params, seeded
    eval_shots: tuple[int, ...] = ()
    # circuit noise at inference: each QNN's validation accuracy also under each named noise model
    # ({label = {depolarizing_1q = ..., ...}}, qunlearn.models.circuit_noise, or {label =
    # "fake_torino"}: a device's calibration snapshot, qunlearn.hardware; metric
    # val_acc_noise_<label>), exact density matrices, from the same noiselessly trained params
    eval_circuit_noise: dict = field(default_factory=dict)
    # a device's readout: each eval_circuit_noise model also read out with S shots per example
    # (metric val_acc_noise_<label>_shots<S>), for each S listed (qunlearn.experiments.readouts)
    eval_device_shots: tuple[int, ...] = ()
    # readout-error mitigation: each eval_circuit_noise readout (exact and with shots) also with
    # its readout error undone (metric val_acc_noise_<label>[_shots<S>]_mitigated)
    eval_mitigate_readout: bool = False


@dataclass(frozen=True)
class UnlearnSpec:
    """How one model's teacher is made and how it is unlearned."""

    model: str
    epochs: int
    batch_size: int  # the teacher's, as ModelSpec.batch_size (>= the training set: full batch)
    lr: float
    unlearn_epochs: int
    unlearn_batch_size: int  # 0 (or >= the retain set) = the whole retain set each step
    unlearn_lr: float
    hyper: dict = field(default_factory=dict)
    input: str = "native"  # "native" or "realified" ([Re; Im] amplitudes, one more qubit)
    run_chunk: int = 0  # as ModelSpec.run_chunk
    batching: str = "epoch"  # the teacher's, as ModelSpec.batching


@dataclass(frozen=True)
class UnlearningConfig:
    """Fig 3: one poisoned teacher per model, then every method ``runs`` times."""

    experiment: str
    name: str
    dataset: str
    models: dict[str, UnlearnSpec]
    methods: tuple[str, ...]
    alpha: float
    runs: int
    seed: int = 0
    noise: str = "label_flip"
    redraw_teacher: bool = False  # True: new poisoning + teacher per run
    method_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    # Weight sweeps: {method: {option: [values]}}, the grid is their product; final metrics only.
    sweep: dict = field(default_factory=dict)
    sweep_chunk: int = 50  # sweep points x runs per vmapped call (memory bound)
    # the QNN's arithmetic in the weight sweeps (its teacher and trajectories keep their own):
    # "model" or "complex64" (float32 states, float64 angles, readout and loss)
    sweep_dtype: str = "model"
    # the forget request (docs/evaluation.md): "poison" (D_f = every flipped sample),
    # "clean_random" (a seeded share of the clean samples) or "poison_partial" (a seeded share
    # `known` of the flipped samples) or "class" (every training sample of class
    # `forget_class`, on clean data); 0.0 / -1 = not given (the checks tell it from a given 0)
    forget: str = "poison"
    known: float = 0.0  # poison_partial: the identified share rho of the poison, in (0, 1]
    forget_fraction: float = 0.0  # clean_random: the share of clean samples; 0 = |poison|
    forget_class: int = -1  # class: the label deleted (checked against the data's classes)


@dataclass(frozen=True)
class RougheningConfig:
    """Protocol §5: held-out Hessian trace after training on flipped labels, per noise ratio."""

    experiment: str
    name: str
    models: dict[str, ModelSpec]
    noise_ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    dataset: str = "mnist"
    top_k: int = 5
    n_train_per_class: int = 175
    n_hessian_per_class: int = 50
    dataset_options: dict = field(default_factory=dict)
    trace_probes: int = 0  # 0: exact trace; n: Hutchinson with n probes (big models)


@dataclass(frozen=True)
class CurvatureConfig:
    """Hessian curvature of the retain, forget and validation losses before poisoning, after
    poisoning and every ``every`` epochs along unlearning, per model and method."""

    experiment: str
    name: str
    dataset: str
    models: dict[str, UnlearnSpec]
    methods: tuple[str, ...]
    alpha: float
    runs: int
    every: int  # snapshot the params every k unlearning epochs (and after the last)
    seed: int = 0
    method_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    n_val: int = 200  # validation examples in the validation loss (a seeded draw); 0 = all
    top_k: int = 3
    dense_max_params: int = 2000  # exact dense Hessian up to this many params, else SLQ
    lanczos_steps: int = 30  # per SLQ probe
    slq_probes: int = 8  # SLQ start vectors, also the Hutchinson trace probes
    hvp_batch: int = 16  # Hessian-vector products per vmapped call (dense columns, SLQ probes)
    snapshot_chunk: int = 4  # snapshots per vmapped curvature call (memory bound)
    density_points: int = 200  # grid of the broadened spectral density (density.csv)
    density_sigma: float = 0.01  # Gaussian broadening, a fraction of the spectral range
    # the QNN's arithmetic in the Hessian programs: "model" (its own dtype) or "complex64"
    hessian_dtype: str = "model"


@dataclass(frozen=True)
class EvalSpec(UnlearnSpec):
    """A model of an evaluation config: its Fig 3 set-up plus the ensemble sizes."""

    oracles: int = 64  # K: retrain oracles (fresh init and batch order each) on D_r; >= 2 T U
    teachers: int = 4  # T: teachers, each a new training seed on the same poisoning
    unlearn_seeds: int = 4  # U: unlearning runs per teacher and method (T x U models per method)


@dataclass(frozen=True)
class EvaluationConfig:
    """Did unlearning work: ensembles of unlearned models and of retrain oracles, compared per
    example (distances), attacked (membership inference) and their spread (stability)."""

    experiment: str
    name: str
    dataset: str
    models: dict[str, EvalSpec]
    methods: tuple[str, ...]
    alpha: float
    seed: int = 0
    noise: str = "label_flip"
    method_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    bins: int = 20  # histogram bins of the per-example distance
    forget: str = "poison"  # the forget request, as UnlearningConfig's
    known: float = 0.0
    forget_fraction: float = 0.0
    forget_class: int = -1
    # readouts of every QNN ensemble, as NoiseSweepConfig's (qunlearn.experiments.readouts): the
    # same params' margins with S shots per example, and under each circuit-noise model; every
    # score per readout (results.csv's readout column). MLPs have none.
    eval_shots: tuple[int, ...] = ()
    eval_circuit_noise: dict = field(default_factory=dict)
    eval_device_shots: tuple[int, ...] = ()
    eval_mitigate_readout: bool = False


CONFIG_TYPES: dict[str, type] = {
    "noise_sweep": NoiseSweepConfig,
    "unlearning": UnlearningConfig,
    "roughening": RougheningConfig,
    "curvature": CurvatureConfig,
    "evaluation": EvaluationConfig,
}


# Value checks, by field name, wherever the field occurs: ``check(where, value)`` returns the
# one-line message (problem: fix) or None. Types are checked before, by ``_convert``.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a file-name component, no separators


MAX_INT = 2**31 - 1  # every count here indexes arrays or keys: larger is a typo, not a request


def _at_least(low: int, high: int = MAX_INT, why: str = ""):
    def check(where, value):
        if value < low:
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            return f"{where} = {value} must be {what}: set it to {low} or more"
        if value > high:
            return f"{where} = {value} is more than {high:,}{why}: set it to at most {high:,}"
        return None

    return check


MAX_NAME = 64  # table and method names become cell file names (<= 255 bytes with the rest)


def _family(family):
    def check(where, value):
        return family.unknown(where, value)

    return check


def _positive_finite(where, value):
    if not (math.isfinite(value) and value > 0):
        return f"{where} = {value} must be a positive finite number: e.g. 0.01"
    return None


MAX_LR = 10.0  # Adam moves each weight by about lr per step: far above this every run diverges


def _learning_rate(where, value):
    if not (math.isfinite(value) and 0 < value <= MAX_LR):
        return (
            f"{where} = {value} must be a positive step size of at most {MAX_LR:g} (larger ones "
            "only diverge): e.g. 0.01"
        )
    return None


def _seed(where, value):
    if not 0 <= value < 2**63:
        return f"{where} = {value} must be in [0, 2**63): use a non-negative integer seed"
    return None


def _seeds(where, value):
    if not value:
        return f"{where} is empty: list at least one seed, e.g. [0, 42]"
    for seed in value:
        if not 0 <= seed < 2**32:
            return f"{where} has {seed}, outside [0, 2**32): use non-negative integer seeds"
    if len(set(value)) < len(value):
        return f"{where} lists a seed twice: list each seed once"
    return None


def _alphas(where, value):
    if not value:
        return f"{where} is empty: list at least one noise ratio, e.g. [0.0, 0.3]"
    for alpha in value:
        if not 0.0 <= alpha < 1.0:
            return f"{where} has {alpha}, outside [0, 1): use noise ratios 0 <= alpha < 1"
    seen: dict[str, float] = {}
    for alpha in value:  # cells are named by alpha to 3 decimals
        if f"{alpha:.3f}" in seen:
            return (
                f"{where} has {seen[f'{alpha:.3f}']} and {alpha}, the same to 3 decimals: "
                "list each noise ratio once"
            )
        seen[f"{alpha:.3f}"] = alpha
    return None


def _eval_shots(where, value):
    for shots in value:
        if not 1 <= shots <= 10**9:
            return f"{where} has {shots}: list positive shot counts, e.g. [100, 1000]"
    if len(set(value)) < len(value):
        return f"{where} lists a shot count twice: list each once"
    return None


def _eval_circuit_noise(where, value):
    for label, noise in value.items():
        if not re.fullmatch(r"[a-z0-9_]+", label):
            return f"{where}.{label}: name a noise model with a-z, 0-9 and _, e.g. torino"
        try:
            if isinstance(noise, str):  # a device's calibration snapshot, e.g. "fake_torino"
                from qunlearn.hardware import fake_backend

                fake_backend(noise)
            else:
                check_circuit_noise(noise)
        except QunlearnError as error:
            return f"{where}.{label}: {error}"
    return None


def _non_negative_finite(where, value):
    if not (math.isfinite(value) and value >= 0):
        return f"{where} = {value} must be a finite number >= 0: e.g. 0.0 (off) or 1e-2"
    return None


def _label_smoothing(where, value):
    if not 0.0 <= value < 1.0:
        return f"{where} = {value} must be in [0, 1): e.g. 0.0 (off) or 0.1"
    return None


def _trace_probes(where, value):
    if value == 1 or value < 0:
        return f"{where} = {value}: use 0 (exact trace) or at least 2 probes (a standard error)"
    return None


def _forget_alpha(where, value):
    # alpha = 0 is refused by _check_request, except for a clean_random request
    if not 0.0 <= value < 1.0:
        return _alpha_problem(where, value)
    return None


def _forget_class(where, value):
    # -1 is the default, "not given" (_check_request asks for it where forget = "class")
    if value < -1:
        return f"{where} = {value} must be an integer >= 0 (a class label): e.g. forget_class = 0"
    return None


def _alpha_problem(where, value) -> str:
    return (
        f"{where} = {value} must be in (0, 1): alpha = 0 leaves an empty forget set, "
        'so set e.g. alpha = 0.3 (or forget = "clean_random" with a forget_fraction)'
    )


FORGET_REQUESTS = ("poison", "clean_random", "poison_partial", "class")


def _share(what: str, *, closed: bool):
    """A share in (0, 1] (``closed``) or (0, 1); 0.0 passes here: it means "not given", which
    :func:`_check_request` tells from a given 0 by the request."""
    interval = "(0, 1]" if closed else "(0, 1)"

    def check(where, value):
        if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
            return _share_problem(where, value, what, interval)
        return None

    return check


def _share_problem(where, value, what: str, interval: str) -> str:
    return f"{where} = {value} must be in {interval}: {what}"


def _names(what: str, *, allow_empty: bool = False, alias: str = ""):
    """``alias``: the table through which a reference gets a name (``method_options``)."""

    def check(where, value):
        if not value and not allow_empty:
            return f"{where} is empty: list at least one {what}"
        names = list(value)
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            return f"{where} lists {duplicated[0]!r} twice: list each {what} once"
        for i, name in enumerate(names):
            if not _SAFE_NAME.fullmatch(name):
                if alias and is_reference(name):
                    key = alias.removesuffix("_options")
                    return (
                        f"{where}[{i}] = {name!r}: a reference needs a name (it names result "
                        f'files): list "mine" and add {alias}.mine = {{ {key} = "{name}" }}'
                    )
                return (
                    f"{where}[{i}]: {what} name {name!r} cannot name a file: use letters, "
                    "digits, '_', '-' and '.'"
                )
            if len(name) > MAX_NAME:
                return (
                    f"{where}: {what} name {name[:20]!r}... has {len(name)} characters: use "
                    f"at most {MAX_NAME}"
                )
        return None

    return check


def _safe_name(where, value):
    if not _SAFE_NAME.fullmatch(value):
        return (
            f"{where} = {value!r} cannot name a results directory: use letters, digits, '_', "
            "'-' and '.'"
        )
    if len(value) > 100:
        return f"{where} has {len(value)} characters: use at most 100"
    return None


def _one_of(*options):
    def check(where, value):
        if value not in options:
            hint = did_you_mean(value, options)
            return f"{where} = {value!r}{hint} must be one of {list(options)}"
        return None

    return check


CHECKS = {
    "name": _safe_name,
    "models": _names("model table"),
    "noises": _names("noise", alias="noise_options"),  # members or aliases: _check_noises
    "dataset": _family(DATASETS),
    "model": _family(MODELS),
    # a sweep-only unlearning config has no methods; sweep keys name cell files too
    "methods": _names("method", allow_empty=True, alias="method_options"),
    "sweep": _names("swept method", allow_empty=True, alias="method_options"),
    "alphas": _alphas,
    "noise_ratios": _alphas,
    "top_k": _at_least(1, 100_000),
    "trace_probes": _trace_probes,
    "n_train_per_class": _at_least(1, 10_000_000),
    "n_hessian_per_class": _at_least(1, 10_000_000),
    "alpha": _forget_alpha,
    "forget": _one_of(*FORGET_REQUESTS),
    "known": _share("the identified share of the poison, e.g. known = 0.5", closed=True),
    "forget_fraction": _share("the share of clean samples to forget, e.g. 0.1", closed=False),
    "forget_class": _forget_class,
    "runs": _at_least(1, 100_000, " runs per cell"),
    "seed": _seed,
    "seeds": _seeds,
    "eval_shots": _eval_shots,
    "eval_circuit_noise": _eval_circuit_noise,
    "eval_device_shots": _eval_shots,
    "epochs": _at_least(1, 1_000_000),
    "batch_size": _at_least(1, 10_000_000),
    "lr": _learning_rate,
    "unlearn_epochs": _at_least(1, 1_000_000),
    "unlearn_batch_size": _at_least(0, 10_000_000),
    "run_chunk": _at_least(0, 100_000),
    "unlearn_lr": _learning_rate,
    "sweep_chunk": _at_least(1, 1_000_000),
    "every": _at_least(1, 1_000_000),
    "n_val": _at_least(0),
    "dense_max_params": _at_least(0),
    "lanczos_steps": _at_least(1, 100_000),
    "slq_probes": _at_least(2, 100_000),
    "hvp_batch": _at_least(1, 100_000),
    "snapshot_chunk": _at_least(1, 100_000),
    "density_points": _at_least(2, 1_000_000),
    "density_sigma": _positive_finite,
    "oracles": _at_least(4, 100_000, " oracles"),  # two halves of 2+, leave-one-out fits
    "teachers": _at_least(1, 100_000),
    "unlearn_seeds": _at_least(1, 100_000),
    "bins": _at_least(2, 10_000),
    "weight_decay": _non_negative_finite,
    "label_smoothing": _label_smoothing,
    "input": _one_of("native", "realified"),
    "batching": _one_of(*BATCHINGS),
    "devices": _one_of("one", "all"),
    "hessian_dtype": _one_of("model", "complex64"),
    "sweep_dtype": _one_of("model", "complex64"),
}


_TYPES = {  # kind: (what, an example in TOML)
    "table": ("a table", "{ key = value } or a [section]"),
    "list": ("a list", "[0.0, 0.3]"),
    "number": ("a number", "0.3"),
    "integer": ("an integer", "2"),
    "bool": ("true or false", "true"),
    "string": ("a string", '"text"'),
}


def _is_toml(value) -> bool:
    """Whether ``value`` is a string holding a TOML non-string value, e.g. "2"."""
    try:
        return isinstance(value, str) and not isinstance(tomllib.loads(f"v = {value}")["v"], str)
    except tomllib.TOMLDecodeError:
        return False


def _wrong_type(where: str, kind: str, value) -> QunlearnError:
    what, example = _TYPES[kind]
    hint = " (a quoted string: drop the quotes)" if kind != "string" and _is_toml(value) else ""
    return QunlearnError(f"{where} must be {what}, got {value!r}{hint}: write it like {example}")


def _convert(value, tp, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _wrong_type(where, "table", value)
        return build(tp, value, where)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _wrong_type(where, "list", value)
        return tuple(_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise _wrong_type(where, "table", value)
        return {k: _convert(v, item_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, Mapping):
            raise _wrong_type(where, "table", value)
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(where, "number", value)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(where, "integer", value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong_type(where, "bool", value)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _wrong_type(where, "string", value)
        return value
    raise TypeError(f"unsupported config type {tp} at {where}")  # programming error


def build(cls, data: Mapping, where: str = "config"):
    """Build the frozen dataclass ``cls`` from a mapping, checking keys and types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise QunlearnError(
                f"unknown key {where}.{key}{did_you_mean(key, fields)}: valid keys are "
                f"{sorted(fields)}"
            )
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{where}.{name}")
            check = CHECKS.get(name)
            problem = check and check(f"{where}.{name}", values[name])
            if problem:
                raise QunlearnError(problem)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise QunlearnError(f"missing key {where}.{name}: add it to the config")
    if "run_chunk" in fields and "run_chunk" not in data and "model" in values:
        values["run_chunk"] = default_run_chunk(values["model"])
    config = cls(**values)
    if cls in VALIDATE:
        VALIDATE[cls](config)
    if cls in CONFIG_TYPES.values() and cls not in (NoiseSweepConfig, UnlearningConfig):
        _refuse_shots(config)
    return config


def _refuse_shots(config) -> None:
    """Finite shots (hyper ``shots``/``gradient``) reach the noise sweep and the unlearning kind
    only (there: teacher training and the methods whose objective samples, ``Method.sampled``):
    the oracle ensembles, Hessians and roughening here would silently stay exact."""
    models = getattr(config, "models", None)
    for name, spec in models.items() if isinstance(models, Mapping) else ():
        used = [k for k in SHOT_HYPER if k in (getattr(spec, "hyper", None) or {})]
        if used:
            raise QunlearnError(
                f"models.{name}.hyper.{used[0]}: finite shots are wired into the noise_sweep "
                f"and unlearning experiments only: remove it from this {config.experiment} "
                "config"
            )


MAX_SWEEP_POINTS = 10_000  # a 10^6-point grid started without complaint and ran for hours
RESERVED_OPTIONS = set(RESERVED)  # set from the model's unlearn_* settings


def resolve_method(method_options: dict, name: str) -> tuple[str, dict]:
    """(base method, options) for a configured method name; ``method_options[name].method`` makes
    an alias, e.g. ``ga_true = {method = "gradient_ascent", labels = "true"}``."""
    options = dict(method_options.get(name, {}))
    return options.pop("method", name), options


def _check_request(config) -> None:
    """The forget request against alpha and its own options (curvature configs have none: they
    forget the poison)."""
    forget = getattr(config, "forget", "poison")
    known, fraction = getattr(config, "known", 0.0), getattr(config, "forget_fraction", 0.0)
    if forget == "poison_partial" and config.alpha == 0:
        raise QunlearnError(
            'forget = "poison_partial" forgets part of the poison, but alpha = 0 poisons '
            "nothing: set e.g. alpha = 0.3"
        )
    forget_class = getattr(config, "forget_class", -1)
    if forget == "class":
        if config.alpha != 0:
            raise QunlearnError(
                f'forget = "class" deletes a class from clean data, but alpha = {config.alpha}: '
                "set alpha = 0"
            )
        if forget_class < 0:
            raise QunlearnError(
                'forget = "class" needs the class to delete: set forget_class, e.g. '
                "forget_class = 0"
            )
    elif forget_class >= 0:
        raise QunlearnError(
            f'config.forget_class = {forget_class} is an option of forget = "class" only '
            f'(forget = "{forget}" here): drop it or set forget = "class"'
        )
    if config.alpha == 0 and forget not in ("clean_random", "class"):
        raise QunlearnError(_alpha_problem("config.alpha", config.alpha))
    for key, value, owner in (
        ("known", known, "poison_partial"),
        ("forget_fraction", fraction, "clean_random"),
    ):
        if value != 0 and forget != owner:
            raise QunlearnError(
                f'config.{key} = {value} is an option of forget = "{owner}" only (forget = '
                f'"{forget}" here): drop it or set forget = "{owner}"'
            )
    if forget == "poison_partial" and known == 0:
        raise QunlearnError(
            _share_problem(
                "config.known",
                known,
                'forget = "poison_partial" needs the identified share of the poison, e.g. '
                "known = 0.5",
                "(0, 1]",
            )
        )
    if forget == "clean_random" and config.alpha == 0 and fraction == 0:
        raise QunlearnError(
            'forget = "clean_random" with alpha = 0 has no poison set to match in size: set '
            "forget_fraction, e.g. forget_fraction = 0.1"
        )


def _check_unlearning(config) -> None:
    """Whole-config checks of the Fig 3 set-up (unlearning and curvature configs)."""
    _check_request(config)
    noise = getattr(config, "noise", "label_flip")
    if noise != "label_flip":
        raise QunlearnError(
            f"unlearning needs noise = 'label_flip' (the forget set is the flipped "
            f"samples), got {noise!r}"
        )
    sweep = getattr(config, "sweep", {})
    if not config.methods and not hasattr(config, "sweep"):
        raise QunlearnError(
            'methods is empty: list at least one unlearning method, e.g. methods = ["finetune"]'
        )
    if not config.methods and not sweep:
        raise QunlearnError("nothing to run: list `methods` or add a [sweep] table")
    # unused options are fine, an unlisted alias (a table with `method`) too: a command line
    # that narrows `methods` keeps the config's other definitions; any other name is a typo
    aliases = {n for n, o in config.method_options.items() if isinstance(o, dict) and "method" in o}
    known = set(config.methods) | set(sweep) | set(METHODS) | aliases
    for name in config.method_options:
        if name not in known:
            raise QunlearnError(
                f"method_options.{name}{did_you_mean(name, known)} names no method in "
                f"`methods`, [sweep] or {sorted(METHODS)}: fix the name or drop the table"
            )
    for name, axes in sweep.items():
        if (
            not isinstance(axes, dict)
            or not axes
            or not all(isinstance(v, list) and v for v in axes.values())
        ):
            raise QunlearnError(
                f"sweep.{name} must map option names to non-empty lists, e.g. fo_w = [0.0, 0.1]"
            )
        points = math.prod(len(values) for values in axes.values())
        if points > MAX_SWEEP_POINTS:
            shape = " x ".join(str(len(v)) for v in axes.values())
            raise QunlearnError(
                f"sweep.{name} has {points:,} grid points ({shape}), more than "
                f"{MAX_SWEEP_POINTS:,}, each a full unlearning run per run: sweep a coarser grid "
                "(the paper's is 10 x 10)"
            )
        for option, values in axes.items():
            seen = [v for i, v in enumerate(values) if v in values[:i]]
            if seen:
                raise QunlearnError(
                    f"sweep.{name}.{option} lists {seen[0]!r} twice: list each value once"
                )
        if RESERVED_OPTIONS & set(axes):
            raise QunlearnError(
                f"sweep.{name} cannot sweep {sorted(RESERVED_OPTIONS & set(axes))}:"
                " sweep the method's loss weights (e.g. kl_w, fo_w)"
            )
    listed = [(f"methods[{i}]", name) for i, name in enumerate(config.methods)]
    for where, name in [*listed, *((f"sweep.{name}", name) for name in sweep)]:
        base, options = resolve_method(config.method_options, name)
        problem = (
            METHODS.unknown(f"method_options.{name}.method", base)
            if base != name
            else METHODS.unknown(  # a name of the list: a user's method gets an alias table
                where, base, f'in method_options.{name} = {{ method = "package.module:callable" }}'
            )
        )
        if problem:
            raise QunlearnError(problem)
        if RESERVED_OPTIONS & set(options):
            raise QunlearnError(
                f"method_options.{name} cannot set "
                f"{sorted(RESERVED_OPTIONS & set(options))}: they come from the "
                "model's unlearn_* settings"
            )


def resolve_noise(noise_options: dict, name: str) -> tuple[str, dict]:
    """(noise kind, options) for a name in ``noises``; ``noise_options[name].noise`` makes an
    alias, e.g. ``mine = { noise = "mypkg.poison:swap", strength = 0.5 }``."""
    options = dict(noise_options.get(name, {}))
    return options.pop("noise", name), options


def _check_noises(config) -> None:
    aliases = {n for n, o in config.noise_options.items() if isinstance(o, dict) and "noise" in o}
    known = set(config.noises) | set(NOISE) | aliases  # as for methods
    for name, options in config.noise_options.items():
        if name not in known:
            raise QunlearnError(
                f"noise_options.{name}{did_you_mean(name, known)} names no noise in "
                f"`noises` {list(config.noises)}: add it there or drop the table"
            )
        if not isinstance(options, dict):
            raise QunlearnError(
                f'noise_options.{name} must be a table, e.g. {{ noise = "mypkg.poison:swap" }}'
            )
    for i, name in enumerate(config.noises):
        kind, _ = resolve_noise(config.noise_options, name)
        problem = (
            NOISE.unknown(f"noise_options.{name}.noise", kind)
            if kind != name
            else NOISE.unknown(
                f"noises[{i}]", kind, f'in noise_options.{name} = {{ noise = "package.module:fn" }}'
            )
        )
        if problem:
            raise QunlearnError(problem)


def _check_readouts(config) -> None:
    """The device readouts' keys (``eval_device_shots``, ``eval_mitigate_readout``) read out the
    ``eval_circuit_noise`` models; :func:`qunlearn.experiments.readouts.check_readouts`."""
    from qunlearn.experiments.readouts import check_readouts

    check_readouts(config)


def _check_sweep(config) -> None:
    _check_noises(config)
    _check_readouts(config)


def _check_evaluation(config) -> None:
    _check_unlearning(config)
    _check_readouts(config)
    if (config.eval_shots or config.eval_circuit_noise) and not any(
        spec.model in QNN_MODELS for spec in config.models.values()
    ):
        key = "eval_shots" if config.eval_shots else "eval_circuit_noise"
        raise QunlearnError(
            f"config.{key} reads out QNNs (shots, circuit noise), but no model here is one of "
            f"{sorted(QNN_MODELS)}: drop {key} or add a QNN model table"
        )
    for name, spec in config.models.items():
        # both sizes in one line: raising teachers alone would only reveal the oracles' bound
        problems, teachers = [], spec.teachers
        if teachers < 3:
            problems.append(
                f"models.{name}.teachers = {teachers}: the teachers are an ensemble too (no "
                "unlearning), and the leave-one-out attack needs 3 or more models per method; "
                "use 3 or more"
            )
            teachers = 3  # the oracles' bound below is the one the fixed config must meet
        group = teachers * spec.unlearn_seeds  # >= 3, as unlearn_seeds >= 1
        if spec.oracles < 2 * group:
            # the null band draws T x U oracles posing as a group against the other K - T x U
            # (at least as many): fewer oracles would shrink that group below the real ones
            problems.append(
                f"models.{name}.oracles = {spec.oracles} is too few for the null band of "
                f"teachers x unlearn_seeds = {group} models against as many other oracles: use "
                f"oracles >= {2 * group} (or fewer teachers or unlearn_seeds)"
            )
        if problems:
            raise QunlearnError("; and ".join(problems))


VALIDATE = {
    NoiseSweepConfig: _check_sweep,
    UnlearningConfig: _check_unlearning,
    CurvatureConfig: _check_unlearning,
    EvaluationConfig: _check_evaluation,
}
"""Checks of a whole config, after every field passed its own (:data:`CHECKS`)."""


def parse_override(text: str) -> tuple[str, object]:
    """``"models.qnn.epochs=10"`` -> ``("models.qnn.epochs", 10)`` (the value is read as TOML)."""
    if "=" not in text:
        raise QunlearnError(f"override {text!r} must look like key.path=value, e.g. runs=2")
    key, raw = text.split("=", 1)
    if not key.strip() or "" in key.strip().split("."):
        raise QunlearnError(
            f"override {text!r} has an empty key: write key.path=value, e.g. runs=2"
        )
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return key.strip(), value


def apply_override(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = data
    for i, part in enumerate(parents):
        if part not in node:
            where = ".".join(parents[: i + 1])
            raise QunlearnError(
                f"override {dotted!r}: no table {where!r}{did_you_mean(part, node)}; "
                f"the keys there are {sorted(node)}"
            )
        node = node[part]
        if not isinstance(node, dict):
            raise QunlearnError(
                f"override {dotted!r}: {part!r} is a value, not a table: override {part!r} itself"
            )
    node[last] = value


def select_models(data: dict, names) -> None:
    """Keep only the ``[models.NAME]`` tables listed in ``names`` (in place), e.g. the QNN half of a
    figure; unknown names fail with the tables there are."""
    tables = data.get("models")
    if not isinstance(tables, dict) or not tables:
        raise QunlearnError("--models: this config has no [models.NAME] tables to choose from")
    unknown = [n for n in names if n not in tables]
    if unknown:
        raise QunlearnError(
            f"--models: no table [models.{unknown[0]}] in the config"
            f"{did_you_mean(unknown[0], tables)}; its model tables are {', '.join(tables)}"
        )
    if not names:
        raise QunlearnError("--models: name at least one model table, e.g. --models qnn")
    for name in list(tables):
        if name not in names:
            del tables[name]


DEVICE_SETTINGS = ("one", "all")


def with_devices(config, devices: str):
    """``config`` with every model's ``devices`` set to ``devices`` (``--devices``): ``"all"``
    splits each cell's runs over every local device. Execution only: the hash stays."""
    if devices not in DEVICE_SETTINGS:
        raise QunlearnError(
            f"--devices {devices!r}{did_you_mean(devices, DEVICE_SETTINGS)} must be one of "
            f"{list(DEVICE_SETTINGS)}: e.g. --devices all"
        )
    specs = getattr(config, "models", {})
    if not all(hasattr(spec, "devices") for spec in specs.values()):
        raise QunlearnError(
            f"--devices: {config.experiment} configs run each cell on one device for now (noise "
            "sweeps and roughening split their runs): drop --devices"
        )
    models = {name: dataclasses.replace(spec, devices=devices) for name, spec in specs.items()}
    return dataclasses.replace(config, models=models)


def load_config(path: str | os.PathLike, overrides=(), *, tiny: bool = False, models=None):
    """Read a TOML config (a file, or the name of a shipped one: see ``shipped.find_config``),
    apply ``[tiny]`` (if ``tiny``) then ``overrides``, keep only the model tables named in
    ``models`` (all when None), and validate it."""
    from qunlearn.experiments.shipped import find_config

    file = find_config(path)  # the file, or a shipped config's resource
    try:
        # utf-8-sig: a byte-order mark (some Windows editors write one) is not part of the TOML
        data = tomllib.loads(file.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as err:
        raise QunlearnError(f"config {file} is not valid TOML: {err}; fix the file there") from None
    except UnicodeDecodeError:
        raise QunlearnError(f"config {file} is not UTF-8 text: pass a .toml file") from None
    except OSError as err:
        raise QunlearnError(f"cannot read config {file}: {err.strerror}; check the path") from None
    return config_from_data(data, f"config {file}", overrides, tiny=tiny, models=models)


def config_from_data(
    data: dict, source: str = "the config", overrides=(), *, tiny: bool = False, models=None
):
    """:func:`load_config` of a TOML file's content already read (a dict of its keys and
    tables, as a notebook may write it); ``source`` names it in errors. ``data`` is not
    changed."""
    data = copy.deepcopy(data)
    tiny_table = data.pop("tiny", {})
    if tiny and not tiny_table:
        raise QunlearnError(
            f"{source} has no [tiny] table: add one, or drop --tiny (tiny=True in Python)"
        )
    if not isinstance(tiny_table, dict):
        raise QunlearnError(f"{source}: tiny must be a table of dotted overrides")
    for dotted, value in tiny_table.items() if tiny else ():
        apply_override(data, dotted, value)
    given: dict[str, str] = {}
    for text in overrides:
        key, value = parse_override(text)
        if key in given:
            raise QunlearnError(
                f"override {key!r} is given twice ({given[key]!r} and {text!r}): keep the one you "
                "mean"
            )
        given[key] = text
        apply_override(data, key, value)
    if models is not None:
        select_models(data, list(models))
    kind = data.get("experiment")
    if kind is not None and not isinstance(kind, str):
        raise _wrong_type("config.experiment", "string", kind)
    if kind is None:
        raise QunlearnError(
            f'{source} has no experiment key: start it with experiment = "noise_sweep" '
            f"(or one of {sorted(CONFIG_TYPES)})"
        )
    if kind not in CONFIG_TYPES:
        raise QunlearnError(
            f"{source}: experiment = {kind!r}{did_you_mean(str(kind), CONFIG_TYPES)} is not "
            f"one of {sorted(CONFIG_TYPES)}"
        )
    return build(CONFIG_TYPES[kind], data)


def check(config) -> None:
    """Every check :func:`build` makes, for a config built some other way (e.g. a dataclass made
    in Python): the library runs this before anything else, so checks live here only."""
    build(type(config), to_dict(config))


def to_dict(config) -> dict:
    """JSON-ready dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


# Left out of the config hash, so a results directory still resumes:
# - fields that choose how a run is scheduled, not what it computes (tests prove the numbers equal);
# - fields added after results format 1, while at their default (directories written before they
#   existed hold exactly those results).
EXECUTION_ONLY = frozenset({"run_chunk", "devices"})
ADDED_WITH_DEFAULT = {
    "batching": "epoch",
    "trace_probes": 0,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "hessian_dtype": "model",
    "sweep_dtype": "model",
    "noise_options": {},
    "forget": "poison",
    "known": 0.0,
    "forget_fraction": 0.0,
    "eval_shots": [],
    "eval_circuit_noise": {},
    "eval_device_shots": [],
    "eval_mitigate_readout": False,
}


QNN_MODELS = frozenset({"qnn", "qnn_cnot"})


def default_run_chunk(model: str, backend: str | None = None) -> int:
    """``run_chunk`` of a model table that does not set it, by JAX backend (default: the one in
    use). CPU: 1 for a QNN (one run at a time keeps its states in cache: 2x faster steps,
    bench/bench_qnn_kernel.py), 0 otherwise; GPU and TPU: 0 (every run in one vmap fills the
    device). Execution only: the numbers and the config hash do not depend on it."""
    if backend is None:
        import jax

        backend = jax.default_backend()
    return 1 if backend == "cpu" and model in QNN_MODELS else 0


def _hashed_part(value):
    if isinstance(value, dict):
        return {
            k: _hashed_part(v)
            for k, v in value.items()
            if k not in EXECUTION_ONLY
            and not (k in ADDED_WITH_DEFAULT and v == ADDED_WITH_DEFAULT[k])
        }
    return value


def config_hash(config) -> str:
    """Hash of everything in the config that can change a result."""
    resolved = _hashed_part(to_dict(config))
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]
