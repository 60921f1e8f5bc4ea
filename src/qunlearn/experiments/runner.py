"""Run an experiment config into a results directory: the experiment kind builds its cells (every
check first), then the results directory is locked and the cell engine runs them."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path

from qunlearn.atomic import check_target
from qunlearn.data import DATASETS
from qunlearn.errors import QunlearnError, warn
from qunlearn.experiments.common import environment
from qunlearn.experiments.config import (
    _hashed_part,
    check,
    config_hash,
    resolve_method,
    resolve_noise,
    to_dict,
)
from qunlearn.experiments.engine import InProcess, Progress, run_cells
from qunlearn.experiments.kinds import EXPERIMENTS, TABLES
from qunlearn.experiments.store import ResultStore, locked
from qunlearn.models import MODELS
from qunlearn.noise import NOISE
from qunlearn.unlearn import METHODS


def _dask(*args, **kwargs):
    """:class:`~qunlearn.experiments.dask_executor.DaskExecutor`, imported only when asked for
    (dask is an optional extra)."""
    from qunlearn.experiments.dask_executor import DaskExecutor

    return DaskExecutor(*args, **kwargs)


EXECUTORS: dict[str, Callable[..., object]] = {"in_process": InProcess, "dask": _dask}
"""``--executor`` name -> executor factory: the runner chooses the executor, the engine only
drives the one it is handed."""


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
    members = members_used(config)
    if executor is not None and not isinstance(executor, InProcess):
        check_workers_can_import(members)
    with locked(out, command=command):
        store = ResultStore(
            out,
            config=resolved,
            config_hash=config_hash(config),
            meta={**environment(resolved), "data": plan.data, "members": members},
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


def check_workers_can_import(members: dict) -> None:
    """Workers in other processes (Dask) find a member by importing its reference or entry
    point; a name registered in this process does not exist there. Refused here, before ``out``
    is touched, instead of by the first cell on a worker after the manifest is written."""
    entries = [("dataset", members["dataset"])] + [
        (f"{family}.{name}", member)
        for family in ("models", "methods", "noises")
        for name, member in members.get(family, {}).items()
    ]
    for where, member in entries:
        if member["source"] != "registered":
            continue
        reference = member["reference"]
        fix = (
            f"name it by its reference '{reference}' instead (or offer it through an entry point)"
            if not reference.startswith("__main__:")
            else "move it into an importable module and name it by reference 'module:callable'"
        )
        raise QunlearnError(
            f"{where}: '{member['name']}' is registered in this process only, and the workers, "
            f"other processes, cannot see it: {fix}"
        )


def members_used(config) -> dict:
    """What made each member ``config`` names (:meth:`qunlearn.families.Family.provenance`: its
    reference, and the installed version or the sha256 of its module), for the manifest:
    ``{"dataset": {...}, "models": {table: {...}}, "methods": {name: {...}}, "noises": {...}}``.
    Called by ``run`` only, after the plan imported them; readers never import them."""
    out: dict = {"dataset": DATASETS.provenance(config.dataset)}
    out["models"] = {table: MODELS.provenance(spec.model) for table, spec in config.models.items()}
    names = (*getattr(config, "methods", ()), *getattr(config, "sweep", {}))
    if names:
        options = config.method_options
        out["methods"] = {n: METHODS.provenance(resolve_method(options, n)[0]) for n in names}
    if hasattr(config, "noises"):
        options = config.noise_options
        out["noises"] = {n: NOISE.provenance(resolve_noise(options, n)[0]) for n in config.noises}
    return out


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


# --- refining a noise sweep's alpha grid -----------------------------------------------------
#
# A results directory is one config (its hash signs every cell), so adding alphas to a finished
# sweep cannot reuse that directory. But a Fig 2 cell's numbers depend only on (dataset, model,
# noise, alpha) and the seed (experiments/keys.py), never on which other alphas a config lists.
# So the extra alphas go into a sibling results directory OUT/refine-LO-HI-STEP/ holding the
# same config with only the new alphas; compare and plot of OUT read both.

REFINE_PREFIX = "refine-"
DEFAULT_REFINE = "0.40:0.60:0.02"


def refine_grid(text: str) -> tuple[float, ...]:
    """``"LO:HI:STEP"`` -> the alphas LO, LO + STEP, ..., HI (rounded to 3 decimals, as cells are
    named), checked: 0 <= LO <= HI < 1 and STEP > 0."""
    try:
        lo, hi, step = (float(p) for p in text.split(":"))
    except ValueError:
        raise QunlearnError(
            f"--refine-grid {text!r} must be LO:HI:STEP, e.g. {DEFAULT_REFINE}"
        ) from None
    if not (0.0 <= lo <= hi < 1.0 and step > 0):
        raise QunlearnError(
            f"--refine-grid {text!r}: need 0 <= LO <= HI < 1 and STEP > 0, e.g. {DEFAULT_REFINE}"
        )
    count = int((hi - lo) / step + 1e-9) + 1  # every LO + i * STEP up to HI
    if count > 1000:
        raise QunlearnError(f"--refine-grid {text!r} makes {count} alphas: use a larger STEP")
    return tuple(dict.fromkeys(round(lo + i * step, 3) for i in range(count)))


def refine_dir(out: str | Path, grid: tuple[float, ...]) -> Path:
    step = round(grid[1] - grid[0], 3) if len(grid) > 1 else 0.0
    return Path(out) / f"{REFINE_PREFIX}{grid[0]:.3f}-{grid[-1]:.3f}-{step:.3f}"


def refine_config(config, out: str | Path, grid: tuple[float, ...]):
    """The config of ``out``'s refinement: ``config`` with only the alphas of ``grid`` that ``out``
    lacks. ``out`` must hold a finished run of ``config`` itself (the cells to reuse); None when
    ``out`` has every alpha of ``grid`` already."""
    if config.experiment != "noise_sweep":
        raise QunlearnError(
            f"--refine adds noise ratios to a noise sweep, not a {config.experiment}"
        )
    base = ResultStore.read(check_target(out))  # the refinement is written inside it: no link
    if base.manifest.get("config_hash") != config_hash(config):
        raise QunlearnError(
            f"--refine: {out} holds results of another config: run this config there first "
            "(`qunlearn run CONFIG --out OUT`), then refine it with the same config and overrides"
        )
    have = {round(a, 3) for a in config.alphas}
    new = tuple(a for a in grid if round(a, 3) not in have)
    if not new:
        return None
    return dataclasses.replace(config, alphas=new, name=f"{config.name}.refine")


def _comparable_part(config: dict) -> str:
    """The config as hashed, without the alpha grid and the name (all a refinement changes)."""
    data = {k: v for k, v in config.items() if k not in ("alphas", "name")}
    return json.dumps(_hashed_part(data), sort_keys=True)


def refinements(results_dir: str | Path, config: dict) -> list[VerifiedResults]:
    """The refinement directories inside ``results_dir`` (see ``refine_config``) whose config is
    ``config`` but for its alphas; others are warned about and left out."""
    found = []
    for sub in sorted(Path(results_dir).glob(f"{REFINE_PREFIX}*")):
        if not (sub / "manifest.json").is_file():
            continue
        verified = VerifiedResults(sub)
        if _comparable_part(verified.config) != _comparable_part(config):
            warn(f"{sub}: a refinement of another config; left out")
            continue
        verified.warn_problems()
        found.append(verified)
    return found
