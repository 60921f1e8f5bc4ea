"""Curvature along unlearning: engine snapshots are the params at those epochs, the jittable
spectrum and the experiment's curvature program equal dense ``eigh`` references, the experiment
writes the expected rows and is resumable and deterministic, bad configs are one line, and the
curvature and roughening figures are drawn without touching the global rcParams."""

import csv
import json

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest

from qunlearn.data import Dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments import curvature as exp
from qunlearn.experiments import programs
from qunlearn.experiments.config import CurvatureConfig, UnlearnSpec, build
from qunlearn.experiments.store import ResultStore
from qunlearn.experiments.unlearning import unlearning_program
from qunlearn.hessian import spectrum_arrays
from qunlearn.models import make_model
from qunlearn.noise import flip_labels
from qunlearn.plotting.style import stem_suffixes
from qunlearn.train import (
    bce,
    make_train,
    predict,
    shuffled_plan,
    snapshot_epochs,
    supervised_objective,
)
from qunlearn.unlearn import make_method, make_split
from test_unlearn import ALPHA, N_FORGET, D, N, _toy

MLP = make_model("mlp", D, False, hidden=(4,))  # 41 params


def _split(amplitude: float = 1.0):
    """The toy split; ``amplitude`` scales every input (a QNN's ⟨Z⟩ by its square)."""
    x, y = _toy()
    x_val, y_val = _toy(20, seed=1)
    _, y_noisy, mask = flip_labels(jax.random.PRNGKey(0), x, y, ALPHA)
    return make_split(
        jnp.asarray(amplitude * x),
        jnp.asarray(y),
        y_noisy,
        mask,
        jnp.asarray(amplitude * x_val),
        jnp.asarray(y_val),
        n_forget=N_FORGET,
    )


def _mean_bce(model, x, y):
    return lambda p: jnp.mean(bce(predict(model, p, x), y))


