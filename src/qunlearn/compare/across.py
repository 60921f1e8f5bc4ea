"""Across data sets: one α_c / width table of several noise sweeps."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from qunlearn.atomic import atomic_write_text, check_target
from qunlearn.compare.common import (
    _finite,
    _fmt,
    _write_compare_csv,
    read_verified,
    sweep_rows,
)
from qunlearn.compare.paper import _full_hyper
from qunlearn.compare.sweep import NO_CROSSING, _interval, _transition, sweep_runs
from qunlearn.errors import QunlearnError

ACROSS_FILES = ("across.csv", "across.json")
ACROSS_FIELDS = [
    "dataset",
    "size",
    "n_spins",
    "model",
    "role",
    "noise",
    "runs",
    "val_acc_alpha0",
    "alpha_c",
    "alpha_c_lo",
    "alpha_c_hi",
    "width",
    "width_lo",
    "width_hi",
    "resolved",
    "fit_not_comparable",
    "interval_not_comparable",
    "results",
]
ROLE_ORDER = ("mlp", "qnn", "logistic")  # rows of one data set: MLP, QNN, then the control
# Below this clean accuracy (α = 0) a binary model has not learnt the task: its "transition" is a
# fit of a curve that starts near chance (Iris's 2-qubit QNN: .58), flagged in the table. With C
# classes the bar is as far from chance, 1/C + 0.4·(1 − 1/C) (3 classes: .60).
MIN_LEARNT = 0.7


def data_classes(data: dict) -> int:
    """A result's class count, from its manifest's data block (2 where it does not say)."""
    return max(2, len(data.get("n_train_per_class") or ()))


def min_learnt(n_classes: int = 2) -> float:
    """The clean accuracy a model of ``n_classes`` classes must reach to count as learnt."""
    chance = 1.0 / n_classes
    return chance + (MIN_LEARNT - 0.5) / 0.5 * (1.0 - chance)


def learns_little(row: dict) -> bool:
    """Whether an across row's model stays below its learnt bar at α = 0 (``min_learnt``, the
    binary ``MIN_LEARNT`` where the row does not say): its transition is a fit near chance."""
    clean = row.get("val_acc_alpha0")
    return clean is not None and clean < row.get("min_learnt", MIN_LEARNT)


def model_role(spec: dict) -> str:
    """A model table's part in the resilience study: ``"logistic"`` for an MLP without hidden
    layers (the logistic-regression control), else its model kind (``"mlp"``, ``"qnn"``, ...)."""
    kind = spec.get("model", "")
    if kind == "mlp" and list(_full_hyper(kind, spec.get("hyper") or {}).get("hidden", [0])) == []:
        return "logistic"
    return kind


def data_size(config: dict, data: dict) -> tuple[str, int | None]:
    """(a short label of a data set's size and variant, e.g. "12 spins, random phase", "3 vs 5,
    reference", "versicolor vs virginica, amplitude"; its spins or None), from the manifest's
    data block (``parameters``, ``classes``, ``encoding``, ``phase``), else the config's dataset
    options (a data set none of those describe: its options, ``key=value``)."""
    params = config.get("dataset_options", {}) | data.get("parameters", {})
    parts = []
    if params.get("n_spins") is not None:
        parts.append(f"{params['n_spins']} spins")
    classes = data.get("classes") or params.get("digits") or params.get("classes")
    if isinstance(classes, list):
        parts.append(" vs ".join(map(str, classes)))
    encoding = data.get("encoding") or params.get("encoding")
    if isinstance(encoding, str):
        parts.append(encoding.split(":")[0].strip())  # "amplitude: standardise ..." -> amplitude
    phase = data.get("phase") or params.get("phase")  # a global phase per state: MLPs see it
    if isinstance(phase, str):
        parts.append(f"{phase.split()[0]} phase")  # "random (PRNGKey(0))" -> random phase
    if not parts:  # a user's data set: its options are what tells two sweeps of it apart
        options = config.get("dataset_options", {})
        parts = [f"{key}={json.dumps(options[key])}" for key in sorted(options)]
    n_spins = params.get("n_spins")
    return ", ".join(parts), n_spins if isinstance(n_spins, int) else None


def across_rows(results: list[dict]) -> list[dict]:
    """One row per (data set, model table, noise) of several noise sweeps: the fitted α_c and the
    90 %..10 % width of the drop with their bootstrap 95 % intervals (:func:`_transition`), the
    mean clean validation accuracy at α = 0 (a model that never learnt has no transition to
    speak of), and the fewest runs at any α.

    ``results``: one {"results": its name, "config", "data": the manifest's data block, "rows":
    its results.csv rows} per sweep. Data sets keep the order they first appear in; within one,
    rows go by spins (so the qubit dependence reads down the table), then by size as given; within
    a size MLP, QNN, the logistic control, then other models (so the MLP and QNN halves of one
    figure run apart, ``--models``, sit together)."""
    out = []
    for index, res in enumerate(results):
        config = res["config"]
        size, n_spins = data_size(config, res.get("data") or {})
        roles = {table: model_role(spec) for table, spec in config.get("models", {}).items()}
        for (dataset, model, noise), runs in sorted(sweep_runs(res["rows"]).items()):
            clean = _finite(runs.get(0.0, []))
            row = {
                "dataset": dataset,
                "size": size,
                "n_spins": n_spins,
                "model": model,
                "role": roles.get(model, model),
                "noise": noise,
                "runs": min(len(v) for v in runs.values()),
                "val_acc_alpha0": float(clean.mean()) if clean.size else None,
                "min_learnt": min_learnt(data_classes(res.get("data") or {})),
                "results": res["results"],
            }
            out.append(row | _transition(runs) | {"_index": index})
    first: dict = {}  # data set, and (data set, size), -> where it first appears
    for row in out:
        first.setdefault(row["dataset"], len(first))
        first.setdefault((row["dataset"], row["size"]), len(first))

    def order(row):
        role = row["role"]
        rank = ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)
        spins = row["n_spins"] if row["n_spins"] is not None else -1
        group = (first[row["dataset"]], spins, first[(row["dataset"], row["size"])])
        return (*group, rank, row["_index"], row["model"], row["noise"])

    return [{k: v for k, v in r.items() if k != "_index"} for r in sorted(out, key=order)]


def model_label(row: dict) -> str:
    """The role, and the model table where it is named otherwise (``logistic (lr)``)."""
    return row["role"] if row["model"] == row["role"] else f"{row['role']} ({row['model']})"


def _value_interval(row: dict, name: str) -> str:
    return f"{_fmt(row.get(name))}{_interval(row, name)}"


def format_across(rows: list[dict]) -> str:
    """The across-data table: one line per (data set, model, noise), α_c and width with their
    95 % intervals; a fit that fails or never crosses 0.5 says so in their place, and a model
    whose clean accuracy stays below its bar (:func:`learns_little`) is flagged."""
    columns = {  # header -> cell, left-aligned text columns sized to their widest cell
        "dataset": lambda r: r["dataset"],
        "size": lambda r: r["size"] or "-",
        "model": model_label,
        "noise": lambda r: r["noise"],
    }
    cells = [[cell(r) for cell in columns.values()] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(columns)]

    def text(values):
        return " ".join(f"{v:{w}}" for v, w in zip(values, widths, strict=True))

    lines = [text(columns) + f" {'runs':>4} {'val@0':>6}  {'alpha_c [95 %]':22} width [95 %]"]
    for r, values in zip(rows, cells, strict=True):
        start = text(values) + f" {r['runs']:>4} {_fmt(r['val_acc_alpha0']):>6}  "
        if "fit_not_comparable" in r:
            lines.append(start + r["fit_not_comparable"])
            continue
        if r.get("alpha_c") is None:
            lines.append(start + NO_CROSSING)
            continue
        alpha, width = _value_interval(r, "alpha_c"), _value_interval(r, "width")
        notes = [r["interval_not_comparable"]] if "interval_not_comparable" in r else []
        if not r.get("resolved", True):
            notes.append("sharper than the grid: refine it")
        if learns_little(r):
            bar = r.get("min_learnt", MIN_LEARNT)
            notes.append(f"learns little (val@0 < {bar:.2g}): a fit of a curve near chance")
        lines.append(start + f"{alpha:22} {width}" + (f"  ({'; '.join(notes)})" if notes else ""))
    return "\n".join(lines)


ACROSS_NOTE = (
    "alpha_c: where the logistic fit of the mean clean validation accuracy crosses 0.5; width: "
    "its 90 %..10 % drop; [95 %]: bootstrap over runs per alpha; val@0: mean clean validation "
    "accuracy at alpha = 0"
)


def read_across(results_dirs: list) -> list[dict]:
    """:func:`across_rows` of results directories (read only, from their verified cells); a
    directory that is not a noise sweep is refused before any is read further."""
    results = []
    for path in results_dirs:
        verified = read_verified(path)
        kind = verified.config.get("experiment")
        if kind != "noise_sweep":
            raise QunlearnError(
                f"{path} holds a {kind!r} experiment: the across-data table reads noise sweeps "
                "only (e.g. qunlearn run configs/fig2_tfim.toml)"
            )
        results.append(
            {
                "results": str(path),
                "config": verified.config,
                "data": verified.manifest.get("data") or {},
                "rows": sweep_rows(verified),
            }
        )
    return across_rows(results)


def compare_across(results_dirs: list, out: str | Path | None = None) -> dict:
    """The across-data table of several noise sweeps, {"rows", "text"}; writes ``across.csv``
    and ``across.json`` into ``out`` (default: nowhere; the results directories are never
    written), each checked before any is written."""
    rows = read_across(results_dirs)
    if out is not None:
        out = check_target(out)
        for name in ACROSS_FILES:
            check_target(out / name)
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise QunlearnError(f"{out} is not writable: pass another --out DIR")
        _write_compare_csv(out / "across.csv", rows, ACROSS_FIELDS)
        finite = [{k: _json_number(v) for k, v in r.items()} for r in rows]
        atomic_write_text(out / "across.json", json.dumps({"rows": finite}, indent=2))
    return {"rows": rows, "text": format_across(rows) + "\n" + ACROSS_NOTE}


def _json_number(value):
    """None for a float that is not finite (JSON has no NaN), else the value."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
