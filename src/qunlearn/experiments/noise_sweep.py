"""Fig 2: clean validation accuracy of models trained on poisoned data, swept over the noise ratio.

One cell per (model, noise, alpha), all its runs in one ``vmap``. One compiled program per model
serves every cell: poisoning happens outside it (the poisoned count is static per alpha). A run
whose loss ends non-finite gets NaN metrics (never the accuracy of NaN parameters); ``n_poisoned``
stays. Cell keys: :mod:`qunlearn.experiments.keys`.

``eval_shots = [S, ...]``: a QNN's validation accuracy is also measured with S shots per example
(``val_acc_shots<S>``, :mod:`qunlearn.models.shots`), from the same trained params, each S from
its own key ``fold_in(fold_in(shuffle key, EVAL_SHOTS_TAG), S)`` (the readouts and their keys:
:mod:`qunlearn.experiments.readouts`, shared with the evaluation). Not wired: the training-set
accuracy under shots, and shots for the MLP (it has no measurement).

``eval_circuit_noise = {label = {...}}``: a QNN's validation accuracy is also computed under each
named circuit-noise model (``val_acc_noise_<label>``, :mod:`qunlearn.models.circuit_noise`: gate,
damping and readout channels, exact density matrices), from the same params, trained without
noise: how a noiselessly trained circuit reads out on a noisy device. A model given as a fake
backend's name (``"fake_torino"``) is that snapshot's means over the qubits the circuit would run
on (:func:`qunlearn.hardware.circuit_noise_on_device`), resolved before ``--out`` is touched and
recorded in the manifest's data description. The input state is prepared ideally (noise acts on
the ansatz and the readout only, see docs/quantum.md).

``eval_device_shots = [S, ...]`` and ``eval_mitigate_readout = true``: each circuit-noise model
also read out with S shots (``val_acc_noise_<label>_shots<S>``: a device's readout) and with its
readout error mitigated (``..._mitigated``); :mod:`qunlearn.experiments.readouts`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from qunlearn.data import load_dataset, n_classes
from qunlearn.errors import user_code
from qunlearn.experiments.common import build_model, model_input, run_devices, write_table
from qunlearn.experiments.config import resolve_noise
from qunlearn.experiments.engine import Cell, CellResult, Plan, Progress
from qunlearn.experiments.keys import run_keys, stable_key
from qunlearn.experiments.programs import shared
from qunlearn.experiments.readouts import (
    Readout,
    config_readouts,
    read_out,
    resolve_circuit_noise,
)
from qunlearn.models import Model
from qunlearn.noise import NOISE, check_poisoned
from qunlearn.train import accuracy, hit_rate, make_supervised_train, over_runs, progress_ticks

METRICS = ("train_acc_noisy_labels", "val_acc", "final_loss")


def readout_metric(readout: str) -> str:
    """The validation accuracy of readout ``readout`` (:mod:`qunlearn.experiments.readouts`)."""
    return f"val_acc_{readout}"


def shot_metric(shots: int) -> str:
    return readout_metric(f"shots{shots}")


def noise_metric(label: str) -> str:
    return readout_metric(f"noise_{label}")


def sweep_program(
    model: Model,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    n_train: int,
    on_epoch: Callable | None = None,
    run_chunk: int = 0,
    batching: str = "epoch",
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    devices=None,
    readouts: dict[str, Readout] | None = None,
):
    """``runs_fn(init_keys, shuffle_keys, x, y, x_val, y_val) -> metrics`` over a leading run axis.

    ``x, y`` are (runs, N, ...) poisoned training sets; validation is shared. Jitted once; the
    returned function carries ``.traces`` (how often it was traced) for the compile-count test.
    ``run_chunk``: see :func:`qunlearn.train.over_runs`; ``batching``: see
    :func:`qunlearn.train.batching_plan`; ``weight_decay``, ``label_smoothing``: see
    :func:`qunlearn.train.make_supervised_train`; ``devices``: the run axis split over them
    (:func:`qunlearn.train.shard_runs`); ``readouts``: {name: :class:`Readout`} of the same
    params (:func:`~qunlearn.experiments.readouts.readout_models`), each adds the metric
    :func:`readout_metric` (name), drawn from the run's shuffle key.
    """
    train = make_supervised_train(
        model,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        n_train=n_train,
        batching=batching,
        on_epoch=on_epoch,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
    )
    traces = []

    def run_one(init_key, shuffle_key, x, y, x_val, y_val):
        traces.append(1)
        params, log = train(shuffle_key, model.init(init_key), {"x": x, "y": y}, None)
        out = {
            "train_acc_noisy_labels": accuracy(model, params, x, y),
            "val_acc": accuracy(model, params, x_val, y_val),
            "final_loss": log["loss"][-1],
        }
        for name, readout in (readouts or {}).items():
            p = read_out(readout, params, x_val, shuffle_key)
            out[readout_metric(name)] = hit_rate(p, y_val)
        return out

    fn = jax.jit(over_runs(run_one, (0, 0, 0, 0, None, None), run_chunk, devices))
    # jit's wrapper takes attributes; jax's stubs declare none
    fn.traces = traces  # type: ignore[attr-defined]
    return fn


def poison_runs(
    noise: str,
    poison_keys,
    x,
    y,
    alpha: float,
    *,
    raw_dim: int | None = None,
    options: dict | None = None,
):
    """Poisoned copies for every run: (runs, N, D) features, (runs, N) labels, (runs, N) masks.
    ``noise``: a member of :data:`~qunlearn.noise.NOISE`; ``options``: its keyword options."""
    fn = partial(NOISE.resolve(noise), **(options or {}))
    if noise == "feature_randomization" and raw_dim is not None:
        fn = partial(fn, raw_dim=raw_dim)
    # JAX arrays, as qunlearn.testing.check_noise passes them: a noise kind may index x with a
    # traced permutation (x[rows]), which a NumPy array refuses
    x, y = jnp.asarray(x), jnp.asarray(y)
    return jax.vmap(lambda k: fn(k, x, y, alpha))(poison_keys)


def check_user_noise(name: str, kind: str, options: dict, x, y, alphas) -> None:
    """Run a user's noise kind once per alpha on the training set, before ``--out`` is touched:
    an exception or a broken contract (:func:`~qunlearn.noise.check_poisoned`) is one line."""
    for alpha in alphas:
        failed = f"noise kind {kind!r} (noises[{name!r}]) failed at alpha = {alpha}"
        with user_code(f"noises[{name!r}]", failed):
            out = poison_runs(kind, jax.random.PRNGKey(0)[None], x, y, alpha, options=options)
        check_poisoned(kind, x, y, alpha, tuple(a[0] for a in out))


def run_cell(
    program,
    keys,
    x,
    y,
    x_val,
    y_val,
    *,
    noise: str,
    alpha: float,
    raw_dim: int | None = None,
    options: dict | None = None,
) -> tuple[dict, float]:
    """Train all runs of one (noise, alpha) cell; returns per-run metrics and wall seconds."""
    start = time.perf_counter()
    xp, yp, mask = poison_runs(noise, keys[:, 0], x, y, alpha, raw_dim=raw_dim, options=options)
    out = jax.block_until_ready(
        program(keys[:, 1], keys[:, 2], xp, yp.astype(x_val.real.dtype), x_val, y_val)
    )
    metrics = {k: [float(v) for v in out[k]] for k in out}
    metrics["n_poisoned"] = [int(m) for m in jnp.sum(mask, axis=1)]
    return metrics, time.perf_counter() - start


def cell_id(model_name: str, noise: str, alpha: float) -> str:
    return f"{model_name}__{noise}__alpha{alpha:.3f}"


def plan(config, *, cache_dir=None, progress: Progress) -> Plan:
    """The cells of a :class:`~qunlearn.experiments.config.NoiseSweepConfig` (checked by the
    config layer); the dataset and every model are built here, before ``--out`` is touched."""
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    x_train, x_val, dim, is_complex = model_input(dataset)
    root = jax.random.PRNGKey(config.seed)
    noises = {name: resolve_noise(config.noise_options, name) for name in config.noises}
    for name, (kind, options) in noises.items():
        if not NOISE.is_builtin(kind) or options:
            check_user_noise(name, kind, options, x_train, dataset.y_train, config.alphas)
    circuit_noise = resolve_circuit_noise(config.eval_circuit_noise, dim)
    classes = n_classes(dataset)
    cells = {}
    for model_name, spec in config.models.items():
        model = build_model(model_name, spec, dim, is_complex, classes)

        readouts = config_readouts(config, model_name, spec, dim, is_complex, circuit_noise)
        names = (*METRICS, *map(readout_metric, readouts))
        program = shared(sweep_program)(
            model,
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            lr=spec.lr,
            n_train=len(x_train),
            on_epoch=progress.on_epoch,
            run_chunk=spec.run_chunk,
            batching=spec.batching,
            weight_decay=spec.weight_decay,
            label_smoothing=spec.label_smoothing,
            devices=run_devices(spec.devices),
            readouts=readouts,
        )
        ticks = progress_ticks(
            spec.epochs, config.runs, spec.run_chunk, spec.batching, run_devices(spec.devices)
        )
        for noise in config.noises:
            for alpha in config.alphas:

                def compute(
                    store,
                    model_name=model_name,
                    program=program,
                    noise=noise,
                    alpha=alpha,
                    names=names,
                ):
                    keys = run_keys(
                        stable_key(root, config.dataset, model_name, noise, f"{alpha:.6f}"),
                        config.runs,
                    )
                    traces = len(program.traces)
                    metrics, _ = run_cell(
                        program,
                        keys,
                        x_train,
                        dataset.y_train,
                        x_val,
                        dataset.y_val,
                        noise=noises[noise][0],
                        alpha=alpha,
                        raw_dim=dataset.info.get("raw_dim"),
                        options=noises[noise][1],
                    )
                    for run in range(config.runs):  # NaN params: their "accuracy" would mislead
                        if not all(math.isfinite(metrics[m][run]) for m in names):
                            for m in names:
                                metrics[m][run] = math.nan
                    rows = [
                        {
                            "dataset": config.dataset,
                            "model": model_name,
                            "noise": noise,
                            "alpha": alpha,
                            "run": run,
                            "seed": config.seed,
                            "metric": metric,
                            "value": metrics[metric][run],
                        }
                        for run in range(config.runs)
                        for metric in (*names, "n_poisoned")
                    ]
                    return CellResult(rows, compiled=len(program.traces) > traces)

                cells[cell_id(model_name, noise, alpha)] = Cell(
                    compute, ticks=ticks, nonfinite_hint=f"lower models.{model_name}.lr"
                )
    info = dataset.info
    if any(isinstance(v, str) for v in config.eval_circuit_noise.values()):
        info = info | {"eval_circuit_noise": circuit_noise}  # what the device names resolved to
    return Plan(cells, lambda store, final: write_table(store), info)