@jax.jit
def _exact(params, x, y):
    """The Hessian of the flat MLP loss, the loss and the probabilities: one program per data
    shape (the references' eager ops would each compile on their own)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    loss_fn = _mean_bce(MLP, x, y)
    return (
        jax.hessian(lambda v: loss_fn(unravel(v)))(flat),
        loss_fn(params),
        predict(MLP, params, x),
    )


def _reference(params, x, y):
    """Ascending eigenvalues and the symmetrised ``jax.hessian`` of the flat MLP loss, the loss
    and the probabilities (numpy)."""
    h, loss, p = map(np.asarray, _exact(params, x, y))
    return np.linalg.eigvalsh(0.5 * (h + h.T)), 0.5 * (h + h.T), float(loss), p


# --------------------------------------------------------------------------- engine snapshots


def test_snapshots_are_the_params_reached_at_those_epochs():
    x, y = _toy()
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y, jnp.float64)}
    params0 = MLP.init(jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)

    def train(epochs, every=0):
        fn = make_train(
            supervised_objective(MLP),
            optax.adam(0.05),
            epochs=epochs,
            plan=shuffled_plan(N, 8),
            snapshot_every=every,
        )
        return jax.jit(fn)(key, params0, data, None)

    params, log = train(5, every=2)
    assert snapshot_epochs(5, 2) == [0, 2, 4, 5]
    snaps = log["snapshots"]
    assert snaps[0]["w"].shape == (4, D, 4)
    for i, reached in ((0, params0), (1, train(2)[0])):
        for a, b in zip(
            jax.tree_util.tree_leaves(snaps), jax.tree_util.tree_leaves(reached), strict=True
        ):
            np.testing.assert_allclose(a[i], b, rtol=0, atol=1e-12)
    # the last snapshot is the returned params; without snapshots nothing else changes
    assert all(
        np.array_equal(a[-1], b)
        for a, b in zip(
            jax.tree_util.tree_leaves(snaps), jax.tree_util.tree_leaves(params), strict=True
        )
    )
    plain_params, plain_log = train(5)
    assert "snapshots" not in plain_log
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(plain_params), jax.tree_util.tree_leaves(params), strict=True
        )
    )
    np.testing.assert_array_equal(plain_log["loss"], log["loss"])


def test_unlearning_program_snapshots_with_run_chunks():
    split = _split()
    shared = {
        "x_train": split["x_train"],
        "y_true": split["y_train_true"],
        "x_val": split["x_val"],
        "y_val": split["y_val"],
    }
    method = make_method(
        "finetune", MLP, n_retain=N - N_FORGET, n_forget=N_FORGET, epochs=3, batch_size=8
    )
    teacher = MLP.init(jax.random.PRNGKey(3))
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    starts = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), teacher)
    weights = {k: jnp.full((2,), v) for k, v in method.weights.items()}
    program = unlearning_program(
        MLP,
        method,
        lr=0.01,
        epochs=3,
        n_forget=N_FORGET,
        shared_teacher=True,
        trajectory=False,
        run_chunk=1,
        snapshot_every=2,
    )
    log = program(
        keys, starts, teacher, split["y_train_noisy"], split["forget_mask"] > 0, weights, shared
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(log["snapshots"]), jax.tree_util.tree_leaves(teacher), strict=True
    ):
        assert a.shape[:2] == (2, 3)  # runs x epochs (0, 2, 3)
        np.testing.assert_array_equal(a[:, 0], np.broadcast_to(b, a[:, 0].shape))
        assert not np.allclose(a[0, 1], a[1, 1])  # the runs differ by their batch order
    # each run's snapshots follow that run: swapping the runs' keys swaps their snapshots
    swapped = program(
        keys[::-1],
        starts,
        teacher,
        split["y_train_noisy"],
        split["forget_mask"] > 0,
        weights,
        shared,
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(log["snapshots"]),
        jax.tree_util.tree_leaves(swapped["snapshots"]),
        strict=True,
    ):
        np.testing.assert_allclose(a[::-1], b, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- spectra


def test_spectrum_arrays_match_dense_eigh_under_jit_and_vmap():
    split = _split()
    loss_fn = _mean_bce(MLP, split["x_retain"], split["y_retain"])
    params = jax.vmap(MLP.init)(jax.random.split(jax.random.PRNGKey(5), 1))
    dim, k, key = 41, 3, jax.random.PRNGKey(6)

    @jax.jit
    def both(p):
        dense = spectrum_arrays(loss_fn, p, None, k=k, method="dense", batch_size=8)
        slq = spectrum_arrays(loss_fn, p, key, k=k, method="slq", num_steps=dim, num_probes=5)
        return dense, slq

    dense, slq = jax.vmap(both)(params)
    for i in range(1):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], params)
        eig, h, _, _ = _reference(p, split["x_retain"], split["y_retain"])
        np.testing.assert_allclose(dense["top"][i], eig[::-1][:k], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dense["nodes"][i, 0], eig, atol=1e-10)
        assert dense["trace"][i] == pytest.approx(eig.sum(), rel=1e-9)
        assert dense["trace_ci_low"][i] == dense["trace_ci_high"][i] == dense["trace"][i]
        # Lanczos with P steps from any probe holds the whole spectrum
        np.testing.assert_allclose(slq["top"][i], eig[::-1][:k], rtol=1e-7, atol=1e-9)
        assert slq["min"][i] == pytest.approx(eig[0], abs=1e-8)
        # the trace is Hutchinson on the SLQ probes: mean of z^T H z over the same z
        z = np.asarray(jax.random.rademacher(key, (5, dim), dtype=jnp.float64))
        samples = np.einsum("qi,ij,qj->q", z, h, z)
        assert slq["trace"][i] == pytest.approx(samples.mean(), rel=1e-9)
        assert slq["trace_stderr"][i] == pytest.approx(samples.std(ddof=1) / np.sqrt(5), rel=1e-7)
        assert slq["trace_ci_low"][i] < slq["trace"][i] < slq["trace_ci_high"][i]
        np.testing.assert_allclose(slq["weights"][i].sum(axis=-1), 1.0, atol=1e-10)


def test_curvature_program_equals_dense_reference_per_loss():
    """Padding the three losses to one length (zero weights) changes no number; a chunked call
    over 3 snapshots (the last chunk padded) equals the reference for each."""
    split = _split()
    x_val, y_val = split["x_val"][:5], split["y_val"][:5]
    sets = exp.loss_sets(split, x_val, y_val)
    assert sets["x"].shape == (3, N - N_FORGET, D)
    program = exp.curvature_program(
        MLP, method="dense", top_k=2, lanczos_steps=0, slq_probes=0, hvp_batch=16
    )
    params = jax.vmap(MLP.init)(jax.random.split(jax.random.PRNGKey(7), 3))
    out = exp.curvature_of(program, params, sets, jnp.zeros((3, 2), jnp.uint32), chunk=2)
    assert len(program.traces) == 1
    data = {
        "retain": (split["x_retain"], split["y_retain"]),
        "forget": (split["x_forget"], split["y_forget_poisoned"]),
        "validation": (x_val, y_val),
    }
    for b in range(3):
        p = jax.tree_util.tree_map(lambda a, b=b: a[b], params)
        for li, loss in enumerate(exp.LOSSES):
            eig, _, want_loss, prob = _reference(p, *data[loss])
            np.testing.assert_allclose(out["top"][b, li], eig[::-1][:2], rtol=1e-9, atol=1e-12)
            assert out["trace"][b, li] == pytest.approx(eig.sum(), rel=1e-9)
            assert out["loss"][b, li] == pytest.approx(want_loss, rel=1e-12)
            hit = (prob > 0.5) == (np.asarray(data[loss][1]) > 0.5)
            assert out["acc"][b, li] == pytest.approx(float(np.mean(hit)))


def test_a_complex64_hessian_of_the_qnn_matches_complex128():
    """``hessian_dtype = "complex64"``: the same snapshots (float64 params) differentiated in
    float32 states give the complex128 spectrum to float32 accuracy, and the loss and accuracy
    still come from the trained (complex128) model."""
    split = _split()
    sets = exp.loss_sets(split, split["x_val"][:5], split["y_val"][:5])
    qnn = make_model("qnn", D, False, depth=2)
    params = jax.vmap(qnn.init)(jax.random.split(jax.random.PRNGKey(3), 2))
    keys = jnp.zeros((3, 2), jnp.uint32)
    kw = dict(method="dense", top_k=3, lanczos_steps=0, slq_probes=0, hvp_batch=8)
    exact = exp.curvature_of(exp.curvature_program(qnn, **kw), params, sets, keys, chunk=2)
    fast_model = make_model("qnn", D, False, depth=2, dtype="complex64")
    fast = exp.curvature_of(
        exp.curvature_program(qnn, hessian_model=fast_model, **kw), params, sets, keys, chunk=2
    )
    scale = np.abs(exact["nodes"]).max()
    assert scale > 1e-3  # a non-trivial spectrum; measured differences ~5e-7 of it
    for name in ("top", "min", "trace", "nodes"):
        np.testing.assert_allclose(fast[name], exact[name], rtol=0, atol=1e-5 * scale)
    # float32 arithmetic really was used: the numbers are not bit-identical
    assert not np.array_equal(fast["top"], exact["top"])
    for name in ("loss", "acc"):  # another program around them: equal up to XLA's fusion
        np.testing.assert_allclose(fast[name], exact[name], rtol=1e-12)


def test_a_complex64_hessian_stays_finite_where_the_float32_readout_saturates():
    """Inputs of squared norm 100 (the reference MNIST encoding reaches 28) drive scale·⟨Z⟩ past
    float32's sigmoid range, as after gradient ascent at alpha = 0.3: the complex64 state with
    the readout in float64 (what ``hessian_dtype = "complex64"`` builds) still gives finite
    Hessians equal to complex128's, where a float32 readout gives NaN."""
    split = _split(amplitude=10.0)  # <Z> x100
    sets = exp.loss_sets(split, split["x_val"][:5], split["y_val"][:5])
    qnn = make_model("qnn", D, False, depth=2, init_std=0.5)
    params = jax.vmap(qnn.init)(jax.random.split(jax.random.PRNGKey(3), 2))
    narrow = make_model("qnn", D, False, depth=2, init_std=0.5, dtype="complex64")
    p32 = jax.jit(jax.vmap(lambda p: predict(narrow, p, split["x_retain"])))(params)
    assert np.any((p32 == 0) | (p32 == 1))  # saturated in float32: the case this test is about
    keys = jnp.zeros((3, 2), jnp.uint32)
    kw = dict(method="dense", top_k=3, lanczos_steps=0, slq_probes=0, hvp_batch=8)
    exact = exp.curvature_of(exp.curvature_program(qnn, **kw), params, sets, keys, chunk=2)
    mixed = make_model(
        "qnn", D, False, depth=2, init_std=0.5, dtype="complex64", readout_dtype="float64"
    )
    fast = exp.curvature_of(
        exp.curvature_program(qnn, hessian_model=mixed, **kw), params, sets, keys, chunk=2
    )
    assert np.all(np.isfinite(exact["top"]))
    scale = np.abs(exact["nodes"]).max()
    for name in ("top", "min", "trace", "nodes"):
        np.testing.assert_allclose(fast[name], exact[name], rtol=0, atol=1e-4 * scale)


