"""The Dask executor: cells as tasks on a ``distributed.LocalCluster`` of 2 worker processes on
loopback give the in-process bytes; a worker killed mid-sweep loses nothing; an interrupted run
resumes; an unlearning config's dependent cells read their teacher shipped as bytes. Bad flag
combinations and an unreachable scheduler are one-line errors before ``--out`` is touched.

Tiny MNIST MLP configs; the cluster (and its workers' plans) is shared by the module. The default
suite runs the resume test (which also checks the bytes) and the flag checks; the rest are slow
(20-35 s each on a loaded 2-core machine)."""

import contextlib
import os
import signal
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")

from qunlearn.cli import main  # noqa: E402
from qunlearn.experiments.config import load_config  # noqa: E402
from qunlearn.experiments.dask_executor import DaskExecutor  # noqa: E402
from qunlearn.experiments.engine import Interrupted  # noqa: E402
from qunlearn.experiments.runner import run  # noqa: E402

SWEEP = """\
experiment = "noise_sweep"
name = "dask_sweep"
dataset = "mnist"
noises = ["label_flip", "feature_randomization"]
alphas = [0.0, 0.3, 0.6]
runs = 2
seed = 11

[models.mlp]
model = "mlp"
hyper = { hidden = [8] }
epochs = 10  # tests/test_reliability.py's program: one compile (the persistent cache) serves both
batch_size = 64
lr = 0.01
"""

UNLEARNING = """\
experiment = "unlearning"
name = "dask_unlearning"
dataset = "mnist"
alpha = 0.3
runs = 2
methods = ["finetune", "gradient_ascent"]

[models.mlp]
model = "mlp"
hyper = { hidden = [4] }
epochs = 3
batch_size = 250
lr = 0.01
unlearn_epochs = 2
unlearn_batch_size = 0
unlearn_lr = 0.01
"""


