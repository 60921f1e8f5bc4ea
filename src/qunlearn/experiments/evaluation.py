"""Did unlearning work: ensembles judged per example against retrain oracles (beyond the paper).

The Fig 3 set-up (:mod:`qunlearn.experiments.unlearning_setup`) with ensembles in place of runs.
Per model, on ONE poisoning draw (the unlearning experiment's, so the forget set D_f is fixed):

* ``<model>__teachers``: T teachers, each its own training seed (init and batch order; teacher 0
  is Fig 3a's teacher): the "no unlearning" ensemble.
* ``<model>__oracles``: K retrain oracles, the paper's Retrain (fresh init, D_r only, the model's
  ``unlearn_*`` settings) with K keys of their own, in one vmapped program.
* ``<model>__<method>``: T x U unlearned models, unlearning seed u of teacher t (keys
  ``unlearning_keys`` index t·U + u: teacher 0's runs are Fig 3a's runs). ``retrain`` listed here
  is a second, independent oracle ensemble: the calibration of every statistic.
* ``<model>__clean_oracles``, where the forget request's D_f is not all of the poison
  (``forget`` = "poison_partial" or "clean_random" on poisoned data): K clean oracles, retrained
  on D minus ALL poison (keys ``clean_oracle_keys``), the second reference of corrective
  unlearning. (For "poison" the oracles are that reference: nothing is computed twice.)
* ``<model>__scores``: from the margins the cells above saved (``.margins.npz``), per group
  (teacher, each method, and ``oracle_half``: the first half of the oracles against the second)
  and split (forget, retain, val, non_member):
  - distances (:mod:`qunlearn.audit`): per-example histogram KL ("klom") and Gaussian KL against
    the K oracles, P50 / P95 / mean over the split's examples, every group at one size (one model
    per teacher: the estimators' bias depends on the sample size);
  - membership: a population loss-threshold attack (forget examples with their held labels,
    against ``non_member`` examples of the same distribution, never trained on, with the same
    corruption: flipped labels, or true ones where D_f is clean) and the per-example
    likelihood-ratio attack (U-LiRA style) on D_f;
  - accuracies (from the margins) and stability: val-accuracy spread, the pairwise prediction
    flip rate, and the share of the variance due to the training seed (teachers) vs the
    unlearning seed (nested design);
  - with clean oracles: every group's distances to them too (``clean_*`` metrics) and the
    corrective-unlearning ``recovery`` (val split): (val acc − the teachers' mean) / (the clean
    oracles' mean − the teachers'), mean and std over the group's models.

Readouts (``eval_shots``, ``eval_circuit_noise``; :mod:`qunlearn.experiments.readouts`): every
ensemble cell of a QNN also saves the margins of the same params read out with S shots per
example (a run's key: its batch-order key, see :func:`~qunlearn.experiments.readouts.readout_key`)
and under each circuit-noise model (arrays ``margins_<readout>`` beside ``margins`` in its
``.margins.npz``), and the scores cell scores every readout alike: its rows gain a ``readout``
column (``exact``, ``shots<S>``, ``noise_<label>``; every row of such a config has one, MLP rows
``exact`` only: an MLP has no measurement). ``eval_device_shots`` and ``eval_mitigate_readout``
add the device readouts ``noise_<label>_shots<S>`` and ``..._mitigated`` alike. Without the
switches nothing changes, byte for byte.

Tables: ``ensemble.csv`` (every model's final metrics), ``results.csv`` (the scores: dataset,
model, group, split, metric, value, models, oracles, seed), ``per_example.csv`` (each example's
distances), ``roc.csv`` (the U-LiRA ROC on a log-spaced FPR grid) and ``bootstrap.csv`` (the
leaderboard's statistics on each bootstrap draw of the teachers, :func:`bootstrap_groups`).

Cost: each ensemble is one program over its runs; on the 2-core CPU the K oracles of the QNN
dominate (one retrain run of the 10-qubit depth-6 QNN per K). docs/evaluation.md has the costs.
"""

from __future__ import annotations

import functools
import io
import time
from collections import defaultdict
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from qunlearn import audit, surgery
from qunlearn.data import load_dataset, n_classes, non_member_pool
from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import (
    features,
    model_input,
    padded_chunks,
    rectangular_rows,
)
from qunlearn.experiments.config import EvalSpec
from qunlearn.experiments.engine import Cell, CellResult, Plan, Progress
from qunlearn.experiments.keys import (
    clean_oracle_keys,
    forget_keys,
    oracle_keys,
    poison_keys,
    teacher_keys,
    unlearning_keys,
)
from qunlearn.experiments.programs import shared
from qunlearn.experiments.readouts import (
    EXACT,
    Readout,
    config_readouts,
    has_readouts,
    read_out,
    resolve_circuit_noise,
)
from qunlearn.experiments.store import ResultStore
from qunlearn.experiments.unlearning_setup import (
    ForgetRequest,
    ModelPlan,
    forget_mask,
    load_teacher_npz,
    plan_models,
    request_info,
    retrain_method,
    run_split,
    shared_split,
    start_program,
    teacher_npz,
    train_teachers,
)
from qunlearn.noise import flip_labels
from qunlearn.train import over_runs, predict, progress_ticks
from qunlearn.unlearn import (
    METRICS,
    make_method,
    make_unlearn,
    method_defaults,
    retain_loss,
    unlearning_metrics,
)