# --------------------------------------------------------------------------- the experiment


def _config(**kw):
    mlp = UnlearnSpec(
        model="mlp",
        epochs=3,
        batch_size=16,
        lr=0.05,
        unlearn_epochs=3,
        unlearn_batch_size=0,
        unlearn_lr=0.01,
        hyper={"hidden": [4]},
    )
    small = UnlearnSpec(
        model="mlp",
        epochs=3,
        batch_size=16,
        lr=0.05,
        unlearn_epochs=3,
        unlearn_batch_size=16,
        unlearn_lr=0.05,
        hyper={"hidden": [2]},
        run_chunk=1,
    )  # 21 params: dense; runs one at a time
    base = dict(
        experiment="curvature",
        name="tiny",
        dataset="mnist",
        models={"mlp": mlp, "small": small},
        methods=("retrain", "finetune"),
        alpha=ALPHA,
        runs=2,
        every=2,
        n_val=10,
        top_k=2,
        dense_max_params=30,
        lanczos_steps=6,
        slq_probes=3,
        snapshot_chunk=3,
        density_points=20,
    )
    return CurvatureConfig(**(base | kw))


def _fake_dataset(monkeypatch):
    data = Dataset("mnist", *_toy(), *_toy(20, seed=1), {"source": {"kind": "synthetic"}})
    monkeypatch.setattr(exp, "load_dataset", lambda name, cache_dir=None, **kw: data)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_experiment_rows_resume_determinism_and_figures(tmp_path, monkeypatch):
    from qunlearn.experiments.runner import run
    from qunlearn.plotting.results import plot_results_dir

    _fake_dataset(monkeypatch)
    config = _config()
    config = _config(models={"small": config.models["small"]})  # dense; SLQ: tests above
    run(config, tmp_path / "a", progress=False)
    rows = _rows(tmp_path / "a" / "results.csv")
    assert list(rows[0]) == list(exp.COLUMNS)
    per_loss = len(exp.SCALARS) + config.top_k
    epochs = snapshot_epochs(3, 2)  # 0, 2, 3
    snapshots = 2 + 2 * config.runs * len(epochs)  # teachers + methods x runs x epochs
    assert len(rows) == snapshots * len(exp.LOSSES) * per_loss
    cells = {
        json.loads(p.read_text())["cell"]: json.loads(p.read_text())
        for p in (tmp_path / "a" / "cells").glob("*.json")
    }
    assert cells["small__teachers"]["hessian"] == "dense"  # 21 <= dense_max_params
    assert cells["small__finetune"]["epoch0_copied_from_teacher"]
    assert not cells["small__retrain"]["epoch0_copied_from_teacher"]

    def value(model, method, run_, epoch, loss, metric):
        (hit,) = [
            float(r["value"])
            for r in rows
            if (r["model"], r["method"], r["run"], r["epoch"], r["loss"], r["metric"])
            == (model, method, str(run_), str(epoch), loss, metric)
        ]
        return hit

    for loss in exp.LOSSES:  # finetune starts at the poisoned teacher, retrain does not
        teacher = value("small", "poisoned_teacher", 0, 0, loss, "trace")
        assert value("small", "finetune", 1, 0, loss, "trace") == teacher
        assert value("small", "retrain", 1, 0, loss, "trace") != teacher
    # the poisoned teacher fits D_f's poisoned labels better than the clean one does
    assert value("small", "poisoned_teacher", 0, 0, "forget", "loss") < value(
        "small", "clean_teacher", 0, 0, "forget", "loss"
    )
    # dense: the exact spectrum, P nodes of weight 1/P; SLQ: probes x steps
    spectrum = _rows(tmp_path / "a" / "spectrum.csv")
    nodes = [
        r
        for r in spectrum
        if r["model"] == "small" and r["method"] == "clean_teacher" and r["loss"] == "retain"
    ]
    assert len(nodes) == 21 and all(float(r["weight"]) == 1 / 21 for r in nodes)
    assert sum(float(r["node"]) for r in nodes) == pytest.approx(
        value("small", "clean_teacher", 0, 0, "retain", "trace")
    )
    density = _rows(tmp_path / "a" / "density.csv")
    assert len(density) == snapshots * len(exp.LOSSES) * config.density_points

    # resume: nothing recomputed, nothing rewritten
    before = {
        p.name: p.stat().st_mtime_ns
        for p in (tmp_path / "a").rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    store = run(config, tmp_path / "a", progress=False)
    assert store.manifest["last_run"]["computed"] == []
    assert before == {
        p.name: p.stat().st_mtime_ns
        for p in (tmp_path / "a").rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    # same seed, same numbers: deleted cells are recomputed bit for bit (by a new program, not
    # the one this process shares between runs of one form)
    programs.clear()
    (tmp_path / "a" / "cells" / "small__retrain.json").unlink()
    store = run(config, tmp_path / "a", progress=False)
    assert store.manifest["last_run"]["computed"] == ["small__retrain"]
    again = json.loads((tmp_path / "a" / "cells" / "small__retrain.json").read_text())
    assert again["rows"] == cells["small__retrain"]["rows"]
    assert again["tables"]["spectrum"] == cells["small__retrain"]["tables"]["spectrum"]

    rc = dict(matplotlib.rcParams)
    paths = plot_results_dir(tmp_path / "a")
    assert {p.name for p in paths} == {
        f"curvature_{stem}{s}" for stem in ("eig_1", "trace", "density") for s in stem_suffixes()
    }
    assert all(p.stat().st_size > 0 for p in paths)
    assert dict(matplotlib.rcParams) == rc


def test_bad_curvature_configs_are_one_line_and_touch_nothing(tmp_path, monkeypatch):
    from qunlearn.experiments.runner import run

    for key, value, match in (
        ("every", 0, "every = 0 must be a positive integer"),
        ("slq_probes", 1, "slq_probes = 1 must be an integer >= 2"),
        ("density_sigma", -1.0, "density_sigma"),
        ("evry", 2, "did you mean 'every'"),
    ):
        model = {
            "model": "mlp",
            "epochs": 1,
            "batch_size": 4,
            "lr": 0.1,
            "unlearn_epochs": 1,
            "unlearn_batch_size": 0,
            "unlearn_lr": 0.1,
        }
        data = {
            "experiment": "curvature",
            "name": "x",
            "dataset": "mnist",
            "models": {"m": model},
            "methods": ["finetune"],
            "alpha": 0.3,
            "runs": 1,
            "every": 2,
            key: value,
        }
        with pytest.raises(QunlearnError, match=match) as err:
            build(CurvatureConfig, data)
        assert "\n" not in str(err.value)
    _fake_dataset(monkeypatch)
    for i, (bad, match) in enumerate(
        (
            (dict(methods=()), "methods is empty"),
            (dict(methods=("finetnue",)), "did you mean 'finetune'"),
            (dict(lanczos_steps=50), "lanczos_steps = 50 must lie in"),
            (dict(top_k=22, lanczos_steps=22), "top_k = 22 exceeds the 21 parameters"),
            (dict(n_val=21), "n_val = 21 exceeds the 20 validation examples"),
            (dict(alpha=0.01), "forget set is empty"),
        )
    ):
        with pytest.raises(QunlearnError, match=match) as err:
            run(_config(**bad), tmp_path / f"bad{i}", progress=False)
        assert "\n" not in str(err.value)
        assert not (tmp_path / f"bad{i}").exists()


# --------------------------------------------------------------------------- roughening figure


def test_plot_draws_the_roughening_bar_chart(tmp_path):
    from qunlearn.experiments.common import write_table
    from qunlearn.plotting.results import plot_results_dir

    config = {
        "experiment": "roughening",
        "name": "rough",
        "models": {"mlp": {"model": "mlp"}, "qnn": {"model": "qnn_cnot"}},
    }
    store = ResultStore(tmp_path, config=config, config_hash="synthetic", meta={})
    traces = {
        ("mlp", 0.0): (0.2, 0.3),
        ("mlp", 0.3): (5.0, 9.0),
        ("qnn", 0.0): (6.0, 6.4),
        ("qnn", 0.3): (4.5, 4.9),
    }
    for (model, ratio), values in traces.items():
        rows = [
            {
                "dataset": "mnist",
                "model": model,
                "noise_ratio": ratio,
                "seed": seed,
                "metric": metric,
                "value": value,
            }
            for seed, trace in enumerate(values)
            for metric, value in (("trace", trace), ("collapsed", float(seed == 1)))
        ]
        store.write_cell(f"{model}__r{ratio:.3f}", rows)
    write_table(store)
    rc = dict(matplotlib.rcParams)
    paths = plot_results_dir(tmp_path)
    assert {p.name for p in paths} == {f"roughening_trace_ratio{s}" for s in stem_suffixes()}
    assert all(p.stat().st_size > 0 for p in paths)
    assert dict(matplotlib.rcParams) == rc
