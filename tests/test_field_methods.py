"""The methods the field compares (variant "benchmark"), each on a constructed case whose answer
is known, and their parameter-space tools (:mod:`qunlearn.surgery`) against exact references.

* Newton removal of one example from an L2-regularised logistic regression equals retraining
  without it (leave-one-out), to 1e-10 after four steps; one step is already within the
  second-order error;
* SSD with identical Fisher information on D_f and D changes nothing, and dampens a weight that
  only D_f uses by exactly I_D / I_f;
* EU-k with k = every layer is retrain; CF-k and EU-k leave the frozen layers bit for bit;
* SalUn trains only its salient fraction; Fisher forgetting's noise has the variance it claims;
* l1-sparse's weight decays as Jia et al.'s, l1·(1 − e/epochs) in epoch e, through the engine's
  epoch index (which reaches the objective as the true index, epoch by epoch).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.models import Model, make_model
from qunlearn.surgery import (
    certified_epsilon,
    last_layers_mask,
    layer_count,
    mean_square_per_example,
    newton_step,
    top_fraction_mask,
    trainable,
)
from qunlearn.train import bce
from qunlearn.unlearn import make_method, make_split, make_unlearn

N, D, N_FORGET, EPOCHS = 40, 8, 12, 3


def _toy(n=N, d=D, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) >= n // 2).astype(int)
    x = rng.normal(size=(n, d)) + 1.5 * y[:, None] * np.eye(d)[0]
    return jnp.asarray(x), jnp.asarray(y)


# one compiled program per split shape; eager, each of its gathers would compile on its own
_make_split = jax.jit(make_split, static_argnames="n_forget")


def _split(x, y, forget_rows, x_val=None, y_val=None):
    """A split whose D_f is ``forget_rows`` (labels flipped there: the poison)."""
    mask = np.zeros(len(y), bool)
    mask[np.asarray(forget_rows)] = True
    y_noisy = np.where(mask, 1 - np.asarray(y), y)
    x_val = x if x_val is None else x_val
    y_val = y if y_val is None else y_val
    return _make_split(x, y, y_noisy, mask, x_val, y_val, n_forget=len(forget_rows))


def logistic(dim):
    """Logistic regression as a qunlearn model: params {"w": (dim,), "b": ()}."""

    def init(key):
        return {"w": 0.1 * jax.random.normal(key, (dim,)), "b": jnp.zeros(())}

    def apply(params, x):
        return jax.nn.sigmoid(x @ params["w"] + params["b"])

    return Model(init, apply, "logistic", {})


def _method(name, model, n_forget=N_FORGET, n=N, **options):
    return make_method(
        name,
        model,
        n_retain=n - n_forget,
        n_forget=n_forget,
        epochs=EPOCHS,
        batch_size=8,
        **options,
    )


def _unlearn(model, method, key, start, teacher, split):
    run = jax.jit(make_unlearn(model, method, lr=0.05, epochs=EPOCHS, trajectory=False))
    return run(key, start, teacher, split, dict(method.weights))[0]


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


# --- the tools --------------------------------------------------------------------------------


def test_layers_of_an_mlp_and_a_qnn():
    mlp = make_model("mlp", D, False, hidden=(4, 3)).init(jax.random.PRNGKey(0))
    qnn = make_model("qnn", D, False, depth=2).init(jax.random.PRNGKey(0))
    assert layer_count(mlp) == 3 and layer_count(qnn) == 2
    mask = last_layers_mask(mlp, 2)
    assert [bool(np.all(m["w"])) for m in mask] == [False, True, True]
    assert not np.any(mask[0]["b"]) and np.all(mask[2]["b"])
    qmask = last_layers_mask(qnn, 1)
    assert qmask.shape == qnn.shape and not qmask[0].any() and qmask[1].all()
    with pytest.raises(QunlearnError, match="list of layers"):
        layer_count({"w": jnp.zeros(3), "b": jnp.zeros(())})


def test_trainable_keeps_values_and_zeroes_the_frozen_gradient():
    params = [jnp.arange(3.0), jnp.arange(2.0)]
    mask = [np.array([True, False, True]), np.array([False, False])]

    def loss(p):
        q = trainable(p, mask)
        return jnp.sum(q[0] ** 2) + jnp.sum(q[1] ** 3)

    grads = jax.grad(loss)(params)
    np.testing.assert_array_equal(grads[0], [0.0, 0.0, 4.0])
    np.testing.assert_array_equal(grads[1], [0.0, 0.0])
    assert all(np.array_equal(a, b) for a, b in zip(trainable(params, mask), params, strict=True))


def test_mean_square_per_example_equals_the_loop_over_examples():
    model = make_model("mlp", D, False, hidden=(4,))
    params = model.init(jax.random.PRNGKey(3))
    x, y = _toy(n=13)  # chunks of 5: a padded last chunk

    def grad_one(p, xi, yi):
        return jax.grad(lambda q: bce(model.apply(q, xi), yi))(p)

    got = mean_square_per_example(grad_one, params, x, y, chunk=5)
    one = jax.jit(grad_one)  # the loop's reference: one program, not one per op
    want = jax.tree_util.tree_map(
        lambda *g: sum(gi**2 for gi in g) / len(g),
        *[one(params, x[i], y[i]) for i in range(13)],
    )
    for a, b in zip(_leaves(got), _leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_top_fraction_mask_is_one_global_threshold():
    scores = {"a": jnp.array([5.0, 1.0, 3.0]), "b": jnp.array([[4.0, 0.0], [2.0, 6.0]])}
    mask = top_fraction_mask(scores, 3 / 7)
    np.testing.assert_array_equal(mask["a"], [True, False, False])
    np.testing.assert_array_equal(mask["b"], [[True, False], [False, True]])


def test_newton_step_solves_a_quadratic_in_one_step():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    h, b = a @ a.T + np.eye(6), rng.normal(size=6)
    params = {"u": jnp.asarray(rng.normal(size=4)), "v": jnp.asarray(rng.normal(size=2))}

    def loss(p):
        z = jnp.concatenate([p["u"], p["v"]])
        return 0.5 * z @ h @ z - b @ z

    out, grad_norm = newton_step(loss, params, damping=0.0, cg_steps=50)
    np.testing.assert_allclose(
        np.concatenate([out["u"], out["v"]]), np.linalg.solve(h, b), rtol=1e-10
    )
    assert grad_norm > 0


def test_certified_epsilon_formula():
    assert certified_epsilon(0.1, 0.5, 1e-5) == pytest.approx(math.sqrt(2 * math.log(1.5e5)) * 0.2)
    with pytest.raises(QunlearnError):
        certified_epsilon(0.1, 0.0, 1e-5)


# --- the methods on constructed cases ---------------------------------------------------------


def _fit_logistic(model, x, y, l2):
    """The regularised optimum on (x, y) by Newton's method, 25 exact steps from zero."""
    from qunlearn.unlearn import retain_loss

    loss = retain_loss(model, x, y, l2)
    step = jax.jit(lambda p: newton_step(loss, p, damping=0.0, cg_steps=2 * x.shape[1])[0])
    params = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
    for _ in range(25):
        params = step(params)
    return params


