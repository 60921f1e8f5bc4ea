"""The experiment kinds: each is a module that builds its cells (``plan``) and rebuilds its tables
from the verified cells (``write_tables``). The runner and the Dask workers look kinds up here."""

from __future__ import annotations

from dataclasses import fields
from types import SimpleNamespace

from qunlearn.experiments import curvature, evaluation, noise_sweep, roughening, unlearning
from qunlearn.experiments.common import write_table
from qunlearn.experiments.config import CurvatureConfig

EXPERIMENTS = {
    "noise_sweep": noise_sweep.plan,
    "unlearning": unlearning.plan,
    "roughening": roughening.plan,
    "curvature": curvature.plan,
    "evaluation": evaluation.plan,
}
"""experiment kind -> ``plan(config, *, cache_dir, progress) -> Plan`` (its cells and tables)."""

TABLES = {
    "noise_sweep": lambda store, config: write_table(store),
    "unlearning": lambda store, config: unlearning.write_tables(store),
    "roughening": lambda store, config: write_table(store),
    "curvature": lambda store, config: curvature.write_tables(store, _density(config)),
    "evaluation": lambda store, config: evaluation.write_tables(store),
}
"""experiment kind -> ``write(store, config)``: every table, rebuilt from the verified cells."""


def _density(config: dict) -> SimpleNamespace:
    """The density settings of a curvature config dict (its defaults where it has none)."""
    defaults = {f.name: f.default for f in fields(CurvatureConfig)}
    return SimpleNamespace(
        **{k: config.get(k, defaults[k]) for k in ("density_points", "density_sigma")}
    )
