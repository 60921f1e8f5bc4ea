"""The fused QNN simulator equals a plain tensorcircuit-ng build of the same circuit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.models import make_model, qnn_plan  # the planner's constants are patched below
from qunlearn.models.qnn import cnot_ring_permutation
from qunlearn.models.qnn_tc import circuit_model, cnot_build, hea_build


def _random_states(key, n, dim, complex_input):
    kr, ki = jax.random.split(key)
    x = jax.random.normal(kr, (n, dim))
    if complex_input:
        x = x + 1j * jax.random.normal(ki, (n, dim))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def _batched(apply):
    """apply over a batch as ONE compiled program: eager, the fused simulator dispatches (and
    compiles) each of its ~100 ops on its own; the tensorcircuit references stay op by op."""
    return jax.jit(jax.vmap(apply, (None, 0)))


# ---- the fast paths (light cone, folded RZZs, tail observable, CNOT readout) against tc ----------

BUILDS = {"qnn": hea_build, "qnn_cnot": cnot_build}


def _inputs(n, depth, readout, complex_input, shape):
    """(key, params, examples) of one comparison, fixed by the case."""
    key = jax.random.PRNGKey(100 * n + 10 * depth + readout % n)
    params = 2.0 * jax.random.normal(key, shape)
    xs = _random_states(jax.random.fold_in(key, 1), 3, 2**n, complex_input)
    return key, params, xs


LABELS = jnp.array([0.0, 1.0, 1.0])


def _loss(apply, p, xs):
    probs = jax.vmap(apply, (None, 0))(p, xs)
    return jnp.mean(LABELS * jnp.log(probs) + (1 - LABELS) * jnp.log(1 - probs)), probs


def _tc_apply(name, n, readout, params):
    return circuit_model(BUILDS[name](n), n, params.shape, readout_qubit=readout)[1]


@functools.cache
def _tc_reference(name, n, depth, readout, complex_input, shape):
    """(loss, probs, grad) of the eager tensorcircuit build, as numpy: several tests compare
    different fused plans of the same case with it, and it costs seconds of op-by-op dispatch.
    It builds no fused model: a test that counts the planner's calls sees only its own."""
    _, params, xs = _inputs(n, depth, readout, complex_input, shape)
    ref_apply = _tc_apply(name, n, readout, params)
    (loss, probs), grad = jax.value_and_grad(lambda p: _loss(ref_apply, p, xs), has_aux=True)(
        params
    )
    return float(loss), np.asarray(probs), np.asarray(grad)


@functools.cache
def _tc_hvp_reference(name, n, depth, readout, complex_input, shape):
    """H v of the tensorcircuit build's loss, forward-over-reverse as qunlearn.hessian; numpy."""
    key, params, xs = _inputs(n, depth, readout, complex_input, shape)
    ref_apply = _tc_apply(name, n, readout, params)
    v = jax.random.normal(jax.random.fold_in(key, 2), params.shape)
    grad = jax.grad(lambda p: _loss(ref_apply, p, xs)[0])
    return np.asarray(jax.jvp(grad, (params,), (v,))[1])


