"""Helpers shared by every experiment: environment metadata, model inputs and models, tables."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import jax
import numpy as np

from qunlearn.errors import QunlearnError
from qunlearn.experiments.store import ResultStore
from qunlearn.models import MODELS, make_model
from qunlearn.testing import check_model_pair

PACKAGES = ("qunlearn", "jax", "jaxlib", "optax", "numpy", "scipy", "tensorcircuit-ng")


# Each text is checked against the code it describes by tests/test_deviations.py, and
# docs/deviations.md quotes them all: change a text and both follow.
DEVIATIONS = {  # from the reference code, on purpose, by topic
    "batching": "batching: a full permutation per epoch from fold_in(key, epoch), ceil(N/bs) steps "
    "per epoch, the short last batch run on its N mod bs real rows (no padding); the reference "
    "shuffles the training set once, then streams repeat(epochs).shuffle(128).batch(bs) (batches "
    "cross epochs)",
    "mnist validation": "mnist validation: all 2144 test images of digits 1 and 9",
    "xxz data": "xxz data: generated in-house by sparse exact diagonalisation, deterministic "
    "global phase",
    "unlearning": "unlearning: one forgetting metric (fraction of D_f predicted with its poisoned "
    "label) for every method",
    "hessian": "hessian: w.r.t. the real circuit angles (the reference splits them into real and "
    "imaginary parts)",
    "collapsed runs": "roughening: runs whose output is constant on the Hessian set are flagged "
    "collapsed and kept in the means (the reference notebook drops traces with "
    "|trace - 0.25| < 0.01)",
}

CHOSEN_DEVIATIONS = {  # by what a config chose (see deviations())
    "stream batching": "batching: models with batching = 'stream' emulate the reference's "
    "one-time shuffle, then repeat(epochs).shuffle(128).batch(bs) stream (same distribution as "
    "tf.data, not its random numbers)",
    "qnn readout": "qnn readout: models with readout = 'linear' output (1 + <Z>)/2, the reference "
    "code's earlier readout; protocol §3 (and the reference's final code) use sigmoid(5<Z>)",
    "xxz data": "xxz data: generated in-house by sparse exact diagonalisation, each state times a "
    "seeded random global phase (dataset option phase = 'random'), as the reference's "
    "eigensolver left them; protocol §1 asks for a fixed phase",
}


MNIST_ENCODING_NOTES = {  # every MNIST result names its encoding, deviation or not
    "unit": "mnist encoding: 'unit', whole-image L2 (a valid 10-qubit state); the reference code "
    "(datar.mnist_data) L2-normalises each column and feeds the unnormalised vector "
    "(||x||^2 = non-blank columns) to the circuit; set dataset_options.encoding = 'reference'",
    "reference": "mnist encoding: 'reference', the reference code's own arithmetic (float32, each "
    "column L2-normalised, no renormalisation: ||x||^2 = non-blank columns, so the QNN's <Z> is "
    "scaled by it); not a deviation, named so every result says its encoding",
}


def deviations(config: dict | None = None) -> list[str]:
    """:data:`DEVIATIONS`, adjusted to what ``config`` (a resolved config dict) chose."""
    out = dict(DEVIATIONS)
    if config is not None:
        # only the topics this config touches (an MNIST sweep has no XXZ data, no Hessian)
        dataset, kind = config.get("dataset", "mnist"), config.get("experiment")
        applies = {
            "mnist validation": dataset == "mnist"
            and list(config.get("dataset_options", {}).get("digits", [1, 9])) == [1, 9],
            "xxz data": dataset == "xxz",
            "unlearning": kind in ("unlearning", "evaluation", "curvature"),
            "hessian": kind in ("roughening", "curvature"),
            "collapsed runs": kind == "roughening",
        }
        out = {topic: text for topic, text in out.items() if applies.get(topic, True)}
        models = config.get("models", {}).values()
        if any(spec.get("batching") == "stream" for spec in models):
            out["stream batching"] = CHOSEN_DEVIATIONS["stream batching"]
        if any(spec.get("hyper", {}).get("readout") == "linear" for spec in models):
            out["qnn readout"] = CHOSEN_DEVIATIONS["qnn readout"]
        digits = list(config.get("dataset_options", {}).get("digits", [1, 9]))
        if config.get("dataset") == "mnist" and digits != [1, 9]:
            out["mnist digits"] = (
                f"mnist digits: {digits[0]} vs {digits[1]} (label 0 = {digits[0]}), other data "
                "than the paper's 1 vs 9: validation = all test images of these two digits"
            )
        if config.get("dataset") == "mnist":
            out["mnist encoding"] = MNIST_ENCODING_NOTES[
                config.get("dataset_options", {}).get("encoding", "unit")
            ]
        if dataset == "xxz" and config.get("dataset_options", {}).get("phase") == "random":
            out["xxz data"] = CHOSEN_DEVIATIONS["xxz data"]
    return list(out.values())


def environment(config: dict | None = None) -> dict:
    """Versions, platform, git revision and deviations from the reference for a manifest."""
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    try:
        rev = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {
        "versions": versions,
        "git_revision": rev,
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "jax_x64": bool(jax.config.read("jax_enable_x64")),
        "deviations_from_reference": deviations(config),
    }


def padded_chunks(total: int, chunk: int):
    """Yield ``(selection, n_real)`` per call: ``chunk`` indices into ``range(total)``, the last
    call's padded by repeating its first index (so one compiled shape serves every call); the
    first ``n_real`` results of a call are real."""
    for lo in range(0, total, chunk):
        sel = np.arange(lo, lo + chunk)
        yield np.where(sel < total, sel, lo), min(chunk, total - lo)


def features(x, representation: str = "native"):
    """Examples ``x`` (N, D) as a model reads them: as they are, or ``realified`` ([Re; Im])."""
    if representation not in ("native", "realified"):
        raise QunlearnError(
            f"unknown input representation {representation!r}: use 'native' or 'realified'"
        )
    if representation == "realified" and np.iscomplexobj(x):
        return np.concatenate([x.real, x.imag], axis=1)
    return x


def model_input(dataset, representation: str = "native"):
    """(x_train, x_val, input_dim, complex_input) for a model; ``realified``: [Re; Im]"""
    x_train = features(dataset.x_train, representation)
    x_val = features(dataset.x_val, representation)
    return x_train, x_val, x_train.shape[1], bool(np.iscomplexobj(x_train))


def build_model(table: str, spec, dim: int, is_complex: bool, n_classes: int = 2):
    """The model of config table ``models.<table>`` for inputs of length ``dim`` and data of
    ``n_classes`` classes; a bad hyperparameter, or a built-in model whose ``n_classes`` is not
    the data's, fails with one line that names the table. A model that is not built in is held
    to the model contract here (:func:`qunlearn.testing.check_model_pair`, its outputs for
    ``n_classes``), before ``--out`` is touched."""
    try:
        model = make_model(spec.model, dim, is_complex, **spec.hyper)
        if MODELS.is_builtin(spec.model) and spec.hyper.get("n_classes", 2) != n_classes:
            raise QunlearnError(
                f"the data set has {n_classes} classes but hyper.n_classes = "
                f"{spec.hyper.get('n_classes', 2)}: set hyper.n_classes = {n_classes}"
            )
        if not MODELS.is_builtin(spec.model):
            check_model_pair(
                spec.model, model.init, model.apply, dim, is_complex, n_classes=n_classes
            )
    except QunlearnError as err:
        raise QunlearnError(f"models.{table}: {err}") from None
    return model


def model_in_dtype(table: str, spec, dim: int, is_complex: bool, dtype: str, n_classes: int = 2):
    """The model of ``models.<table>`` with a QNN's circuit in ``dtype`` ("complex64": float32
    states; its float64 angles are rounded on entry, the readout and loss stay in float64), or
    None when ``dtype`` is "model" or the model is not a QNN (MLPs keep their float64): what the
    ``hessian_dtype`` and ``sweep_dtype`` config keys choose. The readout stays in float64
    because a float32 sigmoid saturates to exactly 1 at the reference encoding's scale·⟨Z⟩ (up to
    ±140), where the BCE's log and its second derivative are no longer finite."""
    from qunlearn.experiments.config import QNN_MODELS

    if dtype == "model" or spec.model not in QNN_MODELS:
        return None
    hyper = spec.hyper | {"dtype": dtype, "readout_dtype": "float64"}
    return build_model(table, dataclasses.replace(spec, hyper=hyper), dim, is_complex, n_classes)


def write_table(store: ResultStore) -> Path:
    rows = [row for cell in store.finished_cells() for row in cell["rows"]]
    return store.write_table(rows)


COLUMNS_FIRST = ("dataset", "model", "method", "variant")
COLUMNS_LAST = ("teacher", "run", "epoch", "metric", "value", "seed")


def rectangular_rows(rows: list[dict]) -> list[dict]:
    """Rows with the union of all keys in a fixed column order (sweep axes in between), missing
    values empty. (Cell files store rows with sorted keys.)"""
    keys = set().union(*rows)
    middle = sorted(keys - set(COLUMNS_FIRST) - set(COLUMNS_LAST))
    order = (
        [k for k in COLUMNS_FIRST if k in keys] + middle + [k for k in COLUMNS_LAST if k in keys]
    )
    return [{k: row.get(k, "") for k in order} for row in rows]


def run_devices(setting: str) -> list | None:
    """The devices a model's ``devices`` setting splits its runs over: ``"all"`` = every local
    device (``jax.devices()``), ``"one"`` = None (the default device)."""
    return jax.devices() if setting == "all" else None
