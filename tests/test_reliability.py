"""Reproducibility and crash safety of ``qunlearn run``.

* Determinism: a cell's key depends only on its identity, so a cell computed alone through the
  library, inside a sweep, in another order or grouping, or after a resume gives the same bits.
* Crash safety: a sweep killed with SIGKILL and rerun reuses every finished cell untouched, never
  reads a partial or planted file as a result, and ends with the uninterrupted run's table; Ctrl-C
  leaves a consistent directory and prints the command that resumes it.

One tiny MNIST config (an MLP, 2 noises x 3 alphas = 6 cells of about 0.2 s) serves every test.
The module runs on one xdist worker (``--dist loadfile``), so the reference run is made once.
"""

import csv
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from qunlearn.cli import main
from qunlearn.data import load_dataset
from qunlearn.experiments import noise_sweep
from qunlearn.experiments.common import model_input
from qunlearn.experiments.store import ResultStore
from qunlearn.models import make_model
from qunlearn.plotting.style import stem_suffixes

CONFIG = """\
experiment = "noise_sweep"
name = "reliability"
dataset = "mnist"
noises = ["label_flip", "feature_randomization"]
alphas = [0.0, 0.2, 0.4]
runs = 2
seed = 7

[models.mlp]
model = "mlp"
hyper = { hidden = [8] }
epochs = 10  # about 0.2 s per cell with the tests' XLA flags (tests/conftest.py): a kill
# after the first cell still lands with several cells to go (test_sigkill_then_resume checks it)
batch_size = 64
lr = 0.01
"""
CELLS = [
    f"mlp__{noise}__alpha{alpha:.3f}"
    for noise in ("label_flip", "feature_randomization")
    for alpha in (0.0, 0.2, 0.4)
]
TIMEOUT = 300  # seconds for one subprocess run; generous for a loaded 2-core machine


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "reliability.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(config_path, tmp_path_factory, env):
    """An uninterrupted run of the command line (a subprocess, as a user runs it)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    finish(qunlearn("run", config_path, "--out", out, "--quiet"), env)
    return out


# ---------------------------------------------------------------------------------------------
# Helpers


def cell_rows(out: Path, cell_id: str) -> list[dict]:
    return json.loads((out / "cells" / f"{cell_id}.json").read_text())["rows"]


def verified(path: Path) -> bool:
    """Whether a cell file is whole: it verifies as the store reads it (read-only)."""
    store = ResultStore.read(path.parent.parent)
    return store.load_cell(path.stem) is not None


def file_ids(paths) -> dict:
    """Inode, modification time and bytes: unchanged means not rewritten."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def qunlearn(*args) -> list[str]:
    return [sys.executable, "-m", "qunlearn", *map(str, args)]


# SIGINT is ignored in processes started in the background by a non-interactive shell (CI), and
# Python then keeps ignoring it: restore the default handler so Ctrl-C is simulated faithfully.
_WITH_CTRL_C = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from qunlearn.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Subprocess environment sharing a JAX compilation cache: the first run compiles, later runs
    load its executable (seconds saved per run). The in-process tests compile afresh and must
    still match bit for bit."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def start(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for_first_cell(proc: subprocess.Popen, cells: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not (cells.is_dir() and any(cells.glob("*.json"))):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before writing a cell: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no cell after {TIMEOUT} s")
        time.sleep(0.01)


