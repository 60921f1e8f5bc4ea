"""Circuit noise: the dict's check, the density-matrix simulator against tensorcircuit-ng's
``DMCircuit`` with the same channels, and Monte Carlo trajectories against the density matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.models import estimate_bytes, make_model, memory
from qunlearn.models.circuit_noise import KEYS, check_circuit_noise
from qunlearn.models.gates import ring_pairs
from qunlearn.models.noisy_dm import dm_program, noisy_expectation_dm
from qunlearn.models.noisy_trajectories import (
    noisy_expectation_trajectories,
    trajectory_program,
)
from qunlearn.models.qnn import qnn_cnot_parts, qnn_parts
from qunlearn.models.qnn_tc import _jax_runtime
from qunlearn.train import make_supervised_train, predict

NOISE = {
    "depolarizing_1q": 0.05,
    "depolarizing_2q": 0.08,
    "amplitude_damping": 0.07,
    "phase_damping": 0.09,
    "readout_p01": 0.03,
    "readout_p10": 0.05,
}
PAULI_NOISE = {  # the channels trajectories simulate without approximation
    "depolarizing_1q": 0.1,
    "depolarizing_2q": 0.15,
    "phase_damping": 0.2,
    "readout_p10": 0.05,
}
PARTS = {"qnn": qnn_parts, "qnn_cnot": qnn_cnot_parts}


def _case(ansatz, n, depth, complex_input=True, seed=0, norm=1.0):
    key = jax.random.PRNGKey(seed + 100 * n + depth)
    params = 1.5 * jax.random.normal(key, (depth, n, 4 if ansatz == "qnn" else 2))
    x = jax.random.normal(jax.random.fold_in(key, 1), (2**n,))
    if complex_input:
        x = x + 1j * jax.random.normal(jax.random.fold_in(key, 2), (2**n,))
    return params, norm * x / jnp.linalg.norm(x)


def _dmcircuit(ansatz, n, params, x, noise, r):
    """⟨Z_r⟩ from tensorcircuit-ng's DMCircuit, gate by gate, the channels mapped to tc's
    parameters as in :mod:`qunlearn.models.circuit_noise`'s docstring. tc's numpy backend: the
    same gates and channels without JAX's op-by-op dispatch and compiles (a reference value
    needs no gradient)."""
    noise = check_circuit_noise(noise)
    params, x = np.asarray(params, np.float64), np.asarray(x, np.complex128)
    with _jax_runtime("complex128", backend="numpy") as tc:
        ch = tc.channels
        c = tc.DMCircuit(n, inputs=x)

        def after(*qs):
            if len(qs) == 1:
                p = noise["depolarizing_1q"]
                c.apply_general_kraus(ch.depolarizingchannel(p / 4, p / 4, p / 4), qs[0])
            else:
                p = noise["depolarizing_2q"]
                c.apply_general_kraus(ch.generaldepolarizingchannel(p / 16, 2), *qs)
            for q in qs:
                gamma = noise["amplitude_damping"]
                c.apply_general_kraus(ch.amplitudedampingchannel(gamma, 1.0), q)
            for q in qs:
                c.apply_general_kraus(ch.phasedampingchannel(noise["phase_damping"]), q)

        for theta in params:
            for q in range(n):
                c.rx(q, theta=theta[q, 0])
                after(q)
                c.ry(q, theta=theta[q, 1])
                after(q)
                if ansatz == "qnn":
                    c.rx(q, theta=theta[q, 2])
                    after(q)
            for j, (a, b) in enumerate(ring_pairs(n)):
                if ansatz == "qnn":
                    c.rzz(a, b, theta=theta[j, 3])
                else:
                    c.cnot(a, b)
                after(a, b)
        z = float(np.real(np.asarray(c.expectation_ps(z=[r]))))
    # the readout error, by its definition: P(read 0) - P(read 1) from P(0), P(1) = (tr ± ⟨Z⟩)/2
    p0, p1 = (np.sum(np.abs(x) ** 2) + z) / 2, (np.sum(np.abs(x) ** 2) - z) / 2
    read0 = (1 - noise["readout_p01"]) * p0 + noise["readout_p10"] * p1
    read1 = noise["readout_p01"] * p0 + (1 - noise["readout_p10"]) * p1
    return float(read0 - read1)


def _exact(ansatz, n, depth, r, complex_input, params, x):
    """The noiseless kernel's ⟨Z_r⟩, jitted: one compile instead of one per op and shape."""
    kernel = PARTS[ansatz](2**n, complex_input, depth=depth, readout_qubit=r).expectation
    return float(jax.jit(kernel)(params, x))


