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

Cells: ``<model>__teachers`` (+ companion ``.npz``: both teachers' params, clean first, and the
poisoning; never pickled) and ``<model>__<method>``, each holding its quadrature rows as its
``spectrum`` table. Tables: ``results.csv`` (dataset, model, method, variant, run, epoch, loss,
metric, value, seed; the teachers are methods ``clean_teacher`` and ``poisoned_teacher`` at epoch
0, and epoch = unlearn_epochs is after the last epoch), ``spectrum.csv`` (quadrature nodes and
weights per probe) and ``density.csv`` (the Gaussian-broadened density on a grid shared by every
snapshot of a (model, loss): ``density_points`` points spanning all their nodes, sigma =
``density_sigma`` x that span).
"""

from __future__ import annotations

import functools
import math
import time
from collections import defaultdict
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.data import load_dataset, n_classes
from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import (
    model_in_dtype,
    model_input,
    padded_chunks,
    rectangular_rows,
)
from qunlearn.experiments.config import CurvatureConfig
from qunlearn.experiments.engine import Cell, CellResult, Plan, Progress
from qunlearn.experiments.keys import poison_keys, stable_key, teacher_keys, unlearning_keys
from qunlearn.experiments.programs import shared
from qunlearn.experiments.store import ResultStore
from qunlearn.experiments.unlearning_setup import (
    forget_set_size,
    load_teacher_npz,
    plan_model,
    shared_split,
    teacher_npz,
    train_teachers,
    unlearning_program,
)
from qunlearn.hessian import (
    density_on_grid,
    grouped_dense_spectra,
    live_parameters,
    spectrum_arrays,
)
from qunlearn.models import n_params
from qunlearn.models.memory import MEMORY_FRACTION, physical_memory
from qunlearn.noise import flip_labels
from qunlearn.train import cross_entropy, hits, predict, snapshot_epochs, weighted_mean

LOSSES = ("retain", "forget", "validation")
TEACHERS = ("clean_teacher", "poisoned_teacher")
# metric name in the table -> key of the curvature program's output
SCALARS = {
    "loss": "loss",
    "acc": "acc",
    "eig_min": "min",
    "trace": "trace",
    "trace_stderr": "trace_stderr",
    "trace_ci_low": "trace_ci_low",
    "trace_ci_high": "trace_ci_high",
}


PIECE_MAX = 64  # examples per piece of the dense path: a piece's tangent states stay in cache


def piece_size(sizes, cap: int = PIECE_MAX) -> int:
    """Examples per piece for sets of ``sizes``: the size <= ``cap`` with the least padding in
    all (each set padded to a whole number of pieces), the largest such size on ties."""
    return min(range(1, cap + 1), key=lambda s: (sum(-(-n // s) * s for n in sizes), -s))


def loss_sets(split: dict, x_val, y_val) -> dict:
    """The three losses' data in :data:`LOSSES` order, two ways. ``x (3, N, D)``, ``y (3, N)``,
    ``w (3, N)``: one padded stack, N the largest set, padding repeats row 0 with weight 0 (the
    SLQ path, loss and accuracy). ``pieces`` (``x (M, S, D)``, ``y``, ``w (M, S)``, ``w`` = 1/n
    of its set so the pieces of a set sum to its mean) and ``group (M,)``, each set cut into
    pieces of :func:`piece_size` examples (the dense path: no set pays for another's length)."""
    sets = (
        (split["x_retain"], split["y_retain"]),
        (split["x_forget"], split["y_forget_poisoned"]),  # the labels memorised
        (x_val, y_val),
    )
    n = max(x.shape[0] for x, _ in sets)
    size = piece_size([x.shape[0] for x, _ in sets])

    def pad(a, fill, length):
        return jnp.concatenate([a, jnp.broadcast_to(fill, (length - a.shape[0], *a.shape[1:]))])

    dtype = split["y_retain"].dtype
    pieces: dict[str, list[jax.Array]] = {"x": [], "y": [], "w": []}
    group: list[int] = []
    for g, (x, y) in enumerate(sets):
        m = -(-x.shape[0] // size)
        weight = jnp.full(x.shape[0], 1.0 / x.shape[0], dtype)
        for name, a, fill in (("x", x, x[0]), ("y", jnp.asarray(y, dtype), y[0]), ("w", weight, 0)):
            pieces[name].append(pad(a, fill, m * size).reshape(m, size, *a.shape[1:]))
        group += [g] * m
    return {
        "x": jnp.stack([pad(x, x[0], n) for x, _ in sets]),
        "y": jnp.stack([pad(jnp.asarray(y, dtype), y[0], n) for _, y in sets]),
        "w": jnp.stack([pad(jnp.ones(x.shape[0], dtype), 0.0, n) for x, _ in sets]),
        "pieces": {k: jnp.concatenate(v) for k, v in pieces.items()},
        "group": jnp.asarray(group, jnp.int32),
    }


def curvature_program(
    model,
    *,
    method: str,
    top_k: int,
    lanczos_steps: int,
    slq_probes: int,
    hvp_batch: int,
    live=None,
    hessian_model=None,
):
    """``fn(params (C, ...), sets, keys (L, 2)) -> {name: (C, L, ...)}``, jitted: the
    :func:`~qunlearn.hessian.spectrum_arrays` of every loss in ``sets`` (:func:`loss_sets`) plus
    its value ``loss`` and accuracy ``acc``, for C snapshots (``vmap``); ``method`` "dense" or
    "slq". Dense: all losses from one set of ``hvp_batch``-wide Hessian-vector products over
    ``sets["pieces"]`` (:func:`~qunlearn.hessian.grouped_dense_spectra`), only the columns of
    the ``live`` flat parameter indices (default all; the others must be unused by the model,
    :func:`~qunlearn.hessian.live_parameters`). ``hessian_model`` (default ``model``, the same
    function in other arithmetic, e.g. the QNN in complex64) is the one differentiated twice; the
    loss and accuracy always come from ``model``. ``.traces`` counts its tracings."""
    traces = []
    curved = model if hessian_model is None else hessian_model

    def value_and_acc(params, x, y, w):
        p = predict(model, params, x)
        hit = hits(p, y)
        loss = weighted_mean(cross_entropy(p, y), w)
        return {"loss": loss, "acc": weighted_mean(hit.astype(w.dtype), w)}

    def slq_loss(params, x, y, w, key):
        return spectrum_arrays(
            lambda p: weighted_mean(cross_entropy(predict(curved, p, x), y), w),
            params,
            key,
            k=top_k,
            method="slq",
            num_steps=lanczos_steps,
            num_probes=slq_probes,
            batch_size=hvp_batch,
        )

    def piece_loss(params, piece):  # this piece's share of its set's mean BCE
        return jnp.sum(piece["w"] * cross_entropy(predict(curved, params, piece["x"]), piece["y"]))

    def one(params, sets, keys):
        traces.append(1)
        stack = (sets["x"], sets["y"], sets["w"])
        out = jax.lax.map(lambda a: value_and_acc(params, *a), stack)
        if method == "dense":
            return out | grouped_dense_spectra(
                piece_loss,
                params,
                sets["pieces"],
                sets["group"],
                len(LOSSES),
                k=top_k,
                live=live,
                batch_size=hvp_batch,
            )
        return out | jax.lax.map(lambda a: slq_loss(params, *a), (*stack, keys))

    fn = jax.jit(jax.vmap(one, in_axes=(0, None, None)))
    # jit's wrapper takes attributes; jax's stubs declare none
    fn.traces = traces  # type: ignore[attr-defined]
    return fn


def curvature_of(program, params, sets, keys, *, chunk: int, bar=None) -> dict:
    """``program`` over the leading axis B of ``params``, ``chunk`` snapshots per call (the last
    call padded by repeating its first snapshot, so one compiled shape serves all): numpy
    ``{name: (B, L, ...)}``."""
    total = jax.tree_util.tree_leaves(params)[0].shape[0]
    parts = defaultdict(list)
    for sel, n_real in padded_chunks(total, chunk):
        out = jax.block_until_ready(
            program(jax.tree_util.tree_map(lambda a, s=sel: a[s], params), sets, keys)
        )
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
            rows += [
                where | {"loss": loss, "metric": m, "value": float(v)} for m, v in values.items()
            ]
            nodes, weights = out["nodes"][b, li], out["weights"][b, li]
            spectrum += [
                where
                | {
                    "loss": loss,
                    "probe": q,
                    "node": float(nodes[q, j]),
                    "weight": float(weights[q, j]),
                }
                for q in range(nodes.shape[0])
                for j in range(nodes.shape[1])
            ]
    return rows, spectrum


DENSITY_KEYS = ("model", "method", "variant", "run", "epoch", "loss")


def density_rows(spectrum: list[dict], *, points: int, sigma: float) -> list[dict]:
    """Broadened densities (``density_on_grid``) of every snapshot in ``spectrum`` rows, on one
    grid per (model, loss) spanning all its nodes of non-zero weight, padded by 3 sigma; sigma =
    ``sigma`` x that span."""
    groups = defaultdict(list)
    for r in spectrum:
        groups[tuple(r[k] for k in DENSITY_KEYS)].append(r)
    span: dict[tuple[str, str], tuple[float, float]] = {}  # (model, loss) -> node range
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
        quad = [
            np.array([[float(r["node"]), float(r["weight"])] for r in groups[key]]) for key in keys
        ]
        shape = (1 + max(int(r["probe"]) for r in groups[keys[0]]), -1)
        nodes = jnp.stack([q[:, 0].reshape(shape) for q in quad])
        weights = jnp.stack([q[:, 1].reshape(shape) for q in quad])
        density = np.asarray(
            jax.vmap(lambda n, w, g=grid, s=s: density_on_grid(n, w, g, s))(nodes, weights)
        )
        for key, values in zip(keys, density, strict=True):
            base = dict(zip(DENSITY_KEYS, key, strict=True))
            rows += [
                base | {"eigenvalue": float(t), "density": float(d)}
                for t, d in zip(grid, values, strict=True)
            ]
    return rows


TABLES = {"results": "results.csv", "spectrum": "spectrum.csv", "density": "density.csv"}
COLUMNS = (
    "dataset",
    "model",
    "method",
    "variant",
    "run",
    "epoch",
    "loss",
    "metric",
    "value",
    "seed",
)


class DensitySettings(Protocol):
    """What :func:`write_tables` reads of a config: a :class:`CurvatureConfig`, or the runner's
    two settings of a config dict."""

    @property
    def density_points(self) -> int: ...

    @property
    def density_sigma(self) -> float: ...


def write_tables(store: ResultStore, config: DensitySettings, *, density: bool = True) -> None:
    """Rebuild results.csv, spectrum.csv and (if ``density``) density.csv from the finished
    cells. The runner skips density.csv after each cell (it is rebuilt at the end or on Ctrl-C)."""
    rows, spectrum = [], []
    for cell in store.finished_cells():
        rows.extend(cell["rows"])
        spectrum.extend(cell["tables"].get("spectrum", []))
    if rows:
        store.write_table([{k: r[k] for k in COLUMNS} for r in rows], TABLES["results"])
    if spectrum:
        store.write_table(rectangular_rows(spectrum), TABLES["spectrum"])
    if spectrum and density:
        store.write_table(
            density_rows(spectrum, points=config.density_points, sigma=config.density_sigma),
            TABLES["density"],
        )


# ---------------------------------------------------------------------------------------------
# The experiment


def snapshot_chunk(config: CurvatureConfig, spec) -> int:
    """Snapshots per call: ``snapshot_chunk``, at most the model's ``run_chunk`` where set."""
    return min(config.snapshot_chunk, spec.run_chunk or config.snapshot_chunk)


def _hessian_method(config: CurvatureConfig, name: str, size: int, spec) -> str:
    """ "dense" or "slq" for a model of ``size`` parameters; bad sizes, and dense Hessians this
    machine cannot hold, fail with one line."""
    if size <= config.dense_max_params:
        if config.top_k > size:
            raise QunlearnError(
                f"top_k = {config.top_k} exceeds the {size} parameters of "
                f"models.{name}: lower top_k"
            )
        # a call holds size x size float64 Hessians for every snapshot of its chunk and every
        # loss, and eigvalsh as much again (a 16,473-parameter MLP asked for 26 GB, as counted)
        chunk = snapshot_chunk(config, spec)
        need = size**2 * 8 * chunk * len(LOSSES) * 2
        memory = physical_memory()
        if memory is not None and need > MEMORY_FRACTION * memory:
            raise QunlearnError(
                f"models.{name}: dense Hessians of its {size:,} parameters need "
                f"~{need / 2**30:.1f} GiB ({chunk} snapshots x "
                f"{len(LOSSES)} losses per call, x 2 for eigvalsh); this machine has "
                f"{memory / 2**30:.1f} GiB: lower dense_max_params below {size:,} (SLQ above it) "
                "or snapshot_chunk"
            )
        return "dense"
    if not config.top_k <= config.lanczos_steps <= size:
        raise QunlearnError(
            f"lanczos_steps = {config.lanczos_steps} must lie in [top_k = "
            f"{config.top_k}, {size}] for models.{name} ({size} parameters): fix "
            "lanczos_steps or top_k"
        )
    return "slq"


def plan(config: CurvatureConfig, *, cache_dir=None, progress: Progress) -> Plan:
    """Curvature along unlearning; one cell per (model, teachers | method). The config layer
    checked the values; the data set, every model and every method are built here."""
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    n_train, n_val_all = len(dataset.y_train), len(dataset.y_val)
    n_forget = forget_set_size(n_train, config.alpha)
    if config.n_val > n_val_all:
        raise QunlearnError(
            f"n_val = {config.n_val} exceeds the {n_val_all} validation examples "
            "of the data set: lower it (0 = all)"
        )
    root = jax.random.PRNGKey(config.seed)
    # the validation subset: one seeded draw, the same for every model and snapshot
    if 0 < config.n_val < n_val_all:
        key = stable_key(root, config.dataset, "curvature", "validation")
        val_idx = jnp.sort(jax.random.permutation(key, n_val_all)[: config.n_val])
    else:
        val_idx = jnp.arange(n_val_all)
    cells: dict[str, Cell] = {}
    for name, spec in config.models.items():
        mp = plan_model(config, name, spec, dataset, n_train - n_forget, n_forget)
        size = n_params(jax.eval_shape(mp.model.init, jax.random.PRNGKey(0)))
        method = _hessian_method(config, name, size, spec)
        cells |= _ModelCells(config, name, mp, method, dataset, root, val_idx, n_forget).cells()
    return Plan(
        cells, lambda store, final: write_tables(store, config, density=final), dataset.info
    )


class _ModelCells:
    """The cells of one model: both teachers, then every method's unlearning snapshots."""

    def __init__(
        self,
        config: CurvatureConfig,
        name: str,
        mp,
        method: str,
        dataset,
        root,
        val_idx,
        n_forget: int,
    ):
        self.config, self.name, self.mp, self.method = config, name, mp, method
        self.dataset, self.root, self.n_forget = dataset, root, n_forget
        self.teachers_id = f"{name}__teachers"
        self.x_val, self.y_val = mp.shared["x_val"][val_idx], mp.shared["y_val"][val_idx]
        self.keys = jnp.stack(
            [stable_key(root, config.dataset, name, "curvature", loss) for loss in LOSSES]
        )
        self._program = None
        self._teachers = None
        self._programs: dict[tuple, Any] = {}

    def cells(self) -> dict:
        hint = (
            "a NaN loss or acc means the training diverged (lower the learning rate); NaN "
            'curvature alone, try hessian_dtype = "model" (complex128)'
        )
        out = {self.teachers_id: Cell(self.teachers_cell, nonfinite_hint=hint)}
        for m in self.mp.methods:
            out[f"{self.name}__{m}"] = Cell(
                functools.partial(self.method_cell, name=m),
                after=(self.teachers_id,),
                nonfinite_hint=hint,
            )
        return out

    def live(self):
        """Dense only: the flat indices of the params the model reads (the QNN skips the angles
        outside its readout's light cone: 105 of 240 at depth 6), probed at an init on a few
        training inputs; None for SLQ."""
        if self.method != "dense":
            return None
        model, x = self.mp.model, self.mp.shared["x_train"][:4]
        params = model.init(jax.random.PRNGKey(0))
        return live_parameters(lambda p: jax.vmap(model.apply, (None, 0))(p, x), params)

    def program(self):
        if self._program is None:
            c = self.config
            self._program = shared(curvature_program)(
                self.mp.model,
                method=self.method,
                top_k=c.top_k,
                lanczos_steps=c.lanczos_steps,
                slq_probes=c.slq_probes,
                hvp_batch=c.hvp_batch,
                live=self.live(),
                hessian_model=self.hessian_model(),
            )
        return self._program

    def hessian_model(self):
        """The model the Hessian programs differentiate: None (the trained model itself), or with
        ``hessian_dtype = "complex64"`` a QNN's same circuit in complex64 (float32 states and
        angles; the float64 snapshots are rounded on entry; readout and loss in float64), about
        twice as fast on a CPU. Its accuracy against complex128 is checked in
        tests/test_curvature.py and measured in the config's header. MLPs keep their float64
        arithmetic."""
        spec = self.mp.spec
        _, _, dim, is_complex = model_input(self.dataset, spec.input)
        dtype, classes = self.config.hessian_dtype, n_classes(self.dataset)
        return model_in_dtype(self.name, spec, dim, is_complex, dtype, classes)

    def base(self) -> dict:
        return {"dataset": self.config.dataset, "model": self.name, "seed": self.config.seed}

    def curvature(self, params, sets) -> dict:
        chunk = snapshot_chunk(self.config, self.mp.spec)
        return curvature_of(self.program(), params, sets, self.keys, chunk=chunk)

    def sets(self, y_noisy, mask) -> dict:
        return loss_sets(
            shared_split(self.mp.shared, y_noisy, mask, self.n_forget), self.x_val, self.y_val
        )

    def clean_and_poisoned_teachers(self):
        """The clean and the poisoned teacher, trained in one call: (params (2, ...), y_noisy,
        mask). Same init and batch keys: a paired comparison where only the poisoning differs."""
        config, shared = self.config, self.mp.shared
        poison = poison_keys(self.root, config.dataset, config.alpha, 1)[0]
        _, y_noisy, mask = flip_labels(
            poison, shared["x_train"], self.dataset.y_train, config.alpha
        )
        teacher_key = teacher_keys(self.root, config.dataset, self.name, 1)[0]
        both = jnp.stack([teacher_key, teacher_key])
        params = train_teachers(self.mp, both, jnp.stack([shared["y_true"], y_noisy]))
        return params, y_noisy, mask

    def teachers(self, store: ResultStore):
        if self._teachers is None:
            cell = store.load_cell(self.teachers_id)
            self._teachers = (
                load_teacher_npz(store.companion_path(f"{self.teachers_id}.npz"), self.mp.model)
                if cell is not None
                else self.clean_and_poisoned_teachers()
            )
        return self._teachers

    def teachers_cell(self, store: ResultStore) -> CellResult:
        """Train both teachers, measure both, keep their params as the cell's ``.npz``."""
        start = time.perf_counter()
        params, y_noisy, mask = self._teachers = self.clean_and_poisoned_teachers()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        out = self.curvature(params, self.sets(y_noisy, mask))
        rows, spectrum = curvature_rows(out, [(t, "teacher", 0, 0) for t in TEACHERS], self.base())
        return CellResult(
            rows,
            tables={"spectrum": spectrum},
            files={f"{self.teachers_id}.npz": teacher_npz(params, y_noisy, mask)},
            info={"kind": "teachers", "hessian": self.method, "n_forget": int(mask.sum())},
            timing={
                "train_seconds": round(train_seconds, 3),
                "curvature_seconds": round(time.perf_counter() - start, 3),
            },
            compiled=True,
        )

    def method_cell(self, store: ResultStore, name: str) -> CellResult:
        config, spec = self.config, self.mp.spec
        base, options, unlearner = self.mp.methods[name]
        params, y_noisy, mask = self.teachers(store)
        poisoned = jax.tree_util.tree_map(lambda a: a[1], params)
        run_keys = unlearning_keys(self.root, config.dataset, self.name, config.runs)
        if unlearner.form not in self._programs:
            self._programs[unlearner.form] = shared(unlearning_program)(
                self.mp.model,
                unlearner,
                lr=spec.unlearn_lr,
                epochs=spec.unlearn_epochs,
                n_forget=self.n_forget,
                shared_teacher=True,
                trajectory=False,
                run_chunk=spec.run_chunk,
                snapshot_every=config.every,
            )
        start = time.perf_counter()
        starts = jax.vmap(unlearner.start, in_axes=(0, None))(run_keys[:, 0], poisoned)
        weights = {k: jnp.full((config.runs,), v) for k, v in unlearner.weights.items()}
        log = jax.block_until_ready(
            self._programs[unlearner.form](
                run_keys[:, 1], starts, poisoned, y_noisy, mask, weights, self.mp.shared
            )
        )
        unlearn_seconds = time.perf_counter() - start
        epochs = snapshot_epochs(spec.unlearn_epochs, config.every)
        # A method that starts from the teacher has the teacher as its epoch-0 snapshot in
        # every run: copy the teacher's numbers instead of measuring it again.
        copied = _equal(starts, poisoned)
        first = 1 if copied else 0
        snaps = jax.tree_util.tree_map(
            lambda a, f=first: a[:, f:].reshape(-1, *a.shape[2:]), log["snapshots"]
        )
        labels = [
            (name, unlearner.variant, r, e) for r in range(config.runs) for e in epochs[first:]
        ]
        start = time.perf_counter()
        out = self.curvature(snaps, self.sets(y_noisy, mask))
        rows, spectrum = curvature_rows(out, labels, self.base())
        if copied:
            teacher_cell = store.load_cell(self.teachers_id)
            if teacher_cell is None:  # pragma: no cover - the engine keeps the order
                raise RuntimeError(f"{self.teachers_id} is not finished")
            rows, spectrum = (
                [
                    r | {"method": name, "variant": unlearner.variant, "run": run}
                    for run in range(config.runs)
                    for r in old
                    if r["method"] == "poisoned_teacher"
                ]
                + new
                for old, new in (
                    (teacher_cell["rows"], rows),
                    (teacher_cell["tables"]["spectrum"], spectrum),
                )
            )
        return CellResult(
            rows,
            tables={"spectrum": spectrum},
            info={
                "kind": "trajectory",
                "method": base,
                "variant": unlearner.variant,
                "options": options,
                "weights": unlearner.weights,
                "hessian": self.method,
                "snapshot_epochs": epochs,
                "epoch0_copied_from_teacher": copied,
            },
            timing={
                "unlearn_seconds": round(unlearn_seconds, 3),
                "curvature_seconds": round(time.perf_counter() - start, 3),
            },
            compiled=True,
        )


def _equal(starts, params) -> bool:
    """Whether every run's starting params (leading run axis) equal ``params`` exactly."""
    return all(
        np.array_equal(np.asarray(a), np.broadcast_to(np.asarray(b), a.shape))
        for a, b in zip(
            jax.tree_util.tree_leaves(starts), jax.tree_util.tree_leaves(params), strict=True
        )
    )
