"""Fig 3: unlearn a label-flipped teacher with every method; metrics at the start of every epoch.

Per model: one poisoning draw (shared by all models, as in the reference script) and one teacher
trained on it, or with ``redraw_teacher`` a new draw and teacher per run (the set-up:
:mod:`qunlearn.experiments.unlearning_setup`). Then every method runs ``runs`` times in one
``vmap``; runs differ by their key (fresh init for retrain, batch order), and run ``r`` uses the
same key for every method (paired comparison). One program is compiled per method *form*
(``Method.form``): all reference methods share one, weights and starting params being traced
inputs. Weight sweeps ``vmap`` over (grid point, run) in chunks and keep final metrics only.

The forget request (``forget``): D_f is the poison (the paper's), a seeded share of the clean
samples or of the poison; every metric is relative to D_f. Where D_f is not all of the poison,
``<model>__clean_retrain`` adds the clean reference's trajectories (method ``clean_retrain``:
retrain on D minus all poison, the run keys of every method, judged on the same D_f).

Cells: ``<model>__teacher`` (+ companion ``.npz`` with the teacher params and poisoning, no
pickle), ``<model>__<method>``, ``<model>__sweep__<method>``; tables ``results.csv`` (dataset,
model, method, variant, run, epoch, metric, value, seed; epoch = epochs means after the last
epoch), ``teacher.csv`` and ``sweep.csv``.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.data import load_dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import padded_chunks, rectangular_rows
from qunlearn.experiments.engine import Cell, CellResult, Plan, Progress
from qunlearn.experiments.keys import forget_keys, poison_keys, teacher_keys, unlearning_keys
from qunlearn.experiments.programs import shared
from qunlearn.experiments.store import ResultStore
from qunlearn.experiments.unlearning_setup import (
    ForgetRequest,
    ModelPlan,
    forget_masks,
    load_teacher_npz,
    plan_models,
    request_info,
    retrain_method,
    shared_split,
    start_program,
    teacher_npz,
    train_teachers,
    unlearning_program,
)
from qunlearn.noise import flip_labels
from qunlearn.train import progress_ticks
from qunlearn.unlearn import METRICS, unlearning_metrics

TRAJECTORY_METRICS = (*METRICS, "loss")
CLEAN_RETRAIN = "clean_retrain"  # the clean reference's method name in the tables


def plan(config, *, cache_dir=None, progress: Progress) -> Plan:
    """The cells of an :class:`~qunlearn.experiments.config.UnlearningConfig` (checked by the
    config layer); the data set, every model and every method (sweep points included) are built
    here, before ``--out`` is touched."""
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    request, plans = plan_models(config, dataset)
    root = jax.random.PRNGKey(config.seed)
    n_teachers = config.runs if config.redraw_teacher else 1
    # one poisoning draw per teacher index, shared by all models (as in the reference script)
    poisons = poison_keys(root, config.dataset, config.alpha, n_teachers)
    cells: dict[str, Cell] = {}
    for model_name, mp in plans.items():
        model = _ModelCells(config, model_name, mp, dataset, root, poisons, request, progress)
        cells |= model.cells()
    data = dataset.info | request_info(request)
    return Plan(cells, lambda store, final: write_tables(store), data)


class _ModelCells:
    """The cells of one model: its teacher, then every method's trajectories and sweeps."""

    def __init__(
        self,
        config,
        name: str,
        mp: ModelPlan,
        dataset,
        root,
        poisons,
        request: ForgetRequest,
        progress: Progress,
    ):
        self.config, self.name, self.mp, self.dataset = config, name, mp, dataset
        self.root, self.poisons, self.progress = root, poisons, progress
        self.request, self.n_forget = request, request.n_forget
        self.n_teachers = len(poisons)
        self.teacher_id = f"{name}__teacher"
        self._teacher: tuple | None = None  # (params, y_noisy, poison mask), a teacher axis
        self._programs: dict[tuple, Any] = {}  # (form, trajectory, model, removed) -> program
        self.run_keys = unlearning_keys(root, config.dataset, name, config.runs)
        self.forget_keys = forget_keys(root, config.dataset, config.alpha, self.n_teachers)
        # the clean reference's (options, Method), built here: before --out is touched
        self.clean = None
        if request.clean_reference:
            if CLEAN_RETRAIN in mp.methods:
                raise QunlearnError(
                    f"methods: {CLEAN_RETRAIN!r} names the clean reference of this forget "
                    "request: name your method otherwise"
                )
            self.clean = retrain_method(config, mp, request.n_poison)

    def cells(self) -> dict:
        spec, runs = self.mp.spec, self.config.runs
        out = {
            self.teacher_id: Cell(
                self.teacher_cell,
                ticks=progress_ticks(spec.epochs, self.n_teachers, spec.run_chunk, spec.batching),
            )
        }
        after = (self.teacher_id,)
        for method in self.mp.methods:
            out[f"{self.name}__{method}"] = Cell(
                functools.partial(self.trajectories, name=method),
                ticks=progress_ticks(spec.unlearn_epochs, runs, spec.run_chunk),
                after=after,
            )
        if self.request.clean_reference:
            out[f"{self.name}__{CLEAN_RETRAIN}"] = Cell(
                functools.partial(self.trajectories, name=CLEAN_RETRAIN),
                ticks=progress_ticks(spec.unlearn_epochs, runs, spec.run_chunk),
                after=after,
            )
        for method, (grid, _) in self.mp.sweeps.items():
            chunk = min(self.config.sweep_chunk, len(grid) * runs)
            calls = math.ceil(len(grid) * runs / chunk)
            out[f"{self.name}__sweep__{method}"] = Cell(
                functools.partial(self.sweep, name=method),
                ticks=calls * progress_ticks(spec.unlearn_epochs, chunk, spec.run_chunk),
                after=after,
            )
        return out

    def program(self, method, trajectory: bool, model=None, n_removed: int | None = None):
        model = model or self.mp.model
        key = (method.form, trajectory, model is self.mp.model, n_removed)
        if key not in self._programs:
            spec = self.mp.spec
            self._programs[key] = shared(unlearning_program)(
                model,
                method,
                lr=spec.unlearn_lr,
                epochs=spec.unlearn_epochs,
                n_forget=self.n_forget,
                shared_teacher=not self.config.redraw_teacher,
                trajectory=trajectory,
                on_epoch=self.progress.on_epoch,
                run_chunk=spec.run_chunk,
                n_removed=n_removed,
            )
        return self._programs[key]

    def poisoned_teachers(self):
        """(params, y_noisy, poison mask) with a leading teacher axis."""
        config, shared = self.config, self.mp.shared
        _, y_noisy, mask = jax.vmap(
            lambda k: flip_labels(k, shared["x_train"], self.dataset.y_train, config.alpha)
        )(self.poisons)
        keys = teacher_keys(self.root, config.dataset, self.name, self.n_teachers)
        params = train_teachers(self.mp, keys, y_noisy, on_epoch=self.progress.on_epoch)
        return params, y_noisy, mask

    def teacher_cell(self, store: ResultStore) -> CellResult:
        config, spec, shared = self.config, self.mp.spec, self.mp.shared
        params, y_noisy, poison = self._teacher = self.poisoned_teachers()
        mask = forget_masks(self.request, self.forget_keys, poison, self.dataset.y_train)

        def metrics_of(p, yn, m):
            return unlearning_metrics(
                self.mp.model,
                p,
                shared_split(shared, yn, m, self.n_forget),
            )

        metrics = jax.jit(jax.vmap(metrics_of))(params, y_noisy, mask)
        base = {"dataset": config.dataset, "model": self.name}
        rows = [
            base
            | {
                "teacher": t,
                "metric": metric,
                "value": float(metrics[metric][t]),
                "seed": config.seed,
            }
            for t in range(self.n_teachers)
            for metric in METRICS
        ]
        rows += [
            base
            | {"teacher": t, "metric": "n_forget", "value": int(mask[t].sum()), "seed": config.seed}
            for t in range(self.n_teachers)
        ]
        if not self.request.whole_poison:  # D_f and the poison differ
            rows += [
                base
                | {
                    "teacher": t,
                    "metric": "n_poisoned",
                    "value": int(poison[t].sum()),
                    "seed": config.seed,
                }
                for t in range(self.n_teachers)
            ]
        n_train = len(self.dataset.y_train)
        steps = spec.epochs * math.ceil(n_train / min(spec.batch_size, n_train))
        return CellResult(
            rows,
            info={"kind": "teacher", "optimizer_steps": steps},
            files={f"{self.teacher_id}.npz": teacher_npz(params, y_noisy, poison)},
            timing={"optimizer_steps": steps},
            compiled=True,
        )

    def teacher(self, store: ResultStore, clean: bool = False):
        """The teacher(s) as (params, y_noisy, D_f mask): as just trained, or from the verified
        teacher cell's ``.npz``; without a leading teacher axis unless ``redraw_teacher``.
        ``clean``: the mask is the pair (D_f, poison) of the clean reference's split."""
        if self._teacher is None:
            cell = store.load_cell(self.teacher_id)
            self._teacher = (
                load_teacher_npz(store.companion_path(f"{self.teacher_id}.npz"), self.mp.model)
                if cell is not None
                else self.poisoned_teachers()
            )
        params, y_noisy, poison = self._teacher
        mask = forget_masks(self.request, self.forget_keys, poison, self.dataset.y_train)
        teacher = (params, y_noisy, (mask, poison) if clean else mask)
        if self.config.redraw_teacher:
            return teacher
        return jax.tree_util.tree_map(lambda a: a[0], teacher)

    def trajectories(self, store: ResultStore, name: str) -> CellResult:
        """All runs of one method in one vmap; metrics at the start of every epoch."""
        config = self.config
        clean = name == CLEAN_RETRAIN
        if clean:
            assert self.clean is not None  # the cell exists only with a clean reference
            base, (options, method) = "retrain", self.clean
        else:
            base, options, method = self.mp.methods[name]
        teacher = self.teacher(store, clean)
        removed = self.request.n_poison if clean else None
        program = self.program(method, True, n_removed=removed)
        traces = len(program.traces)
        t_axis = 0 if config.redraw_teacher else None
        starts = jax.vmap(method.start, in_axes=(0, t_axis))(self.run_keys[:, 0], teacher[0])
        weights = {k: jnp.full((config.runs,), v) for k, v in method.weights.items()}
        log = jax.block_until_ready(
            program(self.run_keys[:, 1], starts, *teacher, weights, self.mp.shared)
        )
        rows = trajectory_rows(
            log,
            dataset=config.dataset,
            model=self.name,
            method=name,
            variant=method.variant,
            seed=config.seed,
            with_loss=method.steps > 0,  # a method that only edits the teacher has no loss
        )
        info = {
            "kind": "trajectory",
            "method": base,
            "variant": method.variant,
            "options": options,
            "weights": method.weights,
            "optimizer_steps": method.steps,
        }
        return CellResult(
            rows,
            info=info,
            timing={"optimizer_steps": method.steps},
            compiled=len(program.traces) > traces,
        )

    def sweep(self, store: ResultStore, name: str) -> CellResult:
        """Final metrics at every grid point; (point, run) pairs vmapped in chunks."""
        config = self.config
        grid, methods = self.mp.sweeps[name]
        teacher = self.teacher(store)
        program = self.program(methods[0], False, self.mp.sweep_model)
        traces = len(program.traces)
        finals = sweep_finals(
            program,
            methods,
            self.run_keys,
            teacher,
            self.mp.shared,
            per_run_teacher=config.redraw_teacher,
            chunk=config.sweep_chunk,
        )
        rows = [
            {
                "dataset": config.dataset,
                "model": self.name,
                "method": name,
                "variant": methods[g].variant,
                **point,
                "run": r,
                "epoch": self.mp.spec.unlearn_epochs,
                "metric": metric,
                "value": float(finals[metric][g, r]),
                "seed": config.seed,
            }
            for g, point in enumerate(grid)
            for r in range(config.runs)
            for metric in METRICS
        ]
        return CellResult(
            rows,
            info={
                "kind": "sweep",
                "axes": config.sweep[name],
                "optimizer_steps": methods[0].steps,
                # what the sweep ran in: "model" (the table's own arithmetic) or complex64
                "sweep_dtype": "model"
                if self.mp.sweep_model is self.mp.model
                else config.sweep_dtype,
            },
            timing={"optimizer_steps": methods[0].steps},
            compiled=len(program.traces) > traces,
        )


