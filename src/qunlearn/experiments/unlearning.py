"""Fig 3: unlearn a label-flipped teacher with every method; metrics at the start of every epoch.

Per model: one poisoning draw (shared by all models, as in the reference script) and one teacher
trained on it, or with ``redraw_teacher`` a new draw and teacher per run. Then every method runs
``runs`` times in one ``vmap``; runs differ by their key (fresh init for retrain, batch order), and
run ``r`` uses the same key for every method (paired comparison). One program is compiled per
method *form* (``Method.form``): all reference methods share one, weights and starting params being
traced inputs. Weight sweeps ``vmap`` over (grid point, run) in chunks and keep final metrics only.

Results directory (see :mod:`qunlearn.experiments.store`): ``cells/<model>__teacher.json`` (+
``.npz`` with the teacher params and poisoning, no pickle), ``cells/<model>__<method>.json``,
``cells/<model>__sweep__<method>.json``; tables ``results.csv`` (dataset, model, method, variant,
run, epoch, metric, value, seed; epoch = epochs means after the last epoch), ``teacher.csv`` and
``sweep.csv``.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import itertools
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qunlearn.atomic import atomic_write_bytes, atomic_write_text
from qunlearn.data import load_dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import environment, model_input, padded_chunks
from qunlearn.experiments.config import UnlearningConfig, config_hash, to_dict
from qunlearn.experiments.noise_sweep import stable_key
from qunlearn.experiments.store import ResultStore
from qunlearn.models import Model, make_model
from qunlearn.noise import flip_labels, n_poisoned
from qunlearn.train import make_supervised_train, over_runs, progress_ticks
from qunlearn.unlearn import (
    METHODS,
    METRICS,
    Method,
    make_method,
    make_split,
    make_unlearn,
    unlearning_metrics,
)

TRAJECTORY_METRICS = (*METRICS, "loss")


# ---------------------------------------------------------------------------------------------
# Programs


def teacher_program(model: Model, *, epochs: int, batch_size: int, lr: float, n_train: int,
                    on_epoch=None, run_chunk: int = 0, batching: str = "epoch"):
    """``fn(init_keys, shuffle_keys, x, y_noisy) -> params`` over a leading teacher axis."""
    train = make_supervised_train(model, lr=lr, epochs=epochs, batch_size=batch_size,
                                  n_train=n_train, batching=batching, on_epoch=on_epoch)

    def one(init_key, shuffle_key, x, y):
        return train(shuffle_key, model.init(init_key), {"x": x, "y": y.astype(x.real.dtype)},
                     None)[0]

    return jax.jit(over_runs(one, (0, 0, None, 0), run_chunk))


def unlearning_program(model: Model, method: Method, *, lr: float, epochs: int, n_forget: int,
                       shared_teacher: bool, trajectory: bool = True, on_epoch=None,
                       run_chunk: int = 0, snapshot_every: int = 0):
    """``fn(keys, start, teacher, y_noisy, mask, weights, shared) -> log`` over a leading run axis.

    ``keys`` (R,) batch-order keys, ``start`` (R, ...) starting params, ``weights`` {name: (R,)};
    ``teacher``, ``y_noisy``, ``mask`` are shared (``shared_teacher``) or per run; ``shared`` =
    {x_train, y_true, x_val, y_val}. Jitted once; ``.traces`` counts its tracings.
    ``snapshot_every = k > 0`` adds ``log["snapshots"]`` (R, S, ...): params every k epochs.
    """
    unlearn = make_unlearn(model, method, lr=lr, epochs=epochs, trajectory=trajectory,
                           on_epoch=on_epoch, snapshot_every=snapshot_every)
    traces = []

    def run_one(key, start, teacher, y_noisy, mask, weights, shared):
        traces.append(1)
        split = make_split(shared["x_train"], shared["y_true"], y_noisy, mask, shared["x_val"],
                           shared["y_val"], n_forget=n_forget)
        return unlearn(key, start, teacher, split, weights)[1]

    t = None if shared_teacher else 0
    fn = jax.jit(over_runs(run_one, (0, 0, t, t, t, 0, None), run_chunk))
    fn.traces = traces
    return fn


# ---------------------------------------------------------------------------------------------
# Keys: every experiment built on the Fig 3 set-up (unlearning, curvature) derives them here, so the
# same seed and names give the same poisoning, teachers and unlearning runs.


def poison_keys(root, dataset: str, alpha: float, n: int):
    """(n,) keys of the label-flip draws; one per teacher index, shared by every model."""
    poison = stable_key(root, dataset, "label_flip", f"{alpha:.6f}", "poison")
    return jax.vmap(lambda t: jax.random.fold_in(poison, t))(jnp.arange(n))


def teacher_keys(root, dataset: str, model_name: str, n: int):
    """(n, 2) keys (init, batch order) of the teachers of one model."""
    teacher_root = stable_key(root, dataset, model_name, "teacher")
    return jax.vmap(lambda t: jax.random.split(jax.random.fold_in(teacher_root, t)))(
        jnp.arange(n))


def unlearning_keys(root, dataset: str, model_name: str, runs: int):
    """(runs, 2) keys (start, batch order) per unlearning run, the same for every method."""
    unlearn_root = stable_key(root, dataset, model_name, "unlearn")
    return jax.vmap(lambda r: jax.random.split(jax.random.fold_in(unlearn_root, r)))(
        jnp.arange(runs))


# ---------------------------------------------------------------------------------------------
# Teacher files: params + poisoning as .npz (never pickled), written atomically


def save_teacher_npz(path: Path, params, y_noisy, mask) -> str:
    """Write what :func:`load_teacher_npz` reads back; returns the file's SHA-256."""
    arrays = {f"param_{i:03d}": np.asarray(leaf)
              for i, leaf in enumerate(jax.tree_util.tree_leaves(params))}
    buf = io.BytesIO()
    np.savez(buf, **arrays, y_noisy=np.asarray(y_noisy, np.int32), mask=np.asarray(mask, bool))
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_teacher_npz(path: Path, sha256: str, model: Model):
    """(params, y_noisy, mask) with a leading teacher axis, or None if missing or corrupt."""
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        return None
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    treedef = jax.tree_util.tree_structure(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    leaves = [jnp.asarray(arrays[f"param_{i:03d}"]) for i in range(treedef.num_leaves)]
    return (jax.tree_util.tree_unflatten(treedef, leaves), jnp.asarray(arrays["y_noisy"]),
            jnp.asarray(arrays["mask"]))


# ---------------------------------------------------------------------------------------------
# Config checks


def _resolve(config: UnlearningConfig, name: str) -> tuple[str, dict]:
    """(base method, options) for a configured method name; ``method_options[name].method`` makes
    an alias, e.g. ``ga_true = {method = "gradient_ascent", labels = "true"}``."""
    options = dict(config.method_options.get(name, {}))
    return options.pop("method", name), options


RESERVED = {"n_retain", "n_forget", "epochs", "batch_size"}


def forget_set_size(n_train: int, alpha: float) -> int:
    """|D_f|: the labels flipped at ``alpha``; an empty forget set fails with one line."""
    n_forget = n_poisoned(n_train, alpha, "label_flip")
    if n_forget == 0:
        raise QunlearnError(f"alpha = {alpha} flips no label of {n_train} samples, so the "
                            "forget set is empty: raise `alpha`")
    return n_forget


def check_config(config: UnlearningConfig) -> None:
    if config.noise != "label_flip":
        raise QunlearnError(f"unlearning needs noise = 'label_flip' (the forget set is the flipped "
                            f"samples), got {config.noise!r}")
    if not 0.0 < config.alpha < 1.0:
        raise QunlearnError(f"alpha must be in (0, 1), got {config.alpha}: fix `alpha`")
    if config.runs <= 0:
        raise QunlearnError(f"runs must be a positive integer, got {config.runs}")
    if config.sweep_chunk <= 0:
        raise QunlearnError(f"sweep_chunk must be a positive integer, got {config.sweep_chunk}")
    if not config.methods and not config.sweep:
        raise QunlearnError("nothing to run: list `methods` or add a [sweep] table")
    known = set(config.methods) | set(config.sweep) | set(METHODS)  # unused options are fine
    for name in config.method_options:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise QunlearnError(f"method_options.{name}{did} names no method in `methods`, [sweep] "
                                f"or {sorted(METHODS)}")
    for name, axes in config.sweep.items():
        if not isinstance(axes, dict) or not axes or not all(
                isinstance(v, list) and v for v in axes.values()):
            raise QunlearnError(f"sweep.{name} must map option names to non-empty lists, e.g. "
                                "fo_w = [0.0, 0.1]")
        if RESERVED & set(axes):
            raise QunlearnError(f"sweep.{name} cannot sweep {sorted(RESERVED & set(axes))}: sweep "
                                "the method's loss weights (e.g. kl_w, fo_w)")
    for name in (*config.methods, *config.sweep):
        base, options = _resolve(config, name)
        if base not in METHODS:
            hint = difflib.get_close_matches(base, METHODS, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise QunlearnError(f"unknown unlearning method {base!r}{did}: choose one of "
                                f"{sorted(METHODS)}")
        if RESERVED & set(options):
            raise QunlearnError(f"method_options.{name} cannot set "
                                f"{sorted(RESERVED & set(options))}: they come from the model's "
                                "unlearn_* settings")


# ---------------------------------------------------------------------------------------------
# The experiment


def run_unlearning(config: UnlearningConfig, out: str | Path, *, cache_dir=None,
                   progress: bool = True) -> ResultStore:
    """Fig 3 (and weight sweeps). One file per finished cell; finished cells are skipped.

    The config, the data set, every model and every method (sweep points included) are checked
    before ``out`` is touched.
    """
    check_config(config)
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    n_train = len(dataset.y_train)
    n_forget = forget_set_size(n_train, config.alpha)
    plans = {name: plan_model(config, name, spec, dataset, n_train - n_forget, n_forget)
             for name, spec in config.models.items()}
    store = ResultStore(out, config=to_dict(config), config_hash=config_hash(config),
                        meta={**environment(to_dict(config)), "data": dataset.info})
    session = _Session(config, store, dataset, progress)
    for model_name, plan in plans.items():
        session.run_model(model_name, plan)
    session.bar.close()
    write_tables(store)
    return store


class _ModelPlan(NamedTuple):
    """What one model runs: its inputs, trajectory methods and sweep grids, all checked."""

    model: Model
    spec: object  # UnlearnSpec
    shared: dict  # x_train, y_true, x_val, y_val
    methods: dict  # name -> (base method, options, Method)
    sweeps: dict  # name -> (grid points, [Method] per point)


def plan_model(config: UnlearningConfig, name: str, spec, dataset, n_retain: int,
                n_forget: int) -> _ModelPlan:
    try:
        x_train, x_val, dim, is_complex = model_input(dataset, spec.input)
        model = make_model(spec.model, dim, is_complex, **spec.hyper)
    except QunlearnError as err:
        raise QunlearnError(f"models.{name}: {err}") from None

    def method_for(method: str, **override) -> tuple[str, dict, Method]:
        base, options = _resolve(config, method)
        options |= override
        return base, options, make_method(
            base, model, n_retain=n_retain, n_forget=n_forget, epochs=spec.unlearn_epochs,
            batch_size=spec.unlearn_batch_size, **options)

    methods = {method: method_for(method) for method in config.methods}
    sweeps = {}
    for method, axes in config.sweep.items():
        grid = [dict(zip(axes, values, strict=True))
                for values in itertools.product(*axes.values())]
        try:
            members = [method_for(method, **point)[2] for point in grid]
        except QunlearnError as err:
            raise QunlearnError(f"sweep.{method}: {err}") from None
        if len({m.form for m in members}) > 1:
            raise QunlearnError(f"sweep.{method}: only loss weights can be swept (options "
                                f"{sorted(axes)} change the method's shape)")
        sweeps[method] = (grid, members)
    shared = {"x_train": jnp.asarray(x_train), "y_true": jnp.asarray(dataset.y_train),
              "x_val": jnp.asarray(x_val), "y_val": jnp.asarray(dataset.y_val)}
    return _ModelPlan(model, spec, shared, methods, sweeps)


class _Session:
    """One ``run_unlearning`` call: the store, progress bars, and what every model shares."""

    def __init__(self, config: UnlearningConfig, store: ResultStore, dataset, progress: bool):
        self.config, self.store, self.dataset, self.progress = config, store, dataset, progress
        self.root = jax.random.PRNGKey(config.seed)
        self.n_train = len(dataset.y_train)
        self.n_forget = n_poisoned(self.n_train, config.alpha, "label_flip")
        self.n_teachers = config.runs if config.redraw_teacher else 1
        # one poisoning draw per teacher index, shared by all models (as in the reference script)
        self.poison_keys = poison_keys(self.root, config.dataset, config.alpha, self.n_teachers)
        self.timings = dict(store.manifest.get("timings", {}))
        n_cells = len(config.models) * (1 + len(config.methods) + len(config.sweep))
        self.bar = tqdm(total=n_cells, desc=config.name, unit="cell", disable=not progress)
        self.epoch_bar = None

    def tick(self, _epoch) -> None:
        if self.epoch_bar is not None:
            self.epoch_bar.update(1)

    def epochs_bar(self, total: int, desc: str):
        self.epoch_bar = tqdm(total=total, desc=f"  {desc}", unit="epoch", leave=False,
                              disable=not self.progress)
        return self.epoch_bar

    def record(self, cell_id: str, rows: list[dict], seconds: float, compiled: bool, **info):
        self.store.write_cell(cell_id, rows, seconds=seconds, includes_compile=compiled, **info)
        self.timings[cell_id] = {"seconds": round(seconds, 3), "includes_compile": compiled,
                                 "optimizer_steps": info.get("optimizer_steps")}
        self.store.update_manifest(timings=self.timings)
        write_tables(self.store)
        self.bar.update(1)

    def run_model(self, model_name: str, plan: _ModelPlan) -> None:
        config, store = self.config, self.store
        method_cells = {name: f"{model_name}__{name}" for name in plan.methods}
        sweep_cells = {name: f"{model_name}__sweep__{name}" for name in plan.sweeps}
        todo = [c for c in (*method_cells.values(), *sweep_cells.values())
                if store.load_cell(c) is None]
        if not todo and store.load_cell(f"{model_name}__teacher") is not None:
            self.bar.update(1 + len(method_cells) + len(sweep_cells))
            return
        teacher = self.teacher(model_name, plan)
        if not config.redraw_teacher:
            teacher = jax.tree_util.tree_map(lambda a: a[0], teacher)
        # keys per unlearning run, the same for every method (paired comparison)
        run_keys = unlearning_keys(self.root, config.dataset, model_name, config.runs)
        programs = {}

        def program_for(method: Method, trajectory: bool):
            key = (method.form, trajectory)
            if key not in programs:
                programs[key] = unlearning_program(
                    plan.model, method, lr=plan.spec.unlearn_lr, epochs=plan.spec.unlearn_epochs,
                    n_forget=self.n_forget, shared_teacher=not config.redraw_teacher,
                    trajectory=trajectory, on_epoch=self.tick, run_chunk=plan.spec.run_chunk)
            return programs[key]

        for name, cell_id in method_cells.items():
            if store.load_cell(cell_id) is None:
                self.trajectories(name, cell_id, model_name, plan, program_for, run_keys, teacher)
            else:
                self.bar.update(1)
        for name, cell_id in sweep_cells.items():
            if store.load_cell(cell_id) is None:
                self.sweep(name, cell_id, model_name, plan, program_for, run_keys, teacher)
            else:
                self.bar.update(1)

    def teacher(self, model_name: str, plan: _ModelPlan):
        """(params, y_noisy, mask) with a leading teacher axis: loaded, or trained and saved."""
        config, spec, shared = self.config, plan.spec, plan.shared
        cell_id = f"{model_name}__teacher"
        npz = self.store.cells_dir / f"{cell_id}.npz"
        cell = self.store.load_cell(cell_id)
        loaded = cell and load_teacher_npz(npz, cell.get("npz_sha256", ""), plan.model)
        if loaded:
            self.bar.update(1)
            return loaded
        start = time.perf_counter()
        _, y_noisy, mask = jax.vmap(lambda k: flip_labels(
            k, shared["x_train"], self.dataset.y_train, config.alpha))(self.poison_keys)
        keys = teacher_keys(self.root, config.dataset, model_name, self.n_teachers)
        program = teacher_program(plan.model, epochs=spec.epochs, batch_size=spec.batch_size,
                                  lr=spec.lr, n_train=self.n_train, on_epoch=self.tick,
                                  run_chunk=spec.run_chunk, batching=spec.batching)
        ticks = progress_ticks(spec.epochs, self.n_teachers, spec.run_chunk, spec.batching)
        with self.epochs_bar(ticks, cell_id):
            params = jax.block_until_ready(
                program(keys[:, 0], keys[:, 1], shared["x_train"], y_noisy))

        def metrics_of(p, yn, m):
            return unlearning_metrics(plan.model, p, make_split(
                shared["x_train"], shared["y_true"], yn, m, shared["x_val"], shared["y_val"],
                n_forget=self.n_forget))

        metrics = jax.jit(jax.vmap(metrics_of))(params, y_noisy, mask)
        digest = save_teacher_npz(npz, params, y_noisy, mask)
        base = {"dataset": config.dataset, "model": model_name}
        rows = [base | {"teacher": t, "metric": metric, "value": float(metrics[metric][t]),
                        "seed": config.seed}
                for t in range(self.n_teachers) for metric in METRICS]
        rows += [base | {"teacher": t, "metric": "n_forget", "value": int(mask[t].sum()),
                         "seed": config.seed} for t in range(self.n_teachers)]
        steps = spec.epochs * math.ceil(self.n_train / min(spec.batch_size, self.n_train))
        self.record(cell_id, rows, time.perf_counter() - start, True, kind="teacher",
                    npz_sha256=digest, optimizer_steps=steps)
        return params, y_noisy, mask

    def trajectories(self, name, cell_id, model_name, plan, program_for, run_keys,
                     teacher) -> None:
        """All runs of one method in one vmap; metrics at the start of every epoch."""
        config = self.config
        base, options, method = plan.methods[name]
        program = program_for(method, True)
        traces = len(program.traces)
        start_time = time.perf_counter()
        t_axis = 0 if config.redraw_teacher else None
        starts = jax.vmap(method.start, in_axes=(0, t_axis))(run_keys[:, 0], teacher[0])
        weights = {k: jnp.full((config.runs,), v) for k, v in method.weights.items()}
        ticks = progress_ticks(plan.spec.unlearn_epochs, config.runs, plan.spec.run_chunk)
        with self.epochs_bar(ticks, cell_id):
            log = jax.block_until_ready(
                program(run_keys[:, 1], starts, *teacher, weights, plan.shared))
        seconds = time.perf_counter() - start_time
        rows = trajectory_rows(log, dataset=config.dataset, model=model_name, method=name,
                               variant=method.variant, seed=config.seed)
        bad = sorted({r["run"] for r in rows if not math.isfinite(r["value"])})
        if bad:
            tqdm.write(f"warning: {cell_id}: non-finite values in runs {bad}; kept as NaN rows")
        self.record(cell_id, rows, seconds, len(program.traces) > traces, kind="trajectory",
                    method=base, variant=method.variant, options=options,
                    weights=method.weights, optimizer_steps=method.steps, nonfinite_runs=bad)

    def sweep(self, name, cell_id, model_name, plan, program_for, run_keys, teacher) -> None:
        """Final metrics at every grid point; (point, run) pairs vmapped in chunks."""
        config = self.config
        grid, methods = plan.sweeps[name]
        program = program_for(methods[0], False)
        traces = len(program.traces)
        start_time = time.perf_counter()
        finals = sweep_finals(program, methods, run_keys, teacher, plan.shared,
                              per_run_teacher=config.redraw_teacher, chunk=config.sweep_chunk,
                              bar=self.epochs_bar, desc=cell_id, epochs=plan.spec.unlearn_epochs,
                              run_chunk=plan.spec.run_chunk)
        rows = [{"dataset": config.dataset, "model": model_name, "method": name,
                 "variant": methods[g].variant, **point, "run": r,
                 "epoch": plan.spec.unlearn_epochs, "metric": metric,
                 "value": float(finals[metric][g, r]), "seed": config.seed}
                for g, point in enumerate(grid) for r in range(config.runs) for metric in METRICS]
        self.record(cell_id, rows, time.perf_counter() - start_time,
                    len(program.traces) > traces, kind="sweep", axes=config.sweep[name],
                    optimizer_steps=methods[0].steps)


def trajectory_rows(log, *, dataset, model, method, variant, seed) -> list[dict]:
    """Tidy rows from a vmapped log: epoch e < E at the start of epoch e, E = after the last."""
    runs, epochs = log["loss"].shape
    start = {m: np.asarray(log["start"][m]) for m in METRICS} | {"loss": np.asarray(log["loss"])}
    final = {m: np.asarray(log["final"][m]) for m in METRICS}
    base = {"dataset": dataset, "model": model, "method": method, "variant": variant}
    rows = [base | {"run": r, "epoch": e, "metric": m, "value": float(start[m][r, e]),
                    "seed": seed}
            for r in range(runs) for e in range(epochs) for m in TRAJECTORY_METRICS]
    rows += [base | {"run": r, "epoch": epochs, "metric": m, "value": float(final[m][r]),
                     "seed": seed}
             for r in range(runs) for m in METRICS]
    return rows


def sweep_finals(program, methods, run_keys, teacher, shared, *, per_run_teacher: bool,
                 chunk: int, bar, desc: str, epochs: int, run_chunk: int = 0) -> dict:
    """{metric: (G, R)} final metrics for grid methods G x runs R, ``chunk`` elements per call
    (the last chunk padded by repeating its first element, so one compiled shape serves all).
    ``teacher`` = (params, y_noisy, mask), per run if ``per_run_teacher``."""
    n_grid, runs = len(methods), run_keys.shape[0]
    total = n_grid * runs
    chunk = min(chunk, total)
    g_idx, r_idx = np.divmod(np.arange(total), runs)
    weights = {k: np.array([m.weights[k] for m in methods]) for k in methods[0].weights}
    start_fn = jax.jit(jax.vmap(methods[0].start, in_axes=(0, 0 if per_run_teacher else None)))
    out = defaultdict(list)
    for call, (sel, n_real) in enumerate(padded_chunks(total, chunk)):
        g, r = g_idx[sel], r_idx[sel]
        teach = jax.tree_util.tree_map(lambda a, r=r: a[r], teacher) if per_run_teacher else teacher
        starts = start_fn(run_keys[r, 0], teach[0])
        w = {k: jnp.asarray(v[g]) for k, v in weights.items()}
        with bar(progress_ticks(epochs, chunk, run_chunk),
                 f"{desc} [{call + 1}/{math.ceil(total / chunk)}]"):
            log = jax.block_until_ready(program(run_keys[r, 1], starts, *teach, w, shared))
        for m in METRICS:
            out[m].append(np.asarray(log["final"][m])[:n_real])
    return {m: np.concatenate(v).reshape(n_grid, runs) for m, v in out.items()}


COLUMNS_FIRST = ("dataset", "model", "method", "variant")
COLUMNS_LAST = ("teacher", "run", "epoch", "metric", "value", "seed")


def rectangular_rows(rows: list[dict]) -> list[dict]:
    """Rows with the union of all keys in a fixed column order (sweep axes in between), missing
    values empty. (Cell files store rows with sorted keys.)"""
    keys = set().union(*rows)
    middle = sorted(keys - set(COLUMNS_FIRST) - set(COLUMNS_LAST))
    order = ([k for k in COLUMNS_FIRST if k in keys] + middle
             + [k for k in COLUMNS_LAST if k in keys])
    return [{k: row.get(k, "") for k in order} for row in rows]


TABLES = {"trajectory": "results.csv", "teacher": "teacher.csv", "sweep": "sweep.csv"}


TRAJECTORY_COLUMNS = ("dataset", "model", "method", "variant", "run", "epoch", "metric", "value",
                      "seed")


def write_tables(store: ResultStore) -> None:
    """Rebuild the tables from the finished cells; ``results.csv`` always exists (maybe only its
    header, for a sweep-only config), so ``qunlearn plot`` and ``compare`` can read it."""
    rows = defaultdict(list)
    for cell in store.finished_cells():
        rows[cell.get("kind", "trajectory")].extend(cell["rows"])
    for kind, name in TABLES.items():
        if rows[kind]:
            store.write_table(rectangular_rows(rows[kind]), name)
    if not rows["trajectory"]:
        atomic_write_text(store.root / TABLES["trajectory"], ",".join(TRAJECTORY_COLUMNS) + "\n")
