"""Iris (scikit-learn's bundled copy: offline, no download), two or all three classes.

``classes = [a, b]`` (default [1, 2], versicolor vs virginica, the pair that is not linearly
separable): label 0 = class a, label 1 = class b, 50 flowers each; ``classes = [0, 1, 2]``: the
three-class set (labels in that order), for multi-class models and class deletion. Split: within
each class, in the file's order, even rows train and odd rows validate (25 + 25 each).

Encoding: amplitude. The 4 features are standardised with the training split's per-feature mean
and standard deviation (the validation split uses the same), then each row is L2-normalised: a
unit vector of 4 = 2**2 amplitudes, a valid 2-qubit state for the QNN and the same 4 numbers for
the MLP. The norm of the standardised row is dropped (a global scale the state cannot carry).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from qunlearn.data.cache import Dataset, sha256_bytes
from qunlearn.data.options import check_classes

CLASSES = (1, 2)
CLASS_NAMES = ("setosa", "versicolor", "virginica")


def amplitude_encode(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(n, 4) -> (n, 4) float64 unit rows: standardised with ``mean``/``std``, L2-normalised."""
    z = (np.asarray(features, dtype=np.float64) - mean) / std
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def load_iris(
    *, cache_dir: str | os.PathLike | None = None, classes: Sequence[int] = CLASSES
) -> Dataset:
    """Iris classes[0] vs classes[1] (or all three): train (25·C, 4), val (25·C, 4) float64,
    class-sorted
    (``cache_dir`` is unused: the data ship with scikit-learn)."""
    what = "Iris classes in 0-2 (0 setosa, 1 versicolor, 2 virginica)"
    classes = check_classes("classes", classes, 2, what, "[1, 2] or [0, 1, 2]")
    from sklearn.datasets import load_iris as sklearn_iris

    bunch = sklearn_iris()
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    rows = [np.flatnonzero(y == c) for c in classes]
    train = np.concatenate([r[0::2] for r in rows])
    val = np.concatenate([r[1::2] for r in rows])
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    labels = {c: label for label, c in enumerate(classes)}
    info = {
        "dataset": "iris",
        "source": {
            "kind": "scikit-learn bundled copy (sklearn.datasets.load_iris)",
            "sha256": sha256_bytes(
                np.ascontiguousarray(x).tobytes() + y.astype(np.int64).tobytes()
            ),
        },
        "parameters": {"classes": list(classes)},
        "classes": [CLASS_NAMES[c] for c in classes],
        "encoding": "amplitude: standardise the 4 features (training mean/std), L2-normalise "
        "each row: 4 = 2**2 amplitudes",
        "train_mean": mean.tolist(),
        "train_std": std.tolist(),
        "selection": "each class in file order: even rows train, odd rows validate",
        "n_train_per_class": [len(r[0::2]) for r in rows],
        "n_val_per_class": [len(r[1::2]) for r in rows],
    }
    return Dataset(
        "iris",
        amplitude_encode(x[train], mean, std),
        np.array([labels[c] for c in y[train]], np.int32),
        amplitude_encode(x[val], mean, std),
        np.array([labels[c] for c in y[val]], np.int32),
        info,
    )