def trajectory_rows(
    log, *, dataset, model, method, variant, seed, with_loss: bool = True
) -> list[dict]:
    """Tidy rows from a vmapped log: epoch e < E at the start of epoch e, E = after the last."""
    runs, epochs = log["loss"].shape
    start = {m: np.asarray(log["start"][m]) for m in METRICS} | {"loss": np.asarray(log["loss"])}
    final = {m: np.asarray(log["final"][m]) for m in METRICS}
    base = {"dataset": dataset, "model": model, "method": method, "variant": variant}
    metrics = TRAJECTORY_METRICS if with_loss else METRICS
    rows = [
        base | {"run": r, "epoch": e, "metric": m, "value": float(start[m][r, e]), "seed": seed}
        for r in range(runs)
        for e in range(epochs)
        for m in metrics
    ]
    rows += [
        base | {"run": r, "epoch": epochs, "metric": m, "value": float(final[m][r]), "seed": seed}
        for r in range(runs)
        for m in METRICS
    ]
    return rows


def sweep_finals(
    program, methods, run_keys, teacher, shared, *, per_run_teacher: bool, chunk: int
) -> dict:
    """{metric: (G, R)} final metrics for grid methods G x runs R, ``chunk`` elements per call
    (the last chunk padded by repeating its first element, so one compiled shape serves all).
    ``teacher`` = (params, y_noisy, mask), per run if ``per_run_teacher``."""
    n_grid, runs = len(methods), run_keys.shape[0]
    total = n_grid * runs
    chunk = min(chunk, total)
    g_idx, r_idx = np.divmod(np.arange(total), runs)
    weights = {k: np.array([m.weights[k] for m in methods]) for k in methods[0].weights}
    start_fn = start_program(methods[0].start, (0, 0 if per_run_teacher else None))
    out = defaultdict(list)
    for sel, n_real in padded_chunks(total, chunk):
        g, r = g_idx[sel], r_idx[sel]
        teach = jax.tree_util.tree_map(lambda a, r=r: a[r], teacher) if per_run_teacher else teacher
        starts = start_fn(run_keys[r, 0], teach[0])
        w = {k: jnp.asarray(v[g]) for k, v in weights.items()}
        log = jax.block_until_ready(program(run_keys[r, 1], starts, *teach, w, shared))
        for m in METRICS:
            out[m].append(np.asarray(log["final"][m])[:n_real])
    return {m: np.concatenate(v).reshape(n_grid, runs) for m, v in out.items()}


TABLES = {"trajectory": "results.csv", "teacher": "teacher.csv", "sweep": "sweep.csv"}


TRAJECTORY_COLUMNS = (
    "dataset",
    "model",
    "method",
    "variant",
    "run",
    "epoch",
    "metric",
    "value",
    "seed",
)


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
        store.write_table([], TABLES["trajectory"], fieldnames=list(TRAJECTORY_COLUMNS))