def finish(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stderr
    return done


# ---------------------------------------------------------------------------------------------
# Determinism


def test_cell_alone_through_the_library_equals_the_cell_in_the_sweep(reference):
    """The key of cell (dataset, model, noise, alpha) is stable_key(PRNGKey(seed), dataset, model,
    noise, f"{alpha:.6f}"), whatever else the sweep holds."""
    dataset = load_dataset("mnist")
    x_train, x_val, dim, is_complex = model_input(dataset)
    program = noise_sweep.sweep_program(
        make_model("mlp", dim, is_complex, hidden=[8]),
        epochs=10,
        batch_size=64,
        lr=0.01,
        n_train=len(x_train),
    )
    key = noise_sweep.stable_key(
        jax.random.PRNGKey(7), "mnist", "mlp", "feature_randomization", f"{0.4:.6f}"
    )
    metrics, _ = noise_sweep.run_cell(
        program,
        noise_sweep.run_keys(key, 2),
        x_train,
        dataset.y_train,
        x_val,
        dataset.y_val,
        noise="feature_randomization",
        alpha=0.4,
        raw_dim=dataset.info["raw_dim"],
    )
    rows = cell_rows(reference, "mlp__feature_randomization__alpha0.400")
    assert {(r["run"], r["metric"]): r["value"] for r in rows} == {
        (run, metric): values[run] for metric, values in metrics.items() for run in range(2)
    }


def test_other_order_and_grouping_give_the_same_cells(reference, config_path, tmp_path):
    """Noises and alphas reversed, one alpha left out, progress bars on (a host callback in the
    compiled program): another config, so another directory, but every shared cell is bit-for-bit
    the same."""
    out = tmp_path / "reordered"
    overrides = ["noises=['feature_randomization','label_flip']", "alphas=[0.4,0.0]"]
    assert main(["run", str(config_path), *overrides, "--out", str(out)]) == 0
    cells = sorted(p.stem for p in (out / "cells").glob("*.json"))
    assert len(cells) == 4
    for cell_id in cells:
        assert cell_rows(out, cell_id) == cell_rows(reference, cell_id), cell_id


def test_rerun_of_a_finished_directory_changes_nothing(reference, config_path, capsys):
    before = file_ids([*(reference / "cells").iterdir(), reference / "results.csv"])
    assert main(["run", str(config_path), "--out", str(reference), "--quiet"]) == 0
    assert "cells: 0 computed, 6 reused" in capsys.readouterr().out
    assert file_ids([*(reference / "cells").iterdir(), reference / "results.csv"]) == before


# ---------------------------------------------------------------------------------------------
# Crash safety


def test_sigkill_then_resume(reference, config_path, tmp_path, env, capsys):
    out = tmp_path / "out"
    cells = out / "cells"
    proc = start(qunlearn("run", config_path, "--out", out, "--quiet"), env)
    wait_for_first_cell(proc, cells)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)

    # Whatever the moment of the kill, every cell file under its final name is whole.
    finished = sorted(cells.glob("*.json"))
    assert finished and all(verified(p) for p in finished)
    done_ids = [p.stem for p in finished]
    todo = [c for c in CELLS if c not in done_ids]
    assert len(todo) >= 2, f"the kill landed too late to test a resume: {done_ids}"
    kept = file_ids(finished)

    # Plant what a crash or a tamperer could leave: a truncated cell file under a final name, and
    # a complete, self-consistent but wrong cell as a temporary file.
    truncated = cells / f"{todo[0]}.json"
    whole = (reference / "cells" / truncated.name).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    fake = json.loads(whole)
    fake["cell"] = todo[1]
    fake["rows"] = [dict(row, value=0.123) for row in fake["rows"]]
    fake["sha256"] = hashlib.sha256(json.dumps(fake["rows"], sort_keys=True).encode()).hexdigest()
    stray = cells / f".{todo[1]}.json.x1y2z3.tmp"
    stray.write_text(json.dumps(fake))
    (out / ".results.csv.a1b2c3.tmp").write_text("alpha,value\n0.0,0.123\n")

    # the killed process was real; the resume runs in this one (the same CLI, no new interpreter)
    assert main(["run", str(config_path), "--out", str(out), "--quiet"]) == 0
    resumed = capsys.readouterr()
    assert f"cells: {len(todo)} computed, {len(done_ids)} reused" in resumed.out
    assert f"{truncated} does not verify" in resumed.err
    # (a) the cells finished before the kill were reused, not rewritten
    assert file_ids(cells / name for name in kept) == kept
    last_run = json.loads((out / "manifest.json").read_text())["last_run"]
    assert sorted(last_run["reused"]) == done_ids and sorted(last_run["computed"]) == sorted(todo)
    # (b) the truncated file was set aside and recomputed; the planted temporary file was ignored
    assert truncated.with_suffix(".corrupt").read_bytes() == whole[: len(whole) // 2]
    assert stray.exists() and all(verified(p) for p in cells.glob("*.json"))
    # (c) the same table, bit for bit, as the uninterrupted run
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    for cell_id in CELLS:
        assert cell_rows(out, cell_id) == cell_rows(reference, cell_id), cell_id


def test_ctrl_c_leaves_a_consistent_directory_and_says_how_to_resume(
    reference, config_path, tmp_path, env
):
    out = tmp_path / "out"
    proc = start(
        [sys.executable, "-c", _WITH_CTRL_C, "run", str(config_path), "--out", str(out), "--quiet"],
        env,
    )
    wait_for_first_cell(proc, out / "cells")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    command = f"qunlearn run {config_path} --out {out} --quiet"
    assert f"interrupted: finished cells are kept in {out}; to resume, run: {command}" in stderr

    # consistent: no temporary file, every cell whole, the table holds exactly the finished cells
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    finished = sorted((out / "cells").glob("*.json"))
    assert finished and all(verified(p) for p in finished)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["name"] == "reliability"
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 * len(finished)  # 2 runs x 4 metrics per cell
    assert {f"mlp__{r['noise']}__alpha{float(r['alpha']):.3f}" for r in table} == {
        p.stem for p in finished
    }

    # the printed command resumes it to the uninterrupted result (run by the CLI in this process)
    argv = shlex.split(command)
    assert argv[0] == "qunlearn" and main(argv[1:]) == 0
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


def test_stray_files_never_become_cells(reference, tmp_path, capsys):
    """Cells are looked up by their exact names: stray, renamed or foreign files are not results."""
    from qunlearn.experiments.store import ResultStore

    manifest = json.loads((reference / "manifest.json").read_text())
    out = tmp_path / "copy"
    (out / "cells").mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    store = ResultStore(
        out, config=manifest["config"], config_hash=manifest["config_hash"], meta={}
    )
    # another cell's (valid) file under this cell's name is not this cell
    src = reference / "cells" / f"{CELLS[0]}.json"
    (out / "cells" / f"{CELLS[1]}.json").write_bytes(src.read_bytes())
    assert store.load_cell(CELLS[1]) is None
    assert "warning: " in capsys.readouterr().err
    assert (out / "cells" / f"{CELLS[1]}.corrupt").exists()
    # a second corrupt copy (a truncated cell) does not overwrite the first one set aside
    (out / "cells" / f"{CELLS[1]}.json").write_bytes(src.read_bytes()[:60])
    assert store.load_cell(CELLS[1]) is None
    assert "does not verify" in capsys.readouterr().err
    assert (out / "cells" / f"{CELLS[1]}.corrupt.1").read_bytes() == src.read_bytes()[:60]
    assert store.finished_cells() == []


def test_ctrl_c_during_a_file_write_finishes_the_write_then_interrupts(
    tmp_path, monkeypatch, request
):
    # The CI failure this guards against: SIGINT landing between mkstemp and os.replace left a
    # stray ".tmp" file. The write must complete (or not start) and the interrupt arrive after.
    from qunlearn import atomic

    real_fsync = os.fsync

    def fsync_then_ctrl_c(fd):
        real_fsync(fd)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic.os, "fsync", fsync_then_ctrl_c)
    # as in a terminal (a background job, e.g. under nohup, starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    target = tmp_path / "manifest.json"
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_text(target, '{"whole": true}')
    assert json.loads(target.read_text()) == {"whole": True}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored

    # where Ctrl-C is ignored it stays ignored: the write completes and nothing is raised
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atomic.atomic_write_text(target, '{"again": true}')
    assert json.loads(target.read_text()) == {"again": True}
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_a_ctrl_c_python_could_only_print_still_stops_the_run(tmp_path, request, capsys):
    """The CI failure this guards against: Ctrl-C landed while XLA ran its garbage-collection
    callback during a compilation; Python printed "Exception ignored ... KeyboardInterrupt", the
    run went on and exited 0. The engine notes the signal: the cell that was running is kept, the
    next one never starts, and nothing is printed."""
    from qunlearn.experiments.engine import Cell, CellResult, Interrupted, run_cells

    class CtrlCInFinaliser:  # a finaliser is a place where Python can only print an exception
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    def first(store):
        CtrlCInFinaliser()  # collected at once: the KeyboardInterrupt is "ignored"
        return CellResult([{"value": 1.0}])

    def second(store):
        raise AssertionError("the run went on after Ctrl-C")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    store = ResultStore(tmp_path, config={"name": "x"}, config_hash="abc", meta={})
    with pytest.raises(Interrupted):
        run_cells(
            store,
            {"first": Cell(first), "second": Cell(second)},
            tables=lambda store, final: None,
            name="x",
        )
    assert [cell["cell"] for cell in store.finished_cells()] == ["first"]
    assert store.manifest["last_run"]["interrupted"] is True
    assert "Exception ignored" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_manifest_deviations_follow_the_config():
    from qunlearn.experiments.common import DEVIATIONS, deviations

    assert deviations() == list(DEVIATIONS.values())
    # only the topics a config touches: an MNIST noise sweep has no XXZ data and no Hessian
    sweep = deviations({"experiment": "noise_sweep", "dataset": "mnist", "models": {}})
    assert any("mnist validation" in d for d in sweep) and any("batching:" in d for d in sweep)
    assert not any(d.startswith(("xxz data", "hessian", "unlearning")) for d in sweep)
    curvature = deviations({"experiment": "curvature", "dataset": "mnist", "models": {}})
    assert any(d.startswith("hessian") for d in curvature)
    assert any(d.startswith("unlearning") for d in curvature)
    chosen = deviations(
        {
            "experiment": "noise_sweep",
            "dataset": "xxz",
            "models": {"m": {"batching": "stream", "hyper": {"readout": "linear"}}},
            "dataset_options": {"phase": "random"},
        }
    )
    assert not any("mnist" in d for d in chosen)
    assert any("emulate the reference's one-time shuffle, then repeat(epochs)" in d for d in chosen)
    assert any("readout = 'linear'" in d for d in chosen)
    assert any("random global phase" in d for d in chosen)
    assert not any("deterministic global phase" in d for d in chosen)


