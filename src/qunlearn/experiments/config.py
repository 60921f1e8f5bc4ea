"""Typed, frozen experiment configs read from TOML, with dotted command-line overrides.

A config file names its ``experiment`` kind; :data:`CONFIG_TYPES` maps the kind to a frozen
dataclass. Unknown keys, wrong types and bad values fail with one line naming the key and the fix.
A ``[tiny]`` table of dotted overrides is applied by ``--tiny`` (smoke runs).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qunlearn.errors import QunlearnError


@dataclass(frozen=True)
class ModelSpec:
    """A model and how to train it."""

    model: str
    epochs: int
    batch_size: int
    lr: float
    hyper: dict = field(default_factory=dict)


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


@dataclass(frozen=True)
class UnlearnSpec:
    """How one model's teacher is made and how it is unlearned."""

    model: str
    epochs: int
    batch_size: int
    lr: float
    unlearn_epochs: int
    unlearn_batch_size: int  # 0 = the whole retain set each step
    unlearn_lr: float
    hyper: dict = field(default_factory=dict)
    input: str = "native"  # "native" or "realified" ([Re; Im] amplitudes, one more qubit)


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


CONFIG_TYPES: dict[str, type] = {
    "noise_sweep": NoiseSweepConfig,
    "unlearning": UnlearningConfig,
}


def _did_you_mean(name: str, options) -> str:
    hint = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _convert(value, tp, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise QunlearnError(f"{where} must be a table, got {value!r}")
        return build(tp, value, where)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise QunlearnError(f"{where} must be a list, got {value!r}")
        return tuple(_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise QunlearnError(f"{where} must be a table, got {value!r}")
        return {k: _convert(v, item_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, Mapping):
            raise QunlearnError(f"{where} must be a table, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise QunlearnError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise QunlearnError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise QunlearnError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise QunlearnError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {where}")  # programming error


def build(cls, data: Mapping, where: str = "config"):
    """Build the frozen dataclass ``cls`` from a mapping, checking keys and types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise QunlearnError(
                f"unknown key {where}.{key}{_did_you_mean(key, fields)}: valid keys are "
                f"{sorted(fields)}"
            )
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise QunlearnError(f"missing key {where}.{name}: add it to the config")
    return cls(**values)


def parse_override(text: str) -> tuple[str, object]:
    """``"models.qnn.epochs=10"`` -> ``("models.qnn.epochs", 10)`` (the value is read as TOML)."""
    if "=" not in text:
        raise QunlearnError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
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
                f"override {dotted!r}: no table {where!r}{_did_you_mean(part, node)}"
            )
        node = node[part]
        if not isinstance(node, dict):
            raise QunlearnError(f"override {dotted!r}: {part!r} is not a table")
    node[last] = value


def load_config(path: str | Path, overrides=(), *, tiny: bool = False):
    """Read a TOML config, apply ``[tiny]`` (if ``tiny``) then ``overrides``, and validate it."""
    path = Path(path)
    if not path.is_file():
        raise QunlearnError(f"config file {str(path)!r} not found: pass the path of a .toml file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise QunlearnError(f"config {path} is not valid TOML: {err}") from None
    tiny_table = data.pop("tiny", {})
    for dotted, value in (tiny_table.items() if tiny else ()):
        apply_override(data, dotted, value)
    for text in overrides:
        apply_override(data, *parse_override(text))
    kind = data.get("experiment")
    if kind not in CONFIG_TYPES:
        raise QunlearnError(
            f"config {path}: experiment = {kind!r}{_did_you_mean(str(kind), CONFIG_TYPES)} is not "
            f"one of {sorted(CONFIG_TYPES)}"
        )
    return build(CONFIG_TYPES[kind], data)


def to_dict(config) -> dict:
    """JSON-ready dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(config) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:16]