# ---- the dict ----


def test_check_fills_missing_keys_with_zero():
    out = check_circuit_noise({"depolarizing_1q": 0.01, "readout_p10": 1})
    assert out == {**dict.fromkeys(KEYS, 0.0), "depolarizing_1q": 0.01, "readout_p10": 1.0}
    assert check_circuit_noise(None) == dict.fromkeys(KEYS, 0.0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"depolarising_1q": 0.1}, "did you mean 'depolarizing_1q'"),
        ({"depolarizing_1q": "0.1"}, "must be a probability"),
        ({"phase_damping": True}, "must be a probability"),
        ({"amplitude_damping": -0.01}, "must be a probability"),
        ({"readout_p01": 1.5}, "must be a probability"),
        ({"readout_p01": float("nan")}, "must be a probability"),
        ([("depolarizing_1q", 0.1)], "must be a table"),
    ],
)
def test_bad_noise_is_one_line(bad, message):
    with pytest.raises(QunlearnError, match=message) as err:
        check_circuit_noise(bad)
    assert "\n" not in str(err.value)


# ---- density matrix ----


@pytest.mark.parametrize(
    ("ansatz", "n", "depth", "r", "complex_input"),
    [
        ("qnn", 3, 2, 2, True),
        ("qnn_cnot", 4, 2, 3, False),
        pytest.param("qnn", 4, 3, 1, False, marks=pytest.mark.slow),  # the same code paths
    ],
)
def test_density_matrix_matches_dmcircuit(ansatz, n, depth, r, complex_input):
    params, x = _case(ansatz, n, depth, complex_input, norm=1.3)  # unnormalised: used as given
    ours = float(jax.jit(dm_program(ansatz, n, depth, r, NOISE, "complex128"))(params, x))
    ref = _dmcircuit(ansatz, n, params, x, NOISE, r)
    assert abs(ours - ref) <= 1e-10
    exact = _exact(ansatz, n, depth, r, True, params, x)
    assert abs(ours - exact) > 1e-2  # the noise matters here: the comparison is not vacuous


@pytest.mark.parametrize(("ansatz", "n", "depth"), [("qnn", 5, 3), ("qnn_cnot", 4, 3)])
@pytest.mark.parametrize("complex_input", [False, True])
def test_zero_noise_is_the_exact_kernel(ansatz, n, depth, complex_input):
    params, x = _case(ansatz, n, depth, complex_input, norm=0.7)
    for r in (0, n - 1):
        exact = _exact(ansatz, n, depth, r, complex_input, params, x)
        dm = jax.jit(dm_program(ansatz, n, depth, r, {}, "complex128"))
        assert abs(float(dm(params, x)) - exact) <= 1e-12


def test_readout_error_is_affine_in_z():
    params, x = _case("qnn", 4, 2)
    p01, p10 = 0.04, 0.11
    z = float(jax.jit(lambda p, x: noisy_expectation_dm(p, x, {}))(params, x))
    readout = {"readout_p01": p01, "readout_p10": p10}
    noisy = float(jax.jit(lambda p, x: noisy_expectation_dm(p, x, readout))(params, x))
    assert abs(noisy - ((1 - p01 - p10) * z + (p10 - p01))) <= 1e-12


def test_gradient_matches_finite_differences_and_batches_agree():
    params, x = _case("qnn", 4, 2, seed=3)
    f = dm_program("qnn", 4, 2, 3, NOISE, "complex128")
    grad = jax.jit(jax.grad(f))(params, x)
    v = jax.random.normal(jax.random.PRNGKey(5), params.shape)
    h = 1e-5
    f = jax.jit(f)  # the values below: one compile, not one per op
    fd = (f(params + h * v, x) - f(params - h * v, x)) / (2 * h)
    assert abs(float(jnp.sum(grad * v)) - float(fd)) <= 1e-8
    assert float(jnp.max(jnp.abs(grad))) > 1e-3
    xs = jnp.stack([x, 0.5 * x[::-1], jnp.roll(x, 3)])
    batched = jax.jit(jax.vmap(f, (None, 0)))(params, xs)
    np.testing.assert_allclose(batched, [f(params, xi) for xi in xs], atol=1e-13, rtol=0)


def test_complex64_close_to_complex128():
    params, x = _case("qnn_cnot", 4, 3)
    z128 = jax.jit(dm_program("qnn_cnot", 4, 3, 0, NOISE, "complex128"))(params, x)
    z64 = jax.jit(dm_program("qnn_cnot", 4, 3, 0, NOISE, "complex64"))(params, x)
    assert z64.dtype == jnp.float32
    assert abs(float(z64) - float(z128)) <= 1e-5


