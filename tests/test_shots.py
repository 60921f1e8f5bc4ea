"""Finite shots (qunlearn.models.shots): the exact path unchanged, the shot estimate unbiased with
binomial variance, parameter shift exact without shots and unbiased with variance ∝ 1/S with
them, SPSA unbiased in expectation. Statistical bounds are 5 sigma or wider with fixed keys: a
failure is a real bias, not bad luck."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.models import make_model, qnn_plan
from qunlearn.models.qnn import qnn_cnot_parts, qnn_parts
from qunlearn.models.shots import (
    check_shots,
    light_cone_mask,
    measure_batch,
    measured_expectation,
    sample_expectation,
)
from qunlearn.train import make_supervised_train, predict

PARTS = {"qnn": qnn_parts, "qnn_cnot": qnn_cnot_parts}
KEYS = 2000  # keys per statistical test


def _state(seed, n, complex_input=True):
    kr, ki = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kr, (2**n,))
    if complex_input:
        x = x + 1j * jax.random.normal(ki, (2**n,))
    return x / jnp.linalg.norm(x)


def _params(seed, shape):
    return jax.random.uniform(jax.random.PRNGKey(seed), shape, maxval=2 * np.pi)


@functools.cache
def _case(name="qnn", n=4, depth=2):
    parts = PARTS[name](2**n, True, depth=depth)
    params = _params(7, parts.init(jax.random.PRNGKey(0)).shape)
    x = _state(8, n)
    return parts, params, x


@functools.cache
def _exact_grad():
    """The exact gradient of ⟨Z⟩ at :func:`_case`, as numpy (jitted: one compile, not per op)."""
    parts, params, x = _case()
    return np.asarray(jax.jit(jax.grad(parts.expectation))(params, x))


@functools.cache
def _grads_over_keys(gradient, shots, spsa_c=0.1):
    """The estimator's gradient of ⟨Z⟩ for KEYS keys (one compiled program per setting)."""
    parts, params, x = _case()
    f = measured_expectation(parts.expectation, shots=shots, gradient=gradient, spsa_c=spsa_c)
    keys = jax.random.split(jax.random.PRNGKey(shots or 0), (2, KEYS))
    grad = jax.vmap(jax.grad(f), (None, None, 0, 0))  # a shot key and a Δ key per draw
    return np.asarray(jax.jit(grad)(params, x, keys[0], keys[1]))


# ---- shots = None is the exact model ----------------------------------------------------------


@pytest.mark.parametrize("name", ["qnn", "qnn_cnot"])
def test_no_shots_is_the_exact_expectation_bit_for_bit(name):
    n, depth = 4, 2
    parts = PARTS[name](2**n, False, depth=depth)
    model = make_model(name, 2**n, False, depth=depth)
    params = _params(1, parts.init(jax.random.PRNGKey(0)).shape)
    x = jnp.abs(_state(2, n, complex_input=False))
    key = jax.random.PRNGKey(3)
    exact = parts.expectation(params, x)
    for gradient in ("exact", "parameter_shift", "spsa"):
        f = measured_expectation(parts.expectation, shots=None, gradient=gradient)
        z = f(params, x, key)
        assert z.dtype == exact.dtype and z.tobytes() == exact.tobytes(), gradient
        assert parts.to_prob(z).tobytes() == model.apply(params, x).tobytes()
    assert sample_expectation(key, exact, None) is exact


# ---- the shot estimate of ⟨Z⟩ ------------------------------------------------------------------


def test_sample_expectation_is_unbiased_with_binomial_variance():
    shots, k = 100, 20_000
    z = jnp.array([-1.0, -0.9, -0.3, 0.0, 0.5, 0.95, 1.0])
    keys = jax.random.split(jax.random.PRNGKey(0), k)
    est = np.asarray(jax.jit(jax.vmap(lambda key: sample_expectation(key, z, shots)))(keys))
    counts = (est + 1) * shots / 2  # 2k/S - 1 on the grid of shot counts
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)
    var = (1 - np.asarray(z) ** 2) / shots
    assert np.all(np.abs(est.mean(0) - z) <= 5 * np.sqrt(var / k))
    assert np.all(est[:, [0, -1]] == [-1.0, 1.0])  # z = ±1: a certain outcome
    inner = slice(1, -1)
    p = (1 + np.asarray(z[inner])) / 2
    excess = (1 - 6 * p * (1 - p)) / (shots * p * (1 - p))  # the binomial's excess kurtosis
    ratio = est[:, inner].var(0, ddof=1) / var[inner]
    assert np.all(np.abs(ratio - 1) <= 5 * np.sqrt((2 + excess) / k)), ratio


