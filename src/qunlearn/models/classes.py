"""The class-count convention every built-in model shares: ``n_classes = 2`` is a binary model
whose ``apply`` gives the class-1 probability (a scalar); C ≥ 3 classes give the (C,) class
probabilities (:func:`qunlearn.train.cross_entropy` and :func:`~qunlearn.train.hits` read
either)."""

from __future__ import annotations

from qunlearn.errors import QunlearnError


def check_n_classes(n_classes) -> int:
    """``n_classes`` as an int ≥ 2, else one line."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise QunlearnError(f"hyper.n_classes must be an integer >= 2, got {n_classes!r}")
    return n_classes
