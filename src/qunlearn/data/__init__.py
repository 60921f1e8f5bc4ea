"""Data sets (protocol §1): MNIST digit pairs (1 vs 9 by default), XXZ, TFIM and cluster-Ising
ground states and Iris, each a class-sorted ``Dataset``.

Every loader has the signature ``load_x(*, cache_dir=None, **options) -> Dataset``; ``DATASETS``
maps names to loaders and ``load_dataset`` dispatches by name. The family is open
(:mod:`qunlearn.families`, entry-point group ``qunlearn.datasets``); every loaded data set, built-in
or not, passes :func:`check_loaded` (the contract :func:`qunlearn.testing.check_dataset` runs).
"""

from __future__ import annotations

import inspect
import os

import numpy as np

from qunlearn.data.cache import Dataset, default_cache_dir
from qunlearn.data.cluster_ising import load_cluster_ising
from qunlearn.data.iris import load_iris
from qunlearn.data.mnist import load_mnist, normalise_and_pad, preprocess_mnist
from qunlearn.data.tfim import load_tfim
from qunlearn.data.xxz import ground_state, load_xxz, load_xxz_grid, xxz_grid, xxz_hamiltonian
from qunlearn.errors import QunlearnError, user_code
from qunlearn.families import Family, keyword_options

__all__ = [
    "DATASETS",
    "Dataset",
    "check_loaded",
    "default_cache_dir",
    "describe",
    "ground_state",
    "load_cluster_ising",
    "load_dataset",
    "load_iris",
    "load_mnist",
    "load_tfim",
    "load_xxz",
    "load_xxz_grid",
    "n_classes",
    "non_member_pool",
    "normalise_and_pad",
    "preprocess_mnist",
    "xxz_grid",
    "xxz_hamiltonian",
]

DATASETS = Family(
    "dataset",
    "qunlearn.datasets",
    {
        "mnist": load_mnist,
        "xxz": load_xxz,
        "tfim": load_tfim,
        "cluster_ising": load_cluster_ising,
        "iris": load_iris,
    },
)
"""name -> loader ``(*, cache_dir=None, **options) -> Dataset``; open (see above)."""


def load_dataset(name: str, *, cache_dir: str | os.PathLike | None = None, **options) -> Dataset:
    """``DATASETS[name](cache_dir=cache_dir, **options)``, checked (:func:`check_loaded`), with
    one-line errors for bad names, options and a user loader's failures."""
    loader = DATASETS.resolve(name)
    known, takes_any = keyword_options(loader, 0)
    known = [k for k in known if k != "cache_dir"]
    unknown = sorted(set(options) - set(known))
    if unknown and not takes_any:
        raise QunlearnError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name}: valid options are "
            f"{', '.join(sorted(known))}"
        )
    params = inspect.signature(loader).parameters
    for key, value in options.items():
        if key in params:
            _check_option_type(name, key, value, params[key].default)
    if DATASETS.is_builtin(name):
        dataset = loader(cache_dir=cache_dir, **options)
    else:
        with user_code(f"dataset {name!r}", f"dataset {name!r} failed to load with {options}"):
            dataset = loader(cache_dir=cache_dir, **options)
    check_loaded(name, dataset)
    return dataset


