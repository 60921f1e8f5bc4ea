"""Forget requests (``forget`` in unlearning and evaluation configs): which rows D_f takes, the
labels D_r carries, the clean references and the recovery metric, end to end on the contract's
toy data; the default request ("poison") and a fully known poison give the same bytes."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.data import Dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments import evaluation, runner, unlearning
from qunlearn.experiments.config import CONFIG_TYPES, build, config_hash
from qunlearn.experiments.keys import forget_keys, poison_keys
from qunlearn.experiments.unlearning_setup import (
    forget_mask,
    forget_masks,
    forget_request,
)
from qunlearn.noise import flip_labels
from qunlearn.unlearn import make_split
from test_experiment_contract import TINY, _toy

N, ALPHA = 40, 0.3  # the toy training set: floor(40 * 0.3) = 12 flipped samples


def _request(forget="poison", known=0.0, forget_fraction=0.0, alpha=ALPHA, n=N):
    config = SimpleNamespace(
        forget=forget, known=known, forget_fraction=forget_fraction, alpha=alpha
    )
    return forget_request(config, n)


@pytest.fixture(scope="module")
def poisoning():
    x, y = _toy()
    root = jax.random.PRNGKey(0)
    _, y_noisy, mask = flip_labels(poison_keys(root, "mnist", ALPHA, 1)[0], x, y, ALPHA)
    key = forget_keys(root, "mnist", ALPHA, 1)[0]
    return {"x": x, "y": y, "y_noisy": y_noisy, "poison": np.asarray(mask), "key": key}


def _mask(poisoning, request, key=None):
    key = poisoning["key"] if key is None else key
    return np.asarray(forget_mask(key, jnp.asarray(poisoning["poison"]), request))


def test_the_requests_select_the_right_rows(poisoning):
    poison = poisoning["poison"]
    assert poison.sum() == 12
    assert _request()[:3] == ("poison", 12, 12)
    np.testing.assert_array_equal(_mask(poisoning, _request()), poison)

    clean = _request("clean_random")  # default size: as many as the poison
    assert clean[:3] == ("clean_random", 12, 12) and clean.clean_reference
    mask = _mask(poisoning, clean)
    assert mask.sum() == 12 and not (mask & poison).any()
    quarter = _request("clean_random", forget_fraction=0.25)  # floor(0.25 * 28) = 7
    assert quarter.n_forget == 7 and not (_mask(poisoning, quarter) & poison).any()
    assert _request("clean_random", forget_fraction=0.1, alpha=0.0)[:3] == ("clean_random", 0, 4)
    assert not _request("clean_random", forget_fraction=0.1, alpha=0.0).clean_reference

    half = _request("poison_partial", known=0.5)
    assert half[:3] == ("poison_partial", 12, 6) and half.clean_reference
    mask = _mask(poisoning, half)
    assert mask.sum() == 6 and (poison[mask]).all()
    # one key serves every share: D_f grows nested with known
    small = _mask(poisoning, _request("poison_partial", known=0.25))
    assert small.sum() == 3 and (mask[small]).all()
    # rho = 1 is the poison itself, and no clean reference is needed
    whole = _request("poison_partial", known=1.0)
    assert not whole.clean_reference
    np.testing.assert_array_equal(_mask(poisoning, whole), poison)


def test_the_selection_is_reproducible_from_its_key(poisoning):
    request = _request("poison_partial", known=0.5)
    again = _mask(poisoning, request, forget_keys(jax.random.PRNGKey(0), "mnist", ALPHA, 1)[0])
    np.testing.assert_array_equal(_mask(poisoning, request), again)
    other = _mask(poisoning, request, forget_keys(jax.random.PRNGKey(1), "mnist", ALPHA, 1)[0])
    assert not np.array_equal(_mask(poisoning, request), other)
    # per teacher index (redraw_teacher): the vmapped masks are the per-row ones
    keys = forget_keys(jax.random.PRNGKey(0), "mnist", ALPHA, 2)
    masks = np.asarray(forget_masks(request, keys, jnp.stack([poisoning["poison"]] * 2)))
    for t in range(2):
        np.testing.assert_array_equal(masks[t], _mask(poisoning, request, keys[t]))


def test_too_small_a_forget_set_is_refused():
    with pytest.raises(QunlearnError, match=r"leaves D_f with 1 sample\(s\).*raise known"):
        _request("poison_partial", known=0.1)  # floor(1.2)
    with pytest.raises(QunlearnError, match=r"leaves D_f with 0 sample\(s\).*forget_fraction"):
        _request("clean_random", forget_fraction=0.01)


def test_the_retain_set_carries_the_held_labels(poisoning):
    """With part of the poison left in D_r, D_r trains on the poisoned labels (the learner does
    not know them); D_f keeps held and true labels. (Before requests, D_r took the true labels.)"""
    request = _request("poison_partial", known=0.5)
    mask = _mask(poisoning, request)
    y, y_noisy, x = poisoning["y"], np.asarray(poisoning["y_noisy"]), poisoning["x"]
    split = make_split(x, y, y_noisy, mask, x[:4], y[:4], n_forget=request.n_forget)
    np.testing.assert_array_equal(split["y_retain"], y_noisy[~mask])
    assert (np.asarray(split["y_retain"]) != y[~mask]).sum() == 6  # the unidentified poison
    np.testing.assert_array_equal(split["y_forget_poisoned"], y_noisy[mask])
    np.testing.assert_array_equal(split["y_forget_true"], y[mask])
    np.testing.assert_array_equal(split["forget_mask"], mask)


# ---------------------------------------------------------------------------------------------
# End to end on the contract's toy data


@pytest.fixture
def toy_data(monkeypatch):
    x, y = _toy()
    x_val, y_val = _toy(10, seed=1)
    data = Dataset("mnist", x, y, x_val, y_val, {"source": {"kind": "synthetic"}})
    for module in (unlearning, evaluation):
        monkeypatch.setattr(module, "load_dataset", lambda name, cache_dir=None, **kw: data)
    monkeypatch.setattr(
        evaluation,
        "non_member_pool",
        lambda d, n, **kw: (np.concatenate([x_val[:n], x_val[10 : 10 + n]]), np.repeat([0, 1], n)),
    )


def _run(kind, tmp_path, name, **changes):
    config = build(CONFIG_TYPES[kind], TINY[kind] | changes)
    return runner.run(config, tmp_path / name, progress=False).root


@pytest.mark.parametrize("kind", ["unlearning", "evaluation"])
def test_a_fully_known_poison_is_the_default_to_the_byte(kind, tmp_path, toy_data):
    """poison_partial with known = 1 goes through the selection (D_f drawn from the poison by
    its own key) and must give the default run's tables byte for byte: the request machinery
    leaves the poison request's numbers alone. (The default against main's code: checked by
    running both on these configs, every table and companion file equal.)"""
    default = _run(kind, tmp_path, "default")
    known = _run(kind, tmp_path, "known", forget="poison_partial", known=1.0)
    tables = sorted(p.name for p in default.glob("*.csv"))
    assert "results.csv" in tables
    assert tables == sorted(p.name for p in known.glob("*.csv"))
    for table in tables:
        assert (default / table).read_bytes() == (known / table).read_bytes(), table


def test_the_default_request_keeps_the_config_hash():
    """Result directories written before requests existed still resume."""
    base = build(CONFIG_TYPES["evaluation"], TINY["evaluation"])
    explicit = build(CONFIG_TYPES["evaluation"], TINY["evaluation"] | {"forget": "poison"})
    partial = build(
        CONFIG_TYPES["evaluation"], TINY["evaluation"] | {"forget": "poison_partial", "known": 1.0}
    )
    assert config_hash(explicit) == config_hash(base) != config_hash(partial)


def _table(root, name="results.csv"):
    return runner.VerifiedResults(root).table(name)


# long enough that a clean retrain beats the poisoned teachers on the toy data (a gap to recover)
TRAINED = {"unlearn_epochs": 12, "unlearn_lr": 0.05}


@pytest.mark.parametrize(
    "request_", [{"forget": "clean_random"}, {"forget": "poison_partial", "known": 0.5}]
)
def test_an_evaluation_reports_both_references_and_the_recovery(request_, tmp_path, toy_data):
    from qunlearn.compare import compare_results_dir
    from qunlearn.plotting.results import plot_results_dir

    spec = TINY["evaluation"]["models"]["mlp"] | TRAINED
    root = _run("evaluation", tmp_path, "out", models={"mlp": spec}, **request_)
    rows = _table(root)
    value = {(r["group"], r["split"], r["metric"]): float(r["value"]) for r in rows}
    groups = {r["group"] for r in _table(root, "ensemble.csv")}
    assert {"oracle", "clean_oracle", "teacher", "retrain", "finetune"} <= groups
    gap = value[("clean_oracle", "val", "recovery_gap")]
    assert gap > 0
    for group in ("teacher", "retrain", "finetune", "oracle"):
        assert np.isfinite(value[(group, "val", "recovery_std")])
    for group in ("teacher", "retrain", "finetune"):  # both references' distances
        assert np.isfinite(value[(group, "forget", "clean_klom_p50")])
        assert np.isfinite(value[(group, "forget", "klom_p50")])
    # recovery against its definition: the teachers' mean is 0, the clean oracles' would be 1
    teacher_acc = value[("teacher", "val", "acc_true_mean")]
    clean_acc = value[("clean_oracle", "val", "acc_true_mean")]
    assert gap == pytest.approx(clean_acc - teacher_acc, abs=1e-12)
    assert value[("teacher", "val", "recovery_mean")] == pytest.approx(0.0, abs=1e-12)
    for group in ("retrain", "finetune", "oracle"):
        want = (value[(group, "val", "acc_true_mean")] - teacher_acc) / gap
        assert value[(group, "val", "recovery_mean")] == pytest.approx(want, abs=1e-12)
    # the membership attack's non-members carry D_f's corruption: none for a clean D_f
    manifest = runner.VerifiedResults(root).manifest
    labels = manifest["data"]["non_members"]["labels"]
    assert labels.startswith("true" if request_["forget"] == "clean_random" else "flipped")
    assert manifest["config"]["forget"] == request_["forget"]
    n_forget = 6 if request_["forget"] == "poison_partial" else 12  # known = 0.5 of 12
    resolved = {"kind": request_["forget"], "n_forget": n_forget, "n_poisoned": 12}
    assert manifest["data"]["forget_request"] == resolved
    text = compare_results_dir(root)["text"]
    assert f"forget request: {request_['forget']}" in text and "recov" in text
    assert plot_results_dir(root)


def test_an_unlearning_run_adds_the_clean_retrain_reference(tmp_path, toy_data):
    from qunlearn.compare import compare_results_dir
    from qunlearn.plotting.results import plot_results_dir

    root = _run("unlearning", tmp_path, "out", forget="poison_partial", known=0.5)
    rows = _table(root)
    assert {r["method"] for r in rows} == {"retrain", "finetune", "clean_retrain"}
    teacher = {r["metric"]: float(r["value"]) for r in _table(root, "teacher.csv")}
    assert (teacher["n_forget"], teacher["n_poisoned"]) == (6, 12)
    # the clean reference starts where retrain starts (same run keys), trained on other rows
    start = {
        (r["method"], r["run"], r["metric"]): float(r["value"]) for r in rows if r["epoch"] == "0"
    }
    assert start[("clean_retrain", "0", "val_acc")] == start[("retrain", "0", "val_acc")]
    assert "forget request: poison_partial" in compare_results_dir(root)["text"]
    assert plot_results_dir(root)
