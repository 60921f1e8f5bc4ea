"""Run an experiment config into a results directory: the experiment kind builds its cells (every
check first), then the results directory is locked and the cell engine runs them."""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

from qunlearn.errors import QunlearnError, warn
from qunlearn.experiments import curvature, noise_sweep, roughening, unlearning
from qunlearn.experiments.common import environment, write_table
from qunlearn.experiments.config import CurvatureConfig, check, config_hash, to_dict
from qunlearn.experiments.engine import Progress, run_cells
from qunlearn.experiments.store import ResultStore, locked

EXPERIMENTS = {
    "noise_sweep": noise_sweep.plan,
    "unlearning": unlearning.plan,
    "roughening": roughening.plan,
    "curvature": curvature.plan,
}
"""experiment kind -> ``plan(config, *, cache_dir, progress) -> Plan`` (its cells and tables)."""

TABLES = {
    "noise_sweep": lambda store, config: write_table(store),
    "unlearning": lambda store, config: unlearning.write_tables(store),
    "roughening": lambda store, config: write_table(store),
    "curvature": lambda store, config: curvature.write_tables(store, _density(config)),
}
"""experiment kind -> ``write(store, config)``: every table, rebuilt from the verified cells."""


def run(
    config,
    out: str | Path,
    *,
    cache_dir=None,
    progress: bool | Progress = True,
    executor=None,
    command: str = "",
) -> ResultStore:
    """Check and plan ``config``, then compute its unfinished cells into ``out``. Nothing under
    ``out`` is touched before every check passed; ``out`` is locked while the run writes it."""
    check(config)
    progress = progress if isinstance(progress, Progress) else Progress(progress)
    plan = EXPERIMENTS[config.experiment](config, cache_dir=cache_dir, progress=progress)
    resolved = to_dict(config)
    with locked(out, command=command):
        store = ResultStore(
            out,
            config=resolved,
            config_hash=config_hash(config),
            meta={**environment(resolved), "data": plan.data},
        )
        run_cells(
            store,
            plan.cells,
            tables=plan.tables,
            name=config.name,
            progress=progress,
            executor=executor,
        )
    return store


def _density(config: dict) -> SimpleNamespace:
    """The density settings of a curvature config dict (its defaults where it has none)."""
    defaults = {f.name: f.default for f in fields(CurvatureConfig)}
    return SimpleNamespace(
        **{k: config.get(k, defaults[k]) for k in ("density_points", "density_sigma")}
    )


class VerifiedResults:
    """A results directory as compare and plot see it: the manifest, and every table rebuilt in
    memory from the cells that verify (never from the CSV files as they stand, which anyone can
    edit). ``rejected``: cells left out and why; ``stale``: tables on disk that disagree."""

    def __init__(self, results_dir: str | Path):
        store = ResultStore.read(results_dir)
        self.root, self.manifest = store.root, store.manifest
        self.config = self.manifest["config"]
        kind = self.config["experiment"]
        if kind not in TABLES:
            raise QunlearnError(f"{store.manifest_path}: unknown experiment kind {kind!r}")
        TABLES[kind](store, self.config)
        self.rejected = dict(store.rejected)
        self.texts = dict(store.tables)
        self.stale = sorted(
            name
            for name, text in self.texts.items()
            if not (
                (self.root / name).is_file() and (self.root / name).read_bytes() == text.encode()
            )
        )

    def table(self, name: str = "results.csv") -> list[dict]:
        """Rows of a table (strings, as ``csv.DictReader`` reads the file); [] if it has none."""
        text = self.texts.get(name)
        return [] if text is None else list(csv.DictReader(io.StringIO(text)))

    def has(self, name: str) -> bool:
        return name in self.texts

    def warn_problems(self) -> None:
        """One warning line per problem: cells that do not verify, tables that disagree."""
        for cell_id, why in sorted(self.rejected.items()):
            warn(f"{self.root}: cell {cell_id} does not verify ({why}); left out")
        for name in self.stale:
            warn(
                f"{self.root / name} does not match the verified cells (edited, or an older "
                "run's); using the verified cells"
            )
