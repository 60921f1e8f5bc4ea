"""Up-front checks of dataset options (``dataset_options`` in a config, keyword arguments of the
loaders). Each failure is one line that names ``dataset_options.<key>`` and what it must be; bools
are not integers and floats are not integers (``n_spins = 12.0`` is refused, not truncated)."""

from __future__ import annotations

import math
import os

import numpy as np

from qunlearn.errors import QunlearnError, did_you_mean


def _got(value) -> str:
    return f"got {value!r} ({type(value).__name__})"


def check_int(key: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int, refused unless an integer (not a bool) in [minimum, maximum]."""
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise QunlearnError(f"dataset_options.{key} must be an integer {bound}, {_got(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        raise QunlearnError(f"dataset_options.{key} must be an integer {bound}, got {value}")
    return int(value)


def check_real(key: str, value) -> float:
    """``value`` as a float, refused unless a finite real number (an int is fine, a bool not)."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise QunlearnError(f"dataset_options.{key} must be a finite number, {_got(value)}")
    if not math.isfinite(float(value)):
        raise QunlearnError(f"dataset_options.{key} must be a finite number, got {value!r}")
    return float(value)


def check_choice(key: str, value, choices) -> str:
    """``value`` if it is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        names = [repr(c) for c in choices]
        allowed = " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise QunlearnError(f"dataset_options.{key} must be {allowed}, {_got(value)}{hint}")
    return value


def check_path(key: str, value) -> None:
    """None or a path (str or os.PathLike)."""
    if value is not None and not isinstance(value, str | os.PathLike):
        raise QunlearnError(f"dataset_options.{key} must be a path (a string), {_got(value)}")


def check_classes(
    key: str, value, maximum: int, what: str, example: str, count: int | None = None
) -> tuple[int, ...]:
    """Different integers in [0, maximum] (label 0's, label 1's, ...), ``count`` of them (any
    number ≥ 2 if None), else one line naming ``dataset_options.<key>``, ``what`` they are and
    an ``example``."""
    ok = isinstance(value, list | tuple) and len(value) >= 2
    ok = ok and (count is None or len(value) == count)
    ok = ok and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
    if not ok or not all(0 <= v <= maximum for v in value) or len(set(value)) != len(value):
        many = "two" if count == 2 else "at least two"
        raise QunlearnError(
            f"dataset_options.{key} must be {many} different {what} (label 0's, label 1's, ...), "
            f"got {value!r}: e.g. {key} = {example}"
        )
    return tuple(int(v) for v in value)
