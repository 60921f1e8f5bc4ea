"""Multi-class models, the general label flip and class-level deletion (issue 30).

Exact references: the QNN's softmax readout against a gate-by-gate tensorcircuit-ng circuit, the
losses against their formulas, gradients against finite differences (the model contract). The
binary path stays bit for bit (``n_classes = 2`` and the default agree; test_noise.py pins the
binary flips' draws). Bad inputs are one line, exit 2, nothing written.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn import audit
from qunlearn.cli import main
from qunlearn.data import check_loaded, load_dataset, n_classes
from qunlearn.data.cache import Dataset
from qunlearn.errors import QunlearnError
from qunlearn.models import make_model
from qunlearn.noise import check_poisoned, flip_labels, n_poisoned, randomize_features
from qunlearn.testing import check_model, check_noise
from qunlearn.train import cross_entropy, hits, supervised_objective
from qunlearn.unlearn import full_kl, kl_bernoulli

jax.config.update("jax_enable_x64", True)


def _sorted_labels(n_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(n_classes), per_class).astype(np.int32)


# --- models ----------------------------------------------------------------------------------


@jax.jit
def _tc_expectations(params, x):
    """⟨Z_q⟩ of every qubit q of the 4-qubit qnn circuit built gate by gate with tensorcircuit-ng
    (the reference); one compiled program for every readout choice below, not one eager op
    compile per gate."""
    import tensorcircuit as tc

    tc.set_backend("jax")
    tc.set_dtype("complex128")
    n = 4
    amplitudes = jnp.pad(jnp.asarray(x, jnp.complex128), (0, 2**n - len(x)))
    circuit = tc.Circuit(n, inputs=amplitudes)
    for layer in params:
        for q in range(n):
            circuit.rx(q, theta=layer[q, 0])
            circuit.ry(q, theta=layer[q, 1])
            circuit.rx(q, theta=layer[q, 2])
        for q in range(n):
            circuit.rzz(q, (q + 1) % n, theta=layer[q, 3])
    return jnp.stack([jnp.real(circuit.expectation_ps(z=[q])) for q in range(n)])


@pytest.mark.parametrize("readout_qubit, readouts", [(-1, [1, 2, 3]), (1, [3, 0, 1])])
def test_qnn_softmax_readout_equals_a_gate_by_gate_circuit(readout_qubit, readouts):
    """4 qubits from 8 amplitudes padded by one leading qubit in |0>; the C = 3 readout qubits
    end at readout_qubit on the ring (class k reads the k-th)."""
    model = make_model(
        "qnn", 8, False, depth=2, n_qubits=4, n_classes=3, readout_qubit=readout_qubit
    )
    params = 0.8 * jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4), jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(2), (8,), jnp.float64)
    x = x / jnp.linalg.norm(x)
    z = np.asarray(_tc_expectations(params, x))[readouts]
    # jitted: one compile, where the eager circuit compiles over a hundred small programs
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), jax.nn.softmax(5.0 * z), atol=1e-10)


@pytest.mark.parametrize("name, hyper", [("mlp", {"hidden": [5]}), ("qnn", {"depth": 1})])
def test_multiclass_models_pass_the_model_contract(name, hyper):
    from qunlearn.models import MODELS

    ran = check_model(MODELS.resolve(name), input_dim=8, hyper=hyper | {"n_classes": 3})
    assert "gradient = finite differences" in ran


def test_the_contract_check_holds_outputs_to_the_data_classes():
    from qunlearn.models import MODELS
    from qunlearn.testing import ContractError

    with pytest.raises(ContractError, match=r"must be a \(3,\) vector"):
        check_model(MODELS.resolve("mlp"), input_dim=8, hyper={"hidden": [3]}, n_classes=3)


@pytest.mark.parametrize("name, hyper", [("mlp", {"hidden": [5]}), ("qnn", {"depth": 2})])
def test_two_classes_is_the_binary_model_bit_for_bit(name, hyper):
    default = make_model(name, 8, False, **hyper)
    explicit = make_model(name, 8, False, **hyper, n_classes=2)
    params = default.init(jax.random.PRNGKey(0))
    xs = jax.random.normal(jax.random.PRNGKey(3), (4, 8), jnp.float64)
    # jitted: one compile each, where the eager circuit compiles each small op on its own
    out = jax.jit(jax.vmap(default.apply, (None, 0)))(params, xs)
    assert out.shape == (4,)
    assert np.array_equal(out, jax.jit(jax.vmap(explicit.apply, (None, 0)))(params, xs))


@pytest.mark.parametrize(
    "hyper, match",
    [
        ({"n_classes": 1}, "must be an integer >= 2"),
        ({"n_classes": 3.0}, "must be an integer >= 2"),
        ({"n_classes": 3}, "set hyper.n_qubits = 3"),  # 4 amplitudes: 2 qubits
        ({"n_classes": 3, "n_qubits": 3, "readout": "linear"}, "for binary models"),
        ({"n_classes": 3, "n_qubits": 3, "shots": 100}, "for binary models"),
        ({"n_classes": 3, "n_qubits": 3, "circuit_noise": {"readout_p01": 0.1}}, "binary"),
        ({"n_qubits": 1}, "fewer than the data's 2 qubits"),
    ],
)
def test_bad_multiclass_hyper_is_one_line(hyper, match):
    with pytest.raises(QunlearnError, match=match) as err:
        make_model("qnn", 4, False, **hyper)
    assert "\n" not in str(err.value)


# --- losses, accuracy, margins -----------------------------------------------------------------


def test_cross_entropy_hits_and_label_smoothing_for_c_classes():
    p = jnp.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]])
    y = jnp.array([2.0, 1.0])
    np.testing.assert_allclose(cross_entropy(p, y), -np.log([0.5, 0.2]), rtol=1e-12)
    assert hits(p, y).tolist() == [True, False]
    binary = jnp.array([0.9, 0.2])
    np.testing.assert_allclose(
        cross_entropy(binary, jnp.array([1.0, 1.0])), -np.log([0.9, 0.2]), rtol=1e-12
    )

    class Fixed:  # a "model" whose probabilities are p whatever the input
        sample = None

        @staticmethod
        def apply(params, x):
            return params[x.astype(int)]

    batch = {"x": jnp.array([0.0, 1.0]), "y": y, "w": jnp.ones(2)}
    eps = 0.3
    smoothed = supervised_objective(Fixed, label_smoothing=eps)(p, batch, None)
    target = np.eye(3)[[2, 1]] * (1 - eps) + eps / 3
    np.testing.assert_allclose(smoothed, -np.mean(np.sum(target * np.log(p), 1)), rtol=1e-9)


def test_oriented_margins():
    p1 = jnp.array([0.9, 0.2, 0.5])
    two = jnp.stack([1 - p1, p1], -1)
    labels = jnp.array([1, 0, 1])
    logit = audit.margin(p1)
    expected = jnp.where(labels == 1, logit, -logit)
    np.testing.assert_allclose(audit.margin(two, labels), expected, atol=1e-9)
    three = jnp.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    np.testing.assert_allclose(
        audit.margin(three, jnp.array([2, 1])),
        [np.log(0.2 / 0.5), np.log(0.6 / 0.3)],
        rtol=1e-9,
    )


def test_full_kl_is_the_categorical_kl():
    p = jnp.array([[0.2, 0.3, 0.5]])
    q = jnp.array([[0.4, 0.4, 0.2]])
    np.testing.assert_allclose(full_kl(p, q), [np.sum(p * np.log(p / q))], rtol=1e-9)
    a, b = jnp.array([0.3]), jnp.array([0.6])
    assert np.array_equal(full_kl(a, b), kl_bernoulli(a, b))


# --- the general label flip ------------------------------------------------------------------


def test_flip_to_another_class_n_over_c_per_class_and_uniform():
    x = jnp.zeros((60, 4))
    y = _sorted_labels(3, 20)
    assert n_poisoned(60, 0.3, "label_flip", 3) == 18
    assert n_poisoned(60, 0.3, "feature_randomization", 3) == 18
    assert n_poisoned(60, 0.25, "feature_randomization", 3) == 15  # 15 is a multiple of 3
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    _, flipped, masks = jax.vmap(lambda k: flip_labels(k, x, y, 0.3))(keys)
    flipped, masks = np.asarray(flipped), np.asarray(masks)
    assert (masks.reshape(400, 3, 20).sum(-1) == 6).all()  # n/C = 6 per class
    assert (flipped[masks] != np.broadcast_to(y, masks.shape)[masks]).all()
    assert (flipped[~masks] == np.broadcast_to(y, masks.shape)[~masks]).all()
    # each flipped label is either other class with probability 1/2: 2400 draws per class
    for c in range(3):
        to = flipped[masks & (y == c)]
        share = np.mean(to == (c + 1) % 3)
        assert abs(share - 0.5) < 5 * np.sqrt(0.25 / len(to)), (c, share)
    check_poisoned("label_flip", x, y, 0.3, flip_labels(keys[0], x, y, 0.3))
    check_noise(flip_labels, n_classes=3)
    check_noise(randomize_features, n_classes=3)


def test_unsorted_multiclass_labels_are_refused():
    x = jnp.zeros((60, 4))
    y = _sorted_labels(3, 20)
    with pytest.raises(QunlearnError, match="class-sorted with equal blocks"):
        flip_labels(jax.random.PRNGKey(0), x, y[::-1], 0.3)
    with pytest.raises(QunlearnError, match="divisible by the 3 classes"):
        flip_labels(jax.random.PRNGKey(0), x[:59], y[:59], 0.3)


# --- data -----------------------------------------------------------------------------------


def test_iris_three_classes_keeps_the_data_contract():
    data = load_dataset("iris", classes=[0, 1, 2])
    assert n_classes(data) == 3 and data.x_train.shape == (75, 4)
    assert np.array_equal(data.y_train, _sorted_labels(3, 25))
    two = load_dataset("iris")
    assert n_classes(two) == 2  # the default pair stays binary
    bad = Dataset("toy", data.x_train, data.y_train[::-1].copy(), data.x_val, data.y_val, {})
    with pytest.raises(QunlearnError, match="not class-sorted in equal blocks"):
        check_loaded("toy", bad)
    missing = Dataset("toy", data.x_train, data.y_train, data.x_val[:25], data.y_val[:25], {})
    with pytest.raises(QunlearnError, match="every class"):
        check_loaded("toy", missing)


def test_mnist_three_digits_and_their_non_members(tmp_path):
    from qunlearn.data import non_member_pool

    options = {"digits": [0, 1, 2], "n_per_class": 20}
    data = load_dataset("mnist", cache_dir=tmp_path, **options)
    assert n_classes(data) == 3 and np.array_equal(data.y_train, _sorted_labels(3, 20))
    assert data.info["n_train_per_class"] == [20, 20, 20]
    wider = load_dataset("mnist", cache_dir=tmp_path, **(options | {"n_per_class": 25}))
    x, y = non_member_pool(data, 5, cache_dir=tmp_path, **options)
    assert np.array_equal(y, _sorted_labels(3, 5))
    # the next 5 training-split images of each digit after the 20 the data set took
    expected = np.concatenate([wider.x_train[25 * k + 20 : 25 * (k + 1)] for k in range(3)])
    assert np.array_equal(x, expected)


# --- configs: bad inputs through the CLI ------------------------------------------------------

EVAL = """\
experiment = "evaluation"
name = "class_bad"
dataset = "iris"
dataset_options = {{ classes = {classes} }}
alpha = {alpha}
{request}
seed = 0
methods = ["retrain"]

