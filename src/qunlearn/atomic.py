"""Files that are whole or absent: the one atomic writer of qunlearn (caches, results, tables).

A file appears only via ``os.replace`` of a fully written, fsynced temporary file in the same
directory, so a crash, ``kill -9`` or power cut leaves the old file or the whole new one (stray
``.*.tmp`` files are never read). A Ctrl-C or SIGTERM that arrives mid-write is held until the
file is whole, then delivered. Tables go through the ``csv`` module (quoting included).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from qunlearn.errors import QunlearnError

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred():
    """Hold a Ctrl-C (SIGINT) or SIGTERM that arrives inside the block; deliver it after.

    A file write is a few milliseconds; a KeyboardInterrupt between creating the temporary file
    and renaming it is what leaves stray ``.tmp`` files behind. Signal handlers can only be set
    from the main thread; elsewhere the block runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[signal.Signals] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: pending.append(signal.Signals(signum)))
        for s in DEFERRED_SIGNALS
    }
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for signum in dict.fromkeys(pending):  # deliver each once, as the handler in place would
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)  # Python's default SIGINT handler raises KeyboardInterrupt
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), signum)
        # SIG_IGN (e.g. a background job): ignored, as it would have been


def cannot_write(path: Path, err: OSError) -> QunlearnError:
    return QunlearnError(
        f"cannot write {path}: {err.strerror or err}; free space, fix the permissions or choose "
        "another directory"
    )


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, error=cannot_write) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part.
    An ``OSError`` becomes ``error(path, err)``, a :class:`QunlearnError` saying what to do."""
    path = Path(path)
    with signals_deferred():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as err:
            raise error(path, err) from None
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; our files are meant to be shared
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise error(path, err) from None
            raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def csv_text(rows: Iterable[dict], fieldnames: list[str] | None = None) -> str:
    """A CSV table (header + rows) through the ``csv`` module; missing fields are empty.
    ``fieldnames`` default: the keys of the first row, in order."""
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(rows[0]) if rows else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, restval="", extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(
    path: str | os.PathLike, rows: Iterable[dict], fieldnames: list[str] | None = None
) -> Path:
    """Write a CSV table atomically; an identical existing file is left untouched."""
    path = Path(path)
    text = csv_text(rows, fieldnames)
    if not (path.is_file() and path.read_bytes() == text.encode("utf-8")):
        atomic_write_text(path, text)
    return path
