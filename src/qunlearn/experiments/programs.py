"""An in-process cache of the experiments' jitted programs: a second run of the same form in one
process (a resume, a rerun after Ctrl-C, a notebook that runs a config twice, a test suite)
reuses the first run's program, with its traces and XLA executables, instead of tracing and
compiling an identical one.

``shared(builder)(*args, **kwargs)`` is ``builder(*args, **kwargs)``, memoised on a
*fingerprint* of everything the program is built from: the builder and its arguments, followed
into the closures, defaults and module globals of every function among them (a model's ``init``
and ``apply``, a method's objective, ...). Two builds share a program only when all of that is
equal: values by value (numbers with their type, so ``1``, ``1.0`` and ``True`` differ; arrays
by dtype, shape and bytes), functions by their code object and what they close over, and every
other object by identity (a fresh object is a miss, never a wrong hit). Shapes, dtypes and JAX
flags need no key: the shared jitted function retraces for new ones, as any jitted function
does. Mutation is checked too: a hit re-fingerprints the first build's arguments, so a program
whose inputs changed since is rebuilt. A tracer among the arguments bypasses the cache.

Globals are followed in every module but the numerical libraries (whose functions are keyed by
identity), so a function swapped in a module (a test's monkeypatch, a reloaded user module)
changes the fingerprint of every function that reads it.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import threading
import types
from collections.abc import Callable

import jax
import numpy as np

CAPACITY = 64  # programs kept (least recently used dropped): each holds its executables

# Functions of these packages are keyed by identity (their globals are not followed): they are
# module-level and not patched between runs, and following them would walk all of JAX.
LIBRARIES = frozenset(
    {
        "builtins",
        "abc",
        "collections",
        "dataclasses",
        "enum",
        "functools",
        "itertools",
        "math",
        "operator",
        "typing",
        "jax",
        "jaxlib",
        "numpy",
        "scipy",
        "optax",
        "chex",
        "opt_einsum",
        "ml_dtypes",
        "tensorcircuit",
    }
)

_programs: collections.OrderedDict = collections.OrderedDict()  # fingerprint -> (args, program)
_lock = threading.Lock()  # cells may be computed on threads (a Dask cluster of threads)


class Unkeyable(Exception):
    """Something in the arguments has no fingerprint (a tracer): build without the cache."""


class _Id:
    """An object keyed by identity; holding it keeps its id from being reused."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Id) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


def _library(module: str | None) -> bool:
    return (module or "").partition(".")[0] in LIBRARIES


def _names(code: types.CodeType) -> set[str]:
    """The global names ``code`` and the code of functions defined inside it may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


class _Fingerprint:
    """One fingerprinting pass; ``seen`` breaks cycles (recursive functions, self-references)."""

    def __init__(self):
        self.seen: dict[int, tuple] = {}
        self.keep: list = []  # everything an id in ``seen`` refers to stays alive for the pass

    def __call__(self, v):
        # scalars with their exact type: a numpy float64 is a float, but a strongly typed one
        if v is None or isinstance(v, (bool, int, str, bytes)):
            return (_Id(type(v)), v)
        if isinstance(v, float):
            return (_Id(type(v)), v.hex())  # NaN equals itself, -0.0 differs from 0.0
        if isinstance(v, complex):
            return (_Id(type(v)), v.real.hex(), v.imag.hex())
        if isinstance(v, (types.ModuleType, type)):  # a dataclass type too
            return _Id(v)
        if isinstance(v, jax.core.Tracer):
            raise Unkeyable
        if id(v) in self.seen:
            return self.seen[id(v)]
        self.seen[id(v)] = ("cycle", len(self.seen))
        self.keep.append(v)
        out = self._compound(v)
        self.seen[id(v)] = out
        return out

    def _compound(self, v):
        if isinstance(v, (np.ndarray, np.generic, jax.Array)):
            a = np.asarray(v)
            if a.dtype == object:
                return _Id(v)
            digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
            return ("array", type(v).__name__, a.dtype.str, a.shape, digest)
        if isinstance(v, (list, tuple)):  # a NamedTuple (Model, Method) by its type and fields
            return (_Id(type(v)), tuple(self(x) for x in v))
        if isinstance(v, dict):
            return (_Id(type(v)), tuple((self(k), self(x)) for k, x in v.items()))
        if isinstance(v, (set, frozenset)):
            return (_Id(type(v)), frozenset(self(x) for x in v))
        if isinstance(v, functools.partial):
            return ("partial", self(v.func), self(v.args), self(v.keywords))
        if isinstance(v, types.FunctionType):
            return self._function(v)
        if dataclasses.is_dataclass(v):
            fields = tuple(self(getattr(v, f.name)) for f in dataclasses.fields(v))
            return (_Id(type(v)), fields)
        return _Id(v)  # anything else (a bound method, a device, a jitted function): by identity

    def _function(self, fn: types.FunctionType):
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(self(cell.cell_contents))
            except ValueError:  # an empty cell (a name assigned later in the enclosing function)
                cells.append(("empty",))
        if _library(fn.__module__):
            if not fn.__closure__:
                return _Id(fn)
            globs: tuple = (_Id(fn.__globals__),)
        else:
            scope = fn.__globals__
            globs = (
                _Id(scope),
                tuple(
                    (name, self(scope[name]))
                    for name in sorted(_names(fn.__code__))
                    if name in scope and not name.startswith("__")
                ),
            )
        return (
            "function",
            _Id(fn.__code__),
            self(fn.__defaults__),
            self(fn.__kwdefaults__),
            tuple(cells),
            globs,
        )


def fingerprint(*values) -> tuple:
    """The key of ``values`` (see the module docstring); raises :class:`Unkeyable`."""
    return _Fingerprint()(values)


def shared(builder: Callable) -> Callable:
    """``builder``, its programs shared with every earlier build of the same fingerprint in this
    process (see the module docstring)."""

    def build(*args, **kwargs):
        try:
            key = fingerprint(builder, args, kwargs)
        except Unkeyable:
            return builder(*args, **kwargs)
        with _lock:
            first, program = _programs.get(key, (None, None))
        # a hit only while the first build's inputs are unchanged (nothing mutated them since)
        if first is not None and fingerprint(*first) == key:
            with _lock:
                if key in _programs:
                    _programs.move_to_end(key)
            return program
        program = builder(*args, **kwargs)
        with _lock:
            _programs[key] = ((builder, args, kwargs), program)
            while len(_programs) > CAPACITY:
                _programs.popitem(last=False)
        return program

    return build


def clear() -> None:
    """Forget every shared program (their executables are freed with them)."""
    with _lock:
        _programs.clear()


__all__ = ["CAPACITY", "Unkeyable", "clear", "fingerprint", "shared"]
