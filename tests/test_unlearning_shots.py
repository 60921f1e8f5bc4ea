"""Unlearning through finite shots (issue 29): the methods whose objective samples
(``Method.sampled``) train a finite-shot QNN through its shot estimates and gradient estimator,
on D_r and on D_f; the methods that need the exact model are refused in one line.

* Parameter shift without shots is the exact gradient, so an unlearning run through it equals
  the exact run to 1e-10: the retain batch and the forget term both go through the estimator;
* with shots the run draws from its key (same key, same bytes; another key, other params);
* the unlearning kind runs end to end with shots (slow tier); the evaluation kind and exact-only
  methods are refused before anything is written.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.models import make_model
from qunlearn.unlearn import FORGET_KEY_TAG, make_method, make_split, make_unlearn, sampled_key

N, N_FORGET, EPOCHS = 10, 4, 2


@functools.cache
def _split():
    x = jnp.abs(jax.random.normal(jax.random.PRNGKey(11), (N, 16)))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = (jnp.arange(N) % 2).astype(float)
    mask = jnp.zeros(N, bool).at[:N_FORGET].set(True)
    return make_split(x, y, jnp.where(mask, 1 - y, y), mask, x, y, n_forget=N_FORGET)


@functools.cache
def _program(method_name, hyper: tuple):
    """The jitted unlearning run of ``method_name`` on a 4-qubit QNN with ``hyper`` (compiled
    once per pair, shared by the tests)."""
    model = make_model("qnn", 16, False, depth=2, **dict(hyper))
    method = make_method(
        method_name, model, n_retain=N - N_FORGET, n_forget=N_FORGET, epochs=EPOCHS, batch_size=3
    )
    unlearn = jax.jit(make_unlearn(model, method, lr=0.1, epochs=EPOCHS, trajectory=False))
    return unlearn, dict(method.weights)


def _run(method_name, key=1, **hyper):
    unlearn, weights = _program(method_name, tuple(sorted(hyper.items())))
    teacher = jax.random.uniform(jax.random.PRNGKey(5), (2, 4, 4), maxval=2 * np.pi)
    start = jax.random.uniform(jax.random.PRNGKey(6), (2, 4, 4), maxval=2 * np.pi)
    return np.asarray(unlearn(jax.random.PRNGKey(key), start, teacher, _split(), weights)[0])


@pytest.mark.parametrize("method", ["scrub", "neggrad_plus"])  # the two objective forms
def test_parameter_shift_without_shots_unlearns_as_the_exact_model(method):
    exact = _run(method)
    shifted = _run(method, shots=None, gradient="parameter_shift")
    np.testing.assert_allclose(shifted, exact, atol=1e-10, rtol=0)
    teacher = np.asarray(jax.random.uniform(jax.random.PRNGKey(5), (2, 4, 4), maxval=2 * np.pi))
    assert np.max(np.abs(exact - teacher)) > 1e-2  # it moved


def test_unlearning_with_shots_draws_from_its_run_key():
    a, b, c = (_run("scrub", key=k, shots=50, gradient="parameter_shift") for k in (1, 1, 2))
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    assert np.all(np.isfinite(a))
    assert np.max(np.abs(a - _run("scrub"))) > 1e-3  # 50 shots are not the exact model


def test_the_forget_term_draws_apart_from_the_retain_batch():
    key = jax.random.PRNGKey(3)
    assert sampled_key({}) is None and sampled_key({}, FORGET_KEY_TAG) is None
    assert sampled_key({"key": key}) is key
    forget = sampled_key({"key": key}, FORGET_KEY_TAG)
    assert not np.array_equal(jax.random.key_data(forget), jax.random.key_data(key))


def test_which_methods_train_through_shots():
    model = make_model("qnn", 16, False, depth=2, shots=100, gradient="spsa")
    sizes = {"n_retain": 6, "n_forget": 4, "epochs": 1, "batch_size": 3}
    sampled = {
        name: make_method(name, model, **sizes).sampled
        for name in ["retrain", "finetune", "scrub", "gradient_ascent", "eu_k", "cf_k"]
        + ["random_label", "l1_sparse", "scrub_kurmanji", "neggrad_plus"]
        + ["salun", "ssd", "newton", "certified_newton", "fisher_forgetting"]
    }
    exact_only = {"salun", "ssd", "newton", "certified_newton", "fisher_forgetting"}
    assert {name for name, s in sampled.items() if not s} == exact_only


def _xxz_args(tmp_path):
    from importlib.resources import files

    config = files("qunlearn") / "configs" / "fig3b_xxz.toml"
    small = ["dataset_options.n_spins=4", "models.qnn.hyper.depth=1"]
    shots = ["models.qnn.hyper.shots=200", "models.qnn.hyper.gradient=spsa"]
    return ["run", str(config), "--tiny", "--models", "qnn", *small, *shots]


@pytest.mark.slow
def test_an_unlearning_run_with_shots_end_to_end(tmp_path):
    from qunlearn.cli import main

    out = tmp_path / "run"
    assert main([*_xxz_args(tmp_path), "--out", str(out)]) == 0
    assert (out / "results.csv").read_text().count("\n") > 1


def test_exact_only_methods_and_other_kinds_refuse_shots(tmp_path, capsys):
    from importlib.resources import files

    from qunlearn.cli import main
    from qunlearn.experiments.config import load_config

    refused = tmp_path / "refused"
    args = [*_xxz_args(tmp_path), "methods=['finetune', 'newton']", "--out", str(refused)]
    assert main(args) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "method 'newton' needs the exact model" in message and "'finetune'" in message
    assert not refused.exists()

    evaluation = files("qunlearn") / "configs" / "eval_fig3a_mnist.toml"
    with pytest.raises(QunlearnError, match="noise_sweep and unlearning experiments only") as err:
        load_config(evaluation, ["models.qnn.hyper.shots=100"])
    assert "\n" not in str(err.value)
