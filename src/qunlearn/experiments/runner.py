"""Run an experiment config into a results directory: resumable, one file per finished cell."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from qunlearn.data import DATASETS, load_dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments import noise_sweep
from qunlearn.experiments.common import check_names, environment, model_input, write_table
from qunlearn.experiments.config import NoiseSweepConfig, config_hash, to_dict
from qunlearn.experiments.curvature import run_curvature
from qunlearn.experiments.roughening import run_roughening
from qunlearn.experiments.store import ResultStore
from qunlearn.experiments.unlearning import run_unlearning
from qunlearn.models import MODELS, make_model
from qunlearn.noise import NOISE
from qunlearn.train import progress_ticks


def run_noise_sweep(config: NoiseSweepConfig, out: str | Path, *, cache_dir=None,
                    progress: bool = True) -> ResultStore:
    """Fig 2 sweep. Each (model, noise, alpha) cell is one file; finished cells are skipped.

    Names, values, the dataset and every model are checked before ``out`` is touched. A run whose
    loss ends non-finite gets NaN training metrics (never the accuracy of NaN params); its cell
    (``nonfinite_runs``), the manifest (``nonfinite``) and a warning name it; other cells go on.
    """
    check_names({"dataset": config.dataset}, DATASETS, "dataset")
    check_names({f"models.{m}.model": s.model for m, s in config.models.items()}, MODELS, "model")
    check_names({f"noises[{i}]": n for i, n in enumerate(config.noises)}, NOISE, "noise")
    for alpha in config.alphas:
        if not 0.0 <= alpha < 1.0:
            raise QunlearnError(f"alpha must be in [0, 1), got {alpha}: fix `alphas`")
    if config.runs <= 0:
        raise QunlearnError(f"runs must be a positive integer, got {config.runs}: set runs >= 1")
    cells = {f"{m}__{n}__alpha{a:.3f}": (m, n, a)
             for m in config.models for n in config.noises for a in config.alphas}
    if len(cells) != len(config.models) * len(config.noises) * len(config.alphas):
        raise QunlearnError("two cells share a name (alphas equal to 3 decimals, or a repeated "
                            "noise): list each alpha and noise once")
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    x_train, x_val, dim, is_complex = model_input(dataset)
    epoch_bar = None

    def tick(_epoch):
        if epoch_bar is not None:
            epoch_bar.update(1)

    programs = {}
    for model_name, spec in config.models.items():
        try:
            model = make_model(spec.model, dim, is_complex, **spec.hyper)
            programs[model_name] = noise_sweep.sweep_program(
                model, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                n_train=len(x_train), on_epoch=tick if progress else None,
                run_chunk=spec.run_chunk, batching=spec.batching,
            )
        except QunlearnError as err:
            raise QunlearnError(f"models.{model_name}: {err}") from None

    store = ResultStore(out, config=to_dict(config), config_hash=config_hash(config),
                        meta={**environment(to_dict(config)), "data": dataset.info})
    root = jax.random.PRNGKey(config.seed)
    timings = dict(store.manifest.get("timings", {}))

    def compute(cell_id, model_name, noise, alpha):
        """Train all runs of one cell; write its file, then its timing and the table."""
        nonlocal epoch_bar
        spec, program = config.models[model_name], programs[model_name]
        keys = noise_sweep.run_keys(
            noise_sweep.stable_key(root, config.dataset, model_name, noise, f"{alpha:.6f}"),
            config.runs)
        epoch_bar = tqdm(total=progress_ticks(spec.epochs, config.runs, spec.run_chunk,
                                              spec.batching),
                         desc=f"  {cell_id}", unit="epoch",
                         leave=False, disable=not progress)
        traces_before = len(program.traces)
        metrics, seconds = noise_sweep.run_cell(
            program, keys, x_train, dataset.y_train, x_val, dataset.y_val,
            noise=noise, alpha=alpha, raw_dim=dataset.info.get("raw_dim"))
        epoch_bar.close()
        bad = [r for r in range(config.runs)
               if not all(math.isfinite(metrics[m][r]) for m in noise_sweep.METRICS)]
        for run in bad:  # the parameters are NaN: their "accuracy" would be a misleading number
            for metric in noise_sweep.METRICS:
                metrics[metric][run] = math.nan
        rows = [
            {"dataset": config.dataset, "model": model_name, "noise": noise, "alpha": alpha,
             "run": run, "seed": config.seed, "metric": metric, "value": metrics[metric][run]}
            for run in range(config.runs) for metric in (*noise_sweep.METRICS, "n_poisoned")
        ]
        compiled = len(program.traces) > traces_before
        store.write_cell(cell_id, rows, seconds=seconds, includes_compile=compiled,
                         nonfinite_runs=bad)
        if bad:
            tqdm.write(f"warning: {cell_id}: the loss is NaN or infinite in runs {bad}; their "
                       f"metrics are NaN and the other cells go on: lower models.{model_name}.lr",
                       file=sys.stderr)
        timings[cell_id] = {"seconds": round(seconds, 3), "includes_compile": compiled}
        store.update_manifest(timings=timings)
        write_table(store)

    reused, computed = [], []
    bar = tqdm(total=len(cells), desc=config.name, unit="cell", disable=not progress)
    try:
        for cell_id, (model_name, noise, alpha) in cells.items():
            if store.load_cell(cell_id) is not None:
                reused.append(cell_id)
            else:
                compute(cell_id, model_name, noise, alpha)
                computed.append(cell_id)
            bar.update(1)
    except KeyboardInterrupt:  # Ctrl-C: leave the table matching the finished cells
        write_table(store)
        raise
    bar.close()
    write_table(store)
    nonfinite = {}
    for cell_id in cells:
        cell = store.load_cell(cell_id)
        if cell is not None and cell.get("nonfinite_runs"):
            nonfinite[cell_id] = cell["nonfinite_runs"]
    if nonfinite:
        tqdm.write(f"warning: {len(nonfinite)} cell(s) have runs with a NaN or infinite loss, "
                   f"recorded as NaN: {sorted(nonfinite)}", file=sys.stderr)
    store.update_manifest(nonfinite=nonfinite, last_run={"reused": reused, "computed": computed})
    return store


EXPERIMENTS = {
    "noise_sweep": run_noise_sweep,
    "unlearning": run_unlearning,
    "roughening": run_roughening,
    "curvature": run_curvature,
}


def run(config, out, **kwargs) -> ResultStore:
    start = time.perf_counter()
    store = EXPERIMENTS[config.experiment](config, out, **kwargs)
    store.update_manifest(last_run_seconds=round(time.perf_counter() - start, 3))
    return store
