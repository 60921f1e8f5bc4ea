"""The fused QNN simulator equals a plain tensorcircuit-ng build of the same circuit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.models import make_model
from qunlearn.models.qnn import cnot_ring_permutation
from qunlearn.models.qnn_tc import circuit_model, cnot_build, hea_build


def _random_states(key, n, dim, complex_input):
    kr, ki = jax.random.split(key)
    x = jax.random.normal(kr, (n, dim))
    if complex_input:
        x = x + 1j * jax.random.normal(ki, (n, dim))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


CASES = [  # (model name, n_qubits, depth, reference build, complex input)
    ("qnn", 4, 2, hea_build, False),
    ("qnn", 5, 3, hea_build, True),
    ("qnn", 6, 2, hea_build, True),
    ("qnn_cnot", 4, 3, cnot_build, False),
    ("qnn_cnot", 5, 2, cnot_build, True),
]


@pytest.mark.parametrize(("name", "n", "depth", "build", "complex_input"), CASES)
def test_fused_matches_tensorcircuit(name, n, depth, build, complex_input):
    model = make_model(name, 2**n, complex_input, depth=depth)
    key = jax.random.PRNGKey(n * 10 + depth)
    # large angles so every gate matters (the 0.01 init would hide ordering mistakes)
    params = 2.0 * jax.random.normal(key, model.init(key).shape)
    _, ref_apply = circuit_model(build(n), n, params.shape)
    xs = _random_states(jax.random.fold_in(key, 1), 4, 2**n, complex_input)
    labels = jnp.array([0.0, 1.0, 1.0, 0.0])

    def loss(apply, p):
        probs = jax.vmap(apply, (None, 0))(p, xs)
        return jnp.mean(labels * jnp.log(probs) + (1 - labels) * jnp.log(1 - probs)), probs

    (l_fast, p_fast), g_fast = jax.value_and_grad(lambda p: loss(model.apply, p), has_aux=True)(
        params
    )
    (l_ref, p_ref), g_ref = jax.value_and_grad(lambda p: loss(ref_apply, p), has_aux=True)(params)
    np.testing.assert_allclose(p_fast, p_ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(g_fast, g_ref, atol=1e-10, rtol=0)
    assert float(jnp.abs(l_fast - l_ref)) <= 1e-10
    assert float(jnp.max(jnp.abs(g_ref))) > 1e-3  # the comparison is not vacuous


def test_cnot_permutation_is_a_bijection():
    perm = cnot_ring_permutation(5)
    assert sorted(perm.tolist()) == list(range(32))


def test_complex64_close_to_complex128():
    m128 = make_model("qnn", 64, True, depth=2)
    m64 = make_model("qnn", 64, True, depth=2, dtype="complex64")
    params = m128.init(jax.random.PRNGKey(0)) * 100
    x = _random_states(jax.random.PRNGKey(1), 3, 64, True)
    p128 = jax.vmap(m128.apply, (None, 0))(params, x)
    p64 = jax.vmap(m64.apply, (None, 0))(params, x)
    assert p64.dtype == jnp.float32
    np.testing.assert_allclose(p64, p128, atol=1e-5)