# ---------------------------------------------------------------------------------------------
# Trust: one run per results directory, cells that carry their config, SIGTERM like Ctrl-C

# Runs the CLI with the store's manifest write number N (1: the first, before any cell; 2: after
# the first cell) held until the file GATE exists: the window in which two runs used to both see
# "no manifest yet" and then mix their cells in one directory, held open for as long as the test
# needs, whatever the machine's load (argv: N GATE, then the CLI's).
_HELD_MANIFEST = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from qunlearn.experiments import store
original, writes = store.ResultStore._write_manifest, []
def held(self):
    writes.append(1)
    deadline = time.monotonic() + 300
    while len(writes) == int(sys.argv[1]) and not os.path.exists(sys.argv[2]):
        assert time.monotonic() < deadline, "the gate never opened"
        time.sleep(0.01)
    original(self)
store.ResultStore._write_manifest = held
from qunlearn.cli import main
sys.exit(main(sys.argv[3:]))
"""


def held_run(write: int, gate: Path, *args) -> list[str]:
    return [sys.executable, "-c", _HELD_MANIFEST, str(write), str(gate), *map(str, args)]


def test_two_runs_on_one_out_cannot_mix_configs(config_path, tmp_path, env, capsys):
    """The race of the reliability probe, made deterministic: run A (epochs=3) holds the directory
    while its first manifest write is held; run B (epochs=2) arrives inside that window and is
    refused with the holder named; A ends whole, its manifest and cells agree."""
    out, gate = tmp_path / "out", tmp_path / "gate"
    slow = start(
        held_run(1, gate, "run", config_path, "models.mlp.epochs=3", "--out", out, "--quiet"), env
    )
    deadline = time.monotonic() + TIMEOUT
    while not (out / ".lock").exists():
        assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
        time.sleep(0.01)
    # run B in this process: it is refused at the lock, before anything is compiled
    assert main(["run", str(config_path), "models.mlp.epochs=2", "--out", str(out), "--quiet"]) == 2
    refused = capsys.readouterr().err
    assert "is in use by another qunlearn run (pid" in refused
    assert f"pid {slow.pid} on" in refused and "Traceback" not in refused
    gate.touch()
    _, stderr = slow.communicate(timeout=TIMEOUT)
    assert slow.returncode == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["models"]["mlp"]["epochs"] == 3
    store = ResultStore.read(out)
    assert [c["cell"] for c in store.finished_cells()] == sorted(CELLS) and not store.rejected
    assert not (out / ".lock").exists()


def test_the_same_config_twice_at_once_is_safe(config_path, tmp_path, env, capsys):
    out, gate = tmp_path / "out", tmp_path / "gate"
    # held at its manifest write after the first cell: the directory has a manifest of this
    # config and a finished cell, and the first run still holds it
    first = start(held_run(2, gate, "run", config_path, "--out", out, "--quiet"), env)
    wait_for_first_cell(first, out / "cells")
    run = ["run", str(config_path), "--out", str(out), "--quiet"]
    assert main(run) == 2  # the second run, in this process
    assert "is in use by another qunlearn run" in capsys.readouterr().err
    gate.touch()
    _, stderr = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0, stderr
    assert main(run) == 0
    assert f"cells: 0 computed, {len(CELLS)} reused" in capsys.readouterr().out


def test_a_stale_lock_is_taken_over(reference, config_path, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    import socket

    (out / ".lock").write_text(
        json.dumps({"pid": int(dead.stdout), "started": 0, "host": socket.gethostname()})
    )
    assert main(["run", str(config_path), "--out", str(out), "--quiet"]) == 0
    assert "took over the stale lock" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    assert not list(out.glob(".lock*"))


def test_a_cell_of_another_config_is_set_aside_and_recomputed(
    reference, config_path, tmp_path, capsys
):
    """Every cell carries the config hash it was computed for: a valid cell copied in from a
    directory of another config is never merged, however valid its checksum."""
    other = tmp_path / "other"
    run = ["run", str(config_path), "--quiet", "--out"]
    assert main([*run, str(other), "models.mlp.epochs=3", "alphas=[0.0]"]) == 0
    out = tmp_path / "out"
    shutil.copytree(reference, out)  # the finished run of this config
    foreign = other / "cells" / f"{CELLS[0]}.json"
    (out / "cells" / foreign.name).write_bytes(foreign.read_bytes())
    capsys.readouterr()
    assert main([*run, str(out)]) == 0
    again = capsys.readouterr()
    assert "computed for config" in again.err and "cells: 1 computed" in again.out
    assert (out / "cells" / f"{CELLS[0]}.foreign").read_bytes() == foreign.read_bytes()
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


def test_sigterm_keeps_finished_cells_and_prints_the_resume_command(
    reference, config_path, tmp_path, env
):
    out = tmp_path / "out"
    proc = start(qunlearn("run", config_path, "--out", out, "--quiet"), env)
    wait_for_first_cell(proc, out / "cells")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    command = f"qunlearn run {config_path} --out {out} --quiet"
    assert f"to resume, run: {command}" in stderr
    assert json.loads((out / "manifest.json").read_text())["last_run"]["interrupted"]
    assert not (out / ".lock").exists()
    argv = shlex.split(command)  # the printed command, run by the CLI in this process
    assert argv[0] == "qunlearn" and main(argv[1:]) == 0
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


def test_compare_and_plot_read_only_verified_cells(reference, tmp_path, capsys):
    """An edited results.csv is not believed, and a cell that fails its checksum is left out,
    each with a warning line; compare and plot take --out for a results directory shared
    read-only."""
    from qunlearn.compare import compare_results_dir

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    table = (out / "results.csv").read_text()
    edited = "\n".join(  # 7.25: no accuracy, so it cannot show up in an honest comparison
        ",".join([*line.split(",")[:-1], "7.25"]) if ",val_acc," in line else line
        for line in table.splitlines()
    )
    (out / "results.csv").write_text(edited)
    honest = compare_results_dir(reference, tmp_path / "honest")
    result = compare_results_dir(out, tmp_path / "cmp")
    err = capsys.readouterr().err
    assert "does not match the verified cells" in err
    assert result["table"] == honest["table"] and "7.25" not in result["text"]
    # a cell whose checksum fails is left out, not compared
    cell = out / "cells" / f"{CELLS[0]}.json"
    payload = json.loads(cell.read_text())
    payload["rows"][0]["value"] = 0.999
    cell.write_text(json.dumps(payload))
    result = compare_results_dir(out, tmp_path / "cmp2")
    assert f"cell {CELLS[0]} does not verify (checksum mismatch); left out" in (
        capsys.readouterr().err
    )
    assert len(result["table"]) == len(honest["table"]) - 2  # its two metrics at alpha 0
    assert cell.exists()  # read-only: nothing moved


def test_compare_and_plot_write_only_into_out(reference, tmp_path, capsys):
    """For a results directory shared read-only: with --out, nothing in it is written."""
    before = file_ids(p for p in reference.rglob("*") if p.is_file())
    assert main(["compare", str(reference), "--out", str(tmp_path / "c")]) == 0
    assert main(["plot", str(reference), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "c" / "compare.csv").is_file()
    assert {p.suffix for p in (tmp_path / "p").iterdir()} == set(stem_suffixes())
    assert file_ids(p for p in reference.rglob("*") if p.is_file()) == before


QNN_CONFIG = """\
experiment = "noise_sweep"
name = "compile"
dataset = "mnist"
noises = ["label_flip"]
alphas = [0.0]
runs = 1

