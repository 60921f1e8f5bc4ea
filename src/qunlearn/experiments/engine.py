"""The cell engine: every experiment kind is an ordered mapping cell id -> :class:`Cell`; this
module runs it into a :class:`~qunlearn.experiments.store.ResultStore`, once for all kinds.

It verifies and reuses finished cells, computes the rest through an *executor*, and owns what every
kind shares: timings (``manifest.timings``), the non-finite policy (a run with a NaN or infinite
value is named in its cell's ``nonfinite_runs``, in ``manifest.nonfinite`` and in one warning line;
the other cells go on), Ctrl-C and SIGTERM (the running cell is abandoned, the tables are rebuilt
from the finished cells, :class:`Interrupted` is raised for the CLI to print the resume command),
``manifest.last_run`` and the summary line, and progress (bars on a terminal, plain lines in a
log, nothing when quiet).

An executor has ``map(store, items) -> iterator of (cell_id, CellResult)`` over ``(cell_id, Cell)``
pairs, yielding in any order; the engine writes each result as it arrives (the executor never
writes). :class:`InProcess` (the default) computes them one by one, in order, which is all a
cell's ``after`` dependencies need; ``"dask"`` (:mod:`~qunlearn.experiments.dask_executor`)
computes them as tasks on a Dask cluster, each cell once its ``after`` cells are finished. The
runner chooses the executor (``runner.EXECUTORS``); the engine knows none by name.
Adding an experiment kind = one module that builds the cells.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from qunlearn.errors import warn
from qunlearn.experiments.store import ResultStore


@dataclass(frozen=True)
class CellResult:
    """What a computation returns: tidy ``rows`` plus what the cell file keeps beside them."""

    rows: list[dict]
    info: dict = field(default_factory=dict)  # extra JSON fields of the cell file (kind, ...)
    tables: dict = field(default_factory=dict)  # further tables: name -> rows
    files: dict = field(default_factory=dict)  # companion files: name -> bytes (e.g. a .npz)
    timing: dict = field(default_factory=dict)  # extra timing fields (e.g. curvature_seconds)
    compiled: bool = False  # whether this computation included an XLA compilation


@dataclass(frozen=True)
class Cell:
    """One resumable unit of work: ``compute(store) -> CellResult``. ``ticks``: how often it calls
    :meth:`Progress.tick` (its progress bar's total); ``after``: cells whose results it reads."""

    compute: Callable[[ResultStore], CellResult]
    ticks: int = 0
    after: tuple[str, ...] = ()
    nonfinite_hint: str = "lower the learning rate"  # what to do when a run's values are not finite


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; ``signum`` says which (for the exit status)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Progress:
    """Progress output: tqdm bars when ``stream`` is a terminal, one plain line per finished cell
    otherwise (no carriage returns or cursor escapes in a log), nothing when not ``enabled``."""

    def __init__(self, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.bars = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._epoch_bar = None

    def tick(self, *_) -> None:
        """One unit of the running cell (called from jitted programs via ``jax.debug.callback``)."""
        if self._epoch_bar is not None:
            self._epoch_bar.update(1)

    @property
    def on_epoch(self):
        """What to hand a program as its per-epoch callback: None when nothing is shown."""
        return self.tick if self.bars else None

    @contextlib.contextmanager
    def cell(self, cell_id: str, ticks: int):
        if self.bars and ticks:
            self._epoch_bar = tqdm(
                total=ticks, desc=f"  {cell_id}", unit="epoch", leave=False, file=self.stream
            )
        try:
            yield
        finally:
            if self._epoch_bar is not None:
                self._epoch_bar.close()
                self._epoch_bar = None

    def overall(self, name: str, total: int):
        return tqdm(total=total, desc=name, unit="cell", disable=not self.bars, file=self.stream)

    def line(self, text: str) -> None:
        if self.enabled and not self.bars:
            print(text, file=self.stream, flush=True)


class InProcess:
    """Compute cells one by one in this process, in the given order."""

    def map(
        self, store: ResultStore, items: Iterable[tuple[str, Cell]]
    ) -> Iterator[tuple[str, CellResult]]:
        for cell_id, cell in items:
            yield cell_id, cell.compute(store)


_noted_signals: list[int] = []  # every Ctrl-C / SIGTERM seen inside interrupts_noted()
_noting_depth = 0


def _interrupt(signum, frame):
    _noted_signals.append(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_noted():
    """Ctrl-C and SIGTERM (what a batch scheduler sends) raise :class:`Interrupted`, and are
    noted, so that :func:`raise_if_interrupted` sees them even when the exception was lost.

    It is lost when the signal lands while XLA runs a Python callback (its garbage-collection
    hook runs during compilation): Python prints "Exception ignored" and carries on, and the run
    would finish and exit 0 as if no one had pressed Ctrl-C. A signal that is ignored (SIG_IGN,
    e.g. a background job) stays ignored. Nests; handlers are set from the main thread only.
    """
    global _noting_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _noting_depth == 0:
        _noted_signals.clear()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in previous.items():
        if handler != signal.SIG_IGN:
            signal.signal(s, _interrupt)
    hook = sys.unraisablehook

    def quiet_if_interrupt(unraisable):
        """An interrupt raised where Python can only print it ("Exception ignored in ...") is
        noted already: print nothing. Anything else goes to the hook that was in place."""
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)

    sys.unraisablehook = quiet_if_interrupt
    _noting_depth += 1
    try:
        yield
    finally:
        _noting_depth -= 1
        sys.unraisablehook = hook
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` for a noted signal whose exception was lost (see above)."""
    if _noted_signals:
        raise Interrupted(_noted_signals[-1])


def nonfinite_runs(rows: list[dict]) -> list:
    """The runs (``run`` field, else ``teacher`` or ``seed``) with a NaN or infinite value."""
    bad = set()
    for row in _nonfinite_rows(rows):
        bad.add(next((row[k] for k in ("run", "teacher", "seed") if k in row), None))
    return sorted(bad, key=str)


def _nonfinite_rows(rows: list[dict]) -> list[dict]:
    return [
        row
        for row in rows
        if isinstance(row.get("value"), float) and not math.isfinite(row["value"])
    ]


def _nonfinite_metrics(rows: list[dict], shown: int = 6) -> str:
    """The metric names of the NaN or infinite values, for the warning (the first ``shown``)."""
    names = sorted({str(row.get("metric")) for row in _nonfinite_rows(rows)})
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def run_cells(
    store: ResultStore,
    cells: Mapping[str, Cell],
    *,
    tables: Callable[[ResultStore, bool], object],  # its return value is not used
    name: str,
    progress: Progress | None = None,
    executor=None,
) -> dict:
    """Reuse every finished cell of ``cells``, compute the others, keep the store and its tables
    current after each one. Returns ``last_run`` ({reused, computed, seconds}); also in the
    manifest. ``tables(store, final)`` rebuilds the tables from the finished cells (``final`` at
    the end or on interrupt, for tables too costly to rebuild after every cell)."""
    progress = progress or Progress(enabled=False)
    executor = executor or InProcess()
    start = time.perf_counter()
    timings = dict(store.manifest.get("timings", {}))
    nonfinite = dict(store.manifest.get("nonfinite", {}))
    reused = [c for c in cells if store.load_cell(c) is not None]
    todo = [(c, cell) for c, cell in cells.items() if c not in reused]
    computed: list[str] = []
    bar = progress.overall(name, len(cells))
    bar.update(len(reused))

    def computations():
        """In process: one cell at a time, each under its own progress bar and timer."""
        for cell_id, cell in todo:
            with progress.cell(cell_id, cell.ticks):
                began = time.perf_counter()
                ((_, result),) = executor.map(store, [(cell_id, cell)])
                seconds = time.perf_counter() - began
            yield cell_id, result, seconds

    def last_run(interrupted: bool) -> dict:
        return {
            "reused": reused,
            "computed": computed,
            "interrupted": interrupted,
            "seconds": round(time.perf_counter() - start, 3),
        }

    try:
        with interrupts_noted():
            for cell_id, result, seconds in (
                computations()
                if isinstance(executor, InProcess)
                else _unordered(executor, store, todo)
            ):
                bad = nonfinite_runs(result.rows)
                store.write_cell(
                    cell_id,
                    result.rows,
                    tables=result.tables,
                    files=result.files,
                    seconds=round(seconds, 3),
                    includes_compile=result.compiled,
                    nonfinite_runs=bad,
                    **result.info,
                )
                timings[cell_id] = {
                    "seconds": round(seconds, 3),
                    "includes_compile": result.compiled,
                    **result.timing,
                }
                if bad:
                    nonfinite[cell_id] = bad
                    warn(
                        f"{cell_id}: NaN or infinite values ({_nonfinite_metrics(result.rows)}) "
                        f"in runs {bad}; they are recorded as NaN and the other cells go on: "
                        f"{cells[cell_id].nonfinite_hint}"
                    )
                computed.append(cell_id)
                store.update_manifest(timings=timings, nonfinite=nonfinite)
                tables(store, False)
                bar.update(1)
                progress.line(
                    f"{name}: [{len(reused) + len(computed)}/{len(cells)}] {cell_id} "
                    f"{seconds:.1f} s"
                )
                raise_if_interrupted()  # the cell is kept; stop before the next one
            raise_if_interrupted()
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the tables match the finished cells
        bar.close()
        tables(store, True)
        store.update_manifest(last_run=last_run(True))
        raise err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT) from None
    bar.close()
    tables(store, True)
    if nonfinite:
        warn(
            f"{len(nonfinite)} cell(s) have runs with NaN or infinite values, recorded as NaN: "
            f"{sorted(nonfinite)}"
        )
    store.update_manifest(nonfinite=nonfinite, last_run=last_run(False))
    return store.manifest["last_run"]


def _unordered(executor, store, todo):
    """Results of an executor that runs cells elsewhere, timed by the wall time between them."""
    began = time.perf_counter()
    for cell_id, result in executor.map(store, todo):
        now = time.perf_counter()
        yield cell_id, result, result.timing.get("seconds", now - began)
        began = now


def summary_line(last_run: Mapping) -> str:
    """The line every experiment kind prints at the end."""
    return f"cells: {len(last_run['computed'])} computed, {len(last_run['reused'])} reused"


class Plan:
    """What an experiment kind hands the engine: the ordered cells, how to rebuild its tables from
    the finished cells (``tables(store, final)``), and the data set's description for the
    manifest. Built after every check passed, before ``--out`` is touched."""

    def __init__(
        self, cells: Mapping[str, Cell], tables: Callable[[ResultStore, bool], object], data: dict
    ):
        self.cells, self.tables, self.data = dict(cells), tables, data