SPLITS = ("forget", "retain", "val", "non_member")
FPR_GRID = np.logspace(-3, 0, 61)  # the ROC table's false-positive rates
NON_MEMBER_SOURCES = {  # see qunlearn.data.non_member_pool
    "mnist": "training-split images after the ones the training set took",
    "xxz": "validation states, evenly spaced in delta (never trained on)",
}
OTHER_NON_MEMBERS = "validation examples, evenly spaced in the split's order (never trained on)"


def plan(config, *, cache_dir=None, progress: Progress) -> Plan:
    """The cells of an :class:`~qunlearn.experiments.config.EvaluationConfig` (checked by the
    config layer); data, non-members, models and methods are built before ``--out`` is touched."""
    dataset = load_dataset(config.dataset, cache_dir=cache_dir, **config.dataset_options)
    request, plans = plan_models(config, dataset)
    root = jax.random.PRNGKey(config.seed)
    poison = poison_keys(root, config.dataset, config.alpha, 1)[0]
    _, y_noisy, poison_mask = flip_labels(
        poison, jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train), config.alpha
    )
    mask = forget_mask(
        forget_keys(root, config.dataset, config.alpha, 1)[0], poison_mask, request, dataset.y_train
    )
    x_out, y_out = non_members(dataset, request, cache_dir, config.dataset_options)
    clean_forget = request.kind in ("clean_random", "class")
    poisoning: dict[str, Any] = {
        "y_noisy": np.asarray(y_noisy),
        "mask": np.asarray(mask),  # D_f
        "poison_mask": np.asarray(poison_mask),
        "y_true": np.asarray(dataset.y_train),
        "y_val": np.asarray(dataset.y_val),
        # the non-members' labels: D_f's corruption (none where D_f is clean)
        "y_non_member": np.asarray(y_out) if clean_forget else 1 - np.asarray(y_out),
    }
    if n_classes(dataset) > 2:  # oriented margins (audit.margin): each probe's true label
        poisoning["probe_labels"] = np.concatenate([dataset.y_train, dataset.y_val, y_out])
    if request.kind == "class":
        poisoning["forget_class"] = request.forget_class
    cells: dict[str, Cell] = {}
    resolved = {}  # what each QNN's device names resolved to (its own width)
    for name, mp in plans.items():
        probes = jnp.concatenate(
            [mp.shared["x_train"], mp.shared["x_val"], jnp.asarray(features(x_out, mp.spec.input))]
        )
        _, _, dim, is_complex = model_input(dataset, mp.spec.input)
        noise = resolve_circuit_noise(config.eval_circuit_noise, dim)
        readouts = config_readouts(config, name, mp.spec, dim, is_complex, noise)
        if any(r.shots is None for r in readouts.values()):
            resolved[name] = noise
        cells |= _ModelCells(
            config, name, mp, root, poisoning, probes, request, progress, readouts
        ).cells()
    data = dataset.info | {
        "non_members": {
            "count": len(y_out),
            "source": NON_MEMBER_SOURCES.get(config.dataset, OTHER_NON_MEMBERS),
            "labels": "true (the forget set is clean)"
            if clean_forget
            else "flipped (the forget set's corruption)",
        }
    }
    if any(isinstance(v, str) for v in config.eval_circuit_noise.values()):
        data = data | {"eval_circuit_noise": resolved}
    return Plan(cells, lambda store, final: write_tables(store), data | request_info(request))