def test_sample_expectation_keeps_the_dtype_and_the_scale_of_unnormalised_inputs():
    z32 = jnp.array([0.3, -0.2], jnp.float32)
    assert sample_expectation(jax.random.PRNGKey(0), z32, 10).dtype == jnp.float32
    parts, params, x = _case()
    f = jax.jit(measured_expectation(parts.expectation, shots=50, gradient="exact"))
    key = jax.random.PRNGKey(4)
    # the device measures the normalised state; ‖x‖² scales the estimate, as the exact path
    np.testing.assert_allclose(f(params, 3 * x, key), 9 * f(params, x, key), rtol=1e-12)


# ---- parameter shift ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "n", "depth"), [("qnn", 4, 3), ("qnn_cnot", 4, 2)])
def test_parameter_shift_without_shots_is_the_autodiff_gradient(name, n, depth):
    parts = PARTS[name](2**n, True, depth=depth)
    params = _params(5, parts.init(jax.random.PRNGKey(0)).shape)
    xs = jnp.stack([_state(s, n) for s in range(3)])
    keys = jax.random.split(jax.random.PRNGKey(6), 3)
    weights = jnp.array([0.3, -1.0, 2.0])
    f = measured_expectation(parts.expectation, shots=None, gradient="parameter_shift")

    def loss(fn, p):  # a batch under vmap, as training runs it
        return jnp.sum(weights * jax.vmap(fn, (None, 0, 0))(p, xs, keys))

    shifted = jax.jit(jax.grad(functools.partial(loss, f)))(params)
    exact = jax.jit(jax.grad(functools.partial(loss, lambda p, x, k: parts.expectation(p, x))))(
        params
    )
    np.testing.assert_allclose(shifted, exact, atol=1e-10, rtol=0)
    assert float(jnp.max(jnp.abs(exact))) > 1e-2  # not vacuous


def test_the_light_cone_is_the_planners():
    n, depth = 6, 3
    parts = qnn_parts(2**n, True, depth=depth, readout_qubit=2)
    mask = light_cone_mask(parts.expectation, (depth, n, 4), jnp.float64, (2**n,), jnp.complex128)
    ref = np.zeros_like(mask)
    for layer, (qubits, edges) in enumerate(qnn_plan._light_cone(n, depth, 2)):
        ref[layer, sorted(qubits), :3] = True
        ref[layer, sorted(edges), 3] = True
    np.testing.assert_array_equal(mask, ref)
    assert 0 < mask.sum() < mask.size  # some angles are skipped


def _shift_variance(parts, params, x, mask, shots):
    """Var of the parameter-shift estimate per angle: Σ± (1 − ⟨Z⟩±²)/(4S) (zero off the cone),
    for each S of ``shots`` (one evaluation of the shifted circuits serves them all)."""
    idx = np.flatnonzero(mask)
    shift = np.zeros((idx.size, params.size))
    shift[np.arange(idx.size), idx] = np.pi / 2
    flat = np.asarray(params).reshape(1, -1)
    batch = jnp.asarray(np.concatenate([flat + shift, flat - shift])).reshape(-1, *params.shape)
    z = np.asarray(jax.jit(jax.vmap(parts.expectation, (0, None)))(batch, x))
    one_shot = np.zeros(params.size)  # the variance at S = 1; at S shots it is this / S
    one_shot[idx] = ((1 - z[: idx.size] ** 2) + (1 - z[idx.size :] ** 2)) / 4
    return {s: one_shot.reshape(params.shape) / s for s in shots}


def test_parameter_shift_with_shots_is_unbiased_and_its_variance_scales_as_one_over_shots():
    parts, params, x = _case()
    exact = _exact_grad()
    mask = light_cone_mask(parts.expectation, params.shape, params.dtype, x.shape, x.dtype)
    empirical, rels = {}, []
    variances = _shift_variance(parts, params, x, mask, (100, 1000))
    for shots in (100, 1000):
        grads = _grads_over_keys("parameter_shift", shots)
        var = variances[shots]
        assert np.all(grads[:, ~mask] == 0) and np.all(exact[~mask] == 0)
        se = np.sqrt(var[mask] / KEYS)
        assert np.all(np.abs(grads.mean(0)[mask] - exact[mask]) <= 5 * se)
        empirical[shots] = grads.var(0, ddof=1)[mask].sum()
        # the summed variance against Σ σ², within 5 of its standard errors (kurtosis margin 3)
        rel = np.sqrt(3 * np.sum(var[mask] ** 2) / KEYS) / var[mask].sum()
        assert abs(empirical[shots] / var[mask].sum() - 1) <= 5 * rel
        rels.append(rel)
    # 1/S: the ratio of the two measured variances is ~10 (exactly Σσ²(100)/Σσ²(1000) = 10)
    ratio = empirical[100] / empirical[1000] / 10
    assert abs(ratio - 1) <= 5 * np.hypot(*rels), ratio