# ---- trajectories ----


@pytest.mark.parametrize(("ansatz", "n", "depth"), [("qnn", 4, 3), ("qnn_cnot", 4, 3)])
def test_trajectories_without_noise_are_the_exact_kernel(ansatz, n, depth):
    params, x = _case(ansatz, n, depth)
    exact = _exact(ansatz, n, depth, -1, True, params, x)
    z = jax.jit(
        lambda key, p, x: noisy_expectation_trajectories(
            key, p, x, {}, ansatz=ansatz, n_trajectories=3
        )
    )(jax.random.PRNGKey(0), params, x)
    assert abs(float(z) - exact) <= 1e-12


@pytest.mark.parametrize(("ansatz", "n", "depth", "r"), [("qnn", 4, 3, 3), ("qnn_cnot", 4, 3, 1)])
def test_trajectories_converge_to_the_density_matrix(ansatz, n, depth, r):
    params, x = _case(ansatz, n, depth)
    dm = float(jax.jit(dm_program(ansatz, n, depth, r, PAULI_NOISE, "complex128"))(params, x))
    exact = _exact(ansatz, n, depth, r, True, params, x)
    k = 4000
    values = jax.jit(trajectory_program(ansatz, n, depth, r, PAULI_NOISE, "complex128", k))(
        jax.random.PRNGKey(11), params, x
    )
    mean, se = float(jnp.mean(values)), float(jnp.std(values)) / np.sqrt(k)
    # fixed key; measured |z| < 1 for these cases, so the 5-sigma bound leaves a wide margin
    print(f"trajectories {ansatz}: (mean - dm) / se = {(mean - dm) / se:.2f}")
    assert abs(mean - dm) <= 5 * se
    assert abs(dm - exact) >= 10 * se  # resolving the noise: the test could fail


def test_trajectories_are_differentiable():
    params, x = _case("qnn", 4, 2)
    values = trajectory_program("qnn", 4, 2, 3, PAULI_NOISE, "complex128", 8)
    key = jax.random.PRNGKey(2)
    f = jax.jit(lambda p: jnp.mean(values(key, p, x)))  # one key: the same Pauli draws throughout
    grad = jax.jit(jax.grad(f))(params)
    v = jax.random.normal(jax.random.PRNGKey(4), params.shape)
    h = 1e-5
    fd = (f(params + h * v) - f(params - h * v)) / (2 * h)
    assert abs(float(jnp.sum(grad * v)) - float(fd)) <= 1e-8


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_trajectory_count(bad):
    with pytest.raises(QunlearnError, match="n_trajectories"):
        trajectory_program("qnn", 3, 1, 0, {}, "complex128", bad)


# ---- the QNN hypers circuit_noise and simulator ----


def test_noisy_model_trains_through_the_engine():
    model = make_model("qnn", 16, False, depth=2, circuit_noise=NOISE)
    params, _ = _case("qnn", 4, 2)
    xs = jax.random.normal(jax.random.PRNGKey(3), (8, 16))
    xs = xs / jnp.linalg.norm(xs, axis=1, keepdims=True)
    dm = dm_program("qnn", 4, 2, 3, NOISE, "complex128")
    noisy = jax.jit(lambda p: predict(model, p, xs))  # one compile, not one per op
    np.testing.assert_allclose(
        noisy(params),
        jax.nn.sigmoid(5.0 * jax.jit(jax.vmap(dm, (None, 0)))(params, xs)),
        atol=1e-14,
        rtol=0,
    )
    ys = (xs[:, 0] > 0).astype(jnp.float64)
    train = make_supervised_train(model, lr=0.05, epochs=3, batch_size=4, n_train=8)
    trained, log = jax.jit(train)(jax.random.PRNGKey(0), params, {"x": xs, "y": ys}, None)
    assert log["loss"][-1] < log["loss"][0]  # deterministic: no key reaches the model
    exact = jax.jit(lambda p: predict(make_model("qnn", 16, False, depth=2), p, xs))
    assert float(np.max(np.abs(exact(trained) - noisy(trained)))) > 1e-3


