"""Draw the figures of a results directory; figures only read tables."""

from __future__ import annotations

import os
from pathlib import Path

from qunlearn.compare import REFERENCE_SWEEPS, read_verified, reference_rows, sweep_rows
from qunlearn.errors import QunlearnError


def plot_results_dir(results_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Every figure of a results directory, drawn from its verified cells only (see
    :func:`qunlearn.compare.read_verified`), into ``out`` (default: the results directory; pass
    another for one shared read-only)."""
    verified = read_verified(results_dir)
    config, rows = verified.config, sweep_rows(verified)
    results_dir = Path(out) if out is not None else Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(results_dir, os.W_OK):
        raise QunlearnError(f"{results_dir} is not writable: pass --out DIR for the figures")
    if config["experiment"] == "noise_sweep":
        from qunlearn.plotting.sweep import plot_noise_sweep, reference_as_rows

        ref = None
        if config["dataset"] in REFERENCE_SWEEPS:
            ref = reference_as_rows(reference_rows(REFERENCE_SWEEPS[config["dataset"]]))
        return plot_noise_sweep(rows, results_dir, reference=ref, title=config["name"])
    if config["experiment"] == "unlearning":
        from qunlearn.plotting.unlearning import plot_unlearning_dir

        return plot_unlearning_dir(results_dir, rows, config, verified.table("sweep.csv"))
    if config["experiment"] == "curvature":
        from qunlearn.plotting.curvature import plot_curvature_dir

        return plot_curvature_dir(results_dir, rows, config, verified.table("density.csv"))
    if config["experiment"] == "roughening":
        from qunlearn.plotting.curvature import plot_roughening

        models = {name: spec["model"] for name, spec in config["models"].items()}
        return plot_roughening(rows, results_dir, models=models, title=config["name"])
    raise QunlearnError(f"no figure for experiment kind {config['experiment']!r}")
