"""Put a results directory beside the paper's published numbers (``qunlearn/reference/*.csv``),
or beside other results: one comparator per experiment kind, each in its own module.

* :mod:`~qunlearn.compare.sweep`: the noise sweep (Fig 2): cells within tolerance, α_c and width;
* :mod:`~qunlearn.compare.unlearning`: unlearning trajectories (Fig 3);
* :mod:`~qunlearn.compare.roughening`: Hessian-trace ratios (§5);
* :mod:`~qunlearn.compare.evaluation`: the oracle-judged scores, leaderboard and readouts;
* :mod:`~qunlearn.compare.across`: one α_c / width table of several noise sweeps;
* :mod:`~qunlearn.compare.paper` (what is comparable with the paper) and
  :mod:`~qunlearn.compare.common` (tables and shared statistics) serve them all.

This module dispatches on a result's kind (:func:`compare_results_dir`) and re-exports the names
the other layers use (plotting, report, the API).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qunlearn.atomic import check_target
from qunlearn.compare.across import (
    ACROSS_FILES,
    across_rows,
    compare_across,
    data_classes,
    format_across,
    learns_little,
    min_learnt,
    read_across,
)
from qunlearn.compare.common import mean_interval, read_csv, read_results, read_verified, sweep_rows
from qunlearn.compare.evaluation import (
    EXACT_READOUT,
    _compare_evaluation_dir,
    by_readout,
    evaluation_leaderboard,
    evaluation_scores,
    readout_label,
    readout_rank,
    readout_summary,
)
from qunlearn.compare.paper import (
    PROTOCOL_TOP_KEYS,
    comparability_lines,
    data_line,
    protocol_check,
    reference_rows,
)
from qunlearn.compare.roughening import (
    _compare_roughening_dir,
    compare_roughening,
    ratio_intervals,
)
from qunlearn.compare.sweep import (
    REFERENCE_SWEEPS,
    _compare_sweep_dir,
    compare_sweep,
    critical_alpha,
    readout_transitions,
)
from qunlearn.compare.unlearning import (
    REFERENCE_UNLEARNING,
    _compare_unlearning_dir,
    diverged_as_nan,
)
from qunlearn.errors import QunlearnError

__all__ = [
    "ACROSS_FILES",
    "EXACT_READOUT",
    "REFERENCE_SWEEPS",
    "REFERENCE_UNLEARNING",
    "across_rows",
    "by_readout",
    "comparability_lines",
    "compare_across",
    "compare_results_dir",
    "compare_roughening",
    "compare_sweep",
    "compare_verified",
    "critical_alpha",
    "data_classes",
    "data_line",
    "diverged_as_nan",
    "evaluation_leaderboard",
    "evaluation_scores",
    "format_across",
    "learns_little",
    "mean_interval",
    "min_learnt",
    "protocol_check",
    "ratio_intervals",
    "read_across",
    "read_csv",
    "read_results",
    "read_verified",
    "readout_label",
    "readout_rank",
    "readout_summary",
    "readout_transitions",
    "reference_rows",
    "sweep_rows",
]

# kind -> comparator(out, results.csv rows, manifest, tables: name -> that verified table's rows)
COMPARATORS = {
    "noise_sweep": _compare_sweep_dir,
    "unlearning": _compare_unlearning_dir,
    "roughening": _compare_roughening_dir,
    "evaluation": _compare_evaluation_dir,
}
COMPARE_FILES = {"evaluation": ("leaderboard.csv",)}  # kind -> what its comparator writes beside


def compare_results_dir(results_dir: str | Path, out: str | Path | None = None) -> dict:
    """Compare the verified cells of ``results_dir`` with the paper; writes ``compare.csv`` and
    ``compare.json`` into ``out`` (default: ``results_dir``; pass another for a read-only one)."""
    results_dir = Path(results_dir)
    out = check_target(out if out is not None else results_dir)  # never a link
    verified = read_verified(results_dir)
    _comparator(verified.config["experiment"])  # an unknown kind first
    for name in (
        "compare.csv",
        "compare.json",
        *COMPARE_FILES.get(verified.config["experiment"], ()),
    ):
        check_target(out / name)  # a link there too, before any is written
    if not os.access(out if out.exists() else out.parent, os.W_OK):
        raise QunlearnError(f"{out} is not writable: pass --out DIR for the comparison files")
    return compare_verified(verified, out)


def _comparator(kind: str):
    if kind not in COMPARATORS:
        raise QunlearnError(f"no published numbers to compare a {kind!r} experiment with")
    return COMPARATORS[kind]


def compare_verified(verified, out: str | Path | None = None) -> dict:
    """The comparison of a verified results directory (see :func:`read_verified`):
    {"table", "text", ...} as the comparator of its kind returns it, the text headed by the data
    and comparability lines. Writes ``compare.csv``/``compare.json`` into ``out``; ``out=None``
    writes nothing of it anywhere (the comparators write as they go, so they write into a scratch
    directory that is removed again)."""
    comparator = _comparator(verified.config["experiment"])
    if out is None:
        with tempfile.TemporaryDirectory(prefix="qunlearn-compare-") as scratch:
            return compare_verified(verified, scratch)
    manifest = verified.manifest
    kind = manifest["config"]["experiment"]
    result = comparator(Path(out), sweep_rows(verified), manifest, verified.table)
    head = [data_line(manifest["config"])]
    if kind in PROTOCOL_TOP_KEYS:
        head += comparability_lines(protocol_check(manifest["config"]))
    result["text"] = "\n".join(head) + "\n" + result["text"]
    return result