def non_members(dataset, request: ForgetRequest, cache_dir, options: dict):
    """(x, y) of the membership attack's non-members: |D_f| of them, as many per class (of the
    deleted class only, for a class deletion: the forget set's distribution)."""
    if request.kind != "class":
        return non_member_pool(dataset, request.n_forget // 2, cache_dir=cache_dir, **options)
    x, y = non_member_pool(dataset, request.n_forget, cache_dir=cache_dir, **options)
    mine = y == request.forget_class
    return x[mine], y[mine]


def split_indices(poisoning: dict) -> dict:
    """Indices of every split into the probe set (training set, then val, then non-members)."""
    mask, n_val = poisoning["mask"], len(poisoning["y_val"])
    n_train = len(mask)
    return {
        "forget": np.flatnonzero(mask),
        "retain": np.flatnonzero(~mask),
        "val": n_train + np.arange(n_val),
        "non_member": n_train + n_val + np.arange(len(poisoning["y_non_member"])),
    }


def ensemble_program(
    model,
    method,
    *,
    lr: float,
    epochs: int,
    n_forget: int,
    run_chunk: int = 0,
    on_epoch=None,
    n_removed: int | None = None,
    probe_labels=None,
    with_params: bool = False,
):
    """``fn(keys, starts, teachers, weights, y_noisy, mask, shared, probes) -> (final, margins)``
    over a leading run axis (teachers too): each run unlearns (or retrains) and returns its final
    :data:`~qunlearn.unlearn.METRICS`, its last loss and its margins on ``probes``. ``mask``: D_f,
    or with ``n_removed`` the pair of :func:`~qunlearn.experiments.unlearning_setup.
    reference_split` (a clean reference). ``probe_labels``: a C-class model's margins are
    oriented by them (:func:`qunlearn.audit.margin`). ``with_params``: the runs' final params
    too, a third output (the readouts read them). ``.traces`` counts its tracings."""
    unlearn = make_unlearn(model, method, lr=lr, epochs=epochs, trajectory=False, on_epoch=on_epoch)
    traces = []

    def one(key, start, teacher, weights, y_noisy, mask, shared, probes):
        traces.append(1)
        params, log = unlearn(
            key, start, teacher, run_split(shared, y_noisy, mask, n_forget, n_removed), weights
        )
        # a method that only edits the teacher (steps = 0) takes no step: it has no loss
        final = log["final"] | ({"loss": log["loss"][-1]} if method.steps else {})
        margins = audit.margin(predict(model, params, probes), probe_labels)
        return (final, margins, params) if with_params else (final, margins)

    fn = jax.jit(over_runs(one, (0, 0, 0, 0, None, None, None, None), run_chunk))
    # how often it was traced: a new entry = a compilation (jit's wrapper takes attributes;
    # jax's stubs declare none)
    fn.traces = traces  # type: ignore[attr-defined]
    return fn


def readout_program(readouts: dict[str, Readout], run_chunk: int = 0):
    """``fn(keys, params, probes) -> {readout: margins}`` over a leading run axis: every run's
    params read out under each readout (``keys``: the runs' own keys, the shots' streams)."""

    def one(key, params, probes):
        return {
            name: audit.margin(read_out(r, params, probes, key)) for name, r in readouts.items()
        }

    return jax.jit(over_runs(one, (0, 0, None), run_chunk))


def margins_npz(margins, readouts: dict | None = None) -> bytes:
    """``margins`` (the exact readout's) and ``margins_<readout>`` for each of ``readouts``."""
    buf = io.BytesIO()
    more = {f"margins_{k}": np.asarray(v, np.float64) for k, v in (readouts or {}).items()}
    np.savez(buf, margins=np.asarray(margins, np.float64), **more)  # type: ignore[arg-type]
    return buf.getvalue()


class _ModelCells:
    """The cells of one model: teachers, oracles, one ensemble per method, then the scores."""

    def __init__(
        self,
        config,
        name: str,
        mp: ModelPlan,
        root,
        poisoning,
        probes,
        request: ForgetRequest,
        progress,
        readouts: dict[str, Readout] | None = None,
    ):
        self.config, self.name, self.mp, self.root = config, name, mp, root
        self.poisoning, self.probes, self.progress = poisoning, probes, progress
        self.request, self.n_forget = request, request.n_forget
        # the references' (options, Method): retrain on D_r, and on D minus all poison; built
        # here, before --out is touched
        self.oracle = retrain_method(config, mp, self.n_forget)
        self.clean = (
            retrain_method(config, mp, request.n_poison) if request.clean_reference else None
        )
        spec = mp.spec
        assert isinstance(spec, EvalSpec)  # an evaluation config's models are EvalSpecs
        self.n_teachers, self.n_seeds, self.n_oracles = (
            spec.teachers,
            spec.unlearn_seeds,
            spec.oracles,
        )
        self.teachers_id = f"{name}__teachers"
        self._teachers: tuple | None = None  # (params, y_noisy, mask), a leading teacher axis
        self._programs: dict[tuple, Any] = {}  # see program(): its key -> jitted program
        self._executables: dict[int, Any] = {}  # id(program) -> compiled (see ensemble())
        self.readouts = readouts or {}
        self._read_out = readout_program(self.readouts, spec.run_chunk) if self.readouts else None

    def cells(self) -> dict:
        spec = self.mp.spec
        runs = self.n_teachers * self.n_seeds
        out = {
            self.teachers_id: Cell(
                self.teachers_cell,
                ticks=progress_ticks(spec.epochs, self.n_teachers, spec.run_chunk, spec.batching),
            ),
            f"{self.name}__oracles": Cell(
                self.oracles_cell,
                ticks=progress_ticks(spec.unlearn_epochs, self.n_oracles, spec.run_chunk),
            ),
        }
        if self.clean is not None:
            out[f"{self.name}__clean_oracles"] = Cell(
                self.clean_oracles_cell,
                ticks=progress_ticks(spec.unlearn_epochs, self.n_oracles, spec.run_chunk),
            )
        for method in self.mp.methods:
            out[f"{self.name}__{method}"] = Cell(
                functools.partial(self.method_cell, name=method),
                ticks=progress_ticks(spec.unlearn_epochs, runs, spec.run_chunk),
                after=(self.teachers_id,),
            )
        out[f"{self.name}__scores"] = Cell(self.scores_cell, after=tuple(out))
        return out

    # -- ensembles ---------------------------------------------------------------------------

    def rows(self, group: str, final: dict, teacher_of, seed_of) -> list[dict]:
        base = {"dataset": self.config.dataset, "model": self.name, "group": group}
        metrics = (*METRICS, "loss") if "loss" in final else METRICS
        return [
            base
            | {
                "teacher": teacher_of(r),
                "unlearn_seed": seed_of(r),
                "run": r,
                "metric": metric,
                "value": float(final[metric][r]),
                "seed": self.config.seed,
            }
            for r in range(len(final[METRICS[0]]))
            for metric in metrics
        ]

    def program(self, method, n_removed: int | None = None):
        key = (method.form, n_removed)
        if key not in self._programs:
            spec = self.mp.spec
            self._programs[key] = shared(ensemble_program)(
                self.mp.model,
                method,
                lr=spec.unlearn_lr,
                epochs=spec.unlearn_epochs,
                n_forget=self.n_forget,
                run_chunk=spec.run_chunk,
                on_epoch=self.progress.on_epoch,
                n_removed=n_removed,
                probe_labels=self.poisoning.get("probe_labels"),
                with_params=bool(self.readouts),
            )
        return self._programs[key]

    def teachers_cell(self, store: ResultStore) -> CellResult:
        shared, model = self.mp.shared, self.mp.model
        keys = teacher_keys(self.root, self.config.dataset, self.name, self.n_teachers)
        y_noisy = jnp.broadcast_to(
            self.poisoning["y_noisy"], (self.n_teachers, len(self.poisoning["mask"]))
        )
        poison = jnp.broadcast_to(self.poisoning["poison_mask"], y_noisy.shape)
        params = train_teachers(self.mp, keys, y_noisy, on_epoch=self.progress.on_epoch)
        self._teachers = (params, y_noisy, poison)
        split = shared_split(shared, y_noisy[0], self.poisoning["mask"], self.n_forget)

        @jax.jit
        def evaluate(p):
            return jax.vmap(lambda q: unlearning_metrics(model, q, split))(p), jax.vmap(
                lambda q: audit.margin(
                    predict(model, q, self.probes), self.poisoning.get("probe_labels")
                )
            )(p)

        final, margins = evaluate(params)
        return CellResult(
            self.rows("teacher", final, lambda r: r, lambda r: ""),
            info={"kind": "ensemble", "group": "teacher"},
            files={
                f"{self.teachers_id}.npz": teacher_npz(params, y_noisy, poison),
                f"{self.teachers_id}.margins.npz": margins_npz(
                    margins, self.read_outs(keys[:, 1], params)
                ),
            },
            compiled=True,
        )

    def teachers(self, store: ResultStore):
        if self._teachers is None:
            self._teachers = load_teacher_npz(
                store.companion_path(f"{self.teachers_id}.npz"), self.mp.model
            )
        return self._teachers

    def read_outs(self, keys, params) -> dict:
        """{readout: margins (runs, probes)} of runs' ``params`` (a leading run axis), each run
        read out with its own key (``keys``, one per run), in calls of T x U runs (the last one
        padded) as the ensembles: one compiled readout program per model; {} without readouts."""
        if self._read_out is None:
            return {}
        parts = []
        for sel, n_real in padded_chunks(keys.shape[0], self.n_teachers * self.n_seeds):
            chosen = jax.tree_util.tree_map(lambda a, sel=sel: a[sel], params)
            out = self._read_out(keys[sel], chosen, self.probes)
            parts.append({k: np.asarray(v)[:n_real] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in self.readouts}

    def ensemble(self, method, keys, teachers, n_removed: int | None = None):
        """(final metrics, margins, readout margins, seconds) of one run per key row (start
        key, batch-order key) and teacher (leading axis), in calls of T x U runs (the last one
        padded): one compiled program serves the oracles and every method of one form.
        ``seconds``: (the wall time of the runs, of compiling the program where the form is new);
        the program is compiled ahead of its first call (``lower().compile()``), so the runs'
        time is the method's cost alone, and the starting points are not timed (a fresh init's
        compilation would swamp a small ensemble's runs). ``n_removed``: a clean reference's runs
        (trained on D minus all poison, judged on D_f). Readout margins: :meth:`read_outs` of the
        runs' params, their batch-order keys the shots' streams (not timed: not the method's
        cost)."""
        program, chunk = self.program(method, n_removed), self.n_teachers * self.n_seeds
        mask = self.poisoning["mask"]
        if n_removed is not None:
            mask = (mask, self.poisoning["poison_mask"])
        weights = {k: np.full(chunk, v) for k, v in method.weights.items()}
        start = start_program(method.start)
        parts, seconds, compile_seconds = [], 0.0, 0.0
        for sel, n_real in padded_chunks(keys.shape[0], chunk):
            teacher = jax.tree_util.tree_map(lambda a, sel=sel: a[sel], teachers)
            starts = jax.block_until_ready(start(keys[sel, 0], teacher))
            args = (
                keys[sel, 1],
                starts,
                teacher,
                weights,
                self.poisoning["y_noisy"],
                mask,
                self.mp.shared,
                self.probes,
            )
            if id(program) not in self._executables:  # every chunk has the first one's shapes
                began = time.perf_counter()
                self._executables[id(program)] = program.lower(*args).compile()
                compile_seconds = time.perf_counter() - began
            began = time.perf_counter()
            out = self._executables[id(program)](*args)
            parts.append(jax.tree_util.tree_map(lambda a, n=n_real: np.asarray(a)[:n], out))
            seconds += time.perf_counter() - began
        final, margins, *params = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)
        readouts = self.read_outs(keys[:, 1], params[0]) if params else {}
        return final, margins, readouts, (seconds, compile_seconds)

    def oracles_cell(self, store: ResultStore, clean: bool = False) -> CellResult:
        """K retrain oracles on D_r; ``clean``: K clean oracles on D minus all poison (their own
        keys), judged on the same D_f."""
        model, group = self.mp.model, "clean_oracle" if clean else "oracle"
        options, method = self.clean if clean and self.clean else self.oracle
        keys = (clean_oracle_keys if clean else oracle_keys)(
            self.root, self.config.dataset, self.name, self.n_oracles
        )
        # Retrain reads no teacher output (its teacher terms have weight 0): any params will do.
        placeholder = model.init(jax.random.PRNGKey(0))
        teachers = jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(a, (self.n_oracles, *a.shape)), placeholder
        )
        n_removed = self.request.n_poison if clean else None
        traces = len(self.program(method, n_removed).traces)
        final, margins, readouts, _ = self.ensemble(method, keys, teachers, n_removed)
        return CellResult(
            self.rows(group, final, lambda r: "", lambda r: r),
            info={"kind": "ensemble", "group": group, "options": options},
            files={f"{self.name}__{group}s.margins.npz": margins_npz(margins, readouts)},
            compiled=len(self.program(method, n_removed).traces) > traces,
        )

    def clean_oracles_cell(self, store: ResultStore) -> CellResult:
        return self.oracles_cell(store, clean=True)

    def method_cell(self, store: ResultStore, name: str) -> CellResult:
        base, options, method = self.mp.methods[name]
        t, u = self.n_teachers, self.n_seeds
        params = self.teachers(store)[0]
        per_run = jax.tree_util.tree_map(lambda a: jnp.repeat(a, u, axis=0), params)
        keys = unlearning_keys(self.root, self.config.dataset, self.name, t * u)
        traces = len(self.program(method).traces)
        final, margins, readouts, seconds = self.ensemble(method, keys, per_run)
        compiled = len(self.program(method).traces) > traces
        return CellResult(
            self.rows(name, final, lambda r: r // u, lambda r: r % u),
            info={
                "kind": "ensemble",
                "group": name,
                "method": base,
                "variant": method.variant,
                "options": options,
            },
            files={f"{self.name}__{name}.margins.npz": margins_npz(margins, readouts)},
            # the leaderboard's cost (runs only; the compilation apart); not a result
            timing={"run_seconds": round(seconds[0], 3), "compile_seconds": round(seconds[1], 3)},
            compiled=compiled,
            tables=(
                {"certificate": self.certificate(store, name, options)}
                if base == "certified_newton"
                else {}
            ),
        )

    def certificate(self, store: ResultStore, name: str, options: dict) -> list[dict]:
        """certified_newton's (ε, δ) inputs, one row per teacher: ``gradient_norm`` =
        ‖∇L_r(θ⁻)‖ at its removal θ⁻ (the Newton step of ``newton`` with the same options,
        before the noise), ``l2`` and ``sigma`` (:func:`qunlearn.surgery.removal_epsilon`); one
        row with the ``reason`` where the loss allows no certificate."""
        row = {"dataset": self.config.dataset, "model": self.name, "group": name}
        opts = method_defaults("certified_newton") | options
        params, model, spec = self.teachers(store)[0], self.mp.model, self.mp.spec
        gap = surgery.certificate_gap(spec.model, spec.hyper, opts["l2"])
        if gap is not None:
            return [row | {"certified": False, "reason": gap}]
        split = run_split(
            self.mp.shared, self.poisoning["y_noisy"], self.poisoning["mask"], self.n_forget, None
        )
        newton = make_method(
            "newton",
            model,
            n_retain=int(split["x_retain"].shape[0]),
            n_forget=self.n_forget,
            epochs=spec.unlearn_epochs,
            batch_size=spec.unlearn_batch_size,
            **{k: v for k, v in options.items() if k != "sigma"},
        )
        loss = retain_loss(model, split["x_retain"], split["y_retain"], opts["l2"])
        prepare = newton.prepare
        assert prepare is not None  # newton edits the teacher in its prepare step

        @jax.jit
        @jax.vmap
        def gradient_norm(teacher):
            removed = prepare(jax.random.PRNGKey(0), teacher, *newton.inputs(teacher, split))
            return jnp.linalg.norm(ravel_pytree(jax.grad(loss)(removed[0]))[0])

        norms = np.asarray(gradient_norm(params))
        return [
            row
            | {"teacher": t, "certified": True, "gradient_norm": float(g)}
            | {"l2": float(opts["l2"]), "sigma": float(opts["sigma"])}
            for t, g in enumerate(norms)
        ]

    # -- scores ------------------------------------------------------------------------------

    def load_margins(self, store: ResultStore, cell_id: str, readout: str = EXACT) -> np.ndarray:
        key = "margins" if readout == EXACT else f"margins_{readout}"
        with np.load(store.companion_path(f"{cell_id}.margins.npz"), allow_pickle=False) as f:
            return f[key]

    def scores_cell(self, store: ResultStore) -> CellResult:
        """Every score of every readout (the exact one first); rows tagged with their readout
        where the config asks for readouts (:mod:`qunlearn.experiments.readouts`)."""
        tagged = has_readouts(self.config)
        rows: list[dict] = []
        tables: defaultdict[str, list[dict]] = defaultdict(list)
        for readout in (EXACT, *self.readouts):
            tag = {"readout": readout} if tagged else {}
            scores, extra = self.scores_of(store, readout)
            rows += [row | tag for row in scores]
            for name, table in extra.items():
                tables[name] += [row | tag for row in table]
        return CellResult(rows, info={"kind": "scores"}, tables=dict(tables))

    def scores_of(self, store: ResultStore, readout: str) -> tuple[list, dict]:
        """(results rows, {table: rows}) of one readout's margins."""
        oracles = self.load_margins(store, f"{self.name}__oracles", readout)
        groups = {"teacher": self.load_margins(store, self.teachers_id, readout)}
        groups |= {
            m: self.load_margins(store, f"{self.name}__{m}", readout) for m in self.mp.methods
        }
        clean = None
        if self.clean is not None:
            clean = self.load_margins(store, f"{self.name}__clean_oracles", readout)
        # the scores and their bootstrap draws: the same groups, binning, design and seed
        settings = {
            "bins": self.config.bins,
            "design": (self.n_teachers, self.n_seeds),
            "seed": self.config.seed,
        }
        rows, per_example, roc = score_groups(
            groups, oracles, self.poisoning, clean=clean, **settings
        )
        resampled = bootstrap_groups(groups, oracles, self.poisoning, **settings)
        base = {"dataset": self.config.dataset, "model": self.name}
        return [base | row | {"seed": self.config.seed} for row in rows], {
            "per_example": [base | row for row in per_example],
            "roc": [base | row for row in roc],
            "bootstrap": [base | row for row in resampled],
        }


def score_groups(
    groups: dict, oracles, poisoning: dict, *, bins: int, design, seed: int = 0, clean=None
) -> tuple:
    """(rows, per-example rows, ROC rows) of every group's margins (models, probes) against the
    oracles' (K, probes); ``design`` = (teachers, unlearning seeds) of the method ensembles.
    ``seed`` draws the oracle subsets of the null band (group ``oracle_null``). ``clean``: the
    clean oracles' margins (K', probes), a second reference (:func:`clean_reference_scores`)."""
    idx = split_indices(poisoning)
    half = oracles.shape[0] // 2
    labels = {
        "forget": poisoning["y_noisy"][idx["forget"]],  # members with their held labels
        "non_member": poisoning["y_non_member"],  # non-members, the same corruption
    }
    truth = score_truth(poisoning)
    if "probe_labels" in poisoning:  # oriented margins: every label reads as 1
        labels = {k: np.ones_like(v) for k, v in labels.items()}
    rows, per_example, roc = [], [], []

    def add(group, split, metric, value, n_models):
        rows.append(
            {
                "group": group,
                "split": split,
                "metric": metric,
                "value": float(value),
                "models": n_models,
                "oracles": oracles.shape[0],
            }
        )

    t, u = design
    # Distances compare every group at one size, one model per teacher (unlearning seed 0): the
    # estimators' finite-sample bias depends on the size, so teacher, retrain and methods must
    # match. The oracle halves are the estimator's null at K/2 vs K/2.
    compared = {g: m[::u] if m.shape[0] == t * u else m for g, m in groups.items()}
    compared["oracle_half"] = oracles[:half]
    for group, margins in compared.items():
        reference = oracles[half : 2 * half] if group == "oracle_half" else oracles
        n = margins.shape[0]
        for split in SPLITS:
            sel = idx[split]
            per_split = distances(margins[:, sel], reference[:, sel], bins)
            for name, d in per_split.items():
                for stat, value in summaries(d).items():
                    add(group, split, f"{name}_{stat}", value, n)
            per_example += [
                {
                    "group": group,
                    "split": split,
                    "example": int(i),
                    "klom": float(k),
                    "gauss_kl": float(g),
                }
                for i, k, g in zip(sel, per_split["klom"], per_split["gauss_kl"], strict=True)
            ]
    references = {"oracle": oracles} | ({} if clean is None else {"clean_oracle": clean})
    for group, margins in (dict(groups) | references).items():
        n = margins.shape[0]
        hits = margins > 0
        for split in ("forget", "retain", "val"):
            sel = idx[split]
            acc = (hits[:, sel] == (truth[sel] > 0.5)).mean(1)
            add(group, split, "acc_true_mean", acc.mean(), n)
            add(group, split, "acc_true_std", acc.std(ddof=1), n)
            add(group, split, "flip_rate", audit.flip_rate(margins[:, sel]), n)
        if "forget_class" in poisoning:  # class deletion: the deleted and the kept classes
            for split, sel in class_splits(poisoning, idx).items():
                acc = (hits[:, sel] == (truth[sel] > 0.5)).mean(1)
                add(group, split, "acc_true_mean", acc.mean(), n)
                add(group, split, "acc_true_std", acc.std(ddof=1), n)
        poisoned = (hits[:, idx["forget"]] == (labels["forget"] > 0.5)).mean(1)
        add(group, "forget", "frac_poisoned_label_mean", poisoned.mean(), n)
        auc = audit.population_attack(
            margins[:, idx["forget"]],
            labels["forget"],
            margins[:, idx["non_member"]],
            labels["non_member"],
        )
        add(group, "forget", "mia_loss_auc_mean", auc.mean(), n)
        add(group, "forget", "mia_loss_auc_std", auc.std(ddof=1), n)
        if group in references:
            continue
        reference = oracles
        positive, negative = audit.ulira(margins[:, idx["forget"]], reference[:, idx["forget"]])
        for metric, value in audit.attack_summary(positive, negative).items():
            add(group, "forget", f"ulira_{metric}", value, n)
        fpr, tpr = audit.roc_curve(positive, negative)
        roc += [
            {"group": group, "fpr": float(f), "tpr": float(tpr[fpr <= f].max())} for f in FPR_GRID
        ]
        if u > 1 and n == t * u and group != "oracle_null":
            val = idx["val"]
            acc = (hits[:, val] == (truth[val] > 0.5)).mean(1).reshape(t, u)
            between, within = audit.nested_variance(acc)
            add(group, "val", "acc_var_training_seed", between, n)
            add(group, "val", "acc_var_unlearning_seed", within, n)
            between, within = audit.nested_variance(margins[:, val].reshape(t, u, -1))
            share = between / (between + within) if between + within > 0 else 0.0
            add(group, "val", "margin_var_share_training_seed", share, n)
    if clean is not None:
        val_truth = truth[idx["val"]] > 0.5
        for score in clean_reference_scores(
            groups, compared, oracles, clean, idx, val_truth, bins=bins
        ):
            add(*score)
    null, null_roc = null_band(oracles, idx, bins=bins, sizes=(t, t * u), seed=seed)
    for (split, metric), values in null.items():
        n = t if metric.startswith("klom") else t * u
        add("oracle_null", split, metric, np.median(values), n)
        add("oracle_null", split, f"{metric}_lo", np.quantile(values, 0.025), n)
        add("oracle_null", split, f"{metric}_hi", np.quantile(values, 0.975), n)
    roc += [{"group": "oracle_null", "fpr": float(f), "tpr": t_} for f, t_ in null_roc]
    return rows, per_example, roc


def score_truth(poisoning: dict) -> np.ndarray:
    """The true labels of the training and validation probes as the margins read them: the
    labels, or all 1 for oriented margins (a C-class model's, :func:`qunlearn.audit.margin`)."""
    truth = np.concatenate([poisoning["y_true"], poisoning["y_val"]])
    return np.ones_like(truth) if "probe_labels" in poisoning else truth


def class_splits(poisoning: dict, idx: dict) -> dict:
    """A class deletion's validation probes: of the deleted class, and of the kept ones."""
    deleted = poisoning["y_val"] == poisoning["forget_class"]
    return {"val_deleted_class": idx["val"][deleted], "val_kept_classes": idx["val"][~deleted]}


def distances(margins, reference, bins: int) -> dict:
    """Per-example distances of ``margins`` (models, examples) to ``reference`` (K, examples)."""
    return {
        "klom": audit.histogram_kl(margins, reference, bins),
        "gauss_kl": audit.gaussian_kl(margins, reference),
    }


def summaries(d) -> dict:
    """The summaries of per-example distances that the scores report."""
    return {"p50": np.quantile(d, 0.5), "p95": np.quantile(d, 0.95), "mean": d.mean()}


def clean_reference_scores(
    groups: dict, compared: dict, oracles, clean, idx: dict, val_truth, *, bins: int
) -> list[tuple]:
    """(group, split, metric, value, models) of the second reference of corrective unlearning,
    the clean oracles (``clean``, retrained on D minus all poison):

    * every ``compared`` group's distances to them (``clean_`` + the distance metrics);
    * ``recovery_gap`` (group clean_oracle): the clean oracles' mean val accuracy − the
      teachers', what corrective unlearning can recover;
    * where that gap is positive, per full ensemble of ``groups`` and the oracles, the
      ``recovery`` of clean val accuracy, (acc − the teachers' mean) / gap, mean and std over its
      models: 0 = no better than no unlearning, 1 = as good as retraining without any poison.
      (No gap, nothing to recover: no recovery rows.)"""
    out = []
    for group, margins in compared.items():
        if group == "oracle_half":
            continue
        for split in SPLITS:
            sel = idx[split]
            for name, d in distances(margins[:, sel], clean[:, sel], bins).items():
                out += [
                    (group, split, f"clean_{name}_{stat}", value, margins.shape[0])
                    for stat, value in summaries(d).items()
                ]

    def val_acc(margins):
        return ((margins[:, idx["val"]] > 0) == val_truth).mean(1)

    start = val_acc(groups["teacher"]).mean()
    gap = val_acc(clean).mean() - start
    out.append(("clean_oracle", "val", "recovery_gap", gap, clean.shape[0]))
    if gap <= 0:
        return out
    for group, margins in (dict(groups) | {"oracle": oracles}).items():
        recovery = (val_acc(margins) - start) / gap
        n = margins.shape[0]
        out.append((group, "val", "recovery_mean", recovery.mean(), n))
        out.append((group, "val", "recovery_std", recovery.std(ddof=1) if n > 1 else 0.0, n))
    return out


NULL_DRAWS = 20


def null_band(oracles, idx: dict, *, bins: int, sizes: tuple[int, int], seed: int):
    """The statistics of oracles posing as a group: ``NULL_DRAWS`` seeded draws of n oracles
    against the other K − n (n = ``sizes[0]`` = T for the distances, ``sizes[1]`` = T x U for the
    attack). An ensemble's statistics vary from draw to draw as a whole (one unusual model moves
    every example), so a group is only distinguishable from fresh oracles outside this band.
    Returns ({(split, metric): [value per draw]}, the first draw's ROC points)."""
    rng = np.random.default_rng(seed)
    k = oracles.shape[0]
    n_dist, n_attack = sizes
    if max(sizes) > k // 2:  # the config refuses this (EvaluationConfig): never a smaller band
        raise QunlearnError(
            f"the null band needs at least 2 x {max(sizes)} oracles, got {k}: raise oracles"
        )
    out, first_roc = defaultdict(list), None
    forget = idx["forget"]
    for _ in range(NULL_DRAWS):
        perm = rng.permutation(k)
        sub, rest = oracles[perm[:n_dist]], oracles[perm[n_dist:]]
        for split in ("forget", "retain", "val"):
            d = audit.histogram_kl(sub[:, idx[split]], rest[:, idx[split]], bins)
            out[(split, "klom_p50")].append(np.quantile(d, 0.5))
            out[(split, "klom_p95")].append(np.quantile(d, 0.95))
        sub, rest = oracles[perm[:n_attack], :][:, forget], oracles[perm[n_attack:], :][:, forget]
        positive, negative = audit.ulira(sub, rest)
        for metric, value in audit.attack_summary(positive, negative).items():
            out[("forget", f"ulira_{metric}")].append(value)
        if first_roc is None:
            fpr, tpr = audit.roc_curve(positive, negative)
            first_roc = [(float(f), float(tpr[fpr <= f].max())) for f in FPR_GRID]
    return dict(out), first_roc


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_STREAM = 1  # the bootstrap's draws: a stream of its own beside the null band's
# the statistics the leaderboard needs intervals of: metric -> its split (as in results.csv)
BOOTSTRAP_METRICS = {
    "klom_p50": "forget",
    "ulira_tpr_at_1pct_fpr": "forget",
    "acc_true_mean": "val",
}


def bootstrap_groups(
    groups: dict,
    oracles,
    poisoning: dict,
    *,
    bins: int,
    design,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    chunk: int = 50,
) -> list[dict]:
    """Rows {group, resample, <metric>: value for :data:`BOOTSTRAP_METRICS`}: each statistic of
    :func:`score_groups` recomputed on ``resamples`` draws of the T teachers with replacement. One
    draw serves every group (a teacher's unlearned runs go with it; the runs of ``retrain``, made
    per teacher too, likewise), so differences between groups are paired; the K oracles stay
    fixed. Resample 0 is the first draw, not the identity: the point values are results.csv's."""
    idx = split_indices(poisoning)
    forget, val = idx["forget"], idx["val"]
    truth = (score_truth(poisoning)[val] > 0.5)[None]
    t, u = design
    picks = np.random.default_rng((seed, BOOTSTRAP_STREAM)).integers(0, t, (resamples, t))
    reference = oracles[:, forget]
    rows = []
    for group, margins in groups.items():
        per = margins.shape[0] // t  # runs per teacher: U for a method, 1 for the teachers
        runs = (picks[..., None] * per + np.arange(per)).reshape(resamples, -1)  # (B, T·per)
        one = picks * per  # unlearning seed 0 of each drawn teacher: the distances' size
        acc = ((margins[:, val] > 0) == truth).mean(1)[runs].mean(1)
        on_forget = margins[:, forget]
        klom, tpr = [], []
        for lo in range(0, resamples, chunk):  # resamples side by side, as extra examples
            sel = slice(lo, lo + chunk)
            n = len(runs[sel])
            references = np.tile(reference, n)
            d = audit.histogram_kl(_side_by_side(on_forget, one[sel]), references, bins)
            klom.append(np.quantile(d.reshape(n, -1), 0.5, axis=1))
            positive, negative = audit.ulira(_side_by_side(on_forget, runs[sel]), references)
            tpr.append(
                audit.tpr_at_fpr_rows(_per_resample(positive, n), _per_resample(negative, n), 0.01)
            )
        values = {"klom_p50": np.concatenate(klom), "ulira_tpr_at_1pct_fpr": np.concatenate(tpr)}
        values["acc_true_mean"] = acc
        rows += [
            {"group": group, "resample": b} | {k: float(v[b]) for k, v in values.items()}
            for b in range(resamples)
        ]
    return rows


def _side_by_side(margins, draws):
    """(models, F) margins, (n, models') drawn rows -> (models', n·F): draw b in columns b·F..."""
    picked = margins[draws.T]  # (models', n, F)
    return picked.reshape(picked.shape[0], -1)


def _per_resample(scores, n: int):
    """(models, n·F) scores of n resamples side by side -> (n, models·F), one row each."""
    return scores.reshape(scores.shape[0], n, -1).transpose(1, 0, 2).reshape(n, -1)


TABLES = {"ensemble": "ensemble.csv", "scores": "results.csv"}
EXTRA_TABLES = {
    "per_example": "per_example.csv",
    "roc": "roc.csv",
    "bootstrap": "bootstrap.csv",
    "certificate": "certificate.csv",
}


def write_tables(store: ResultStore) -> None:
    """Rebuild every table from the finished cells."""
    rows, extra = defaultdict(list), defaultdict(list)
    for cell in store.finished_cells():
        rows[cell.get("kind", "ensemble")].extend(cell["rows"])
        for name, table in cell.get("tables", {}).items():
            extra[name].extend(table)
    for kind, name in TABLES.items():
        if rows[kind]:
            store.write_table(rectangular_rows(rows[kind]), name)
    for kind, name in EXTRA_TABLES.items():
        if extra[kind]:
            store.write_table(rectangular_rows(extra[kind]), name)
