"""Unlearning methods: one contract for every member, starting points, forget-set definitions,
reference identities (SCRUB / GA with zero forget weight = finetune), vmap = single runs, compiles
once per form, one-line errors; and the Fig 3 experiment end to end on a tiny synthetic data set."""

import csv
import functools
import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.compare import compare_results_dir
from qunlearn.data import Dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments import unlearning as exp
from qunlearn.experiments.config import UnlearningConfig, UnlearnSpec
from qunlearn.models import make_model
from qunlearn.noise import flip_labels
from qunlearn.plotting.style import stem_suffixes
from qunlearn.testing import check_method
from qunlearn.unlearn import (
    METHODS,
    METRICS,
    alternating_plan,
    joint_plan,
    kl_bernoulli,
    kl_one_term,
    make_method,
    make_split,
    make_unlearn,
    unlearning_metrics,
)

N, D, ALPHA, EPOCHS, BS = 40, 8, 0.3, 3, 8
N_FORGET = 12  # floor(40 * 0.3), even
FROM_TEACHER = ("finetune", "scrub", "gradient_ascent", "scrub_kurmanji", "neggrad_plus")


def _toy(n=N, d=D, seed=0):
    """Class-sorted unit vectors (usable as 3-qubit amplitudes), separable along one axis."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2).astype(np.int32)
    x = np.abs(rng.normal(size=(n, d))) + 2.0 * y[:, None] * np.eye(d)[0]
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


@pytest.fixture(scope="module")
def setup():
    x, y = _toy()
    x_val, y_val = _toy(20, seed=1)
    _, y_noisy, mask = flip_labels(jax.random.PRNGKey(0), x, y, ALPHA)
    shared = {
        "x_train": jnp.asarray(x),
        "y_true": jnp.asarray(y),
        "x_val": jnp.asarray(x_val),
        "y_val": jnp.asarray(y_val),
    }
    split = make_split(
        shared["x_train"],
        shared["y_true"],
        y_noisy,
        mask,
        shared["x_val"],
        shared["y_val"],
        n_forget=N_FORGET,
    )
    return {"shared": shared, "y_noisy": y_noisy, "mask": mask, "split": split, "x": x, "y": y}


MODELS = {
    "mlp": make_model("mlp", D, False, hidden=(4,)),
    "qnn": make_model("qnn", D, False, depth=1),
}  # 3 qubits
PROGRAMS = {}  # compiled programs shared by the tests (equal forms share one, as in the experiment)


def _model(kind):
    return MODELS[kind]


@functools.cache
def _metrics(kind):
    """``unlearning_metrics`` of a model, jitted: one compile, not one per eager op."""
    return jax.jit(functools.partial(unlearning_metrics, MODELS[kind]))


def _method(name, model, **options):
    return make_method(
        name,
        model,
        n_retain=N - N_FORGET,
        n_forget=N_FORGET,
        epochs=EPOCHS,
        batch_size=BS,
        **options,
    )


def _program(model, method):
    key = (model.name, method.form)
    if key not in PROGRAMS:
        PROGRAMS[key] = exp.unlearning_program(
            model, method, lr=0.05, epochs=EPOCHS, n_forget=N_FORGET, shared_teacher=True
        )
    return PROGRAMS[key]


def _run(program, method, teacher, setup, runs=2, first_run=0, weights=None):
    keys = jax.vmap(lambda r: jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), r)))(
        jnp.arange(first_run, first_run + runs)
    )
    starts = jax.vmap(method.start, in_axes=(0, None))(keys[:, 0], teacher)
    w = {k: jnp.full((runs,), v) for k, v in (weights or method.weights).items()}
    return program(
        keys[:, 1], starts, teacher, setup["y_noisy"], setup["mask"], w, setup["shared"]
    ), starts


# --- the family contract --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_meets_the_contract(name, setup):
    """The public check users run on their own methods, then every metric of a real run."""
    assert "deterministic under a fixed key" in check_method(METHODS[name])
    params = inspect.signature(METHODS[name]).parameters
    for arg in ("n_retain", "n_forget", "epochs", "batch_size"):
        assert params[arg].kind is inspect.Parameter.KEYWORD_ONLY
    model = _model("mlp")
    method = _method(name, model)
    assert method.variant in ("reference", "corrected", "benchmark")
    assert isinstance(method.steps, int) and method.steps >= 0
    hash(method.form)
    assert all(isinstance(v, float) for v in method.weights.values())
    teacher = model.init(jax.random.PRNGKey(1))
    log, _ = _run(_program(model, method), method, teacher, setup)
    for metric in METRICS:
        start = np.asarray(log["start"][metric])
        assert start.shape == (2, EPOCHS) and np.all(np.isfinite(start))
        assert np.all((start >= 0) & (start <= 1))
        assert np.isfinite(np.asarray(log["final"][metric])).all()
    assert np.asarray(log["loss"]).shape == (2, EPOCHS)
    # the methods that only edit the teacher (steps = 0) take no step and so have no loss
    assert np.isfinite(log["loss"]).all() == (method.steps > 0)


@pytest.mark.parametrize("kind", ["mlp", pytest.param("qnn", marks=pytest.mark.slow)])
def test_starting_points(kind, setup):
    """Epoch 0 = the teacher for every method but retrain, which starts from a fresh init (EU-k's
    partly fresh start and the edits of the methods without steps: tests/test_field_methods.py)."""
    model = _model(kind)
    teacher = model.init(jax.random.PRNGKey(1))
    at_teacher = _metrics(kind)(teacher, setup["split"])
    trained = [n for n in sorted(METHODS) if n != "eu_k" and _method(n, model).steps > 0]
    names = ("retrain", "finetune", "scrub") if kind == "qnn" else trained
    for name in names:
        method = _method(name, model)
        log, starts = _run(_program(model, method), method, teacher, setup)
        for r in range(2):
            want = at_teacher
            if name == "retrain":
                want = _metrics(kind)(
                    model.init(jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), r))[0]),
                    setup["split"],
                )
                assert not np.allclose(
                    jax.tree_util.tree_leaves(starts)[-1][r], jax.tree_util.tree_leaves(teacher)[-1]
                )
            for metric in METRICS:
                assert float(log["start"][metric][r, 0]) == pytest.approx(
                    float(want[metric]), abs=1e-12
                ), (name, metric)


def test_split_and_forget_definitions(setup):
    split, mask = setup["split"], np.asarray(setup["mask"])
    assert split["x_forget"].shape == (N_FORGET, D) and split["x_retain"].shape == (N - N_FORGET, D)
    np.testing.assert_array_equal(split["x_forget"], setup["x"][mask])
    np.testing.assert_array_equal(split["y_forget_true"], setup["y"][mask])
    np.testing.assert_array_equal(split["y_forget_poisoned"], 1 - setup["y"][mask])
    np.testing.assert_array_equal(split["y_retain"], setup["y"][~mask])
    model = _model("mlp")
    method = _method("finetune", model)
    log, _ = _run(_program(model, method), method, model.init(jax.random.PRNGKey(1)), setup)
    f_true = np.asarray(log["start"]["forget_acc_true"])
    np.testing.assert_allclose(
        np.asarray(log["start"]["forget_frac_poisoned_label"]), 1 - f_true, atol=1e-15
    )
    # by hand, at the final params
    params = model.init(jax.random.PRNGKey(3))
    got = _metrics("mlp")(params, split)
    pred = np.asarray(jax.jit(jax.vmap(model.apply, (None, 0)))(params, setup["x"])) > 0.5
    y, y_noisy = setup["y"], np.asarray(setup["y_noisy"])
    assert float(got["forget_frac_poisoned_label"]) == pytest.approx(
        np.mean(pred[mask] == y_noisy[mask])
    )
    assert float(got["retain_acc"]) == pytest.approx(np.mean(pred[~mask] == y[~mask]))
    assert float(got["train_acc_noisy_labels"]) == pytest.approx(np.mean(pred == y_noisy))
    assert got["val_acc"].dtype == jnp.float64


def test_kl_definitions():
    p, q = jnp.array([0.1, 0.5, 0.9]), jnp.array([0.3, 0.5, 0.6])
    np.testing.assert_allclose(kl_one_term(p, q), p * np.log(p / q), rtol=1e-12)
    full = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    np.testing.assert_allclose(kl_bernoulli(p, q), full, rtol=1e-12)
    assert np.all(np.asarray(kl_bernoulli(p, q)) >= 0) and float(kl_bernoulli(p, p).max()) < 1e-12
    assert float(kl_one_term(jnp.array(0.1), jnp.array(0.3))) < 0  # not a divergence


# --- identities, vmap, compile counts -------------------------------------------------------


def test_zero_forget_weight_equals_finetune_exactly(setup):
    """Reference SCRUB (kl_w = fo_w = 0) and GA (fo_w = 0) are finetune, bit for bit; all reference
    methods share one compiled program (weights and start are traced inputs)."""
    model = _model("mlp")
    teacher = model.init(jax.random.PRNGKey(1))
    finetune = _method("finetune", model)
    program = _program(model, finetune)
    want, _ = _run(program, finetune, teacher, setup)
    traces = len(program.traces)
    for name, options in (
        ("scrub", {"kl_w": 0.0, "fo_w": 0.0}),
        ("gradient_ascent", {"fo_w": 0.0}),
        ("gradient_ascent", {"fo_w": 0.0, "labels": "true"}),
    ):
        method = _method(name, model, **options)
        assert method.form == finetune.form
        got, _ = _run(program, method, teacher, setup)
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    # non-zero forget weights change the trajectory, through the same program
    for name in ("scrub", "gradient_ascent", "retrain"):
        method = _method(name, model)
        got, _ = _run(program, method, teacher, setup)
        assert not np.array_equal(got["loss"], want["loss"]), name
    assert len(program.traces) == traces


def test_zero_forget_weights_skip_the_forget_pass(setup):
    """Where each program call holds one run's weights (runs one after another, run_chunk = 1, as
    on a CPU), a method that weighs D_f by zero never evaluates the model on D_f while it trains:
    per run, SCRUB's fo_w > 0 sees every forget row once per optimizer step more than finetune
    and fo_w = 0 SCRUB do. (Under a vmap over weights the branch is a select: both sides run.)"""
    base = _model("mlp")
    forget_rows = np.asarray(setup["split"]["x_forget"])
    seen = []

    def count(x):
        seen.append(bool(np.any(np.all(np.isclose(forget_rows, np.asarray(x)), axis=1))))

    def apply(params, x):
        jax.debug.callback(count, x)
        return base.apply(params, x)

    model = base._replace(apply=apply)
    teacher = model.init(jax.random.PRNGKey(1))
    finetune = _method("finetune", model)
    program = exp.unlearning_program(
        model,
        finetune,
        lr=0.05,
        epochs=EPOCHS,
        n_forget=N_FORGET,
        shared_teacher=True,
        trajectory=False,
        run_chunk=1,
    )
    forget_evaluations = {}
    for label, name, options in (
        ("finetune", "finetune", {}),
        ("scrub fo_w=0", "scrub", {"kl_w": 0.5, "fo_w": 0.0}),
        ("scrub", "scrub", {"kl_w": 0.5, "fo_w": 0.2}),
    ):
        seen.clear()
        jax.block_until_ready(_run(program, _method(name, model, **options), teacher, setup))
        jax.effects_barrier()
        forget_evaluations[label] = sum(seen)
    runs = 2
    assert forget_evaluations["scrub fo_w=0"] == forget_evaluations["finetune"]
    assert (
        forget_evaluations["scrub"] - forget_evaluations["finetune"]
        == runs * finetune.steps * N_FORGET
    ), forget_evaluations


def test_vmapped_runs_equal_single_runs(setup):
    model = _model("mlp")
    teacher = model.init(jax.random.PRNGKey(1))
    for name in ("retrain", "scrub"):  # one program (the reference form): two shapes
        method = _method(name, model)
        program = _program(model, method)
        traces = len(program.traces)
        # 2 runs: the batch shape the contract test above compiled; one new shape (1 run)
        batched, _ = _run(program, method, teacher, setup, runs=2)
        for r in range(2):
            single, _ = _run(program, method, teacher, setup, runs=1, first_run=r)
            jax.tree_util.tree_map(
                lambda a, b, r=r: np.testing.assert_allclose(a[r], b[0], rtol=1e-10, atol=1e-12),
                batched,
                single,
            )
        assert len(program.traces) - traces <= 2  # one shape with 5 runs, one with 1


def test_no_recompilation_across_runs_methods_and_weights(setup):
    model = _model("mlp")
    teacher = model.init(jax.random.PRNGKey(1))
    reference = _program(model, _method("finetune", model))
    _run(reference, _method("finetune", model), teacher, setup)  # compiles, unless done before
    traces = len(reference.traces)
    assert traces >= 1
    for name in ("retrain", "finetune", "scrub", "gradient_ascent"):
        for first in (0, 2):
            _run(reference, _method(name, model), teacher, setup, first_run=first)
    for kl_w, fo_w in ((0.1, 0.5), (0.9, 0.0)):
        _run(reference, _method("scrub", model, kl_w=kl_w, fo_w=fo_w), teacher, setup)
    assert len(reference.traces) == traces


def test_kurmanji_max_steps_stop_after_max_epochs(setup):
    """With max_epochs = 0 every max-step is masked (params and Adam state untouched), so the
    forget weight has no effect; with max-steps on, it does."""
    model = _model("mlp")
    teacher = model.init(jax.random.PRNGKey(1))
    final = {}
    for max_epochs in (0, EPOCHS):
        method = _method("scrub_kurmanji", model, max_epochs=max_epochs)
        assert method.steps == max_epochs * 2 + EPOCHS * 4  # ceil(12 / 8) max, ceil(28 / 8) min
        unlearn = jax.jit(make_unlearn(model, method, lr=0.05, epochs=EPOCHS, trajectory=False))
        final[max_epochs] = [
            unlearn(
                jax.random.PRNGKey(2),
                teacher,
                teacher,
                setup["split"],
                method.weights | {"forget_kl": fo_w},
            )[0]
            for fo_w in (0.0, 5.0)
        ]
    jax.tree_util.tree_map(np.testing.assert_array_equal, *final[0])
    assert not np.array_equal(final[EPOCHS][0][0]["w"], final[EPOCHS][1][0]["w"])


def test_plans_cover_each_set_once_per_epoch():
    n_r, n_f, width = 10, 5, 4
    # jitted plans: one compile each, fewer than their eager ops would need
    idx, w = jax.jit(alternating_plan(n_r, n_f, width))(jax.random.PRNGKey(0))
    assert idx.shape == (2 + 3, width)
    real = np.asarray(idx)[np.asarray(w) > 0]
    assert sorted(real.tolist()) == list(range(n_r + n_f))
    assert np.all(np.asarray(idx[:2]) >= n_r)  # forget (max) steps first
    idx, w = jax.jit(joint_plan(n_r, n_f, width))(jax.random.PRNGKey(0))
    assert idx.shape == (3, width + 2)  # 3 steps, forget batches of ceil(5 / 3) = 2
    real = np.asarray(idx)[np.asarray(w) > 0]
    assert sorted(real.tolist()) == list(range(n_r + n_f))
    assert np.all(np.asarray(idx[:, width:]) >= n_r)


# --- errors ---------------------------------------------------------------------------------


def _one_line(err):
    assert "\n" not in str(err.value)


def test_bad_input_gives_one_line_errors():
    model = _model("mlp")
    with pytest.raises(QunlearnError, match="did you mean 'scrub'") as err:
        _method("scrubb", model)
    _one_line(err)
    with pytest.raises(QunlearnError, match="forget set is empty") as err:
        make_method("finetune", model, n_retain=40, n_forget=0, epochs=2, batch_size=8)
    _one_line(err)
    with pytest.raises(QunlearnError, match="has no option") as err:
        _method("scrub", model, kl_weight=0.1)
    _one_line(err)
    with pytest.raises(QunlearnError, match="labels") as err:
        _method("gradient_ascent", model, labels="noisy")
    _one_line(err)


# --- the experiment, end to end on a tiny data set ------------------------------------------


def _config(**kw):
    spec = UnlearnSpec(
        model="mlp",
        epochs=3,
        batch_size=16,
        lr=0.05,
        unlearn_epochs=2,
        unlearn_batch_size=0,
        unlearn_lr=0.01,
        hyper={"hidden": [4]},
    )
    base = dict(
        experiment="unlearning",
        name="tiny",
        dataset="mnist",
        models={"mlp": spec},
        methods=("retrain", "finetune", "scrub"),
        alpha=ALPHA,
        runs=2,
        method_options={"scrub": {"kl_w": 0.0, "fo_w": 0.2}},
    )
    return UnlearningConfig(**(base | kw))


def _fake_dataset(monkeypatch):
    x, y = _toy()
    x_val, y_val = _toy(20, seed=1)
    data = Dataset("mnist", x, y, x_val, y_val, {"source": {"kind": "synthetic"}})
    monkeypatch.setattr(exp, "load_dataset", lambda name, cache_dir=None, **kw: data)


@pytest.mark.slow  # the experiment contract runs, resumes, compares and plots unlearning
def test_experiment_writes_resumes_compares_and_plots(tmp_path, monkeypatch):
    from qunlearn.experiments.runner import run
    from qunlearn.plotting.results import plot_results_dir

    _fake_dataset(monkeypatch)
    config = _config(
        sweep={
            "scrub": {"kl_w": [0.0, 0.5], "fo_w": [0.0, 0.2]},
            "gradient_ascent": {"fo_w": [0.0, 0.2]},
        },
        sweep_chunk=3,
    )
    store = run(config, tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert list(rows[0]) == [
        "dataset",
        "model",
        "method",
        "variant",
        "run",
        "epoch",
        "metric",
        "value",
        "seed",
    ]
    # 3 methods x 2 runs x (2 epochs x (5 metrics + loss) + 5 final metrics)
    assert len(rows) == 3 * 2 * (2 * 6 + 5)
    with open(tmp_path / "teacher.csv") as f:
        teacher = {r["metric"]: float(r["value"]) for r in csv.DictReader(f)}
    assert teacher["n_forget"] == N_FORGET
    start = [
        r
        for r in rows
        if r["method"] == "finetune" and r["epoch"] == "0" and r["metric"] == "val_acc"
    ]
    assert all(float(r["value"]) == pytest.approx(teacher["val_acc"]) for r in start)
    sweep = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert {"kl_w", "fo_w"} <= set(sweep[0]) and len(sweep) == (4 + 2) * 2 * len(METRICS)
    # sweep point (kl 0, fo 0.2) = the scrub trajectory's final state, run by run
    final = {
        (r["run"]): float(r["value"])
        for r in rows
        if r["method"] == "scrub" and r["epoch"] == "2" and r["metric"] == "val_acc"
    }
    point = {
        r["run"]: float(r["value"])
        for r in sweep
        if r["metric"] == "val_acc"
        and r["method"] == "scrub"
        and float(r["kl_w"]) == 0.0
        and float(r["fo_w"]) == 0.2
    }
    assert point == pytest.approx(final)
    # the teacher file is plain npz
    with np.load(tmp_path / "cells" / "mlp__teacher.npz", allow_pickle=False) as f:
        assert f["mask"].sum() == N_FORGET
    # resume: nothing recomputed
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    run(config, tmp_path, progress=False)
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    assert (
        json.loads((tmp_path / "manifest.json").read_text())["timings"]["mlp__scrub"][
            "optimizer_steps"
        ]
        == 2
    )
    out = compare_results_dir(tmp_path)
    assert {r["method"] for r in out["table"]} == {"retrain", "finetune", "scrub"}
    # a 3-epoch teacher is not the paper's protocol: shown, but given no pass mark
    assert not any("final_pass" in r for r in out["table"])
    assert "not comparable with the paper (no pass marks) for models.mlp: epochs = 3" in out["text"]
    assert "val acc at epoch 2 (final" in out["text"]  # its own last epoch, not "epoch 49"
    paths = plot_results_dir(tmp_path)
    assert {p.name for p in paths} == {
        f"{stem}{s}" for stem in ("fig3_unlearning", "fig3_sweep") for s in stem_suffixes()
    }
    assert store.root == tmp_path


def test_experiment_redraw_teacher_and_bad_configs(tmp_path, monkeypatch):
    from qunlearn.experiments.runner import run

    _fake_dataset(monkeypatch)
    run(_config(redraw_teacher=True, methods=("finetune",)), tmp_path, progress=False)
    with np.load(tmp_path / "cells" / "mlp__teacher.npz", allow_pickle=False) as f:
        masks = f["mask"]
    assert masks.shape == (2, N) and not np.array_equal(masks[0], masks[1])
    bad_configs = (
        (dict(methods=("retrian",)), "did you mean 'retrain'"),
        (dict(alpha=0.01), "forget set is empty"),
        (dict(noise="feature_randomization"), "label_flip"),
        (dict(method_options={"scrbu": {}}), "did you mean 'scrub'"),
        (dict(sweep={"scrub": {"n_retain": [1, 2]}}), "sweep.scrub"),
        (
            dict(sweep={"scrub": {"kl_weight": [0.1]}}),
            "has no option 'kl_weight' \\(did you mean 'kl_w'",
        ),
        (dict(method_options={"scrub": {"kl_w": "high"}}), "scrub"),
        (
            dict(
                models={
                    "mlp": UnlearnSpec(
                        model="mlp",
                        epochs=1,
                        batch_size=4,
                        lr=0.1,
                        unlearn_epochs=1,
                        unlearn_batch_size=0,
                        unlearn_lr=0.1,
                        hyper={"width": 3},
                    )
                }
            ),
            "models.mlp",
        ),
    )
    for i, (bad, match) in enumerate(bad_configs):
        with pytest.raises(QunlearnError, match=match) as err:
            run(_config(**bad), tmp_path / f"bad{i}", progress=False)
        _one_line(err)
        assert not (tmp_path / f"bad{i}").exists()  # checked before --out is touched


def test_compare_matches_the_paper_by_model_kind_and_protocol():
    """A table named mlp that holds a QNN is set beside the paper's QNN, not its MLP; a setting
    off the paper's protocol removes the pass marks and is named."""
    from qunlearn.compare import compare_sweep, protocol_check

    paper_qnn = {
        "model": "qnn",
        "hyper": {"depth": 6},
        "epochs": 100,
        "batch_size": 256,
        "lr": 0.005,
    }
    config = {
        "experiment": "noise_sweep",
        "dataset": "mnist",
        "dataset_options": {"encoding": "reference"},
        "models": {"mlp": paper_qnn},
    }
    check = protocol_check(config)
    assert check["kinds"] == {"mlp": "qnn"} and check["differences"] == {"mlp": []}
    rows = [
        {
            "dataset": "mnist",
            "model": "mlp",
            "noise": "label_flip",
            "alpha": "0.0",
            "metric": "val_acc",
            "value": "0.98",
        }
    ]
    (row,) = compare_sweep(rows, {"mlp": "qnn"}, {"mlp"})
    assert row["paper_mean"] == pytest.approx(0.980, abs=0.005)  # the paper's QNN at alpha 0
    short = protocol_check(
        {
            **config,
            "models": {
                "mlp": {
                    **paper_qnn,
                    "epochs": 2,
                    "hyper": {"depth": 6, "dtype": "complex64", "readout_dtype": "float64"},
                }
            },
        }
    )
    # precision settings are fine (bench/paper.py --complex64); the protocol's epochs are not
    assert short["differences"] == {"mlp": ["models.mlp.epochs = 2 (paper 100)"]}
    (row,) = compare_sweep(rows, {"mlp": "qnn"}, set())
    assert "pass" not in row and "paper_mean" in row