@functools.cache
def _leave_one_out_case():
    """(model, l2, split, teacher, leave-one-out optimum), shared by both curvatures."""
    x, y = _toy(n=30, d=4)
    split = _split(x, y, [7])  # D_f = example 7, mislabelled: the one to remove
    model, l2 = logistic(4), 1e-2
    full = _fit_logistic(model, x, split["y_train_noisy"], l2)  # the teacher: optimum on all 30
    keep = np.arange(30) != 7
    loo = _fit_logistic(model, x[keep], y[keep], l2)  # retraining without example 7
    return model, l2, split, full, loo


@pytest.mark.parametrize("curvature", ["hessian", "gauss_newton"])
def test_newton_removal_of_one_example_equals_leave_one_out(curvature):
    """For CE the Gauss-Newton matrix IS the Hessian of a logistic regression: both agree."""
    model, l2, split, full, loo = _leave_one_out_case()
    errors = []
    for steps in (1, 4):
        method = _method(
            "newton",
            model,
            n_forget=1,
            n=30,
            newton_steps=steps,
            damping=0.0,
            cg_steps=10,
            curvature=curvature,
            l2=l2,
        )
        out = _unlearn(model, method, jax.random.PRNGKey(0), full, full, split)
        errors.append(
            max(np.max(np.abs(a - b)) for a, b in zip(_leaves(out), _leaves(loo), strict=True))
        )
    moved = max(np.max(np.abs(a - b)) for a, b in zip(_leaves(full), _leaves(loo), strict=True))
    assert errors[0] < 0.2 * moved  # one step: the influence, up to second order
    assert errors[1] < 1e-10  # four (quadratic convergence): the leave-one-out optimum itself


