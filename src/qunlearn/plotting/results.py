"""Draw the figures of a results directory; figures only read tables."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from qunlearn.atomic import check_target
from qunlearn.compare import (
    REFERENCE_SWEEPS,
    protocol_check,
    read_verified,
    reference_rows,
    sweep_rows,
)
from qunlearn.errors import QunlearnError
from qunlearn.plotting.style import figure_paths, save


def plot_results_dir(results_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Every figure of a results directory, drawn from its verified cells only (see
    :func:`qunlearn.compare.read_verified`), into ``out`` (default: the results directory; pass
    another for one shared read-only). Returns the files written (PNG and PDF per figure)."""
    out = check_target(out if out is not None else results_dir)  # never a link
    verified = read_verified(results_dir)
    figures = results_figures(verified)  # an unknown kind fails before anything is written
    for stem in figures:  # and so does a link at any figure's name
        for path in figure_paths(out / stem):
            check_target(path)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise QunlearnError(f"{out} is not writable: pass --out DIR for the figures")
    return [path for stem, fig in figures.items() for path in save(fig, out / stem)]


def results_figures(verified) -> dict[str, Figure]:
    """Every figure of a verified results directory (see
    :class:`~qunlearn.experiments.runner.VerifiedResults`), {file stem: Figure}, none saved:
    ``plot_results_dir`` writes each as ``<stem>.png`` and ``<stem>.pdf``."""
    config, rows = verified.config, sweep_rows(verified)
    if config["experiment"] == "noise_sweep":
        from qunlearn.plotting.sweep import (
            FIGURE,
            READOUT_FIGURE,
            draw_noise_sweep,
            draw_readouts,
            readout_metrics,
            reference_as_rows,
        )

        ref = None
        if config["dataset"] in REFERENCE_SWEEPS and protocol_check(config)["same_data"]:
            ref = reference_as_rows(reference_rows(REFERENCE_SWEEPS[config["dataset"]]))
        figures = {FIGURE: draw_noise_sweep(rows, reference=ref, title=config["name"])}
        if readout_metrics(rows):
            figures[READOUT_FIGURE] = draw_readouts(rows, title=config["name"])
        from qunlearn.plotting import controls

        if len(config["models"]) >= controls.MIN_VARIANTS and "label_flip" in config["noises"]:
            figures[controls.FIGURE] = controls.draw_control(rows, title=config["name"])
        return figures
    if config["experiment"] == "unlearning":
        from qunlearn.plotting.unlearning import unlearning_figures

        return unlearning_figures(rows, config, verified.table("sweep.csv"))
    if config["experiment"] == "curvature":
        from qunlearn.plotting.curvature import curvature_figures

        return curvature_figures(rows, config, verified.table("density.csv"))
    if config["experiment"] == "roughening":
        from qunlearn.plotting.curvature import draw_roughening

        models = {name: spec["model"] for name, spec in config["models"].items()}
        fig = draw_roughening(rows, models=models, title=config["name"])
        return {"roughening_trace_ratio": fig}
    if config["experiment"] == "evaluation":
        from qunlearn.compare import (
            EXACT_READOUT,
            by_readout,
            evaluation_leaderboard,
            readout_summary,
        )
        from qunlearn.plotting.evaluation import (
            READOUTS_FIGURE,
            evaluation_figures,
            readouts_figure,
        )

        def exact(table: list[dict]) -> list[dict]:  # the exact readout's rows (all, if none)
            return by_readout(table).get(EXACT_READOUT, [])

        bootstrap = verified.table("bootstrap.csv")
        board = evaluation_leaderboard(exact(rows), exact(bootstrap), verified.manifest)
        figures = evaluation_figures(
            exact(rows),
            config,
            exact(verified.table("per_example.csv")),
            exact(verified.table("roc.csv")),
            board,
        )
        summary = readout_summary(rows, bootstrap, verified.manifest)
        if summary:
            figures[READOUTS_FIGURE] = readouts_figure(summary, title=config["name"])
        return figures
    raise QunlearnError(f"no figure for experiment kind {config['experiment']!r}")
