"""The key scheme of every experiment: each random draw's key depends only on names, never on run
order, so a cell's numbers do not depend on which other cells a config lists, how a sweep was
split or resumed, or whether progress bars were on.

* Fig 2 cells: ``stable_key(root, dataset, model table, noise, f"{alpha:.6f}")``, then
  :func:`run_keys` (poisoning, initialisation, shuffling) per run ``r``.
* The Fig 3 set-up (unlearning, curvature and every experiment built on a poisoned teacher):
  :func:`poison_keys` (one label-flip draw per teacher index, shared by every model),
  :func:`teacher_keys` (init, batch order per teacher of a model) and :func:`unlearning_keys`
  (start, batch order per unlearning run, the same for every method: paired comparisons).
* The forget request (``forget`` other than "poison"): :func:`forget_keys`, one selection draw
  per teacher index, a key of its own, so the poisoning, the teachers and every other draw are
  those of a "poison" run. The evaluation's references: :func:`oracle_keys` and
  :func:`clean_oracle_keys`.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp


def stable_fold(*parts) -> int:
    """What :func:`stable_key` folds in for ``parts``: a non-negative CRC-32 of their text."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def stable_key(root: jax.Array, *parts) -> jax.Array:
    """A key that depends only on ``parts`` (never on run order): fold in a CRC of their text."""
    return jax.random.fold_in(root, stable_fold(*parts))


def _split_per_index(key: jax.Array, n: int, parts: int) -> jax.Array:
    """(n, parts) keys: ``split(fold_in(key, i), parts)`` for i < n."""
    return jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i), parts))(jnp.arange(n))


def run_keys(cell_key: jax.Array, runs: int) -> jax.Array:
    """(runs, 3) keys per run of a Fig 2 cell: poisoning, initialisation, shuffling."""
    return _split_per_index(cell_key, runs, 3)


def _per_teacher(root, dataset: str, alpha: float, what: str, n: int):
    key = stable_key(root, dataset, "label_flip", f"{alpha:.6f}", what)
    return jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(n))


def poison_keys(root, dataset: str, alpha: float, n: int):
    """(n,) keys of the label-flip draws; one per teacher index, shared by every model."""
    return _per_teacher(root, dataset, alpha, "poison", n)


def forget_keys(root, dataset: str, alpha: float, n: int):
    """(n,) keys of the forget-request draws (which clean or poisoned samples D_f takes); one per
    teacher index, shared by every model and by every request and share (so D_f grows nested
    with ``known`` or ``forget_fraction``)."""
    return _per_teacher(root, dataset, alpha, "forget", n)


def teacher_keys(root, dataset: str, model_name: str, n: int):
    """(n, 2) keys (init, batch order) of the teachers of one model."""
    return _split_per_index(stable_key(root, dataset, model_name, "teacher"), n, 2)


def unlearning_keys(root, dataset: str, model_name: str, runs: int):
    """(runs, 2) keys (start, batch order) per unlearning run, the same for every method."""
    return _split_per_index(stable_key(root, dataset, model_name, "unlearn"), runs, 2)


def oracle_keys(root, dataset: str, model_name: str, k: int):
    """(k, 2) keys (initialisation, batch order) of the retrain oracles of one model."""
    return _split_per_index(stable_key(root, dataset, model_name, "oracle"), k, 2)


def clean_oracle_keys(root, dataset: str, model_name: str, k: int):
    """(k, 2) keys (initialisation, batch order) of the clean oracles of one model (retrained on
    D minus all poison)."""
    return _split_per_index(stable_key(root, dataset, model_name, "clean_oracle"), k, 2)
