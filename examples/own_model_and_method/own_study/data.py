"""scikit-learn's bundled 8x8 handwritten digits (offline), two digits, amplitude-encoded: 64
pixels -> a unit vector, the state of 6 qubits."""

import numpy as np

from qunlearn.data import Dataset


def digits(*, cache_dir=None, digits=(1, 9), n_train_per_class=60):
    """Class-sorted binary data set: ``n_train_per_class`` images of each digit for training (the
    first in file order), the rest of those digits for validation. ``cache_dir`` is unused (the
    data ships with scikit-learn)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data / np.maximum(np.linalg.norm(bunch.data, axis=1, keepdims=True), 1e-12)
    splits = {"train": ([], []), "val": ([], [])}
    for label, digit in enumerate(digits):
        rows = np.flatnonzero(bunch.target == digit)
        for split, part in (("train", rows[:n_train_per_class]), ("val", rows[n_train_per_class:])):
            splits[split][0].append(x[part])
            splits[split][1].append(np.full(len(part), label, np.int32))
    arrays = {s: (np.concatenate(xs), np.concatenate(ys)) for s, (xs, ys) in splits.items()}
    return Dataset(
        name="digits8x8",
        x_train=arrays["train"][0],
        y_train=arrays["train"][1],
        x_val=arrays["val"][0],
        y_val=arrays["val"][1],
        info={
            "source": {"kind": "sklearn.datasets.load_digits"},
            "digits": list(digits),
            "n_train_per_class": [n_train_per_class, n_train_per_class],
        },
    )
