"""Plumbing shared by the dataset loaders: the ``Dataset`` record, cache directory, checksums and
atomic ``.npz`` files with a JSON sidecar.

A cached array file ``NAME.npz`` is always accompanied by ``NAME.json`` holding its SHA-256 and a
description of how it was made; a file whose checksum does not match is treated as missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qunlearn.atomic import atomic_write_bytes
from qunlearn.errors import QunlearnError

_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set of C classes (C = 2: binary), class-sorted in equal blocks (all
    label 0, then as many label 1, ...; :func:`qunlearn.data.check_loaded` is the contract).

    ``x_*``: (N, D) float64 (MNIST, D = 1024) or complex128 (XXZ, D = 2**n_spins); ``y_*``: (N,)
    int32 in 0..C-1. ``info`` is a JSON-serialisable dict: source, checksums, parameters, cache
    path.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    info: dict

    def __post_init__(self):
        for split in ("train", "val"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2 or y.shape != (x.shape[0],):
                raise ValueError(f"{split}: x {x.shape} and y {y.shape} do not match")


def default_cache_dir() -> Path:
    """``$QUNLEARN_CACHE`` if set (and non-empty), else ``~/.cache/qunlearn``."""
    env = os.environ.get("QUNLEARN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qunlearn"


def _not_writable(path: Path, err: OSError) -> QunlearnError:
    reason = err.strerror or type(err).__name__
    return QunlearnError(
        f"cache directory {path} is not writable: {reason}; set QUNLEARN_CACHE or pass --cache-dir"
    )


def cache_dir_path(cache_dir: str | os.PathLike | None) -> Path:
    """The cache directory to use (``default_cache_dir()`` when None), not created."""
    return default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """The cache directory to use (``default_cache_dir()`` when None), created if missing."""
    path = cache_dir_path(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _not_writable(path, err) from err
    if not path.is_dir():
        raise _not_writable(path, NotADirectoryError(20, "not a directory"))
    return path


def check_writable(path: Path) -> None:
    """Refuse a cache directory in which no file can be created (before a long computation whose
    result could not be kept): a temporary file is created and removed."""
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise _not_writable(path, err) from err


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, error=lambda p, err: _not_writable(p.parent, err))


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> str:
    """Atomically write ``arrays`` to ``path`` (.npz, no pickled objects) and a sidecar
    ``path.with_suffix('.json')`` holding ``meta`` plus the file's SHA-256. Returns the SHA-256."""
    path = Path(path)
    for key, value in arrays.items():
        if value.dtype == object:
            raise ValueError(f"array {key!r} has dtype object; it would need pickle")
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # stubs: a key could be allow_pickle
    _write(path, buf.getvalue())
    digest = sha256_file(path)
    sidecar = json.dumps({**meta, "sha256": digest}, indent=2, sort_keys=True) + "\n"
    _write(path.with_suffix(".json"), sidecar.encode())
    return digest


def read_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays and sidecar metadata of a file written by ``write_npz``; None if either file is
    missing. A checksum mismatch or unreadable file warns and also returns None (regenerate)."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.exists() and not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        if sha256_file(path) != meta["sha256"]:
            raise ValueError("checksum mismatch")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        warnings.warn(
            f"cache file {path} is missing or corrupt ({err}); regenerating it", stacklevel=3
        )
        return None
    return arrays, meta
