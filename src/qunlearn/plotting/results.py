"""Draw the figures of a results directory; figures only read tables."""

from __future__ import annotations

from pathlib import Path

from qunlearn.compare import REFERENCE_SWEEPS, read_results, reference_rows
from qunlearn.errors import QunlearnError


def plot_results_dir(results_dir: str | Path) -> list[Path]:
    results_dir = Path(results_dir)
    config, rows = read_results(results_dir)
    if config["experiment"] == "noise_sweep":
        from qunlearn.plotting.sweep import plot_noise_sweep, reference_as_rows

        ref = None
        if config["dataset"] in REFERENCE_SWEEPS:
            ref = reference_as_rows(reference_rows(REFERENCE_SWEEPS[config["dataset"]]))
        return plot_noise_sweep(rows, results_dir, reference=ref, title=config["name"])
    if config["experiment"] == "unlearning":
        from qunlearn.plotting.unlearning import plot_unlearning_dir

        return plot_unlearning_dir(results_dir, rows, config)
    if config["experiment"] == "curvature":
        from qunlearn.plotting.curvature import plot_curvature_dir

        return plot_curvature_dir(results_dir, rows, config)
    if config["experiment"] == "roughening":
        from qunlearn.plotting.curvature import plot_roughening

        models = {name: spec["model"] for name, spec in config["models"].items()}
        return plot_roughening(rows, results_dir, models=models, title=config["name"])
    raise QunlearnError(f"no figure for experiment kind {config['experiment']!r}")