def check_loaded(name: str, dataset) -> None:
    """The data contract every experiment relies on, one line per breach naming ``name``:
    a :class:`Dataset`; x (N, D) float or complex and finite, the same D in both splits; y (N,)
    integer labels 0..C-1 (C = 2: binary; C ≥ 3: a multi-class set, :func:`n_classes`); the
    training split class-sorted in equal blocks (all 0s, then as many 1s, ...: the poisons draw
    the same share of each); every class in validation; ``info`` a JSON-serialisable dict."""
    import json

    def fail(what: str):
        raise QunlearnError(f"dataset {name!r} breaks the data contract: {what}")

    if not isinstance(dataset, Dataset):
        fail(f"the loader must return a qunlearn.data.Dataset, got {type(dataset).__name__}")
    for split in ("train", "val"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.complexfloating)):
            fail(f"x_{split} has dtype {x.dtype}; use float64 or complex128 features")
        if len(y) == 0:
            fail(f"the {split} split is empty")
        if not np.all(np.isfinite(x)):
            fail(f"x_{split} holds NaN or infinite values")
        if not np.issubdtype(y.dtype, np.integer) or np.any(y < 0):
            fail(f"y_{split} must hold integer labels 0, 1, ..., got {np.unique(y)[:5]}")
    if dataset.x_train.shape[1] != dataset.x_val.shape[1]:
        fail(f"x_train has {dataset.x_train.shape[1]} features, x_val {dataset.x_val.shape[1]}")
    y, n, c = np.asarray(dataset.y_train), len(dataset.y_train), n_classes(dataset)
    labels = sorted(int(v) for v in np.unique(y))
    if labels != list(range(c)):  # numbered from 1, or a class skipped: say that, not "sort it"
        shift = " (here: subtract 1)" if labels == list(range(1, c)) else ""
        fail(
            f"the training labels are {labels}: number the classes 0..C-1 with none left out{shift}"
        )
    if n % c or np.any(y != np.repeat(np.arange(c), n // c)):
        fail(
            f"the training split is not class-sorted in equal blocks (N = {n}, {c} classes: the "
            f"first N/{c} labels 0, then 1, ...); sort it by label and take as many of each class"
        )
    if set(np.unique(dataset.y_val)) != set(range(c)):
        fail(f"the validation split needs examples of every class (0..{c - 1})")
    try:
        json.dumps(dataset.info)
    except (TypeError, ValueError) as err:
        fail(f"info must be a JSON-serialisable dict (it goes into the manifest): {err}")
    if not isinstance(dataset.info, dict):
        fail(f"info must be a dict, got {type(dataset.info).__name__}")


def n_classes(dataset: Dataset) -> int:
    """The data set's class count C: its largest training label + 1, at least 2."""
    return max(2, int(np.max(dataset.y_train)) + 1)


def non_member_pool(
    dataset: Dataset, n_per_class: int, /, *, cache_dir=None, **options
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y), class-sorted: ``n_per_class`` examples per class of ``dataset``'s distribution
    that are in neither its training nor its validation set, for membership attacks.

    MNIST: the next training-split images of each class after the ones ``dataset`` took (the
    loader keeps the first ``n_per_class`` of each class in file order, with the same options).
    XXZ and any other data set: no third split, so ``n_per_class`` validation examples per class,
    evenly spaced in the split's order (never trained on, but also used for validation metrics).
    More than the data set has is refused in one line (never fewer).
    """
    if dataset.name == "mnist":
        taken = dataset.info["n_train_per_class"][0]
        most = min(dataset.info.get("n_available_per_class", [taken + n_per_class]))
        if taken + n_per_class > most:
            raise QunlearnError(
                f"the membership attack needs {n_per_class} non-members per class after the "
                f"{taken} training images, but the rarer MNIST class has {most} training-split "
                f"images: at most {most - taken} (lower alpha or dataset_options.n_per_class)"
            )
        wider = load_dataset(
            "mnist", cache_dir=cache_dir, **(options | {"n_per_class": taken + n_per_class})
        )
        block = taken + n_per_class  # each class's images in ``wider``
        rows = np.concatenate(
            [np.arange(k * block + taken, (k + 1) * block) for k in range(n_classes(dataset))]
        )
        return wider.x_train[rows], wider.y_train[rows]
    picked = []
    for label in range(n_classes(dataset)):
        members = np.flatnonzero(dataset.y_val == label)
        if n_per_class > len(members):
            raise QunlearnError(
                f"{dataset.name} has {len(members)} validation samples of label {label}, fewer "
                f"than the {n_per_class} non-members needed: lower alpha or widen the grid"
            )
        picked.append(members[np.linspace(0, len(members) - 1, n_per_class).round().astype(int)])
    rows = np.concatenate(picked)
    return dataset.x_val[rows], dataset.y_val[rows]


def _check_option_type(dataset: str, key: str, value, default) -> None:
    """Options take the type of their default (an int where the default is an int, ...), so a
    typo such as ``n_per_class = "x"`` is named here, not deep inside a loader."""
    if default is None or default is inspect.Parameter.empty or value is None:
        return
    kinds = {
        bool: (bool,),
        int: (int, np.integer),
        float: (int, float, np.integer, np.floating),
        str: (str,),
    }
    expected = kinds.get(type(default))
    if expected is None:
        return
    if not isinstance(value, expected) or (type(default) is not bool and isinstance(value, bool)):
        raise QunlearnError(
            f"dataset option {key} for {dataset} must be of type {type(default).__name__} like its "
            f"default {default!r}, got {value!r}: fix dataset_options.{key}"
        )


def describe(dataset: Dataset) -> str:
    """Multi-line human summary: samples per class, shapes, dtypes, checksums, cache path."""
    info = dataset.info
    lines = [f"dataset  {dataset.name}"]
    for split in ("train", "val"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        counts = np.bincount(np.asarray(y), minlength=2)
        per_label = ", ".join(f"label {c}: {k}" for c, k in enumerate(counts))
        lines.append(
            f"{split:<8} {len(y)} samples ({per_label}), x {x.shape} {x.dtype}, y {y.dtype}"
        )
    source = info.get("source", {})
    if not isinstance(source, dict):  # a user's loader may describe its source in any JSON
        source = {"kind": source}
    lines.append(
        f"source   {source.get('kind', '?')}" + (f" {source['path']}" if "path" in source else "")
    )
    if "sha256" in source:
        digest = source["sha256"]
        digests = digest.items() if isinstance(digest, dict) else [("sha256", digest)]
        lines += [f"         {key}: {value}" for key, value in digests]
    if "parameters" in info:
        params = ", ".join(f"{k}={v}" for k, v in info["parameters"].items())
        lines.append(f"params   {params}")
    if "cache_path" in info:
        lines.append(f"cache    {info['cache_path']}")
        lines.append(f"         sha256: {info.get('cache_sha256', '?')}")
    else:  # a user's loader need not cache
        lines.append("cache    none (the loader keeps no cache file)")
    return "\n".join(lines)
