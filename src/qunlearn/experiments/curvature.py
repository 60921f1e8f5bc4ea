"""Curvature along unlearning (beyond the paper): the Hessian of three losses at the clean teacher
(before poisoning), at the poisoned teacher (after poisoning) and every ``every`` epochs of every
unlearning run, per model and method.

Losses, each a mean BCE differentiated w.r.t. the real parameters:

* ``retain``: D_r with its labels (true labels: D_r is the unflipped part of the training set);
* ``forget``: D_f with its POISONED labels. These are the labels the poisoned teacher memorised,
  so this curvature measures how sharply the model holds the poison; it is the loss that
  gradient ascent ascends, and its accuracy is the forgetting metric (fraction of D_f predicted
  with its poisoned label), so the curves read together with Fig 3. (On the true labels the forget
  loss is another function with its own Hessian, not measured here.)
* ``validation``: ``n_val`` clean validation examples (a seeded draw, the same for every
  snapshot; all of them if 0).

Per snapshot and loss (:func:`qunlearn.hessian.spectrum_arrays`): the loss, the accuracy, the
top-k eigenvalues, the smallest eigenvalue, the trace with its CI and the spectral quadrature,
exact (dense ``eigvalsh``) for models with at most ``dense_max_params`` parameters, else SLQ
(``slq_probes`` probes of ``lanczos_steps`` Lanczos steps) with the Hutchinson trace on the SLQ
probes. One compiled program per model (one Hessian-vector product inside, ``lax.map`` over the
losses, padded to one length with zero weights) serves every snapshot, ``vmap``-ped over
``snapshot_chunk`` snapshots per call (at most ``run_chunk`` for a model that sets it: one
QNN snapshot at a time keeps its states in cache on a CPU, as for training).

Keys. The poisoned teacher is the unlearning experiment's (same poisoning draw, init and batch
keys for the same seed and model settings, so it is Fig 3's teacher). The clean teacher uses the
same init and batch keys on the true labels: a paired comparison where only the poisoning differs.
Unlearning run ``r`` uses the unlearning experiment's key ``r`` for every method. Probe keys depend
on (model, loss) only: common random numbers across snapshots, runs and methods, so differences
along a trajectory or between runs are not probe noise.

Results directory: cells ``<model>__teachers`` (+ ``.npz``: both teachers' params, clean first,
and the poisoning; never pickled) and ``<model>__<method>``, each with a ``__spectrum`` companion
cell written first. Tables: ``results.csv`` (dataset, model, method, variant, run, epoch, loss,
metric, value, seed; the teachers are methods ``clean_teacher`` and ``poisoned_teacher`` at epoch
0, and epoch = unlearn_epochs is after the last epoch), ``spectrum.csv`` (quadrature nodes and
weights per probe) and ``density.csv`` (the Gaussian-broadened density on a grid shared by every
snapshot of a (model, loss): ``density_points`` points spanning all their nodes, sigma =
``density_sigma`` x that span).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qunlearn.data import load_dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import environment, padded_chunks
from qunlearn.experiments.config import CurvatureConfig, UnlearningConfig, config_hash, to_dict
from qunlearn.experiments.noise_sweep import stable_key
from qunlearn.experiments.store import ResultStore
from qunlearn.experiments.unlearning import (
    check_config,
    forget_set_size,
    load_teacher_npz,
    plan_model,
    poison_keys,
    rectangular_rows,
    save_teacher_npz,
    teacher_keys,
    teacher_program,
    unlearning_keys,
    unlearning_program,
)
from qunlearn.hessian import density_on_grid, spectrum_arrays
from qunlearn.models import n_params
from qunlearn.noise import flip_labels
from qunlearn.train import bce, predict, snapshot_epochs, weighted_mean
from qunlearn.unlearn import make_split

LOSSES = ("retain", "forget", "validation")
TEACHERS = ("clean_teacher", "poisoned_teacher")
# metric name in the table -> key of the curvature program's output
SCALARS = {"loss": "loss", "acc": "acc", "eig_min": "min", "trace": "trace",
           "trace_stderr": "trace_stderr", "trace_ci_low": "trace_ci_low",
           "trace_ci_high": "trace_ci_high"}


def loss_sets(split: dict, x_val, y_val) -> dict:
    """The three losses' data as one padded stack: ``x (3, N, D)``, ``y (3, N)``, ``w (3, N)``
    in :data:`LOSSES` order, N the largest set; padding repeats row 0 with weight 0."""
    sets = ((split["x_retain"], split["y_retain"]),
            (split["x_forget"], split["y_forget_poisoned"]),  # the labels memorised
            (x_val, y_val))
    n = max(x.shape[0] for x, _ in sets)

    def pad(a, fill):
        return jnp.concatenate([a, jnp.broadcast_to(fill, (n - a.shape[0], *a.shape[1:]))])

    dtype = split["y_retain"].dtype
    return {"x": jnp.stack([pad(x, x[0]) for x, _ in sets]),
            "y": jnp.stack([pad(jnp.asarray(y, dtype), y[0]) for _, y in sets]),
            "w": jnp.stack([pad(jnp.ones(x.shape[0], dtype), 0.0) for x, _ in sets])}


def curvature_program(model, *, method: str, top_k: int, lanczos_steps: int, slq_probes: int,
                      hvp_batch: int):
    """``fn(params (C, ...), sets, keys (L, 2)) -> {name: (C, L, ...)}``, jitted: the
    :func:`~qunlearn.hessian.spectrum_arrays` of every loss in ``sets`` (:func:`loss_sets`) plus
    its value ``loss`` and accuracy ``acc``, for C snapshots (``vmap``); ``method`` "dense" or
    "slq". ``.traces`` counts its tracings."""
    traces = []

    def one_loss(params, x, y, w, key):
        def loss_fn(p):
            return weighted_mean(bce(predict(model, p, x), y), w)

        out = spectrum_arrays(loss_fn, params, key, k=top_k, method=method,
                              num_steps=lanczos_steps, num_probes=slq_probes, batch_size=hvp_batch)
        hit = (predict(model, params, x) > 0.5) == (y > 0.5)
        return out | {"loss": loss_fn(params), "acc": weighted_mean(hit.astype(w.dtype), w)}

    def one(params, sets, keys):
        traces.append(1)
        return jax.lax.map(lambda a: one_loss(params, *a), (sets["x"], sets["y"], sets["w"], keys))

    fn = jax.jit(jax.vmap(one, in_axes=(0, None, None)))
    fn.traces = traces
    return fn


def curvature_of(program, params, sets, keys, *, chunk: int, bar=None) -> dict:
    """``program`` over the leading axis B of ``params``, ``chunk`` snapshots per call (the last
    call padded by repeating its first snapshot, so one compiled shape serves all): numpy
    ``{name: (B, L, ...)}``."""
    total = jax.tree_util.tree_leaves(params)[0].shape[0]
    parts = defaultdict(list)
    for sel, n_real in padded_chunks(total, chunk):
        out = jax.block_until_ready(program(jax.tree_util.tree_map(lambda a, s=sel: a[s], params),
                                            sets, keys))
        for name, value in out.items():
            parts[name].append(np.asarray(value)[:n_real])
        if bar is not None:
            bar.update(1)
    return {name: np.concatenate(v) for name, v in parts.items()}


def curvature_rows(out: dict, labels: list[tuple], base: dict) -> tuple[list[dict], list[dict]]:
    """(scalar rows, spectrum rows) from :func:`curvature_of` output; ``labels[b]`` = (method,
    variant, run, epoch) of snapshot b."""
    rows, spectrum = [], []
    for b, (method, variant, run, epoch) in enumerate(labels):
        where = base | {"method": method, "variant": variant, "run": run, "epoch": epoch}
        for li, loss in enumerate(LOSSES):
            values = {m: out[k][b, li] for m, k in SCALARS.items()}
            values |= {f"eig_{j + 1}": v for j, v in enumerate(out["top"][b, li])}
            rows += [where | {"loss": loss, "metric": m, "value": float(v)}
                     for m, v in values.items()]
            nodes, weights = out["nodes"][b, li], out["weights"][b, li]
            spectrum += [where | {"loss": loss, "probe": q, "node": float(nodes[q, j]),
                                  "weight": float(weights[q, j])}
                         for q in range(nodes.shape[0]) for j in range(nodes.shape[1])]
    return rows, spectrum


DENSITY_KEYS = ("model", "method", "variant", "run", "epoch", "loss")


def density_rows(spectrum: list[dict], *, points: int, sigma: float) -> list[dict]:
    """Broadened densities (``density_on_grid``) of every snapshot in ``spectrum`` rows, on one
    grid per (model, loss) spanning all its nodes of non-zero weight, padded by 3 sigma; sigma =
    ``sigma`` x that span."""
    groups = defaultdict(list)
    for r in spectrum:
        groups[tuple(r[k] for k in DENSITY_KEYS)].append(r)
    span = {}
    for r in spectrum:
        if float(r["weight"]) > 0 and math.isfinite(float(r["node"])):
            key, v = (r["model"], r["loss"]), float(r["node"])
            lo, hi = span.get(key, (v, v))
            span[key] = (min(lo, v), max(hi, v))
    grids = {}
    for key, (lo, hi) in span.items():
        s = sigma * ((hi - lo) or max(abs(hi), 1.0))
        grids[key] = (np.linspace(lo - 3 * s, hi + 3 * s, points), s)
    by_grid = defaultdict(list)  # one vmapped call per (model, loss): same quadrature shape
    for key in groups:
        if (key[0], key[-1]) in grids:  # else every node is non-finite
            by_grid[(key[0], key[-1])].append(key)
    rows = []
    for grid_key, keys in by_grid.items():
        grid, s = grids[grid_key]
        quad = [np.array([[float(r["node"]), float(r["weight"])] for r in groups[key]])
                for key in keys]
        shape = (1 + max(int(r["probe"]) for r in groups[keys[0]]), -1)
        nodes = jnp.stack([q[:, 0].reshape(shape) for q in quad])
        weights = jnp.stack([q[:, 1].reshape(shape) for q in quad])
        density = np.asarray(jax.vmap(lambda n, w, g=grid, s=s: density_on_grid(n, w, g, s))(
            nodes, weights))
        for key, values in zip(keys, density, strict=True):
            base = dict(zip(DENSITY_KEYS, key, strict=True))
            rows += [base | {"eigenvalue": float(t), "density": float(d)}
                     for t, d in zip(grid, values, strict=True)]
    return rows


TABLES = {"results": "results.csv", "spectrum": "spectrum.csv", "density": "density.csv"}
COLUMNS = ("dataset", "model", "method", "variant", "run", "epoch", "loss", "metric", "value",
           "seed")


def write_tables(store: ResultStore, config: CurvatureConfig, *, density: bool = True) -> None:
    """Rebuild results.csv, spectrum.csv and (if ``density``) density.csv from the finished
    cells. The runner skips density.csv after each cell (it is rebuilt at the end or on Ctrl-C)."""
    rows, spectrum = [], []
    for cell in store.finished_cells():
        (spectrum if cell.get("kind") == "spectrum" else rows).extend(cell["rows"])
    if rows:
        store.write_table([{k: r[k] for k in COLUMNS} for r in rows], TABLES["results"])
    if spectrum:
        store.write_table(rectangular_rows(spectrum), TABLES["spectrum"])
    if spectrum and density:
        store.write_table(density_rows(spectrum, points=config.density_points,
                                       sigma=config.density_sigma), TABLES["density"])


# ---------------------------------------------------------------------------------------------
# The experiment


def _as_unlearning(config: CurvatureConfig) -> UnlearningConfig:
    """The unlearning config with the same teacher and methods (for its checks and plans)."""
    return UnlearningConfig(
        experiment="unlearning", name=config.name, dataset=config.dataset, models=config.models,
        methods=config.methods, alpha=config.alpha, runs=config.runs, seed=config.seed,
        method_options=config.method_options, dataset_options=config.dataset_options)


def _hessian_method(config: CurvatureConfig, name: str, size: int) -> str:
    """"dense" or "slq" for a model of ``size`` parameters; bad sizes fail with one line."""
    if size <= config.dense_max_params:
        if config.top_k > size:
            raise QunlearnError(f"top_k = {config.top_k} exceeds the {size} parameters of "
                                f"models.{name}: lower top_k")
        return "dense"
    if not config.top_k <= config.lanczos_steps <= size:
        raise QunlearnError(f"lanczos_steps = {config.lanczos_steps} must lie in [top_k = "
                            f"{config.top_k}, {size}] for models.{name} ({size} parameters): fix "
                            "lanczos_steps or top_k")
    return "slq"


def run_curvature(config: CurvatureConfig, out: str | Path, *, cache_dir=None,
                  progress: bool = True) -> ResultStore:
    """Curvature along unlearning; one cell per (model, teachers | method), finished ones skipped.

    The config, the data set, every model and every method are checked before ``out`` is touched.
    """
    if not config.methods:
        raise QunlearnError("methods is empty: list at least one unlearning method, e.g. "
                            "methods = [\"finetune\"]")
    plain = _as_unlearning(config)
    check_config(plain)
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    n_train, n_val_all = len(dataset.y_train), len(dataset.y_val)
    n_forget = forget_set_size(n_train, config.alpha)
    if config.n_val > n_val_all:
        raise QunlearnError(f"n_val = {config.n_val} exceeds the {n_val_all} validation examples "
                            "of the data set: lower it (0 = all)")
    plans, methods = {}, {}
    for name, spec in config.models.items():
        plans[name] = plan_model(plain, name, spec, dataset, n_train - n_forget, n_forget)
        size = n_params(jax.eval_shape(plans[name].model.init, jax.random.PRNGKey(0)))
        methods[name] = _hessian_method(config, name, size)
    store = ResultStore(out, config=to_dict(config), config_hash=config_hash(config),
                        meta={**environment(to_dict(config)), "data": dataset.info})
    session = _Session(config, store, dataset, n_forget, progress)
    try:
        for name, plan in plans.items():
            session.run_model(name, plan, methods[name])
    except KeyboardInterrupt:  # Ctrl-C: leave the tables matching the finished cells
        write_tables(store, config)
        raise
    session.bar.close()
    write_tables(store, config)
    store.update_manifest(last_run={"reused": session.reused, "computed": session.computed})
    return store


class _Session:
    """One ``run_curvature`` call: the store, keys, progress bars and timings."""

    def __init__(self, config: CurvatureConfig, store: ResultStore, dataset, n_forget: int,
                 progress: bool):
        self.config, self.store, self.dataset, self.progress = config, store, dataset, progress
        self.n_forget = n_forget
        self.root = jax.random.PRNGKey(config.seed)
        self.timings = dict(store.manifest.get("timings", {}))
        self.reused, self.computed = [], []
        self.bar = tqdm(total=len(config.models) * (1 + len(config.methods)), desc=config.name,
                        unit="cell", disable=not progress)
        # the validation subset: one seeded draw, the same for every model and snapshot
        n_all = len(dataset.y_val)
        if 0 < config.n_val < n_all:
            key = stable_key(self.root, config.dataset, "curvature", "validation")
            self.val_idx = jnp.sort(jax.random.permutation(key, n_all)[: config.n_val])
        else:
            self.val_idx = jnp.arange(n_all)

    def _done(self, cell_id: str) -> bool:
        return (self.store.load_cell(f"{cell_id}__spectrum") is not None
                and self.store.load_cell(cell_id) is not None)

    def _record(self, cell_id: str, rows, spectrum, timing: dict, **info) -> None:
        self.store.write_cell(f"{cell_id}__spectrum", spectrum, kind="spectrum")
        self.store.write_cell(cell_id, rows, **timing, **info)
        self.timings[cell_id] = timing
        self.store.update_manifest(timings=self.timings)
        write_tables(self.store, self.config, density=False)
        self.computed.append(cell_id)
        self.bar.update(1)

    def run_model(self, model_name: str, plan, method: str) -> None:
        config, shared = self.config, plan.shared
        cells = [f"{model_name}__teachers", *(f"{model_name}__{m}" for m in plan.methods)]
        if all(self._done(c) for c in cells):
            self.reused += cells
            self.bar.update(len(cells))
            return
        program = curvature_program(plan.model, method=method, top_k=config.top_k,
                                    lanczos_steps=config.lanczos_steps,
                                    slq_probes=config.slq_probes, hvp_batch=config.hvp_batch)
        keys = jnp.stack([stable_key(self.root, config.dataset, model_name, "curvature", loss)
                          for loss in LOSSES])
        x_val, y_val = shared["x_val"][self.val_idx], shared["y_val"][self.val_idx]
        teachers = self._teachers(model_name, plan)
        if teachers is None or not self._done(cells[0]):
            teachers = self._train_teachers(model_name, plan, program, keys, x_val, y_val,
                                            method)
        else:
            self.reused.append(cells[0])
            self.bar.update(1)
        params, y_noisy, mask = teachers
        poisoned = jax.tree_util.tree_map(lambda a: a[1], params)
        split = _split(shared, y_noisy, mask, self.n_forget)
        sets = loss_sets(split, x_val, y_val)
        run_keys = unlearning_keys(self.root, config.dataset, model_name, config.runs)
        programs = {}
        for name, (base, options, unlearner) in plan.methods.items():
            cell_id = f"{model_name}__{name}"
            if self._done(cell_id):
                self.reused.append(cell_id)
                self.bar.update(1)
                continue
            if unlearner.form not in programs:
                programs[unlearner.form] = unlearning_program(
                    plan.model, unlearner, lr=plan.spec.unlearn_lr,
                    epochs=plan.spec.unlearn_epochs, n_forget=self.n_forget, shared_teacher=True,
                    trajectory=False, run_chunk=plan.spec.run_chunk, snapshot_every=config.every)
            start = time.perf_counter()
            starts = jax.vmap(unlearner.start, in_axes=(0, None))(run_keys[:, 0], poisoned)
            weights = {k: jnp.full((config.runs,), v) for k, v in unlearner.weights.items()}
            log = jax.block_until_ready(programs[unlearner.form](
                run_keys[:, 1], starts, poisoned, y_noisy, mask, weights, shared))
            unlearn_seconds = time.perf_counter() - start
            epochs = snapshot_epochs(plan.spec.unlearn_epochs, config.every)
            # A method that starts from the teacher has the teacher as its epoch-0 snapshot in
            # every run: copy the teacher's numbers instead of measuring it again.
            copied = _equal(starts, poisoned)
            first = 1 if copied else 0
            snaps = jax.tree_util.tree_map(lambda a, f=first: a[:, f:].reshape(-1, *a.shape[2:]),
                                           log["snapshots"])
            labels = [(name, unlearner.variant, r, e) for r in range(config.runs)
                      for e in epochs[first:]]
            start = time.perf_counter()
            out = self._curvature(program, snaps, sets, keys, cell_id, plan.spec.run_chunk)
            rows, spectrum = curvature_rows(out, labels, self._base(model_name))
            if copied:
                rows, spectrum = (
                    [r | {"method": name, "variant": unlearner.variant, "run": run}
                     for run in range(config.runs)
                     for r in self.store.load_cell(f"{model_name}__teachers{suffix}")["rows"]
                     if r["method"] == "poisoned_teacher"] + new
                    for suffix, new in (("", rows), ("__spectrum", spectrum)))
            bad = sorted({r["run"] for r in rows if not math.isfinite(r["value"])})
            if bad:
                tqdm.write(f"warning: {cell_id}: non-finite values in runs {bad}; kept as NaN rows")
            self._record(cell_id, rows, spectrum,
                         {"unlearn_seconds": round(unlearn_seconds, 3),
                          "curvature_seconds": round(time.perf_counter() - start, 3)},
                         kind="trajectory", method=base, variant=unlearner.variant,
                         options=options, weights=unlearner.weights, hessian=method,
                         snapshot_epochs=epochs, epoch0_copied_from_teacher=copied,
                         nonfinite_runs=bad)

    def _base(self, model_name: str) -> dict:
        return {"dataset": self.config.dataset, "model": model_name, "seed": self.config.seed}

    def _curvature(self, program, snaps, sets, keys, cell_id: str, run_chunk: int) -> dict:
        total = jax.tree_util.tree_leaves(snaps)[0].shape[0]
        chunk = min(self.config.snapshot_chunk, run_chunk or self.config.snapshot_chunk)
        with tqdm(total=-(-total // chunk), desc=f"  {cell_id} curvature", unit="call",
                  leave=False, disable=not self.progress) as bar:
            return curvature_of(program, snaps, sets, keys, chunk=chunk, bar=bar)

    def _teachers(self, model_name: str, plan):
        """(params with a leading (clean, poisoned) axis, y_noisy, mask), or None if unsaved."""
        cell = self.store.load_cell(f"{model_name}__teachers")
        npz = self.store.cells_dir / f"{model_name}__teachers.npz"
        return cell and load_teacher_npz(npz, cell.get("npz_sha256", ""), plan.model) or None

    def _train_teachers(self, model_name, plan, program, keys, x_val, y_val, method):
        """Train the clean and the poisoned teacher in one call, measure both, save them."""
        config, spec, shared = self.config, plan.spec, plan.shared
        cell_id = f"{model_name}__teachers"
        start = time.perf_counter()
        poison = poison_keys(self.root, config.dataset, config.alpha, 1)[0]
        _, y_noisy, mask = flip_labels(poison, shared["x_train"], self.dataset.y_train,
                                       config.alpha)
        teacher_key = teacher_keys(self.root, config.dataset, model_name, 1)[0]
        train = teacher_program(plan.model, epochs=spec.epochs, batch_size=spec.batch_size,
                                lr=spec.lr, n_train=len(self.dataset.y_train),
                                run_chunk=spec.run_chunk)
        both = jnp.stack([teacher_key, teacher_key])  # same init and batches, clean vs poisoned
        params = jax.block_until_ready(train(both[:, 0], both[:, 1], shared["x_train"],
                                             jnp.stack([shared["y_true"], y_noisy])))
        train_seconds = time.perf_counter() - start
        digest = save_teacher_npz(self.store.cells_dir / f"{cell_id}.npz", params, y_noisy, mask)
        start = time.perf_counter()
        sets = loss_sets(_split(shared, y_noisy, mask, self.n_forget), x_val, y_val)
        out = self._curvature(program, params, sets, keys, cell_id, spec.run_chunk)
        rows, spectrum = curvature_rows(out, [(t, "teacher", 0, 0) for t in TEACHERS],
                                        self._base(model_name))
        self._record(cell_id, rows, spectrum,
                     {"train_seconds": round(train_seconds, 3),
                      "curvature_seconds": round(time.perf_counter() - start, 3)},
                     kind="teachers", npz_sha256=digest, hessian=method,
                     n_forget=int(mask.sum()))
        return params, y_noisy, mask


def _equal(starts, params) -> bool:
    """Whether every run's starting params (leading run axis) equal ``params`` exactly."""
    return all(np.array_equal(np.asarray(a), np.broadcast_to(np.asarray(b), a.shape))
               for a, b in zip(jax.tree_util.tree_leaves(starts),
                               jax.tree_util.tree_leaves(params), strict=True))


def _split(shared: dict, y_noisy, mask, n_forget: int) -> dict:
    return make_split(shared["x_train"], shared["y_true"], y_noisy, mask, shared["x_val"],
                      shared["y_val"], n_forget=n_forget)