def test_density_matrix_without_noise_is_the_statevector():
    params, x = _case("qnn_cnot", 3, 2, complex_input=False)
    dm = make_model("qnn_cnot", 8, False, depth=2, simulator="density_matrix")
    sv = make_model("qnn_cnot", 8, False, depth=2)
    z_dm, z_sv = jax.jit(dm.apply)(params, x), jax.jit(sv.apply)(params, x)
    assert abs(float(z_dm) - float(z_sv)) <= 1e-12


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"circuit_noise": {"phase_damping": 2.0}}, "hyper.circuit_noise.phase_damping = 2.0"),
        ({"circuit_noise": {"dephasing": 0.1}}, "hyper.circuit_noise.dephasing is not a noise key"),
        ({"circuit_noise": 0.1}, "hyper.circuit_noise = 0.1 must be a table"),
        ({"simulator": "density"}, "hyper.simulator = 'density' is not a QNN simulator"),
        (
            {"simulator": "statevector", "circuit_noise": {"depolarizing_1q": 0.01}},
            'hyper.simulator = "statevector" cannot simulate circuit_noise',
        ),
    ],
)
def test_bad_noise_hypers_are_one_line(values, message):
    with pytest.raises(QunlearnError) as err:
        make_model("qnn", 16, False, **values)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_an_oversized_density_matrix_is_refused_before_work(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory", lambda: 16 * 2**30)
    noisy = {"circuit_noise": {"depolarizing_2q": 0.01}}
    assert estimate_bytes("qnn", 2**10, False, depth=6, **noisy) == 8 * 4**10 * 60
    assert estimate_bytes("qnn", 2**10, False, depth=6) < 8 * 4**10  # the state vector's floor
    make_model("qnn", 2**14, False, depth=6)  # a state vector fits
    with pytest.raises(QunlearnError, match="density-matrix simulation on 14 qubits"):
        make_model("qnn", 2**14, False, depth=6, **noisy)


# ---- the noise sweep's eval_circuit_noise -------------------------------------------------------


def test_sweep_reads_the_same_params_out_under_each_named_circuit_noise():
    """``eval_circuit_noise``: each label adds val_acc_noise_<label> from the trained params.
    Readout flips of 1/2 make ⟨Z⟩ = 0, so every p = 1/2 predicts class 0 (accuracy = its share);
    an all-zero noise model is the exact circuit, its accuracy val_acc's to the bit."""
    from qunlearn.experiments.noise_sweep import noise_metric, sweep_program
    from qunlearn.experiments.readouts import Readout

    rows = 6
    x = jnp.abs(jax.random.normal(jax.random.PRNGKey(5), (rows, 4)))
    x, y = x / jnp.linalg.norm(x, axis=1, keepdims=True), (jnp.arange(rows) % 3 == 0) * 1.0
    hyper = {"depth": 1}
    noises = {"coin": {"readout_p01": 0.5, "readout_p10": 0.5}, "none": {}}
    noisy = {
        f"noise_{k}": Readout(make_model("qnn", 4, False, circuit_noise=v, **hyper))
        for k, v in noises.items()
    }
    keys = jax.random.split(jax.random.PRNGKey(3), 2).reshape(1, 2, -1)
    settings = {"epochs": 1, "batch_size": 3, "lr": 0.1, "n_train": rows}
    program = sweep_program(make_model("qnn", 4, False, **hyper), readouts=noisy, **settings)
    out = program(keys[:, 0], keys[:, 1], x[None], y[None], x, y)
    assert float(out[noise_metric("coin")][0]) == pytest.approx(float(jnp.mean(y == 0)))
    assert np.asarray(out[noise_metric("none")]).tobytes() == np.asarray(out["val_acc"]).tobytes()


def test_eval_circuit_noise_is_checked_in_one_line_and_keeps_old_hashes(tmp_path):
    from qunlearn.experiments.config import config_hash, load_config

    path = tmp_path / "c.toml"
    path.write_text(
        'experiment = "noise_sweep"\nname = "s"\ndataset = "mnist"\nnoises = ["label_flip"]\n'
        'alphas = [0.0]\nruns = 1\n[models.qnn]\nmodel = "qnn"\nepochs = 1\nbatch_size = 8\n'
        "lr = 0.01\n"
    )
    plain = load_config(path)
    assert config_hash(load_config(path, ["eval_circuit_noise={}"])) == config_hash(plain)
    noisy = load_config(path, ["eval_circuit_noise={dev={depolarizing_1q=0.01}}"])
    assert config_hash(noisy) != config_hash(plain)
    for value, needle in (
        ("{dev={depolarising_1q=0.01}}", "eval_circuit_noise.dev: .*did you mean"),
        ("{dev={readout_p01=1.5}}", "must be a probability"),
        ("{Dev={}}", "name a noise model with a-z"),
    ):
        with pytest.raises(QunlearnError, match=needle) as err:
            load_config(path, [f"eval_circuit_noise={value}"])
        assert "\n" not in str(err.value)