@pytest.fixture(scope="module")
def client():
    """2 worker processes (spawned, 1 thread each) on loopback; the nanny restarts a killed one.
    The workers find this folder's modules (a user's members, test_families) on PYTHONPATH: what
    a real cluster's workers need for members named by reference."""
    here = os.path.dirname(__file__)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, before) if p)
    with (
        contextlib.ExitStack() as restore,
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        restore.callback(
            lambda: (
                os.environ.__setitem__("PYTHONPATH", before)
                if before is not None
                else os.environ.pop("PYTHONPATH", None)
            )
        )
        yield client


def config_of(text: str, tmp_path_factory, name: str):
    path = tmp_path_factory.mktemp("config") / f"{name}.toml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return config_of(SWEEP, tmp_path_factory, "sweep")


@pytest.fixture(scope="module")
def in_process(sweep, tmp_path_factory):
    """The sweep computed in this process: the bytes every Dask run must reproduce."""
    return run(sweep, tmp_path_factory.mktemp("in_process") / "out", progress=False)


@pytest.mark.slow
def test_local_cluster_gives_the_in_process_bytes(sweep, in_process, client, tmp_path):
    store = run(
        sweep, tmp_path / "out", progress=False, executor=DaskExecutor(sweep, client=client)
    )
    assert sorted(store.manifest["last_run"]["computed"]) == sorted(
        p.stem for p in in_process.cells_dir.glob("*.json")
    )
    assert (tmp_path / "out" / "results.csv").read_bytes() == (
        in_process.root / "results.csv"
    ).read_bytes()
    workers = {t["worker"] for t in store.manifest["timings"].values()}
    assert workers, "the cells were timed on the workers"


def kill_a_busy_worker(client, killed: list, stop: threading.Event) -> None:
    """SIGKILL the process of the first worker seen computing a cell for 0.3 s (mid-cell)."""
    pids = client.run(os.getpid)
    seen = {}
    while not stop.is_set():
        now = time.monotonic()
        for address, keys in client.processing().items():
            if keys and now - seen.setdefault((address, keys[0]), now) > 0.3:
                os.kill(pids[address], signal.SIGKILL)
                killed.append((address, pids[address], list(keys)))
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_loses_nothing(sweep, in_process, client, tmp_path):
    client.restart()  # fresh workers: the first cells rebuild the plan, long enough to be hit
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=kill_a_busy_worker, args=(client, killed, stop))
    killer.start()
    try:
        store = run(
            sweep, tmp_path / "out", progress=False, executor=DaskExecutor(sweep, client=client)
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was seen computing a cell"
    (address, pid, keys) = killed[0]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    lost = {k.removeprefix("qunlearn-").rsplit("-", 1)[0] for k in keys}  # qunlearn-<cell>-<run>
    cells = sorted(p.stem for p in in_process.cells_dir.glob("*.json"))
    assert lost <= set(cells)
    assert sorted(store.manifest["last_run"]["computed"]) == cells  # every cell, the lost ones too
    assert (tmp_path / "out" / "results.csv").read_bytes() == (
        in_process.root / "results.csv"
    ).read_bytes()


class StopAfterFirstCell:
    """An executor that delivers one cell of the inner one, then Ctrl-C."""

    def __init__(self, inner):
        self.inner = inner

    def map(self, store, items):
        with contextlib.closing(self.inner.map(store, items)) as results:
            yield next(results)
            raise KeyboardInterrupt


def test_resume_after_an_interrupted_run_skips_finished_cells(sweep, in_process, client, tmp_path):
    out = tmp_path / "out"
    executor = DaskExecutor(sweep, client=client)
    with pytest.raises(Interrupted):
        run(sweep, out, progress=False, executor=StopAfterFirstCell(executor))
    (first,) = [p.stem for p in (out / "cells").glob("*.json")]
    before = (out / "cells" / f"{first}.json").stat().st_mtime_ns
    store = run(sweep, out, progress=False, executor=executor)
    assert store.manifest["last_run"]["reused"] == [first]
    assert first not in store.manifest["last_run"]["computed"]
    assert (out / "cells" / f"{first}.json").stat().st_mtime_ns == before
    assert (out / "results.csv").read_bytes() == (in_process.root / "results.csv").read_bytes()


@pytest.mark.slow
def test_dependent_cells_read_their_teacher_shipped_as_bytes(client, tmp_path_factory):
    config = config_of(UNLEARNING, tmp_path_factory, "unlearning")
    here = run(config, tmp_path_factory.mktemp("here") / "out", progress=False)
    there = run(
        config,
        tmp_path_factory.mktemp("there") / "out",
        progress=False,
        executor=DaskExecutor(config, client=client),
    )
    tables = sorted(p.name for p in here.root.glob("*.csv"))
    assert "results.csv" in tables
    for name in tables:
        assert (there.root / name).read_bytes() == (here.root / name).read_bytes(), name
    # the teacher was trained once, on the client's side of the store, and read by the others
    assert (there.root / "cells" / "mlp__teacher.npz").read_bytes() == (
        here.root / "cells" / "mlp__teacher.npz"
    ).read_bytes()


# ---------------------------------------------------------------------------------------------
# Command line: one-line errors, before --out is touched


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler needs --executor dask"),
        (["--workers", "2"], "--workers needs --executor dask"),
        (["--executor", "dask"], "needs exactly one of --scheduler"),
        (
            ["--executor", "dask", "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"],
            "got scheduler and workers",
        ),
        (["--executor", "dask", "--workers", "0"], "--workers 0 must be an integer from 1"),
        (["--executor", "dask", "--scheduler", "127.0.0.1:8786"], "write it like tcp://HOST"),
        (["--executor", "dsak"], "did you mean 'dask'"),
    ],
)
def test_bad_executor_flags_are_one_line_errors(sweep, tmp_path, capsys, flags, message):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_an_unreachable_scheduler_fails_fast(tmp_path, capsys, monkeypatch):
    import socket

    from qunlearn import cli

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(cli, "DASK_CONNECT_TIMEOUT_S", 2.0)
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    out = tmp_path / "out"
    began = time.monotonic()
    argv = ["run", str(path), "--out", str(out), "--executor", "dask"]
    assert main([*argv, "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    assert time.monotonic() - began < 30
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and err.count("\n") == 1, err
    assert not out.exists()


USER_MEMBERS = """\
experiment = "noise_sweep"
name = "dask_user_members"
dataset = "test_families:toy_loader"
noises = ["label_flip", "mine"]
noise_options = { mine = { noise = "test_families:user_noise" } }
alphas = [0.0, 0.3]
runs = 2

[models.u]
model = "test_families:user_mlp"
hyper = { hidden = [4] }
epochs = 3
batch_size = 16
lr = 0.05
"""


@pytest.mark.slow
def test_user_members_named_by_reference_run_on_the_workers(client, tmp_path_factory, tmp_path):
    config = config_of(USER_MEMBERS, tmp_path_factory, "user_members")
    here = run(config, tmp_path / "here", progress=False)
    there = run(
        config, tmp_path / "there", progress=False, executor=DaskExecutor(config, client=client)
    )
    assert (there.root / "results.csv").read_bytes() == (here.root / "results.csv").read_bytes()
