"""Runs split over local devices (``devices = "all"``, ``--devices all``): the run axis of a
program sharded over ``jax.devices()`` with a 1-D mesh and ``jax.shard_map`` gives exactly the
single-device numbers, bit for bit (every run is an independent program; nothing is reduced across
devices). Tested on CPU in a subprocess with 2 forced host devices; the config hash is unchanged.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from qunlearn.cli import main
from qunlearn.errors import QunlearnError
from qunlearn.experiments.config import config_hash, load_config, with_devices

SWEEP = """\
experiment = "noise_sweep"
name = "devices"
dataset = "mnist"
noises = ["label_flip"]
alphas = [0.0, 0.4]
runs = 3
seed = 5

[models.mlp]
model = "mlp"
hyper = { hidden = [8] }
epochs = 2  # the split, not the training, is under test: bytes compared bit for bit
batch_size = 64
lr = 0.01
"""
QNN = """
[models.qnn]
model = "qnn"
run_chunk = 1
hyper = { depth = 1 }
epochs = 1
batch_size = 250
lr = 0.01
"""

# Runs in a fresh interpreter: the device count is fixed when JAX starts.
SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np
    from qunlearn.cli import main
    from qunlearn.experiments.noise_sweep import sweep_program
    from qunlearn.models import make_model

    assert len(jax.devices()) == 2, jax.devices()
    config, one, every = sys.argv[1:4]
    assert main(["run", config, "--out", one, "--quiet"]) == 0
    assert main(["run", config, "--out", every, "--quiet", "--devices", "all"]) == 0

    # the program itself: its output lives on both devices, and equals the one-device output
    jax.config.update("jax_enable_x64", True)
    model = make_model("mlp", 6, False, hidden=[5])
    x = jax.random.normal(jax.random.PRNGKey(0), (40, 6))
    y = (x[:, 0] > 0).astype(jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(1), 6).reshape(3, 2, -1)
    xs, ys = jnp.stack([x + 0.01 * r for r in range(3)]), jnp.stack([y] * 3)
    outs = []
    for devices in (None, jax.devices()):
        program = sweep_program(
            model, epochs=4, batch_size=16, lr=0.01, n_train=40, run_chunk=0, devices=devices
        )
        outs.append(program(keys[:, 0], keys[:, 1], xs, ys, x, y))
    assert len(outs[1]["final_loss"].sharding.device_set) == 2
    for name in outs[0]:
        assert np.array_equal(outs[0][name], outs[1][name]), name
    print("ok")
    """
)


@pytest.mark.parametrize("models", ["mlp", pytest.param("mlp+qnn", marks=pytest.mark.slow)])
def test_runs_split_over_two_devices_give_the_single_device_bytes(tmp_path, models):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP + (QNN if "qnn" in models else ""))
    one, every = tmp_path / "one", tmp_path / "every"
    # the session's XLA flags (tests/conftest.py: quicker compiles) plus the two host devices
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": flags.strip()}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(one), str(every)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    assert (every / "results.csv").read_bytes() == (one / "results.csv").read_bytes()
    cells = len(list((every / "cells").glob("*.json")))
    assert cells == 2 * len(models.split("+"))


def test_devices_leave_the_config_hash_alone_and_are_checked(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    config = load_config(path)
    split = with_devices(config, "all")
    assert all(spec.devices == "all" for spec in split.models.values())
    assert config_hash(split) == config_hash(config)
    assert load_config(path, ["models.mlp.devices=all"]).models["mlp"].devices == "all"
    with pytest.raises(QunlearnError, match=r"devices = 'many' must be one of \['one', 'all'\]"):
        load_config(path, ["models.mlp.devices=many"])
    with pytest.raises(QunlearnError, match="did you mean 'all'"):
        with_devices(config, "al")
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--devices", "2"]) == 2
    assert "--devices '2'" in capsys.readouterr().err
    assert not out.exists()


def test_devices_on_a_kind_that_cannot_split_runs_is_refused(tmp_path, capsys):
    path = tmp_path / "unlearning.toml"
    path.write_text(
        'experiment = "unlearning"\nname = "u"\ndataset = "mnist"\nalpha = 0.3\nruns = 1\n'
        'methods = ["retrain"]\n[models.mlp]\nmodel = "mlp"\nepochs = 1\nbatch_size = 250\n'
        "lr = 0.01\nunlearn_epochs = 1\nunlearn_batch_size = 0\nunlearn_lr = 0.01\n"
    )
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--devices", "all"]) == 2
    err = capsys.readouterr().err
    assert "unlearning configs run each cell on one device" in err and err.count("\n") == 1
    assert not out.exists()


def test_run_chunk_is_chosen_by_backend_when_a_table_leaves_it_unset():
    from qunlearn.experiments.config import default_run_chunk

    assert default_run_chunk("qnn", "cpu") == 1 and default_run_chunk("qnn_cnot", "cpu") == 1
    assert default_run_chunk("mlp", "cpu") == 0
    assert default_run_chunk("qnn", "gpu") == 0 and default_run_chunk("qnn", "tpu") == 0
    config = load_config("fig2c_mnist")  # its QNN table no longer sets run_chunk
    expected = {"mlp": 0, "qnn": default_run_chunk("qnn")}
    assert {name: spec.run_chunk for name, spec in config.models.items()} == expected
    explicit = load_config("fig2c_mnist", ["models.qnn.run_chunk=0"])
    assert explicit.models["qnn"].run_chunk == 0
    assert config_hash(explicit) == config_hash(config)
