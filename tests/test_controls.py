"""The confound controls: training options (weight decay, label smoothing), the MLP's bounded
output and logistic-regression form, their config checks, and the control figure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.cli import main
from qunlearn.compare import compare_sweep, protocol_check
from qunlearn.data import Dataset
from qunlearn.errors import QunlearnError
from qunlearn.experiments import noise_sweep
from qunlearn.experiments.config import config_hash, load_config, to_dict
from qunlearn.models import make_model
from qunlearn.plotting.controls import draw_control
from qunlearn.train import adam_optimizer, bce, predict, supervised_objective


def test_label_smoothing_trains_on_smoothed_targets():
    model = make_model("mlp", 4, False, hidden=[3])
    params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
    y = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    batch = {"x": x, "y": y, "w": jnp.ones(6)}
    p = predict(model, params, x)
    smoothed = supervised_objective(model, 0.2)(params, batch, None)
    assert smoothed == pytest.approx(float(jnp.mean(bce(p, y * 0.8 + 0.1))), rel=1e-12)
    plain = supervised_objective(model)(params, batch, None)
    assert plain == pytest.approx(float(jnp.mean(bce(p, y))), rel=1e-12)


def test_weight_decay_is_decoupled_adamw():
    params = {"w": jnp.array([1.0, -2.0])}
    zero = {"w": jnp.zeros(2)}
    for decay, factor in ((0.0, 1.0), (0.5, 1 - 0.1 * 0.5)):
        opt = adam_optimizer(0.1, decay)
        updates, _ = opt.update(zero, opt.init(params), params)
        np.testing.assert_allclose(params["w"] + updates["w"], factor * params["w"])


def test_logistic_regression_and_bounded_mlp():
    x = jnp.array([0.3, -1.0, 2.0])
    logistic = make_model("mlp", 3, False, hidden=[])
    params = logistic.init(jax.random.PRNGKey(0))
    assert len(params) == 1
    expected = jax.nn.sigmoid(x @ params[0]["w"][:, 0] + params[0]["b"][0])
    assert logistic.apply(params, x) == pytest.approx(float(expected))

    bounded = make_model("mlp", 3, False, hidden=[4], bound=2.0)
    big = jax.tree_util.tree_map(lambda a: 1e3 * (a + 1.0), bounded.init(jax.random.PRNGKey(1)))
    p = float(bounded.apply(big, jnp.abs(x)))  # a huge logit saturates at sigmoid(2)
    assert p == pytest.approx(float(jax.nn.sigmoid(2.0)), rel=1e-9)
    for bad in (0.0, -1.0, "5", float("inf")):
        with pytest.raises(QunlearnError, match="hyper.bound"):
            make_model("mlp", 3, False, bound=bad)


CONTROL = """\
experiment = "noise_sweep"
name = "ctl"
dataset = "mnist"
noises = ["label_flip"]
alphas = [0.0, 0.3, 0.6]
runs = 2

[models.mlp]
model = "mlp"
hyper = { hidden = [4] }
epochs = 3
batch_size = 16
lr = 0.05
"""


def test_train_options_are_checked_and_keep_old_hashes(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CONTROL)
    plain = load_config(path)
    explicit = load_config(path, ["models.mlp.weight_decay=0.0", "models.mlp.label_smoothing=0.0"])
    assert config_hash(plain) == config_hash(explicit)  # defaults: directories still resume
    assert config_hash(load_config(path, ["models.mlp.weight_decay=0.1"])) != config_hash(plain)
    for override, needle in (
        ("models.mlp.weight_decay=-1.0", "models.mlp.weight_decay = -1.0 must be"),
        ("models.mlp.label_smoothing=1.0", "models.mlp.label_smoothing = 1.0 must be in [0, 1)"),
        ('models.mlp.weight_decay="0.1"', "must be a number"),
    ):
        with pytest.raises(QunlearnError, match=needle.replace("[", r"\[").replace(")", r"\)")):
            load_config(path, [override])


def test_a_control_variant_is_not_judged_against_the_paper(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CONTROL.replace("hyper = { hidden = [4] }", "hyper = { hidden = [64, 16] }"))
    base = to_dict(
        load_config(
            path,
            [
                "models.mlp.epochs=100",
                "models.mlp.batch_size=256",
                "models.mlp.lr=0.005",
                'dataset_options={encoding="reference"}',
            ],
        )
    )
    assert protocol_check(base)["differences"]["mlp"] == []
    decayed = to_dict(load_config(path, ["models.mlp.weight_decay=0.5"]))
    assert any("weight_decay" in d for d in protocol_check(decayed)["differences"]["mlp"])
    # other digits are other data: nothing of the paper's 1 vs 9 is put beside them
    assert protocol_check(base)["same_data"]
    other = base | {"dataset_options": {"encoding": "reference", "digits": [3, 5]}}
    assert not protocol_check(other)["same_data"]
    rows = [
        {"dataset": "mnist", "model": "mlp", "noise": "label_flip", "alpha": 0.1}
        | {"run": 0, "metric": "val_acc", "value": 0.9}
    ]
    assert "paper_mean" in compare_sweep(rows)[0]
    assert "paper_mean" not in compare_sweep(rows, with_paper=False)[0]


def _rows(variants):
    rows = []
    for name, centre in variants.items():
        for alpha in np.round(np.arange(0, 1, 0.1), 2):
            for run in range(3):
                value = 0.05 + 0.9 / (1 + np.exp((alpha - centre) / 0.05)) + 0.01 * run
                rows.append(
                    {
                        "model": name,
                        "noise": "label_flip",
                        "alpha": alpha,
                        "metric": "val_acc",
                        "value": value,
                    }
                )
    return rows


def test_control_figure_marks_each_variants_alpha_c():
    fig = draw_control(_rows({"a": 0.3, "b": 0.5, "flat": 5.0}))
    curves, marks = fig.axes
    labels = [t.get_text().split("\n")[0] for t in marks.get_yticklabels()]
    assert labels == ["a", "b", "flat (no crossing)"]
    centres = sorted(line.get_xdata()[0] for line in marks.lines if line.get_marker() == "D")
    assert centres == pytest.approx([0.3, 0.5], abs=0.02)


@pytest.mark.slow  # three variants trained and drawn (14 s cold)
def test_plot_draws_the_control_figure_for_a_sweep_of_variants(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20).astype(np.int32)
    x = rng.normal(size=(40, 16)) + 1.5 * y[:, None]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    data = Dataset("mnist", x, y, x[::2], y[::2], {"source": {"kind": "synthetic"}})
    monkeypatch.setattr(noise_sweep, "load_dataset", lambda name, cache_dir=None, **kw: data)
    variants = "\n".join(
        f'[models.{name}]\nmodel = "mlp"\nhyper = {{ hidden = {hidden} }}\nepochs = 3\n'
        f"batch_size = 16\nlr = 0.05\n{extra}\n"
        for name, hidden, extra in (
            ("logistic", "[]", ""),
            ("smooth", "[4]", "label_smoothing = 0.2"),
            ("decay", "[4]", "weight_decay = 0.5"),
        )
    )
    path, out = tmp_path / "c.toml", tmp_path / "out"
    path.write_text(CONTROL + variants)
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert main(["plot", str(out)]) == 0
    assert (out / "control_variants.png").stat().st_size > 0
