"""A results directory that survives crashes: every finished cell is one atomically written file.

Layout::

    OUT/manifest.json        resolved config, its hash, versions, data checksums, timings
    OUT/cells/<cell>.json    one finished cell: its rows and a SHA-256 of them
    OUT/results.csv          the tidy table, rebuilt from the cells after each one

A cell file appears only via ``os.replace`` of a fully written, fsynced temporary file, so a crash
leaves either the whole cell or nothing; a cell whose checksum does not verify is set aside and
recomputed. A directory written for another config, or by an incompatible format, is refused.
JSON only: nothing here ever unpickles.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

from qunlearn.errors import QunlearnError

FORMAT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise QunlearnError(f"cannot write {path}: {err.strerror}; free space or choose --out") from None


def _digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


class ResultStore:
    """Cells of one experiment config under ``root``; see the module docstring."""

    def __init__(self, root: str | Path, *, config: dict, config_hash: str, meta: dict):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        try:
            self.cells_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise QunlearnError(
                f"cannot create results directory {self.root}: {err.strerror}; choose another --out"
            ) from None
        if not os.access(self.cells_dir, os.W_OK):
            raise QunlearnError(f"results directory {self.root} is not writable: choose another --out")
        self.manifest_path = self.root / "manifest.json"
        if self.manifest_path.exists():
            manifest = self._read_manifest()
            if manifest.get("format_version") != FORMAT_VERSION:
                raise QunlearnError(
                    f"{self.root} was written by result format {manifest.get('format_version')!r}, "
                    f"this qunlearn writes {FORMAT_VERSION}: use a new --out directory"
                )
            if manifest.get("config_hash") != config_hash:
                raise QunlearnError(
                    f"{self.root} holds results of a different config (hash "
                    f"{manifest.get('config_hash')} != {config_hash}): use a new --out directory"
                )
            self.manifest = manifest
        else:
            self.manifest = {
                "format_version": FORMAT_VERSION,
                "config_hash": config_hash,
                "config": config,
                **meta,
            }
            self._write_manifest()

    def _read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise QunlearnError(
                f"{self.manifest_path} is unreadable ({err}): use a new --out directory"
            ) from None

    def _write_manifest(self) -> None:
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=2, sort_keys=True))

    def update_manifest(self, **fields) -> None:
        self.manifest.update(fields)
        self._write_manifest()

    def _cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def load_cell(self, cell_id: str) -> dict | None:
        """The finished cell, or None if absent; a corrupt file is set aside (and so recomputed)."""
        path = self._cell_path(cell_id)
        if not path.exists():
            return None
        try:
            payload = json.loads(path.read_text())
            ok = payload.get("sha256") == _digest(payload["rows"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            aside = path.with_suffix(".corrupt")
            os.replace(path, aside)
            warnings.warn(f"cell file {path} failed its checksum; moved to {aside} and recomputing",
                          stacklevel=2)
            return None
        return payload

    def write_cell(self, cell_id: str, rows: list[dict], **info) -> None:
        payload = {"cell": cell_id, "rows": rows, "sha256": _digest(rows), **info}
        atomic_write_text(self._cell_path(cell_id), json.dumps(payload, sort_keys=True))

    def finished_cells(self) -> list[dict]:
        payloads = (self.load_cell(p.stem) for p in sorted(self.cells_dir.glob("*.json")))
        return [p for p in payloads if p is not None]

    def write_table(self, rows: list[dict], name: str = "results.csv") -> Path:
        path = self.root / name
        if rows:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(path, buf.getvalue())
        return path
