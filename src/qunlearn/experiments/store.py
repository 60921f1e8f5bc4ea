"""A results directory you can trust: locked while a run writes it, every finished cell one
atomically written, self-verifying file.

Layout::

    OUT/.lock                while a run holds the directory: its pid, host and start time
    OUT/manifest.json        resolved config, its hash, versions, data checksums, timings
    OUT/cells/<cell>.json    one finished cell: rows (and extra tables), the config hash and
                             result format it was computed for, its companion files' SHA-256,
                             and a SHA-256 over all of that
    OUT/cells/<cell>.<ext>   companion files of a cell (e.g. a teacher's parameters, ``.npz``)
    OUT/results.csv          the tidy table, rebuilt from the verified cells

A file appears only via ``os.replace`` of a fully written, fsynced temporary file
(:mod:`qunlearn.atomic`), so a crash leaves either the whole cell or nothing. A cell counts only if
it verifies: JSON naming this cell, this config hash and result format, with a matching checksum
and companion files. Anything else (truncated, edited, another config's cell, a pickle) is moved
aside (``.corrupt`` or ``.foreign``, never overwriting an earlier one) and recomputed. A directory
written for another config or by another result format, or holding anything but our files, is
refused before anything in it is touched; one whose run failed before any cell finished is
reused. JSON only: nothing here ever unpickles.

Only our own files are ever written, moved aside or deleted: every write stays inside the
directory (:func:`qunlearn.atomic.check_target`), a directory that is a link, or holds a link or a
hard-linked cell, is refused with one line, and a file in ``cells/`` that carries no cell header
(the user's ``notes.json``, a pickle) is left where it is: skipped, or refused when it holds the
name of a cell to write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from qunlearn.atomic import atomic_write_bytes, check_target, csv_text
from qunlearn.errors import QunlearnError, warn

FORMAT_VERSION = 2
LOCK_NAME = ".lock"
CELL_KEYS = ("cell", "format_version")  # the header: every cell file we write has these keys
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _signed(cell_id: str, config_hash: str | None, rows, tables, files) -> dict:
    return {
        "cell": cell_id,
        "config_hash": config_hash,
        "format_version": FORMAT_VERSION,
        "rows": rows,
        "tables": tables,
        "files": files,
    }


def _cannot_write(path: Path, err: OSError) -> QunlearnError:
    return QunlearnError(
        f"cannot write {path}: {err.strerror or err}; free space or choose another --out"
    )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _cell_header(raw: bytes, payload) -> bool:
    """Whether a file in ``cells/`` that does not verify is still one of ours, to be moved aside:
    a JSON object with a cell's keys, or the damaged remains of one (it begins as our cell files
    do and names a cell). Anything else (the user's notes, a pickle) is not ours to move."""
    if isinstance(payload, dict):
        return all(key in payload for key in CELL_KEYS)
    return raw.startswith(b'{"') and b'"cell": "' in raw


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... : the first that does not exist (keep old files;
    a dangling link counts as existing: it is not ours to replace)."""
    candidate, n = path, 0
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _flat(config, prefix: str = "") -> dict:
    """``{"models.mlp.epochs": 2, ...}``: every leaf of a nested config dict by dotted key."""
    if not isinstance(config, dict) or not config:
        return {prefix: config}
    out: dict = {}
    for key, value in config.items():
        out |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def config_differences(old, new: dict) -> str:
    """Which dotted config keys differ, with both values, for a refusal message."""
    if not isinstance(old, dict):
        return "its manifest holds no config"
    a, b = _flat(old), _flat(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))
    if not keys:
        return "same keys, different hash"
    shown = [
        f"{k} = {a.get(k, '<absent>')!r} there, {b.get(k, '<absent>')!r} here" for k in keys[:4]
    ]
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return "it differs in " + "; ".join(shown) + more


# ---------------------------------------------------------------------------------------------
# The lock: one run at a time per results directory


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read_lock(path: Path) -> dict:
    """The holder a lock file records; {} for anything else (a link is not followed)."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | _NOFOLLOW), encoding="utf-8") as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _own_lock(path: Path, pid=None) -> bool:
    """Whether ``path`` is a lock file a qunlearn run wrote (by ``pid``, if given): ours to
    delete. A link or a hard-linked file never is."""
    try:
        check_target(path)
    except QunlearnError:
        return False
    holder = _read_lock(path)
    return "pid" in holder and "host" in holder and (pid is None or holder["pid"] == pid)


@contextlib.contextmanager
def locked(root: str | Path, *, command: str = ""):
    """Hold ``root/.lock`` (created with O_EXCL: pid, host, start time) for the block.

    A second run on the same directory is refused with a line naming the holder. A lock whose
    holder ran on this host and no longer exists is stale: it is set aside and taken over. A
    directory this call created and left empty (a refused run) is removed again.
    """
    root = check_target(root)  # not a link (into another run, say)
    created = not root.exists()
    if root.exists() and not root.is_dir():
        raise QunlearnError(f"--out {root} is a file, not a directory: choose another --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise QunlearnError(
            f"cannot create results directory {root}: {err.strerror or err}; choose another --out"
        ) from None
    lock = check_target(root / LOCK_NAME)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": command,
    }
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o644)
        except FileExistsError:
            check_target(lock)  # a link planted there is refused, not renamed
            holder = _read_lock(lock)
            stale = (
                holder.get("host") == me["host"]
                and isinstance(holder.get("pid"), int)
                and not _pid_alive(holder["pid"])
            )
            if not stale:
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
                raise QunlearnError(
                    f"{root} is in use by another qunlearn run (pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, since {since}): wait for it to finish or choose "
                    f"another --out; if that run is gone, delete {lock}"
                ) from None
            with contextlib.suppress(FileNotFoundError):  # one of two racing takers wins
                os.replace(lock, _free_name(root / f"{LOCK_NAME}.stale"))
            warn(f"{root}: took over the stale lock of pid {holder['pid']} (no longer running)")
            continue
        except OSError as err:
            raise QunlearnError(
                f"results directory {root} is not writable "
                f"({err.strerror or err}): choose another --out"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:  # pragma: no cover - three stale takeovers in a row
        raise QunlearnError(f"could not lock {root}: another run keeps taking it; retry")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if _own_lock(lock, me["pid"]):
                lock.unlink()
        for stale in root.glob(f"{LOCK_NAME}.stale*"):
            with contextlib.suppress(OSError):
                if _own_lock(stale):
                    stale.unlink()
        if created:
            with contextlib.suppress(OSError):  # only if nothing was written
                (root / "cells").rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()


# ---------------------------------------------------------------------------------------------
# The store


class ResultStore:
    """Cells of one experiment config under ``root``; see the module docstring.

    ``ResultStore(root, config=..., config_hash=..., meta=...)`` opens it for writing (checks first,
    then writes the manifest if new); hold :func:`locked` around it. ``ResultStore.read(root)``
    opens an existing directory read-only (compare, plot): nothing is moved or written.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        config: dict,
        config_hash: str,
        meta: dict,
        _readonly_manifest: dict | None = None,
    ):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.manifest_path = self.root / "manifest.json"
        self.readonly = _readonly_manifest is not None
        if not self.readonly:
            check_target(self.root)
        self._check_links()
        self.rejected: dict[str, str] = {}  # cell id -> why it did not verify (read-only mode)
        self.left_alone: set[Path] = set()  # files in cells/ that are not ours (warned once)
        self.tables: dict[str, str] = {}  # name -> CSV text rebuilt from the cells (read-only)
        self.manifest: dict
        self.config_hash: str | None  # None: a read-only manifest that records none
        if _readonly_manifest is not None:
            self.manifest = _readonly_manifest
            self.config_hash = _readonly_manifest.get("config_hash")
            return
        self.config_hash = config_hash
        # Check everything before writing anything: a refused directory is left exactly as it was.
        manifest = None
        if self.manifest_path.exists():
            manifest = self._read_manifest()
            problem = None
            if manifest.get("format_version") != FORMAT_VERSION:
                problem = (
                    f"{self.root} was written by result format "
                    f"{manifest.get('format_version')!r}, this qunlearn writes "
                    f"{FORMAT_VERSION}: use a new --out directory"
                )
            elif manifest.get("config_hash") != config_hash:
                problem = (
                    f"{self.root} holds results of a different config "
                    f"({config_differences(manifest.get('config'), config)}): use a new "
                    "--out directory, or the config that wrote it"
                )
            if problem and self._has_finished_cells():
                raise QunlearnError(problem)
            if problem:  # its run failed before any cell finished: nothing to lose, start anew
                warn(f"{self.root}: no cell had finished there; starting it anew for this config")
                manifest = None
        else:
            self._check_foreign()
        try:
            self.cells_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise QunlearnError(
                f"cannot create results directory {self.root}: {err.strerror or err}; choose "
                "another --out"
            ) from None
        if not os.access(self.cells_dir, os.W_OK):
            raise QunlearnError(
                f"results directory {self.root} is not writable: choose another --out"
            )
        if manifest is not None:
            self.manifest = manifest
        else:
            self.manifest = {
                "format_version": FORMAT_VERSION,
                "config_hash": config_hash,
                "config": config,
                **meta,
            }
            self._write_manifest()

    @classmethod
    def read(cls, root: str | Path) -> ResultStore:
        """Open an existing results directory read-only, or fail with one line saying why."""
        root = Path(root)
        if not root.is_dir():
            what = "is a file, not a results directory" if root.exists() else "not found"
            raise QunlearnError(
                f"results directory {root} {what}: pass the --out of a `qunlearn run`"
            )
        path = root / "manifest.json"
        if not path.is_file():
            raise QunlearnError(
                f"no manifest.json in {root}: it is no qunlearn results "
                "directory (or was copied without it); rerun the experiment"
            )
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
            raise QunlearnError(
                f"{path} is unreadable or holds no config ({_one_line(err)}): rerun the experiment"
            ) from None
        config = manifest.get("config") if isinstance(manifest, dict) else None
        if not (isinstance(config, dict) and "experiment" in config and "name" in config):
            raise QunlearnError(f"{path} holds no config: rerun the experiment")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise QunlearnError(
                f"{root} was written by result format "
                f"{manifest.get('format_version')!r}; this qunlearn reads "
                f"{FORMAT_VERSION}: rerun the experiment into a new --out"
            )
        return cls(root, config=config, config_hash="", meta={}, _readonly_manifest=manifest)

    def _check_links(self) -> None:
        """Refuse, before anything is read or written, a directory whose ``cells/``, manifest or
        cell files are links (they lead out of it); to write, also any link or hard-linked file
        in it or in ``cells/`` (not only ours: a directory qunlearn writes holds no links)."""
        paths = [self.manifest_path, self.cells_dir]
        if not self.readonly and self.root.is_dir():
            paths += sorted(self.root.iterdir())
        if self.cells_dir.is_dir() and not self.cells_dir.is_symlink():
            paths += sorted(self.cells_dir.iterdir())
        for path in paths:
            check_target(path, self.root, allow_hard_links=self.readonly)

    def _has_finished_cells(self) -> bool:
        return self.cells_dir.is_dir() and any(self.cells_dir.glob("*.json"))

    def _check_foreign(self) -> None:
        """Without a manifest, ``root`` may hold only what a run killed at its start leaves: the
        lock, an empty ``cells/`` and temporary files. Anything else is not ours to overwrite."""
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise QunlearnError(
                f"--out {self.root} is a file, not a directory: choose another --out"
            )
        for entry in self.root.iterdir():
            ours = (
                entry.name.endswith(".tmp")
                or entry.name.startswith(LOCK_NAME)
                or (
                    entry == self.cells_dir
                    and entry.is_dir()
                    and all(p.name.endswith(".tmp") for p in entry.iterdir())
                )
            )
            if not ours:
                raise QunlearnError(
                    f"{self.root} is not empty and has no manifest.json (it holds {entry.name!r}), "
                    "so it is no qunlearn results directory: choose a new or empty --out"
                )

    def _read_manifest(self) -> dict:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
            raise QunlearnError(
                f"{self.manifest_path} is unreadable ({_one_line(err)}): use a new --out directory"
            ) from None
        if not isinstance(manifest, dict):
            raise QunlearnError(
                f"{self.manifest_path} is not a qunlearn manifest: use a new --out directory"
            )
        return manifest

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=2, sort_keys=True)
        self._write(self.manifest_path, text.encode())

    def _write(self, path: Path, data: bytes) -> None:
        """Every file the store writes: atomically, inside ``root``, never through a link."""
        atomic_write_bytes(path, data, error=_cannot_write, root=self.root)

    def put_file(self, name: str, data: bytes) -> None:
        """Write the file ``name`` under ``cells/`` (a companion file, or a shipped cell)."""
        self._write(self.companion_path(name), data)

    def update_manifest(self, **fields) -> None:
        self.manifest.update(fields)
        self._write_manifest()

    def _cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def companion_path(self, name: str) -> Path:
        """Where a cell's companion file ``name`` (e.g. ``mlp__teacher.npz``) lives."""
        return self.cells_dir / name

    def _verify(self, cell_id: str, payload) -> str | None:
        """Why ``payload`` is not a finished cell of this store, or None if it is."""
        if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
            return "not a cell file"
        if payload.get("cell") != cell_id:
            return f"it names cell {payload.get('cell')!r}"
        if payload.get("format_version") != FORMAT_VERSION:
            return f"result format {payload.get('format_version')!r}"
        if payload.get("config_hash") != self.config_hash:
            return f"computed for config {payload.get('config_hash')!r}, not this one"
        files = payload.get("files", {})
        signed = _signed(
            cell_id, payload["config_hash"], payload["rows"], payload.get("tables", {}), files
        )
        if payload.get("sha256") != _digest(signed):
            return "checksum mismatch"
        for name, digest in files.items():
            path = self.companion_path(name)
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                return f"companion file {name} missing or changed"
        return None

    def load_cell(self, cell_id: str, *, needed: bool = True) -> dict | None:
        """The finished, verified cell, or None if absent. A cell file of ours that does not
        verify is moved aside (``.foreign`` if computed for another config, else ``.corrupt``) so
        it is recomputed; in read-only mode it is only recorded in :attr:`rejected`. A file
        without a cell header is not ours: left as it is, and refused if the cell is ``needed``
        (it would have to be written there)."""
        path = self._cell_path(cell_id)
        if not os.path.lexists(path):
            return None
        check_target(path, self.root, allow_hard_links=self.readonly)
        raw, payload = b"", None
        try:
            raw = path.read_bytes()
            payload = json.loads(raw.decode("utf-8"))
            problem = self._verify(cell_id, payload)
        except (OSError, ValueError, TypeError) as err:  # ValueError: bad JSON or not UTF-8
            problem = f"unreadable ({type(err).__name__})"
        if problem is None:
            return payload
        if self.readonly:
            self.rejected[cell_id] = problem
            return None
        if not _cell_header(raw, payload):
            if needed:
                raise QunlearnError(
                    f"{path} is no qunlearn cell file ({problem}), and cell {cell_id} is to be "
                    f"written there: move the file out of {self.cells_dir} and rerun"
                )
            if path not in self.left_alone:
                warn(f"{path} is no qunlearn cell file ({problem}); left as it is")
                self.left_alone.add(path)
            return None
        suffix = (
            ".foreign"
            if problem.startswith(("computed for config", "result format"))
            else ".corrupt"
        )
        aside = check_target(_free_name(path.with_suffix(suffix)), self.root)
        os.replace(path, aside)
        warn(f"cell file {path} does not verify ({problem}); moved to {aside} and recomputing")
        return None

    def write_cell(
        self,
        cell_id: str,
        rows: list[dict],
        *,
        tables: dict | None = None,
        files: dict[str, bytes] | None = None,
        **info,
    ) -> dict:
        """Write companion ``files`` (name -> bytes), then the cell that signs them; returns it."""
        digests = {}
        for name, data in (files or {}).items():
            self.put_file(name, data)
            digests[name] = hashlib.sha256(data).hexdigest()
        signed = _signed(cell_id, self.config_hash, rows, tables or {}, digests)
        payload = {**info, **signed, "sha256": _digest(signed)}
        self._write(self._cell_path(cell_id), json.dumps(payload, sort_keys=True).encode())
        return payload

    def finished_cells(self) -> list[dict]:
        """Every verified cell in the directory, by file name (so in a fixed order)."""
        if not self.cells_dir.is_dir():
            return []
        paths = sorted(self.cells_dir.glob("*.json"))
        payloads = (self.load_cell(p.stem, needed=False) for p in paths)
        return [p for p in payloads if p is not None]

    def write_table(
        self, rows: list[dict], name: str = "results.csv", fieldnames: list[str] | None = None
    ) -> Path:
        """Write the tidy table atomically (an identical existing file is left untouched); no rows
        and ``fieldnames``: the header alone. In read-only mode the table is kept in
        :attr:`tables` (name -> CSV text) instead, for compare and plot."""
        path = self.root / name
        if rows:
            text = csv_text(rows)
        elif fieldnames:  # "\n"-terminated, as header-only tables always were
            text = ",".join(fieldnames) + "\n"
        else:
            return path
        if self.readonly:
            self.tables[name] = text
        elif not (path.is_file() and path.read_bytes() == text.encode("utf-8")):
            self._write(path, text.encode("utf-8"))
        return path
