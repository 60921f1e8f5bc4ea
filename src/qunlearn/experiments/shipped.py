"""The configs shipped inside the package (``qunlearn/configs/*.toml``), found by name from any
folder: ``qunlearn run fig2c_mnist`` and ``qunlearn.run("fig2c_mnist")`` read the packaged file
when no file of that name exists."""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from qunlearn.errors import QunlearnError, did_you_mean


def shipped_configs() -> dict[str, Traversable]:
    """{name: packaged file}, sorted by name (``fig2c_mnist`` -> ``configs/fig2c_mnist.toml``)."""
    folder = resources.files("qunlearn") / "configs"
    files = [p for p in folder.iterdir() if p.name.endswith(".toml") and p.is_file()]
    return {p.name.removesuffix(".toml"): p for p in sorted(files, key=lambda p: p.name)}


def find_config(path_or_name: str | os.PathLike) -> Path | Traversable:
    """The config file ``path_or_name`` names: the file itself when it exists, else the shipped
    config of that name (with or without ``.toml``). Anything else is a one-line QunlearnError
    with the closest shipped name and the list."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    text = str(path_or_name)
    shipped = shipped_configs()
    name = path.name.removesuffix(".toml")
    is_name = text in (name, f"{name}.toml")  # no folder in it
    if is_name and name in shipped:
        return shipped[name]
    listing = f"shipped configs: {', '.join(shipped)} (`qunlearn configs` describes them)"
    if not is_name:
        hint = (
            f" (the shipped config {name!r} has that file name: pass just {name!r})"
            if name in shipped
            else ""
        )
        what = "is a directory" if path.is_dir() else "not found"
        raise QunlearnError(f"config file {text!r} {what}{hint}: pass the path of a .toml file")
    raise QunlearnError(
        f"config {text!r}{did_you_mean(name, shipped)} is neither a file nor a shipped config: "
        f"pass a .toml path or one of the {listing}"
    )


def describe_configs() -> list[dict]:
    """One entry per shipped config: name, experiment kind and the first comment line."""
    out = []
    for name, file in shipped_configs().items():
        text = file.read_text(encoding="utf-8")
        try:
            kind = tomllib.loads(text).get("experiment", "?")
        except tomllib.TOMLDecodeError:
            kind = "invalid TOML"
        comments = (line.strip() for line in text.splitlines() if line.strip().startswith("#"))
        summary = next(comments, "#").lstrip("#").strip()
        out.append({"name": name, "experiment": kind, "summary": summary})
    return out


def format_configs(entries: list[dict]) -> str:
    """``describe_configs`` as aligned lines: name, kind, first comment line."""
    width = max((len(e["name"]) for e in entries), default=0)
    kinds = max((len(e["experiment"]) for e in entries), default=0)
    return "\n".join(
        f"{e['name']:{width}}  {e['experiment']:{kinds}}  {e['summary']}" for e in entries
    )
