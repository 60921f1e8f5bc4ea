"""Run an experiment config into a results directory: resumable, one atomic file per finished cell."""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import platform
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from qunlearn.data import load_dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments import noise_sweep
from qunlearn.experiments.config import NoiseSweepConfig, config_hash, to_dict
from qunlearn.experiments.store import ResultStore
from qunlearn.models import make_model
from qunlearn.noise import NOISE

PACKAGES = ("qunlearn", "jax", "jaxlib", "optax", "numpy", "scipy", "tensorcircuit-ng")


def environment() -> dict:
    """Versions, platform and git revision for a result's manifest."""
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {
        "versions": versions,
        "git_revision": rev,
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "jax_x64": bool(jax.config.jax_enable_x64),
    }


def model_input(dataset, representation: str = "native"):
    """(x_train, x_val, input_dim, complex_input) for a model. ``realified``: [Re; Im] amplitudes."""
    x_train, x_val = dataset.x_train, dataset.x_val
    if representation == "realified" and np.iscomplexobj(x_train):
        x_train = np.concatenate([x_train.real, x_train.imag], axis=1)
        x_val = np.concatenate([x_val.real, x_val.imag], axis=1)
    elif representation not in ("native", "realified"):
        raise QunlearnError(f"unknown input representation {representation!r}: "
                            "use 'native' or 'realified'")
    return x_train, x_val, x_train.shape[1], bool(np.iscomplexobj(x_train))


def _check_names(names, family: dict, what: str) -> None:
    for name in names:
        if name not in family:
            raise QunlearnError(f"unknown {what} {name!r}: choose from {sorted(family)}")


def run_noise_sweep(config: NoiseSweepConfig, out: str | Path, *, cache_dir=None,
                    progress: bool = True) -> ResultStore:
    """Fig 2 sweep. Each (model, noise, alpha) cell is one file; finished cells are skipped."""
    _check_names(config.noises, NOISE, "noise")
    for alpha in config.alphas:
        if not 0.0 <= alpha < 1.0:
            raise QunlearnError(f"alpha must be in [0, 1), got {alpha}: fix `alphas`")
    if config.runs <= 0:
        raise QunlearnError(f"runs must be a positive integer, got {config.runs}")
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    store = ResultStore(out, config=to_dict(config), config_hash=config_hash(config),
                        meta={**environment(), "data": dataset.info})
    root = jax.random.PRNGKey(config.seed)
    cells = [(m, n, a) for m in config.models for n in config.noises for a in config.alphas]
    timings = dict(store.manifest.get("timings", {}))
    bar = tqdm(total=len(cells), desc=config.name, unit="cell", disable=not progress)
    epoch_bar = None

    def tick(_epoch):
        if epoch_bar is not None:
            epoch_bar.update(1)

    for model_name, spec in config.models.items():
        x_train, x_val, dim, is_complex = model_input(dataset)
        model = make_model(spec.model, dim, is_complex, **spec.hyper)
        program = noise_sweep.sweep_program(
            model, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
            n_train=len(x_train), on_epoch=tick if progress else None,
        )
        for noise, alpha in [(n, a) for (m, n, a) in cells if m == model_name]:
            cell_id = f"{model_name}__{noise}__alpha{alpha:.3f}"
            if store.load_cell(cell_id) is not None:
                bar.update(1)
                continue
            keys = noise_sweep.run_keys(
                noise_sweep.stable_key(root, config.dataset, model_name, noise, f"{alpha:.6f}"),
                config.runs)
            epoch_bar = tqdm(total=spec.epochs, desc=f"  {cell_id}", unit="epoch",
                             leave=False, disable=not progress)
            traces_before = len(program.traces)
            metrics, seconds = noise_sweep.run_cell(
                program, keys, x_train, dataset.y_train, x_val, dataset.y_val,
                noise=noise, alpha=alpha, raw_dim=dataset.info.get("raw_dim"))
            epoch_bar.close()
            bad = [r for r, v in enumerate(metrics["final_loss"]) if not math.isfinite(v)]
            rows = [
                {"dataset": config.dataset, "model": model_name, "noise": noise, "alpha": alpha,
                 "run": run, "seed": config.seed, "metric": metric, "value": metrics[metric][run]}
                for run in range(config.runs) for metric in (*noise_sweep.METRICS, "n_poisoned")
            ]
            compiled = len(program.traces) > traces_before
            store.write_cell(cell_id, rows, seconds=seconds, includes_compile=compiled,
                             nonfinite_runs=bad)
            if bad:
                tqdm.write(f"warning: {cell_id}: non-finite loss in runs {bad}; kept as NaN rows")
            timings[cell_id] = {"seconds": round(seconds, 3), "includes_compile": compiled}
            store.update_manifest(timings=timings)
            _write_table(store)
            bar.update(1)
    bar.close()
    _write_table(store)
    return store


def _write_table(store: ResultStore) -> Path:
    rows = [row for cell in store.finished_cells() for row in cell["rows"]]
    return store.write_table(rows)


EXPERIMENTS = {
    "noise_sweep": run_noise_sweep,
}


def run(config, out, **kwargs) -> ResultStore:
    start = time.perf_counter()
    store = EXPERIMENTS[config.experiment](config, out, **kwargs)
    store.update_manifest(last_run_seconds=round(time.perf_counter() - start, 3))
    return store
