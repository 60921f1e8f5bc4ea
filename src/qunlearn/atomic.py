"""Files that are whole or absent: the one atomic writer of qunlearn (caches, results, tables).

A file appears only via ``os.replace`` of a fully written, fsynced temporary file in the same
directory, so a crash, ``kill -9`` or power cut leaves the old file or the whole new one (stray
``.*.tmp`` files are never read). A Ctrl-C or SIGTERM that arrives mid-write is held until the
file is whole, then delivered. Tables go through the ``csv`` module (quoting included).

It never writes through a link: :func:`check_target`, called by every write here and on every
directory qunlearn owns (a results ``--out``: never itself a link into another run), refuses a
target that is a symbolic link or has a second hard link, a name with ``..`` and, below the
directory qunlearn owns, a folder that is a link. What a link leads to is the user's, untouched.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import stat
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


def _link_error(path: Path) -> QunlearnError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return QunlearnError(
        f"{path} is a symbolic link{target}: qunlearn never writes, renames or deletes through "
        "a link; remove the link or choose another path"
    )


def _backtracks(path: Path) -> bool:
    """Whether ``path`` climbs out of a folder it named (``a/../b``); a leading ``../`` does not:
    it is where the path starts."""
    parts = path.parts
    leading = next((i for i, p in enumerate(parts) if p != ".."), len(parts))
    return ".." in parts[leading:]


def check_target(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    allow_hard_links: bool = False,
) -> Path:
    """Refuse (one line naming it) to write, rename or delete ``path`` (a file, or a directory
    qunlearn owns) when it is a symbolic link, a file with another hard link (``st_nlink > 1``:
    not only ours; ``allow_hard_links`` for reading) or has ``..`` after a folder name. With
    ``root``, the directory qunlearn owns, ``path`` must also lie inside it by name and no folder
    between the two may be a link. Folders above ``root`` are the user's. Returns ``path``."""
    path = Path(path)
    if _backtracks(path):
        raise QunlearnError(f"{path} has '..' after a folder name: write the path without '..'")
    if root is not None:
        root = Path(root)
        try:
            rel = path.relative_to(root)
        except ValueError:
            raise QunlearnError(f"{path} is outside {root}: qunlearn writes only inside") from None
        if ".." in rel.parts:
            raise QunlearnError(f"{path} has '..' in its name: qunlearn writes only inside {root}")
        folder = root
        for part in rel.parts[:-1]:
            folder = folder / part
            if folder.is_symlink():
                raise _link_error(folder)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError:  # e.g. a parent that is a file: the write itself reports it
        return path
    if stat.S_ISLNK(st.st_mode):
        raise _link_error(path)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and not allow_hard_links:
        raise QunlearnError(
            f"{path} has {st.st_nlink - 1} other hard link(s): it is not only qunlearn's, so it "
            "is left as it is; copy the directory without hard links (cp -r) or remove it"
        )
    return path


def cannot_write(path: Path, err: OSError) -> QunlearnError:
    return QunlearnError(
        f"cannot write {path}: {err.strerror or err}; free space, fix the permissions or choose "
        "another directory"
    )


def atomic_write_bytes(
    path: str | os.PathLike, data: bytes, *, error=cannot_write, root=None
) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part.
    An ``OSError`` becomes ``error(path, err)``, a :class:`QunlearnError` saying what to do.
    ``path`` (and ``root``, the directory it must stay in) pass :func:`check_target` first."""
    path = check_target(path, root)
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


def atomic_write_text(path: str | os.PathLike, text: str, *, root=None) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), root=root)


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
