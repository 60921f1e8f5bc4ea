"""Data sets (protocol §1): MNIST 1 vs 9 and XXZ ground states, each a class-sorted ``Dataset``.

Every loader has the signature ``load_x(*, cache_dir=None, **options) -> Dataset``; ``DATASETS``
maps names to loaders and ``load_dataset`` dispatches by name.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import numpy as np

from qunlearn.data.cache import Dataset, default_cache_dir
from qunlearn.data.mnist import load_mnist, normalise_and_pad, preprocess_mnist
from qunlearn.data.xxz import ground_state, load_xxz, load_xxz_grid, xxz_grid, xxz_hamiltonian
from qunlearn.errors import QunlearnError

__all__ = [
    "DATASETS",
    "Dataset",
    "default_cache_dir",
    "describe",
    "ground_state",
    "load_dataset",
    "load_mnist",
    "load_xxz",
    "load_xxz_grid",
    "non_member_pool",
    "normalise_and_pad",
    "preprocess_mnist",
    "xxz_grid",
    "xxz_hamiltonian",
]

DATASETS: dict[str, Callable[..., Dataset]] = {"mnist": load_mnist, "xxz": load_xxz}


def load_dataset(name: str, *, cache_dir: str | os.PathLike | None = None, **options) -> Dataset:
    """``DATASETS[name](cache_dir=cache_dir, **options)`` with one-line errors for bad names."""
    if name not in DATASETS:
        raise QunlearnError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    loader = DATASETS[name]
    known = set(inspect.signature(loader).parameters) - {"cache_dir"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise QunlearnError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name}: valid options are "
            f"{', '.join(sorted(known))}"
        )
    params = inspect.signature(loader).parameters
    for key, value in options.items():
        _check_option_type(name, key, value, params[key].default)
    return loader(cache_dir=cache_dir, **options)


def non_member_pool(
    dataset: Dataset, per_class: int, *, cache_dir=None, **options
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y), class-sorted: ``per_class`` examples per class of ``dataset``'s distribution
    that are in neither its training nor its validation set, for membership attacks.

    MNIST: the next training-split images of each class after the ones ``dataset`` took (the
    loader keeps the first ``n_per_class`` of each class in file order, with the same options;
    ``options`` are the data set's own, its ``n_per_class`` among them).
    XXZ: the grid has no third split of the same Δ windows, so ``per_class`` validation states
    per class, evenly spaced in Δ (never trained on, but also used for validation metrics).
    """
    taken = dataset.info["n_train_per_class"][0]
    if dataset.name == "mnist":
        most = min(dataset.info.get("n_available_per_class", [taken + per_class]))
        if taken + per_class > most:
            raise QunlearnError(
                f"the membership attack needs {per_class} non-members per class after the "
                f"{taken} training images, but the rarer MNIST class has {most} training-split "
                f"images: at most {most - taken} (lower alpha or dataset_options.n_per_class)"
            )
        wider = load_dataset(
            "mnist", cache_dir=cache_dir, **(options | {"n_per_class": taken + per_class})
        )
        half = taken + per_class
        rows = np.concatenate([np.arange(taken, half), np.arange(half + taken, 2 * half)])
        return wider.x_train[rows], wider.y_train[rows]
    picked = []
    for label in (0, 1):
        members = np.flatnonzero(dataset.y_val == label)
        if per_class > len(members):
            raise QunlearnError(
                f"{dataset.name} has {len(members)} validation samples of label {label}, fewer "
                f"than the {per_class} non-members needed: lower alpha or widen the grid"
            )
        picked.append(members[np.linspace(0, len(members) - 1, per_class).round().astype(int)])
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
        lines.append(
            f"{split:<8} {len(y)} samples (label 0: {counts[0]}, label 1: {counts[1]}), "
            f"x {x.shape} {x.dtype}, y {y.dtype}"
        )
    source = info.get("source", {})
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
    lines.append(f"cache    {info.get('cache_path', '?')}")
    lines.append(f"         sha256: {info.get('cache_sha256', '?')}")
    return "\n".join(lines)