def _compare_with_tc(name, n, depth, readout, complex_input, *, hessian=False):
    model = make_model(name, 2**n, complex_input, depth=depth, readout_qubit=readout)
    shape = jax.eval_shape(model.init, jax.random.PRNGKey(0)).shape
    case = (name, n, depth, readout, complex_input, shape)
    key, params, xs = _inputs(*case[1:])
    fast = jax.jit(jax.value_and_grad(lambda p: _loss(model.apply, p, xs), has_aux=True))
    (l_fast, p_fast), g_fast = fast(params)
    l_ref, p_ref, g_ref = _tc_reference(*case)
    np.testing.assert_allclose(p_fast, p_ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(g_fast, g_ref, atol=1e-10, rtol=0)
    assert abs(float(l_fast) - l_ref) <= 1e-10
    assert float(np.max(np.abs(g_ref))) > 1e-3  # the comparison is not vacuous
    if hessian:
        v = jax.random.normal(jax.random.fold_in(key, 2), params.shape)
        hv_fast = jax.jit(
            lambda p, v: jax.jvp(jax.grad(lambda q: _loss(model.apply, q, xs)[0]), (p,), (v,))[1]
        )(params, v)
        hv_ref = _tc_hvp_reference(*case)
        np.testing.assert_allclose(hv_fast, hv_ref, atol=1e-9, rtol=0)
    return g_fast, g_ref


CASES = [  # (model name, n_qubits, depth, complex input); the readout is the last qubit
    ("qnn", 4, 2, False),
    ("qnn", 5, 3, True),
    ("qnn", 6, 2, True),
    # the paper's MNIST and XXZ circuits: the same code paths as the smaller cases (fused GEMMs,
    # light cone, tail), so slow-marked; `pytest -m slow` runs them
    pytest.param("qnn", 10, 6, False, marks=pytest.mark.slow),
    pytest.param("qnn", 12, 4, True, marks=pytest.mark.slow),
    ("qnn_cnot", 4, 3, False),
    ("qnn_cnot", 5, 2, True),
]


@pytest.mark.parametrize(("name", "n", "depth", "complex_input"), CASES)
def test_fused_matches_tensorcircuit(name, n, depth, complex_input):
    _compare_with_tc(name, n, depth, -1, complex_input)


def test_cnot_permutation_is_a_bijection():
    perm = cnot_ring_permutation(5)
    assert sorted(perm.tolist()) == list(range(32))


def test_complex64_close_to_complex128():
    m128 = make_model("qnn", 64, True, depth=2)
    m64 = make_model("qnn", 64, True, depth=2, dtype="complex64")
    params = m128.init(jax.random.PRNGKey(0)) * 100
    x = _random_states(jax.random.PRNGKey(1), 3, 64, True)
    p128 = _batched(m128.apply)(params, x)
    p64 = _batched(m64.apply)(params, x)
    assert p64.dtype == jnp.float32
    np.testing.assert_allclose(p64, p128, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "n", "depth", "readout", "complex_input"),
    [
        ("qnn", 7, 4, 3, True),  # light cone narrower than the ring, readout mid-ring
        ("qnn", 8, 5, 0, False),  # two-segment layers, deferred RZZs, tail observable
        ("qnn", 3, 5, 1, True),  # window wider than the ring
        ("qnn", 6, 1, -1, False),  # depth 1: one rotation on the readout qubit
        ("qnn_cnot", 7, 3, 2, True),  # CNOT ring as a permutation, readout sign
    ],
)
def test_readouts_and_light_cone_match_tensorcircuit(name, n, depth, readout, complex_input):
    _compare_with_tc(name, n, depth, readout, complex_input)


def test_gates_outside_the_light_cone_get_zero_gradient():
    n, depth = 8, 4
    g_fast, g_ref = _compare_with_tc("qnn", n, depth, -1, False)
    outside = np.ones(g_fast.shape, bool)
    for layer, (qubits, edges) in enumerate(qnn_plan._light_cone(n, depth, n - 1)):
        outside[layer, sorted(qubits), :3] = False
        outside[layer, sorted(edges), 3] = False
    assert outside.sum() > 20 and (~outside).sum() > 20
    assert np.all(np.asarray(g_fast)[outside] == 0.0)
    assert float(np.max(np.abs(g_ref[outside]))) < 1e-12  # zero mathematically in tc too


@pytest.mark.parametrize(
    ("n", "depth", "readout", "complex_input"), [(8, 5, 0, False), (7, 4, 3, True)]
)
def test_many_gemm_plans_match_tensorcircuit(monkeypatch, n, depth, readout, complex_input):
    """complex128 plans for small rings fold most layers into the tail; the complex64 cost model
    (no stored-state cost) keeps more GEMM layers, with deferred RZZs folded into their columns."""
    monkeypatch.setattr(qnn_plan, "_STORE_COST", {"complex128": 0.0, "complex64": 0.0})
    ops = qnn_plan._hea_plan(n, depth, readout % n)
    assert sum(op[0] == "gemm" for op in ops) >= 2
    assert any(op[0] in ("gemm", "tail") and op[3] for op in ops)  # deferred RZZs folded
    planned, hea_plan = [], qnn_plan._hea_plan
    monkeypatch.setattr(qnn_plan, "_hea_plan", lambda *a: planned.append(a) or hea_plan(*a))
    _compare_with_tc("qnn", n, depth, readout, complex_input)
    assert planned == [(n, depth, readout % n, 0.0)]  # the patched cost reached the factory


