"""One contract for every member of the MODELS family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.models import MODELS, make_model, n_params

SMALL = {"mlp": {"hidden": (5, 3)}, "qnn": {"depth": 2}, "qnn_cnot": {"depth": 2}}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("complex_input", [False, True])
def test_model_contract(name, complex_input):
    model = make_model(name, 16, complex_input, **SMALL[name])
    params = model.init(jax.random.PRNGKey(0))
    again = model.init(jax.random.PRNGKey(0))
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)  # pure in the key
    assert n_params(params) > 0
    x = jax.random.normal(jax.random.PRNGKey(1), (16,))
    x = (x + 1j * x[::-1] if complex_input else x) / jnp.linalg.norm(x)
    p = model.apply(params, x)
    assert p.shape == () and 0.0 < float(p) < 1.0
    batch = jax.vmap(model.apply, (None, 0))(params, jnp.stack([x, x]))
    np.testing.assert_allclose(batch, [p, p], rtol=1e-12)
    grads = jax.grad(model.apply)(params, x)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))


def test_mlp_glorot_and_zero_bias():
    params = make_model("mlp", 1024, False, hidden=(64, 16)).init(jax.random.PRNGKey(0))
    assert [p["w"].shape for p in params] == [(1024, 64), (64, 16), (16, 1)]
    limit = np.sqrt(6 / (1024 + 64))
    assert float(jnp.max(jnp.abs(params[0]["w"]))) <= limit
    assert all(float(jnp.abs(p["b"]).max()) == 0 for p in params)


def test_qnn_param_count_and_init_scale():
    params = make_model("qnn", 1024, False, depth=6).init(jax.random.PRNGKey(0))
    assert params.shape == (6, 10, 4) and params.size == 240
    assert 0.005 < float(jnp.std(params)) < 0.015


def test_unknown_model_and_qubit_mismatch():
    with pytest.raises(QunlearnError, match="did you mean 'qnn'"):
        make_model("qnm", 16, False)
    with pytest.raises(QunlearnError, match="n_qubits=5 does not match"):
        make_model("qnn", 16, False, n_qubits=5)
    with pytest.raises(QunlearnError, match="power of two"):
        make_model("qnn", 12, False)
