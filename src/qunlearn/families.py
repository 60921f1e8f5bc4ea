"""Open families: the models, unlearning methods, datasets and noise kinds a config can name.

A member is named in one of four ways, looked up in this order:

1. a built-in name (``"qnn"``, ``"scrub"``, ``"mnist"``, ``"label_flip"``);
2. a name registered in this process: ``qunlearn.register_model("mine", factory)``;
3. a name an installed package offers under the entry-point group of the family
   (``[project.entry-points."qunlearn.models"] mine = "mypkg.circuits:ansatz"``);
4. a reference ``"package.module:callable"`` (as Hydra's ``_target_`` and setuptools' entry points),
   imported when it is first used.

Only :meth:`Family.resolve` imports anything. Membership (``name in MODELS``), listing and the
config checks never do, so reading a results directory (``compare``, ``plot``, ``report``,
``qunlearn.load``) cannot run code that a manifest names: a results directory is data.

:meth:`Family.provenance` says what made a member (its reference and the installed version or the
sha256 of its module file); every run records it in its manifest.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from qunlearn.errors import QunlearnError, did_you_mean, first_line

REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
"""``package.module:attribute.path``: what a config may write instead of a name."""


def is_reference(name: object) -> bool:
    return isinstance(name, str) and REFERENCE.fullmatch(name) is not None


class Family(Mapping[str, Callable]):
    """One family of members (name -> factory): built-ins, registered names and entry points.

    As a mapping it holds the *names* (built-in, registered, installed) without importing any
    plug-in; ``name in family`` is also true for a well-formed reference, which is imported only
    by :meth:`resolve` (``family[name]`` is ``resolve``)."""

    def __init__(self, what: str, group: str, builtins: Mapping[str, Callable]):
        self.what, self.group = what, group
        self._builtins = dict(builtins)
        self._registered: dict[str, Callable] = {}

    # --- names, without importing anything -------------------------------------------------

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Built-in, then registered, then installed names (sorted within each)."""
        taken = {**self._builtins, **self._registered}
        plugins = [n for n in self._entry_points() if n not in taken]
        return [*self._builtins, *sorted(self._registered), *sorted(plugins)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self._builtins
            or name in self._registered
            or is_reference(name)
            or name in self._entry_points()
        )

    def __getitem__(self, name: str) -> Callable:
        return self.resolve(name)

    def is_builtin(self, name: str) -> bool:
        return name in self._builtins

    def builtin(self, name: str) -> Callable | None:
        """The built-in factory of ``name``, or None: for readers of results, which never import."""
        return self._builtins.get(name)

    def unknown(self, where: str, name: object, own: str | None = None) -> str | None:
        """The one-line complaint about ``name`` (None when it names a member), without
        importing anything. ``own``: where a user's member would be named instead (default: a
        ``'package.module:callable'`` reference in place of ``name``)."""
        if name in self:
            return None
        hint = did_you_mean(name, self.names())
        own = own or "as 'package.module:callable'"
        return (
            f"{where} = {name!r}{hint} is not a known {self.what}: choose one of {self.names()}, "
            f"or name your own {own}"
        )

    # --- members -----------------------------------------------------------------------------

    def register(self, name: str, factory: Callable, *, replace: bool = False) -> None:
        """Make ``factory`` the member ``name`` in this process (not on Dask workers: there, name
        it by reference or entry point). A built-in name cannot be taken; an already registered
        one only with ``replace=True``."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise QunlearnError(
                f"cannot register {self.what} {name!r}: a name is letters, digits, '_', '-' and "
                "'.' (it names result files)"
            )
        if not callable(factory):
            raise QunlearnError(
                f"cannot register {self.what} {name!r}: {factory!r} is not callable; pass the "
                "factory function itself"
            )
        if name in self._builtins:
            raise QunlearnError(
                f"cannot register {self.what} {name!r}: it is a built-in; choose another name"
            )
        if name in self._registered and self._registered[name] is not factory and not replace:
            raise QunlearnError(
                f"{self.what} {name!r} is registered already: pass replace=True to replace it"
            )
        self._registered[name] = factory

    def unregister(self, name: str) -> None:
        self._registered.pop(name, None)

    def resolve(self, name: str) -> Callable:
        """The factory ``name`` names; imports a reference or an entry point on first use.
        Every failure is one line naming the member (and the module that did not import)."""
        if not isinstance(name, str):
            raise QunlearnError(f"a {self.what} name must be a string, got {name!r}")
        if name in self._builtins:
            return self._builtins[name]
        if name in self._registered:
            return self._registered[name]
        if is_reference(name):
            return _import_reference(name, self.what)
        found = self._entry_points().get(name)
        if found is not None:
            return _import_reference(found.value, self.what, via=f"entry point {name!r} of")
        raise QunlearnError(self.unknown(self.what, name) or f"unknown {self.what} {name!r}")

    def provenance(self, name: str) -> dict:
        """What made member ``name``, for a manifest: ``{"name", "source", "reference",
        "version" or "sha256"}``; resolves (imports) it."""
        factory = self.resolve(name)
        source = (
            "builtin"
            if name in self._builtins
            else "registered"
            if name in self._registered
            else "reference"
            if is_reference(name)
            else "entry_point"
        )
        module = getattr(factory, "__module__", None) or "?"
        qualname = getattr(factory, "__qualname__", None) or getattr(factory, "__name__", "?")
        out = {"name": name, "source": source, "reference": f"{module}:{qualname}"}
        return out | _module_identity(module)


def _import_reference(reference: str, what: str, via: str = "") -> Callable:
    module_name, _, attribute = reference.partition(":")
    named = f"{via} {what}".strip() if via else f"{what} {reference!r}"
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any import-time failure of user code is one line, never a trace
        raise QunlearnError(
            f"cannot import module {module_name!r} named by {named}: {first_line(err)}; install "
            "it (pip install -e .) or add its folder to PYTHONPATH"
        ) from None
    target: object = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            raise QunlearnError(
                f"module {module_name!r} has no {attribute!r}{did_you_mean(part, names)} "
                f"(named by {named})"
            )
        target = getattr(target, part)
    if not callable(target):
        raise QunlearnError(f"{reference} (named by {named}) is not callable: name a function")
    return target


# (sys.path folders' modification times, packages_distributions() read under them)
_DISTRIBUTIONS: list = [None, {}]


def _top_level_distributions() -> Mapping[str, list[str]]:
    """``importlib.metadata.packages_distributions()``, read again only when a folder on
    ``sys.path`` changed (installing or removing a package changes its folder): the read goes
    through every installed distribution's file list, about a second, and a run records several
    members."""
    stamp: list[tuple[str, int | None]] = []
    for entry in sys.path:
        try:
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            stamp.append((entry, None))
    if _DISTRIBUTIONS[0] != stamp:
        _DISTRIBUTIONS[:] = [stamp, importlib.metadata.packages_distributions()]
    return _DISTRIBUTIONS[1]


def _module_identity(module: str) -> dict:
    """The installed distribution (and its version) that provides ``module``, and the sha256 of
    its source file (an editable install keeps its version while its code changes); {} for a
    member defined where there is no file (a notebook)."""
    out: dict = {}
    top = module.split(".")[0]
    for dist in _top_level_distributions().get(top, []):
        try:
            out |= {"distribution": dist, "version": importlib.metadata.version(dist)}
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    path = getattr(sys.modules.get(module), "__file__", None)
    if path and Path(path).is_file():
        out |= {"file": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    return out


def keyword_options(factory: Callable, skip: int) -> tuple[list[str], bool]:
    """(option names, whether it takes any ``**options``) of a factory: its parameters after the
    first ``skip``."""
    try:
        params = list(inspect.signature(factory).parameters.values())[skip:]
    except (TypeError, ValueError):  # a callable without a signature: let the call decide
        return [], True
    named = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def keyword_defaults(factory: Callable, skip: int) -> dict:
    """{option: default} of a factory's parameters after the first ``skip`` that have one."""
    params = list(inspect.signature(factory).parameters.values())[skip:]
    return {p.name: p.default for p in params if p.default is not p.empty}
