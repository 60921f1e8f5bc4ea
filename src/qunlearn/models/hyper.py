"""Type and range checks of every model hyperparameter, run by ``make_model`` before any work.

No value is coerced: ``hidden = [4.5]`` is refused, not trained as ``[4]``. Rules:

* an integer is a Python or numpy integer, never a bool or a float (``depth = 6.0`` is refused);
* a number is an integer or a float, finite, and in its range (``scale`` > 0, ``init_std`` ≥ 0);
* a string is one of its listed values (``dtype``, ``readout``);
* a list is a list or tuple of its items (a bare ``hidden = 64`` is refused, not wrapped).

A failure is one line naming the key and the fix, e.g.
``hyper.hidden[0] = 4.5 must be a positive integer: write hidden = [64, 16]``.
:data:`CHECKS` names a check for every keyword of every factory in ``MODELS`` (a test holds it
to that). Ranges that need the data's shape (``readout_qubit`` against the qubit count, the
qubit count against the input dimension) are checked by the factories.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from qunlearn.errors import QunlearnError, did_you_mean
from qunlearn.models.circuit_noise import check_circuit_noise, resolve_simulator
from qunlearn.models.mlp import DTYPES as MLP_DTYPES
from qunlearn.models.qnn import DTYPES, READOUT_DTYPES, READOUTS, SIMULATORS

MAX_DEPTH = 1000
"""Deepest QNN accepted: the layers are unrolled into the compiled program (and planned one by
one), so compile time grows with depth; the study uses depth 4 to 6."""

MAX_MLP_LAYERS = 64
"""Most hidden layers accepted: layers are unrolled into the compiled program too (10,000 layers of
width 4 compiled for over 10 min and 11 GiB before it was stopped); the study uses 2."""

Check = Callable[[str, object], str | None]  # (key, value) -> error text without "hyper.", or None


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


def _integer(lo: int, hi: int | None, example) -> Check:
    what = f"an integer in [{lo}, {hi}]"
    if hi is None:
        what = "a positive integer" if lo == 1 else f"an integer >= {lo}"

    def check(key, value):
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            return f"{key} = {value!r} must be {what}: write {key} = {example}"
        return None

    return check


def _optional_integer(lo: int, fix: str) -> Check:
    def check(key, value):
        if value is not None and (not _is_int(value) or value < lo):
            return f"{key} = {value!r} must be a positive integer: {fix}"
        return None

    return check


def _any_integer(fix: str) -> Check:
    def check(key, value):
        if not _is_int(value):
            return f"{key} = {value!r} must be an integer: {fix}"
        return None

    return check


def _number(lo: float, strict: bool, example) -> Check:
    what = f"a finite number {'>' if strict else '≥'} {lo:g}"

    def check(key, value):
        ok = _is_number(value) and math.isfinite(value)
        if not ok or (value <= lo if strict else value < lo):
            return f"{key} = {value!r} must be {what}: write {key} = {example}"
        return None

    return check


def _optional_positive(example) -> Check:
    def check(key, value):
        if value is None:
            return None
        if not (_is_number(value) and math.isfinite(value) and value > 0):
            return f"{key} = {value!r} must be a number > 0 or left out: write {key} = {example}"
        return None

    return check


def _one_of(options, what: str) -> Check:
    def check(key, value):
        if not isinstance(value, str) or value not in options:
            hint = did_you_mean(value, options) if isinstance(value, str) else ""
            return f"{key} = {value!r} is not a {what}{hint}: choose one of {list(options)}"
        return None

    return check


def _positive_int_list(example: str, max_len: int) -> Check:
    def check(key, value):
        if not isinstance(value, list | tuple):
            return f"{key} = {value!r} must be a list of positive integers: write {key} = {example}"
        if len(value) > max_len:
            return (
                f"{key} has {len(value):,} layers, more than {max_len} (each is unrolled into the "
                f"compiled program): write {key} = {example}"
            )
        for i, item in enumerate(value):
            if not _is_int(item) or item < 1:
                return f"{key}[{i}] = {item!r} must be a positive integer: write {key} = {example}"
        return None

    return check


def _circuit_noise(key, value):
    try:
        check_circuit_noise(value)
    except QunlearnError as err:  # its messages start "circuit_noise...", as a check's do
        return str(err)
    return None


def _qnn_checks(depth: int) -> dict[str, Check]:
    return {
        "depth": _integer(1, MAX_DEPTH, depth),
        "n_qubits": _optional_integer(1, "leave it out (it is read from the data's dimension)"),
        "readout_qubit": _any_integer("write readout_qubit = -1 (the last qubit)"),
        "scale": _number(0.0, True, 5.0),
        "dtype": _one_of(tuple(DTYPES), "QNN dtype"),
        "init_std": _number(0.0, False, 0.01),
        "readout": _one_of(READOUTS, "QNN readout"),
        "readout_dtype": _one_of(READOUT_DTYPES, "QNN readout dtype"),
        "circuit_noise": _circuit_noise,
        "simulator": _one_of(SIMULATORS, "QNN simulator"),
        "n_classes": _integer(2, None, 3),
    }


CHECKS: dict[str, dict[str, Check]] = {
    "mlp": {
        "hidden": _positive_int_list("[64, 16]", MAX_MLP_LAYERS),
        "bound": _optional_positive(5.0),
        "dtype": _one_of(tuple(MLP_DTYPES), "valid MLP dtype"),
        "n_classes": _integer(2, None, 3),
    },
    "qnn": _qnn_checks(6),
    "qnn_cnot": _qnn_checks(5),
}
"""model name -> {hyperparameter: check}; every factory keyword has one."""


def check_hyper(name: str, hyper: dict) -> None:
    """Refuse the first hyperparameter of model ``name`` of the wrong type or out of range."""
    checks = CHECKS[name]
    for key, value in hyper.items():
        error = checks[key](key, value)
        if error is not None:
            raise QunlearnError(f"hyper.{error}")
    if "circuit_noise" in checks:  # the pair: a state vector cannot carry noise
        try:
            resolve_simulator(hyper.get("simulator", "auto"), hyper.get("circuit_noise"))
        except QunlearnError as err:
            raise QunlearnError(f"hyper.{err}") from None
    if hyper.get("n_classes", 2) > 2:
        # what only a binary QNN has: a noisy or density-matrix readout, the linear readout
        binary_only = {
            "circuit_noise": hyper.get("circuit_noise") is not None,
            "simulator": hyper.get("simulator") == "density_matrix",
            "readout": hyper.get("readout", "sigmoid") != "sigmoid",
        }
        for key, used in binary_only.items():
            if key in checks and used:
                raise QunlearnError(
                    f"hyper.{key} = {hyper[key]!r} is for binary models; a model with "
                    f"n_classes = {hyper['n_classes']} reads a softmax of its qubits' ⟨Z⟩ from "
                    f"the exact state: leave {key} out"
                )
