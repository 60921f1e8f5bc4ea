"""One contract for every member of the MODELS family."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.models import MODELS, hyper, make_model, memory, n_params
from qunlearn.testing import check_model

KEY = jax.random.PRNGKey(0)
SMALL = {"mlp": {"hidden": (5, 3)}, "qnn": {"depth": 2}, "qnn_cnot": {"depth": 2}}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("complex_input", [False, True])
def test_model_contract(name, complex_input):
    """The public check users run on their own models (qunlearn.testing.check_model)."""
    ran = check_model(MODELS[name], input_dim=16, complex_input=complex_input, hyper=SMALL[name])
    assert "gradient = finite differences" in ran
    assert n_params(make_model(name, 16, complex_input, **SMALL[name]).init(KEY)) > 0


def test_mlp_glorot_and_zero_bias():
    init = make_model("mlp", 1024, False, hidden=(64, 16)).init
    params = jax.jit(init)(jax.random.PRNGKey(0))  # one compile, not one per eager op
    assert [p["w"].shape for p in params] == [(1024, 64), (64, 16), (16, 1)]
    limit = np.sqrt(6 / (1024 + 64))
    assert float(np.max(np.abs(params[0]["w"]))) <= limit
    assert all(float(np.abs(p["b"]).max()) == 0 for p in params)


def test_qnn_param_count_and_init_scale():
    params = make_model("qnn", 1024, False, depth=6).init(jax.random.PRNGKey(0))
    assert params.shape == (6, 10, 4) and params.size == 240
    assert 0.005 < float(jnp.std(params)) < 0.015


def test_unknown_model_and_qubit_mismatch():
    with pytest.raises(QunlearnError, match="did you mean 'qnn'"):
        make_model("qnm", 16, False)
    with pytest.raises(QunlearnError, match="n_qubits=3 is fewer than the data.s 4 qubits"):
        make_model("qnn", 16, False, n_qubits=3)
    with pytest.raises(QunlearnError, match="power of two"):
        make_model("qnn", 12, False)


# ---- hyperparameters: type and range checked up front, never coerced -----------------------------

BAD_HYPER = [  # (model, hyper, the start of the one-line error)
    (
        "mlp",
        {"hidden": [4.5]},
        "hyper.hidden[0] = 4.5 must be a positive integer: write hidden = [",
    ),
    ("mlp", {"hidden": [8, True]}, "hyper.hidden[1] = True must be a positive integer"),
    ("mlp", {"hidden": [0]}, "hyper.hidden[0] = 0 must be a positive integer"),
    ("mlp", {"hidden": 64}, "hyper.hidden = 64 must be a list of positive integers"),
    ("mlp", {"hidden": "64"}, "hyper.hidden = '64' must be a list of positive integers"),
    ("qnn", {"depth": 2.0}, "hyper.depth = 2.0 must be an integer in [1, 1000]: write depth = 6"),
    ("qnn", {"depth": True}, "hyper.depth = True must be an integer"),
    ("qnn", {"depth": 0}, "hyper.depth = 0 must be an integer in [1, 1000]"),
    ("qnn", {"depth": 10**6}, "hyper.depth = 1000000 must be an integer in [1, 1000]"),
    ("qnn", {"n_qubits": 4.0}, "hyper.n_qubits = 4.0 must be a positive integer: leave it out"),
    ("qnn", {"readout_qubit": 1.0}, "hyper.readout_qubit = 1.0 must be an integer"),
    ("qnn", {"readout_qubit": 4}, "hyper.readout_qubit = 4 is not one of the 4 qubits"),
    ("qnn", {"readout_qubit": -5}, "hyper.readout_qubit = -5 is not one of the 4 qubits"),
    ("qnn", {"scale": float("nan")}, "hyper.scale = nan must be a finite number > 0"),
    ("qnn", {"scale": "5"}, "hyper.scale = '5' must be a finite number > 0: write scale = 5.0"),
    ("qnn", {"scale": False}, "hyper.scale = False must be a finite number > 0"),
    ("qnn", {"scale": -1.0}, "hyper.scale = -1.0 must be a finite number > 0"),
    ("qnn", {"init_std": float("inf")}, "hyper.init_std = inf must be a finite number ≥ 0"),
    ("qnn", {"init_std": -0.1}, "hyper.init_std = -0.1 must be a finite number ≥ 0"),
    ("qnn", {"dtype": "complex46"}, "hyper.dtype = 'complex46' is not a QNN dtype (did you mean"),
    ("qnn", {"dtype": 64}, "hyper.dtype = 64 is not a QNN dtype: choose one of ['complex128'"),
    ("mlp", {"dtype": "float16"}, "hyper.dtype = 'float16' is not a valid MLP dtype (did you mean"),
    ("mlp", {"dtype": "complex64"}, "hyper.dtype = 'complex64' is not a valid MLP dtype"),
    ("qnn", {"readout": "sigmod"}, "hyper.readout = 'sigmod' is not a QNN readout (did you mean"),
    (
        "qnn_cnot",
        {"depth": 1.5},
        "hyper.depth = 1.5 must be an integer in [1, 1000]: write depth = 5",
    ),
    ("qnn_cnot", {"readout_qubit": 7}, "hyper.readout_qubit = 7 is not one of the 4 qubits"),
    ("qnn_cnot", {"readout": "linaer"}, "hyper.readout = 'linaer' is not a QNN readout"),
]


@pytest.mark.parametrize(("name", "values", "message"), BAD_HYPER)
def test_bad_hyperparameters_are_refused_in_one_line(name, values, message):
    with pytest.raises(QunlearnError) as err:
        make_model(name, 16, False, **values)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_every_hyperparameter_of_every_model_is_checked():
    for name, factory in MODELS.items():
        keys = list(inspect.signature(factory).parameters)[2:]
        assert sorted(hyper.CHECKS[name]) == sorted(keys), name


def test_good_hyperparameters_pass_unchanged():
    """Integers for floats, numpy integers, tuples for lists; the model keeps what it was given."""
    model = make_model("mlp", 16, False, hidden=(np.int64(5), 3))
    assert [p["w"].shape for p in model.init(jax.random.PRNGKey(0))] == [(16, 5), (5, 3), (3, 1)]
    qnn = make_model("qnn", 16, True, depth=np.int32(2), scale=5, init_std=0, readout_qubit=-4)
    assert qnn.hyper == {"depth": 2, "scale": 5, "init_std": 0, "readout_qubit": -4}
    assert float(jnp.abs(qnn.init(jax.random.PRNGKey(0))).max()) == 0.0
    make_model("qnn_cnot", 16, False, dtype="complex64", readout="linear", n_qubits=4)


# ---- size guard: a model too large for this machine is refused before any work ------------------


def _no_build(monkeypatch, name):
    """Make building ``name`` fail loudly, so a refusal is known to come first."""
    factory = MODELS[name]

    @functools.wraps(factory)
    def boom(*args, **kwargs):
        raise AssertionError("the factory ran")

    monkeypatch.setitem(MODELS._builtins, name, boom)  # the built-in itself


def test_a_qnn_too_large_for_the_machine_is_refused_first(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory", lambda: 2**30)  # 1 GiB: a 512 MiB bound
    _no_build(monkeypatch, "qnn")
    with pytest.raises(QunlearnError) as err:
        make_model("qnn", 2**18, True, depth=2)
    line = str(err.value)
    assert line.startswith(
        "a QNN on 18 qubits needs 2^18 amplitudes x 16 bytes = 4 MiB per example state"
    )
    assert "x 256 (" in line and "= 1 GiB, over half of this machine's 1 GiB of memory" in line
    assert line.endswith(
        'use at most 17 qubits here (a smaller input) or write dtype = "complex64" (8 bytes)'
    )
    assert "\n" not in line
    # complex64 halves the state: exactly at the bound, it is let through to the factory
    with pytest.raises(AssertionError, match="the factory ran"):
        make_model("qnn", 2**18, True, depth=2, dtype="complex64")
    assert memory.estimate_bytes("qnn", 2**18, True, dtype="complex64") == 2**29
    with pytest.raises(QunlearnError, match="a QNN on 19 qubits .* use at most 18 qubits here"):
        make_model("qnn_cnot", 2**19, False, dtype="complex64")


def test_an_mlp_too_large_for_the_machine_is_refused_first(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory", lambda: 2**30)
    _no_build(monkeypatch, "mlp")
    with pytest.raises(QunlearnError) as err:
        make_model("mlp", 1024, True, hidden=[4096, 16])
    line = str(err.value)
    weights = 2048 * 4096 + 4096 + 4096 * 16 + 16 + 16 + 1
    assert line.startswith(f"an MLP with layers 2048 -> 4096 -> 16 -> 1 has {weights:,} weights")
    assert memory.estimate_bytes("mlp", 1024, True, hidden=[4096, 16]) == 8 * 32 * weights
    assert line.endswith(f"use smaller hidden sizes (at most {2**29 // 32 // 8:,} weights here)")
    with pytest.raises(AssertionError, match="the factory ran"):  # the default fits
        make_model("mlp", 1024, True)


def test_the_real_machine_bound():
    """This machine's memory is read, and no machine holds a 30-qubit QNN training step."""
    assert memory.physical_memory() > 2**28
    with pytest.raises(QunlearnError, match="a QNN on 30 qubits needs 2\\^30 amplitudes"):
        make_model("qnn", 2**30, False)
