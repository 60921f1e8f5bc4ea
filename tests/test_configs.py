"""Every shipped config (one per paper figure and study) loads and validates, with and without its
[tiny] smoke settings, and names a known experiment, dataset and models."""

import tomllib
from importlib import resources

import pytest

from qunlearn.data import DATASETS
from qunlearn.errors import QunlearnError
from qunlearn.experiments.config import CONFIG_TYPES, load_config
from qunlearn.models import MODELS

SHIPPED = sorted(
    p.name for p in (resources.files("qunlearn") / "configs").iterdir() if p.name.endswith(".toml")
)


def test_the_figures_have_configs():
    assert {
        "demo.toml",
        "fig2c_mnist.toml",
        "fig2d_xxz.toml",
        "fig3a_mnist.toml",
        "fig3b_xxz.toml",
        "roughening_mnist.toml",
        "curvature_mnist.toml",
    } <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads(name):
    path = resources.files("qunlearn") / "configs" / name
    raw = tomllib.loads(path.read_text())
    for tiny in (False, True) if "tiny" in raw else (False,):
        config = load_config(path, tiny=tiny)
        assert type(config) is CONFIG_TYPES[config.experiment]
        assert getattr(config, "dataset", "mnist") in DATASETS
        assert all(spec.model in MODELS for spec in config.models.values())


def test_models_option_keeps_only_the_named_tables_and_the_resume_command_says_so(tmp_path):
    from qunlearn.cli import _resume_command, parse_args

    path = resources.files("qunlearn") / "configs" / "fig2c_mnist.toml"
    config = load_config(path, models=["qnn"])
    assert list(config.models) == ["qnn"]
    assert list(load_config(path).models) == ["mlp", "qnn"]
    for argv in (
        ["run", "c.toml", "runs=2", "--models", "qnn", "seed=1"],
        ["run", "c.toml", "--models", "qnn", "runs=2", "seed=1"],
    ):
        args = parse_args(argv)  # overrides before or after the options
        assert args.overrides == ["runs=2", "seed=1"]
        assert _resume_command(args, tmp_path).endswith(
            f"runs=2 seed=1 --out {tmp_path} --models qnn"
        )
    with pytest.raises(SystemExit):  # not an override: still an error
        parse_args(["run", "c.toml", "--models", "qnn", "--bogus"])
    args = parse_args(["run", "c.toml", "--models", "qnn", "bogus"])  # refused by the config
    with pytest.raises(QunlearnError, match="override 'bogus' must look like key.path=value"):
        load_config(path, args.overrides)


@pytest.mark.parametrize("name", SHIPPED)
def test_mnist_configs_name_their_encoding(name):
    """Every MNIST config says which encoding it reproduces: the reference's per-column arithmetic
    for the figures built on datar.mnist_data, the unit state for the roughening notebook's."""
    path = resources.files("qunlearn") / "configs" / name
    raw = tomllib.loads(path.read_text())
    if raw.get("dataset", "mnist") != "mnist":
        return
    encoding = raw.get("dataset_options", {}).get("encoding")
    expected = "unit" if raw["experiment"] == "roughening" else "reference"
    assert encoding == expected, f"{name}: dataset_options.encoding = {encoding!r}"
    tiny = raw.get("tiny", {}).get("dataset_options")
    assert tiny is None or tiny.get("encoding") == expected  # [tiny] keeps it
