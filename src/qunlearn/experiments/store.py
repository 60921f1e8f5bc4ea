"""A results directory that survives crashes: every finished cell is one atomically written file.

Layout::

    OUT/manifest.json        resolved config, its hash, versions, data checksums, timings
    OUT/cells/<cell>.json    one finished cell: its rows and a SHA-256 of them
    OUT/results.csv          the tidy table, rebuilt from the cells after each one

A cell file appears only via ``os.replace`` of a fully written, fsynced temporary file, so a crash
leaves either the whole cell or nothing (stray ``.*.tmp`` files are never read); a cell whose
checksum does not verify is set aside as ``.corrupt`` and recomputed. A directory written for
another config, by an incompatible format, or holding anything but our files is refused before
anything in it is touched. JSON only: nothing here ever unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from qunlearn.atomic import atomic_write_text, write_csv
from qunlearn.errors import QunlearnError

FORMAT_VERSION = 1


def _digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... : the first that does not exist (keep old files)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _differences(manifest: dict, config: dict) -> str:
    """Which top-level config keys differ from the manifest's config, for the refusal message."""
    old = manifest.get("config")
    if not isinstance(old, dict):
        return "its manifest holds no config"
    keys = sorted(k for k in old.keys() | config.keys() if old.get(k) != config.get(k))
    return "it differs in " + ", ".join(keys) if keys else "same keys, different hash"


class ResultStore:
    """Cells of one experiment config under ``root``; see the module docstring."""

    def __init__(self, root: str | Path, *, config: dict, config_hash: str, meta: dict):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.manifest_path = self.root / "manifest.json"
        # Check everything before writing anything: a refused directory is left exactly as it was.
        if self.manifest_path.exists():
            manifest = self._read_manifest()
            if manifest.get("format_version") != FORMAT_VERSION:
                raise QunlearnError(
                    f"{self.root} was written by result format {manifest.get('format_version')!r}, "
                    f"this qunlearn writes {FORMAT_VERSION}: use a new --out directory"
                )
            if manifest.get("config_hash") != config_hash:
                raise QunlearnError(
                    f"{self.root} holds results of a different config "
                    f"({_differences(manifest, config)}): use a new --out directory, or the "
                    "config that wrote it"
                )
        else:
            manifest = None
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

    def _check_foreign(self) -> None:
        """Without a manifest, ``root`` may hold only what a run killed at its start leaves: an
        empty ``cells/`` and temporary files. Anything else is not ours to overwrite or trust."""
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise QunlearnError(
                f"--out {self.root} is a file, not a directory: choose another --out"
            )
        for entry in self.root.iterdir():
            ours = entry.name.endswith(".tmp") or (
                entry == self.cells_dir and entry.is_dir()
                and all(p.name.endswith(".tmp") for p in entry.iterdir())
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
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=2, sort_keys=True))

    def update_manifest(self, **fields) -> None:
        self.manifest.update(fields)
        self._write_manifest()

    def _cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def load_cell(self, cell_id: str) -> dict | None:
        """The finished cell, or None if absent; a corrupt file is set aside (and so recomputed).

        A cell counts only if its file is JSON naming this cell with rows matching their SHA-256;
        nothing else (a truncated file, another cell's file, a pickle) is ever read as a result.
        """
        path = self._cell_path(cell_id)
        if not path.exists():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            ok = (isinstance(payload, dict) and payload.get("cell") == cell_id
                  and isinstance(payload.get("rows"), list)
                  and payload.get("sha256") == _digest(payload["rows"]))
        except (OSError, ValueError, TypeError):  # ValueError: bad JSON or not UTF-8
            ok = False
        if not ok:
            aside = _free_name(path.with_suffix(".corrupt"))
            os.replace(path, aside)
            warnings.warn(f"cell file {path} is corrupt (checksum or format); moved to {aside} "
                          "and recomputing", stacklevel=2)
            return None
        return payload

    def write_cell(self, cell_id: str, rows: list[dict], **info) -> None:
        payload = {"cell": cell_id, "rows": rows, "sha256": _digest(rows), **info}
        atomic_write_text(self._cell_path(cell_id), json.dumps(payload, sort_keys=True))

    def finished_cells(self) -> list[dict]:
        """Every verified cell in the directory, by file name (so in a fixed order)."""
        payloads = (self.load_cell(p.stem) for p in sorted(self.cells_dir.glob("*.json")))
        return [p for p in payloads if p is not None]

    def write_table(self, rows: list[dict], name: str = "results.csv") -> Path:
        """Write the tidy table atomically; an identical existing file is left untouched."""
        path = self.root / name
        if rows:
            write_csv(path, rows)
        return path