[models.qnn]
model = "qnn"
hyper = { depth = 6 }
epochs = 2
batch_size = 256
lr = 0.005
"""


def test_ctrl_c_during_compilation_ends_cleanly(tmp_path, env):
    """Ctrl-C while XLA compiles the QNN program (the first seconds after the lock is taken) ends
    with 130 and the resume line, never a crash of the interpreter's teardown (it used to exit
    139 in 2 of 5 tries)."""
    config = tmp_path / "qnn.toml"
    config.write_text(QNN_CONFIG)
    for attempt in range(2):
        out = tmp_path / f"out{attempt}"
        proc = start(
            [sys.executable, "-c", _WITH_CTRL_C, "run", str(config), "--out", str(out), "--quiet"],
            {**env, "JAX_COMPILATION_CACHE_DIR": ""},
        )
        deadline = time.monotonic() + TIMEOUT
        while not (out / ".lock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        time.sleep(0.5 + attempt)  # inside the compilation of the first cell's program
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 130, stderr
        assert "interrupted: finished cells are kept" in stderr and "Traceback" not in stderr
        assert not (out / ".lock").exists()


def test_progress_in_a_log_is_plain_lines(tmp_path):
    """Not a terminal: one plain line per finished cell, no carriage returns or escapes."""
    import io

    from qunlearn.experiments.engine import Progress

    stream = io.StringIO()
    progress = Progress(True, stream)
    assert not progress.bars and progress.on_epoch is None
    progress.line("x: [1/2] cell 1.0 s")
    with progress.overall("x", 2) as bar:
        bar.update(2)
    assert stream.getvalue() == "x: [1/2] cell 1.0 s\n"


def test_cache_dir_after_the_subcommand_and_help_says_overrides_are_optional(tmp_path, capsys):
    from qunlearn.cli import parse_args

    args = parse_args(["run", "c.toml", "--cache-dir", str(tmp_path), "runs=2"])
    assert args.cache_dir == str(tmp_path) and args.overrides == ["runs=2"]
    assert parse_args(["--cache-dir", "a", "data", "xxz"]).cache_dir == "a"
    with pytest.raises(SystemExit):
        parse_args(["run", "--help"])
    assert "config [KEY=VALUE ...]" in capsys.readouterr().out