def test_elementwise_rzz_pass_matches_tensorcircuit(monkeypatch):
    """The planner folds every split RZZ into a later GEMM at the sizes in use; force the
    elementwise fallback to keep it proven."""
    monkeypatch.setattr(qnn_plan, "_PHASE_COST", -100.0)
    assert any(op[0] == "phase" for op in qnn_plan._hea_plan(6, 4, 0))
    _compare_with_tc("qnn", 6, 4, 0, True)


@pytest.mark.parametrize(("name", "n", "depth"), [("qnn", 5, 3), ("qnn_cnot", 4, 2)])
def test_hessian_vector_products_match_tensorcircuit(name, n, depth):
    _compare_with_tc(name, n, depth, -1, True, hessian=True)


@pytest.mark.parametrize("name", ["qnn", "qnn_cnot"])
def test_vmapped_runs_and_real_inputs(name):
    model = make_model(name, 2**6, False, depth=3)
    params = jax.vmap(model.init)(jax.random.split(jax.random.PRNGKey(3), 2)) * 50
    xs = _random_states(jax.random.PRNGKey(4), 8, 2**6, False).reshape(2, 4, -1)

    def loss(p, x):
        return jnp.mean(jnp.log(jax.vmap(model.apply, (None, 0))(p, x)))

    step = jax.jit(jax.value_and_grad(loss))
    runs = jax.jit(jax.vmap(jax.value_and_grad(loss)))(params, xs)
    for r in range(2):
        single = step(params[r], xs[r])
        np.testing.assert_allclose(runs[0][r], single[0], rtol=1e-12)
        np.testing.assert_allclose(runs[1][r], single[1], rtol=1e-12, atol=1e-15)
        # real amplitudes take a half-width first GEMM: same as the complex path
        as_complex = step(params[r], xs[r].astype(jnp.complex128))
        np.testing.assert_allclose(as_complex[0], single[0], rtol=1e-12)
        np.testing.assert_allclose(as_complex[1], single[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_wide_ring_plans_stay_cheap_and_fold_all_rzz(dtype):
    for n, depth in [(10, 6), (12, 4), (14, 8), (16, 12)]:
        ops = qnn_plan._hea_plan(n, depth, n - 1, qnn_plan._STORE_COST[dtype])
        assert ops[-1][0] == "tail"
        assert all(op[0] != "phase" for op in ops)
        assert max(len(op[2]) for op in ops if op[0] in ("gemm", "tail")) <= qnn_plan.TAIL_MAX


@pytest.mark.parametrize("name", ["qnn", "qnn_cnot"])
def test_a_global_phase_of_the_input_changes_nothing(name):
    """<Z> cannot see a global phase, so XXZ data with random phases (dataset option phase =
    "random") gives the QNN exactly the same task."""
    model = make_model(name, 2**5, True, depth=3)
    params = jax.random.normal(jax.random.PRNGKey(0), model.init(jax.random.PRNGKey(0)).shape)
    xs = _random_states(jax.random.PRNGKey(1), 6, 2**5, True)
    phases = jnp.exp(1j * jax.random.uniform(jax.random.PRNGKey(2), (6, 1), maxval=2 * jnp.pi))
    probs = _batched(model.apply)
    np.testing.assert_allclose(probs(params, xs * phases), probs(params, xs), atol=1e-13)


@pytest.mark.parametrize("name", ["qnn", "qnn_cnot"])
def test_linear_readout_is_the_expectation_mapped_to_a_probability(name):
    """readout="linear" is (1 + <Z>)/2 of the same circuit: <Z> recovered from the sigmoid one."""
    sigmoid = make_model(name, 2**4, True, depth=2)
    linear = make_model(name, 2**4, True, depth=2, readout="linear")
    params = jax.random.normal(jax.random.PRNGKey(0), sigmoid.init(jax.random.PRNGKey(0)).shape)
    xs = _random_states(jax.random.PRNGKey(1), 5, 2**4, True)
    z = jax.scipy.special.logit(_batched(sigmoid.apply)(params, xs)) / 5.0
    np.testing.assert_allclose(_batched(linear.apply)(params, xs), (1 + z) / 2, atol=1e-12)
    with pytest.raises(QunlearnError, match="hyper.readout = 'softmax' is not a QNN readout"):
        make_model(name, 2**4, True, readout="softmax")


@pytest.mark.parametrize("name", ["qnn", "qnn_cnot"])
def test_unnormalised_inputs_are_used_as_given(name):
    """Amplitudes go into the circuit as given, as in the reference's simulator (the reference
    MNIST encoding is not a unit vector): <Z>(c x) = c^2 <Z>(x); a unit input is unchanged."""
    model = make_model(name, 2**5, False, depth=3, scale=1.0)
    params = jax.random.normal(jax.random.PRNGKey(0), model.init(jax.random.PRNGKey(0)).shape)
    xs = _random_states(jax.random.PRNGKey(1), 4, 2**5, False)
    z = jax.jit(jax.vmap(lambda x: jax.scipy.special.logit(model.apply(params, x))))
    for c in (0.5, 1.7, 3.0):
        np.testing.assert_allclose(z(c * xs), c**2 * z(xs), rtol=1e-9, atol=1e-12)
    # tensorcircuit-ng (the reference's simulator) takes the amplitudes as given too
    _, tc_apply = circuit_model(BUILDS[name](5), 5, params.shape, scale=1.0)
    tc_z = jax.vmap(lambda x: jax.scipy.special.logit(tc_apply(params, x)))
    np.testing.assert_allclose(z(3.0 * xs), tc_z(3.0 * xs), atol=1e-9)
    np.testing.assert_allclose(z(xs), tc_z(xs), atol=1e-10)  # unit inputs: unchanged


@pytest.mark.parametrize(
    ("name", "n", "complex_input"),
    [("qnn", 4, False), ("qnn", 5, True), ("qnn_cnot", 4, True), ("qnn_cnot", 5, False)],
)
def test_gradient_matches_central_differences(name, n, complex_input):
    """jax.grad of the fused simulator's loss against float64 central differences, independent of
    tensorcircuit: every angle, and one random direction through all of them."""
    model = make_model(name, 2**n, complex_input, depth=2)
    key = jax.random.PRNGKey(7 * n + complex_input)
    params = jax.random.normal(key, model.init(key).shape)  # O(1) angles: gradients are O(0.1)
    xs = _random_states(jax.random.fold_in(key, 1), 4, 2**n, complex_input)
    labels = jnp.array([0.0, 1.0, 1.0, 0.0])

    @jax.jit
    def loss(p):
        probs = jax.vmap(model.apply, (None, 0))(p, xs)
        return -jnp.mean(labels * jnp.log(probs) + (1 - labels) * jnp.log1p(-probs))

    assert params.dtype == jnp.float64 and loss(params).dtype == jnp.float64
    grad = np.asarray(jax.jit(jax.grad(loss))(params))
    eps = 1e-5
    basis = np.eye(params.size).reshape(params.size, *params.shape)
    fd = np.array([(loss(params + eps * e) - loss(params - eps * e)) / (2 * eps) for e in basis])
    np.testing.assert_allclose(grad.reshape(-1), fd, rtol=1e-6, atol=1e-9)
    v = jax.random.normal(jax.random.fold_in(key, 2), params.shape)
    fd_v = (loss(params + eps * v) - loss(params - eps * v)) / (2 * eps)
    np.testing.assert_allclose(np.vdot(grad, v), fd_v, rtol=1e-6)
    assert np.max(np.abs(grad)) > 1e-2  # not vacuous