# ---- SPSA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shots", [None, 1000])
def test_spsa_is_unbiased_in_expectation(shots):
    exact = _exact_grad()
    # c = 0.05: the O(c²) bias (< 0.1 % of the gradient here) is far below the 5-sigma bound
    grads = _grads_over_keys("spsa", shots, spsa_c=0.05)
    se = grads.std(0, ddof=1) / np.sqrt(KEYS)
    mask = se > 0
    assert np.all(grads[:, ~mask] == 0) and np.all(exact[~mask] == 0)  # off the light cone
    assert np.all(np.abs(grads.mean(0)[mask] - exact[mask]) <= 5 * se[mask])
    mean = grads.mean(0).ravel()
    cosine = mean @ exact.ravel() / np.linalg.norm(mean) / np.linalg.norm(exact)
    assert cosine > 0.9, cosine  # the direction, not only each coordinate within its noise


def test_a_batch_shares_one_spsa_perturbation():
    parts, params, x = _case()
    f = measured_expectation(parts.expectation, shots=None, gradient="spsa")
    xs = jnp.stack([x, x])
    key = jax.random.PRNGKey(9)

    @jax.jit
    def run(p):
        shared = jax.jacrev(lambda q: measure_batch(f, q, xs, key))(p)
        own = jax.vmap(jax.grad(f), (None, 0, 0))(p, xs, jax.random.split(key))  # own Δ each
        return measure_batch(f, p, xs, key), shared, own

    zs, shared, own = map(np.asarray, run(params))
    assert zs.tobytes() == np.asarray(jax.vmap(parts.expectation, (None, 0))(params, xs)).tobytes()
    np.testing.assert_array_equal(shared[0], shared[1])  # the same Δ for both examples
    on_cone = np.abs(shared[0][shared[0] != 0])
    np.testing.assert_allclose(on_cone, on_cone[0], rtol=1e-12)  # ĝ = (scalar)·Δ
    assert np.any(own[0] != own[1])


# ---- bad inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shots", [0, -1, 1.5, True, "100"])
def test_bad_shots_are_refused_with_one_line(shots):
    parts, _, _ = _case()
    for call in (
        lambda: check_shots(shots),
        lambda: measured_expectation(parts.expectation, shots=shots),
        lambda: sample_expectation(jax.random.PRNGKey(0), jnp.zeros(2), shots),
    ):
        with pytest.raises(QunlearnError, match=r"shots = .* must be a positive integer") as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"gradient": "adjoint"}, "not a shot gradient"), ({"spsa_c": 0.0}, "spsa_c = 0.0")],
)
def test_bad_gradient_settings_are_refused_with_one_line(kwargs, match):
    parts, _, _ = _case()
    with pytest.raises(QunlearnError, match=match) as err:
        measured_expectation(parts.expectation, shots=100, **kwargs)
    assert "\n" not in str(err.value)


# ---- models and training: the hyperparameters shots and gradient --------------------------------


def _tiny_data(n=4, rows=9):
    x = jnp.abs(jax.random.normal(jax.random.PRNGKey(11), (rows, 2**n)))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True), (jnp.arange(rows) % 2).astype(float)


def test_shot_hyperparameters_give_a_sampling_model_whose_apply_is_exact():
    exact = make_model("qnn", 16, False, depth=2, readout="linear")
    assert exact.sample is None
    assert make_model("qnn", 16, False, depth=2, shots=None).sample is None
    model = make_model("qnn", 16, False, depth=2, readout="linear", shots=100, gradient="spsa")
    params = _params(12, (2, 4, 4))
    x, _ = _tiny_data()
    assert model.apply(params, x[0]).tobytes() == exact.apply(params, x[0]).tobytes()
    assert predict(model, params, x).tobytes() == predict(exact, params, x).tobytes()
    p = np.asarray(jax.jit(functools.partial(predict, model))(params, x, jax.random.PRNGKey(0)))
    np.testing.assert_allclose(p * 100, np.round(p * 100), atol=1e-9)  # (1 + ẑ)/2 = k/S
    assert np.any(p != np.asarray(predict(exact, params, x)))


def test_parameter_shift_training_without_shots_is_exact_training():
    x, y = _tiny_data()
    runs = {}
    for label, extra in (("exact", {}), ("shift", {"shots": None, "gradient": "parameter_shift"})):
        model = make_model("qnn", 16, False, depth=2, **extra)
        train = make_supervised_train(model, lr=0.1, epochs=2, batch_size=4, n_train=len(x))
        runs[label] = jax.jit(train)(
            jax.random.PRNGKey(1), _params(13, (2, 4, 4)), {"x": x, "y": y}, None
        )
    np.testing.assert_allclose(runs["shift"][0], runs["exact"][0], atol=1e-10, rtol=0)
    assert float(jnp.max(jnp.abs(runs["exact"][0] - _params(13, (2, 4, 4))))) > 1e-2  # it moved