def test_ssd_with_identical_fisher_changes_nothing_and_dampens_what_only_d_f_uses():
    x0, y0 = _toy(n=N // 2)
    model = logistic(D)
    teacher = model.init(jax.random.PRNGKey(1))
    # D_f is a copy of D_r, labels included (D_f's poisoned labels are D_r's true ones): I_f = I_D
    x, y = np.concatenate([x0, x0]), np.concatenate([1 - y0, y0])
    method = _method("ssd", model, n_forget=N // 2, selection=1.5)  # any in [1, 2) selects nothing
    out = _unlearn(
        model, method, jax.random.PRNGKey(0), teacher, teacher, _split(x, y, range(N // 2))
    )
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(out), _leaves(teacher), strict=True))

    x, y = _toy()
    # feature 3 is non-zero on the 4 forget rows only: I_D(w_3) = (4 / 40)·I_f(w_3) < I_f / 10
    x = np.array(x)
    x[:, 3] = np.where(np.arange(N) < 4, 2.0, 0.0)
    method = _method("ssd", model, n_forget=4, n=N, selection=5.0, dampening=1.0)
    out = _unlearn(
        model, method, jax.random.PRNGKey(0), teacher, teacher, _split(x, y, [0, 1, 2, 3])
    )
    np.testing.assert_allclose(out["w"][3], teacher["w"][3] * 4 / N, rtol=1e-10)


def test_eu_k_with_every_layer_is_retrain_and_frozen_layers_stay():
    model = make_model("mlp", D, False, hidden=(4,))
    x, y = _toy()
    split = _split(x, y, list(range(0, 36, 3)))
    teacher = model.init(jax.random.PRNGKey(1))
    key_init, key_batches = jax.random.split(jax.random.PRNGKey(9))
    every = _method("eu_k", model, k=2)
    retrain = _method("retrain", model)
    a = _unlearn(model, every, key_batches, every.start(key_init, teacher), teacher, split)
    b = _unlearn(model, retrain, key_batches, retrain.start(key_init, teacher), teacher, split)
    for u, v in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)
    for name in ("eu_k", "cf_k"):
        method = _method(name, model, k=1)
        out = _unlearn(model, method, key_batches, method.start(key_init, teacher), teacher, split)
        np.testing.assert_array_equal(out[0]["w"], teacher[0]["w"])  # the first layer: frozen
        assert not np.allclose(out[1]["w"], teacher[1]["w"])  # the last: trained
        fresh = name == "eu_k"
        assert np.allclose(method.start(key_init, teacher)[1]["w"], teacher[1]["w"]) != fresh


def test_salun_trains_only_its_salient_fraction():
    model = make_model("mlp", D, False, hidden=(4,))
    x, y = _toy()
    split = _split(x, y, list(range(0, 36, 3)))
    teacher = model.init(jax.random.PRNGKey(1))
    method = _method("salun", model, sparsity=0.25)
    out = _unlearn(model, method, jax.random.PRNGKey(2), teacher, teacher, split)
    moved = sum(int(np.sum(a != b)) for a, b in zip(_leaves(out), _leaves(teacher), strict=True))
    total = sum(a.size for a in _leaves(teacher))
    assert 0 < moved <= math.ceil(0.25 * total)
    plain = _method("random_label", model)
    out = _unlearn(model, plain, jax.random.PRNGKey(2), teacher, teacher, split)
    assert (
        sum(int(np.sum(a != b)) for a, b in zip(_leaves(out), _leaves(teacher), strict=True))
        > 0.5 * total
    )


def test_fisher_forgetting_noise_has_the_stated_variance():
    model = make_model("mlp", D, False, hidden=(16,))
    x, y = _toy()
    split = _split(x, y, list(range(0, 36, 3)))
    teacher = model.init(jax.random.PRNGKey(1))
    method = _method("fisher_forgetting", model, scale=1e-4, max_inverse=1e2)
    out = _unlearn(model, method, jax.random.PRNGKey(2), teacher, teacher, split)

    def score(p, xi, yi):
        prob, grad = jax.value_and_grad(model.apply)(p, xi)
        return jax.tree_util.tree_map(lambda g: g / jnp.sqrt(prob * (1 - prob)), grad)

    fisher = mean_square_per_example(score, teacher, split["x_retain"], split["y_retain"])
    z = np.concatenate(
        [
            ((a - t) / np.sqrt(1e-4 * np.minimum(1 / (f + 1e-8), 1e2))).ravel()
            for a, t, f in zip(_leaves(out), _leaves(teacher), _leaves(fisher), strict=True)
        ]
    )
    assert z.size > 150 and abs(z.mean()) < 4 / math.sqrt(z.size) and abs(z.var() - 1) < 0.25


def test_the_editing_methods_keep_float32_params_float32():
    """A complex64 QNN has float32 angles and a float64 readout (the Fisher scores widen)."""
    model = make_model("mlp", D, False, hidden=(4,), dtype="float32")
    x, y = _toy()
    split = _split(x, y, list(range(0, 36, 3)))
    teacher = model.init(jax.random.PRNGKey(1))
    for name in ("ssd", "fisher_forgetting", "newton", "salun"):
        out = _unlearn(model, _method(name, model), jax.random.PRNGKey(2), teacher, teacher, split)
        assert {leaf.dtype for leaf in _leaves(out)} == {np.dtype("float32")}, name


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("eu_k", {"k": 3}, "eu_k k must be an integer from 1 to the model's 2 layers, got 3"),
        ("cf_k", {"k": 0}, "cf_k k must be an integer from 1 to the model's 2 layers, got 0"),
        ("salun", {"sparsity": 1.5}, "salun option sparsity must be a number in (0.0, 1.0]"),
        ("newton", {"curvature": "hessain"}, "did you mean 'hessian'"),
        ("newton", {"cg_steps": 2.5}, "newton option cg_steps must be an integer > 0"),
        ("ssd", {"selection": -1}, "ssd option selection must be a number > 0.0"),
        ("ssd", {"selection": 10.0}, "ssd selection 10.0 selects no weight when D_f is 12 of"),
        ("l1_sparse", {"l1": -0.1}, "loss weight l1 must be a finite number >= 0"),
        ("l1_sparse", {"schedule": "cosine"}, "l1_sparse schedule must be one of ['linear', 'c"),
        ("newton", {"dampnig": 0.1}, "unlearning method 'newton' has no option 'dampnig'"),
    ],
)
def test_bad_options_fail_in_one_line(name, options, message):
    model = make_model("mlp", D, False, hidden=(4,))
    with pytest.raises(QunlearnError) as err:
        _method(name, model, **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_engine_hands_the_objective_its_epoch_index():
    """With one SGD step of lr 1 per epoch and objective e·Σθ, the params fall by 0 + 1 + ... +
    (E − 1); without ``epoch_index`` the objective's extra has no "epoch" at all."""
    import optax

    from qunlearn.train import make_train

    def plan(key):
        return jnp.zeros((1, 1), int), jnp.ones((1, 1))

    def objective(params, batch, extra):
        return extra["epoch"] * jnp.sum(params)

    epochs = 5
    train = make_train(objective, optax.sgd(1.0), epochs=epochs, plan=plan, epoch_index=True)
    params, _ = jax.jit(train)(jax.random.PRNGKey(0), jnp.ones(3), {"x": jnp.zeros((1, 1))}, {})
    np.testing.assert_array_equal(params, 1.0 - epochs * (epochs - 1) / 2)

    seen = []

    def no_epoch(params, batch, extra):
        seen.append(set(extra))
        return jnp.sum(params)

    make_train(no_epoch, optax.sgd(1.0), epochs=1, plan=plan)(
        jax.random.PRNGKey(0), jnp.ones(3), {"x": jnp.zeros((1, 1))}, {}
    )
    assert seen and "epoch" not in seen[0]


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_l1_sparse_weight_follows_its_schedule(schedule):
    """The objective minus the same objective at l1 = 0 is l1·(1 − e/epochs)·Σ|θ| (linear, the
    default) or l1·Σ|θ| (constant) in epoch e, to rounding."""
    x, y = _toy()
    model = logistic(D)
    split = _split(x, y, list(range(N_FORGET)))
    options = {} if schedule == "linear" else {"schedule": schedule}
    method = _method("l1_sparse", model, l1=0.3, **options)
    params = model.init(jax.random.PRNGKey(1))
    data, extra = method.inputs(params, split)
    batch = jax.tree_util.tree_map(lambda a: a[:8], data) | {"w": jnp.ones(8)}
    norm = float(jnp.sum(jnp.abs(params["w"])) + jnp.abs(params["b"]))
    for e in range(EPOCHS):

        def at(l1, e=e):
            weights = dict(method.weights) | {"l1": l1}
            return float(method.objective(params, batch, extra | {"weights": weights, "epoch": e}))

        factor = 1 - e / EPOCHS if schedule == "linear" else 1.0
        assert at(0.3) - at(0.0) == pytest.approx(0.3 * factor * norm, rel=1e-12)