[models.mlp]
model = "mlp"
hyper = {{ hidden = [4]{n_classes} }}
epochs = 1
batch_size = 32
lr = 0.01
unlearn_epochs = 1
unlearn_batch_size = 32
unlearn_lr = 0.001
oracles = 6
teachers = 3
unlearn_seeds = 1
"""


@pytest.mark.parametrize(
    "classes, alpha, request_, n_classes_, match",
    [
        ("[0, 1, 2]", 0.0, 'forget = "class"\nforget_class = 3', ", n_classes = 3", "0..2"),
        ("[0, 1, 2]", 0.3, 'forget = "class"\nforget_class = 0', ", n_classes = 3", "alpha = 0"),
        ("[0, 1, 2]", 0.0, 'forget = "class"', ", n_classes = 3", "set forget_class"),
        ("[0, 1, 2]", 0.3, "forget_class = 1", ", n_classes = 3", 'forget = "class" only'),
        ("[1, 2]", 0.0, 'forget = "class"\nforget_class = 0', "", "binary data set"),
        ("[0, 1, 2]", 0.0, 'forget = "class"\nforget_class = 0', "", "hyper.n_classes = 3"),
    ],
)
def test_bad_class_requests_are_one_line_and_write_nothing(
    tmp_path, capsys, classes, alpha, request_, n_classes_, match
):
    config = tmp_path / "c.toml"
    config.write_text(
        EVAL.format(classes=classes, alpha=alpha, request=request_, n_classes=n_classes_)
    )
    out = tmp_path / "out"
    code = main(["run", str(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and match in lines[0], err
    assert not out.exists()


def _class_deletion(forget_class: int) -> str:
    """EVAL as a valid class deletion on all three Iris classes."""
    return EVAL.format(
        classes="[0, 1, 2]",
        alpha=0.0,
        request=f'forget = "class"\nforget_class = {forget_class}',
        n_classes=", n_classes = 3",
    )


@pytest.mark.parametrize("method", ["newton", "fisher_forgetting"])
def test_binary_only_methods_are_refused_on_c_classes_before_out(tmp_path, capsys, method):
    config = tmp_path / "c.toml"
    text = _class_deletion(0)
    config.write_text(text.replace('methods = ["retrain"]', f'methods = ["retrain", "{method}"]'))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"methods['{method}'] on models.mlp" in err and "binary model" in err, err
    assert not out.exists()


# --- class deletion, end to end ---------------------------------------------------------------


@pytest.mark.slow
def test_class_deletion_is_judged_against_oracles_without_the_class(tmp_path):
    """A tiny class deletion on Iris: D_f is every training flower of class 1, the oracles never
    saw it (they do not predict it), and the scores carry the deleted and kept classes'
    accuracies."""
    config = tmp_path / "c.toml"
    text = _class_deletion(1)
    for key, value in (("epochs", 60), ("lr", 0.05), ("unlearn_epochs", 60), ("unlearn_lr", 0.05)):
        text = "\n".join(
            f"{key} = {value}" if line.startswith(f"{key} = ") else line
            for line in text.splitlines()
        )
    config.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    request = manifest["data"]["forget_request"]
    assert request == {"kind": "class", "n_forget": 25, "n_poisoned": 0, "forget_class": 1}
    rows = [line.split(",") for line in (out / "results.csv").read_text().splitlines()]
    head = rows[0]
    at = {name: head.index(name) for name in ("group", "split", "metric", "value")}
    acc = {
        (r[at["group"]], r[at["split"]]): float(r[at["value"]])
        for r in rows[1:]
        if r[at["metric"]] == "acc_true_mean"
    }
    # never trained on class 1: it never predicts it
    assert acc[("oracle", "val_deleted_class")] == 0.0
    assert acc[("teacher", "val_deleted_class")] > 0.5
    assert acc[("oracle", "val_kept_classes")] > 0.5


def test_the_learnt_bar_of_the_across_table_is_as_far_from_chance_for_c_classes():
    from qunlearn.compare import data_classes, min_learnt

    assert min_learnt(2) == pytest.approx(0.7)  # the binary bar, unchanged
    assert min_learnt(3) == pytest.approx(0.6)  # 1/3 + 0.4 · 2/3
    assert data_classes({"n_train_per_class": [25, 25, 25]}) == 3
    assert data_classes({}) == 2