def test_training_with_shots_draws_from_its_key():
    x, y = _tiny_data()
    model = make_model("qnn", 16, False, depth=2, shots=50, gradient="parameter_shift")
    train = jax.jit(make_supervised_train(model, lr=0.1, epochs=2, batch_size=4, n_train=len(x)))
    start = _params(13, (2, 4, 4))
    a, b, c = (train(jax.random.PRNGKey(k), start, {"x": x, "y": y}, None)[0] for k in (1, 1, 2))
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    assert np.all(np.isfinite(np.asarray(a)))


@pytest.mark.parametrize(
    ("name", "hyper", "match"),
    [
        ("qnn", {"shots": 0}, r"hyper\.shots = 0 must be a positive integer"),
        ("qnn_cnot", {"shots": 1.5}, r"hyper\.shots = 1\.5 must be a positive integer"),
        ("qnn", {"gradient": "adjoint"}, r"hyper\.gradient = 'adjoint' is not a shot gradient"),
        ("mlp", {"shots": 100}, r"unknown hyperparameter 'shots'"),
    ],
)
def test_bad_shot_hyperparameters_are_refused_with_one_line(name, hyper, match):
    with pytest.raises(QunlearnError, match=match) as err:
        make_model(name, 16, False, **hyper)
    assert "\n" not in str(err.value)


# ---- the noise sweep's eval_shots ---------------------------------------------------------------


@pytest.mark.slow  # two sweep programs compiled (48 s on the loaded 2-core machine)
def test_sweep_measures_validation_accuracy_with_shots_from_the_same_params():
    from qunlearn.experiments.noise_sweep import shot_metric, sweep_program
    from qunlearn.experiments.readouts import Readout

    x, y = _tiny_data(rows=12)
    hyper = {"depth": 2, "readout": "linear"}
    model = make_model("qnn", 16, False, **hyper)
    shot_models = {
        f"shots{s}": Readout(make_model("qnn", 16, False, shots=s, **hyper), s) for s in (1, 10**6)
    }
    keys = jax.random.split(jax.random.PRNGKey(3), 4).reshape(2, 2, -1)
    xs, ys = jnp.stack([x, x]), jnp.stack([y, 1 - y])
    settings = {"epochs": 2, "batch_size": 4, "lr": 0.1, "n_train": len(x)}
    plain = sweep_program(model, **settings)(keys[:, 0], keys[:, 1], xs, ys, x, y)
    shots = sweep_program(model, readouts=shot_models, **settings)(
        keys[:, 0], keys[:, 1], xs, ys, x, y
    )
    assert sorted(shots) == sorted([*plain, shot_metric(1), shot_metric(10**6)])
    for name in plain:  # the exact metrics are untouched
        assert np.asarray(plain[name]).tobytes() == np.asarray(shots[name]).tobytes(), name
    # 10⁶ shots: ẑ within ~1e-3 of ⟨Z⟩, every prediction on the same side of 1/2 with these
    # fixed keys (a wrong sign or readout in the sampler flips them); one shot: a coin each
    np.testing.assert_array_equal(shots[shot_metric(10**6)], plain["val_acc"])
    correct = np.asarray(shots[shot_metric(1)]) * len(x)
    np.testing.assert_allclose(correct, np.round(correct), atol=1e-9)


def test_eval_shots_are_checked_and_keep_old_hashes(tmp_path):
    from qunlearn.experiments.config import config_hash, load_config

    path = tmp_path / "c.toml"
    path.write_text(
        'experiment = "noise_sweep"\nname = "s"\ndataset = "mnist"\nnoises = ["label_flip"]\n'
        'alphas = [0.0]\nruns = 1\n[models.qnn]\nmodel = "qnn"\nepochs = 1\nbatch_size = 8\n'
        "lr = 0.01\n"
    )
    plain = load_config(path)
    assert config_hash(load_config(path, ["eval_shots=[]"])) == config_hash(plain)
    assert config_hash(load_config(path, ["eval_shots=[100]"])) != config_hash(plain)
    for value, needle in (("[0]", "has 0: list positive shot counts"), ("[5, 5]", "twice")):
        with pytest.raises(QunlearnError, match=needle) as err:
            load_config(path, [f"eval_shots={value}"])
        assert "\n" not in str(err.value)


def test_other_experiments_refuse_shot_models_with_one_line():
    from importlib.resources import files

    from qunlearn.experiments.config import load_config

    path = files("qunlearn") / "configs" / "curvature_mnist.toml"  # Hessians: would stay exact
    with pytest.raises(QunlearnError, match="noise_sweep and unlearning experiments only") as err:
        load_config(path, ["models.qnn.hyper.shots=100"])
    assert "\n" not in str(err.value)
