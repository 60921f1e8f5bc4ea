"""Nothing that reads results or caches can run code: no pickle outside one vetted reader.

* The source tree never unpickles (``pickle.load``/``loads``, ``allow_pickle=True``, an ``np.load``
  without ``allow_pickle=False``, other pickle-based loaders); the one exception is the MNIST
  reader in ``data/mnist_sources.py``, which checks the file's SHA-256 first and unpickles only
  through ``RestrictedUnpickler`` (NumPy arrays only). ``tests/test_data_mnist.py`` covers those
  two guards, so they are not repeated here.
* A malicious pickle planted where a cache or a result is expected is rejected (and the cache
  regenerated) without running: its payload would create a marker file, which must not exist.
"""

import ast
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import qunlearn
from qunlearn.data.cache import sha256_file
from qunlearn.data.mnist import load_mnist
from qunlearn.data.xxz import load_xxz_grid
from qunlearn.errors import QunlearnError
from qunlearn.experiments.store import ResultStore

SRC = Path(qunlearn.__file__).parent
VETTED = Path("data/mnist_sources.py")  # the one unpickler: SHA-256 first, then NumPy arrays only
PICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
NUMPY_LOADS = {"np.load", "numpy.load", "jnp.load", "jax.numpy.load"}


# ---------------------------------------------------------------------------------------------
# The source tree


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unpickling_problems(source: str, path: Path) -> list[str]:
    """Every way ``source`` could unpickle, except through the vetted MNIST reader."""
    problems = []
    if "allow_pickle=True" in source.replace(" ", ""):
        problems.append(f"{path}: allow_pickle=True")
    for node in ast.walk(ast.parse(source)):
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            if any(m.split(".")[0] in PICKLERS for m in modules) and path != VETTED:
                problems.append(f"{where}: imports {modules}")
        if isinstance(node, ast.ClassDef) and path == VETTED:
            bases = [_dotted(b) for b in node.bases]
            if "pickle.Unpickler" in bases and not (
                node.name == "RestrictedUnpickler"
                and any(
                    isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body
                )
            ):
                problems.append(f"{where}: unpickler {node.name} without a find_class guard")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name.split(".")[0] in PICKLERS and name.rsplit(".", 1)[-1] in (
            "load",
            "loads",
            "Unpickler",
            "open",
        ):
            problems.append(f"{where}: {name}(...)")
        if (
            isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Call)
            and _dotted(node.func.value.func).endswith("Unpickler")
            and _dotted(node.func.value.func) != "RestrictedUnpickler"
        ):
            problems.append(f"{where}: {_dotted(node.func.value.func)}(...).load()")
        flags = {kw.arg: kw.value for kw in node.keywords}
        if "allow_pickle" in flags and not (
            isinstance(flags["allow_pickle"], ast.Constant) and flags["allow_pickle"].value is False
        ):
            problems.append(f"{where}: allow_pickle is not literally False")
        if name in NUMPY_LOADS and "allow_pickle" not in flags:
            problems.append(f"{where}: {name} without allow_pickle=False")
    return problems


def test_source_tree_never_unpickles():
    files = sorted(SRC.rglob("*.py"))
    assert SRC / VETTED in files and len(files) > 10
    problems = [p for f in files for p in unpickling_problems(f.read_text(), f.relative_to(SRC))]
    assert problems == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.loads(b'')",
        "from pickle import loads",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import numpy as np\nnp.load('a.npz')",
        "import numpy as np\nflag = True\nnp.load('a.npz', allow_pickle=flag)",
        "import joblib\njoblib.load('x')",
        "import pickle\npickle.Unpickler(f).load()",
    ],
)
def test_the_scan_finds_unpickling(snippet):
    assert unpickling_problems(snippet, Path("experiments/x.py"))


def test_the_scan_admits_the_vetted_reader_only_as_it_is():
    assert unpickling_problems((SRC / VETTED).read_text(), VETTED) == []
    assert unpickling_problems("import pickle\npickle.loads(b'')", VETTED)


# ---------------------------------------------------------------------------------------------
# Planted payloads


class _Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, kind: str, marker: Path) -> None:
    """A malicious file at ``path``; with ``-checksum`` its sidecar's SHA-256 is made to match, so
    only the refusal to unpickle stands between the file and the payload."""
    if kind.startswith("pickle"):
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:  # a real .npz whose array is a pickled object
        with open(path, "wb") as f:
            np.savez(f, states=np.array([_Payload(marker)], dtype=object))
    if kind.endswith("-checksum"):
        sidecar = path.with_suffix(".json")
        meta = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**meta, "sha256": sha256_file(path)}))


KINDS = ["pickle", "pickle-checksum", "npz-object-array-checksum"]


def test_the_payloads_are_live(tmp_path):
    """Control: loaded carelessly, each planted file does run its payload."""
    for kind in ("pickle", "npz-object-array"):
        marker, path = tmp_path / f"pwn-{kind}", tmp_path / f"{kind}.npz"
        plant(path, kind, marker)
        if kind == "pickle":
            pickle.loads(path.read_bytes())
        else:
            with np.load(path, allow_pickle=True) as npz:
                npz["states"]
        assert marker.exists()


def _keras_source(path: Path) -> Path:
    """A tiny Keras-style mnist.npz: 1s and 9s (and a 3) with random pixels."""
    rng = np.random.default_rng(0)
    y_train, y_test = np.array([1, 9, 1, 3, 9]), np.array([9, 1])
    np.savez(
        path,
        x_train=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        y_train=y_train,
        x_test=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        y_test=y_test,
    )
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_payload_at_the_mnist_cache_is_regenerated_not_run(tmp_path, kind):
    source, cache, marker = _keras_source(tmp_path / "mnist.npz"), tmp_path / "c", tmp_path / "pwn"
    first = load_mnist(cache_dir=cache, source=source, n_per_class=2)
    npz = Path(first.info["cache_path"])
    plant(npz, kind, marker)
    with pytest.warns(UserWarning, match="corrupt"):
        again = load_mnist(cache_dir=cache, source=source, n_per_class=2)
    assert not marker.exists()
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert sha256_file(npz) == first.info["cache_sha256"]


@pytest.mark.parametrize("kind", KINDS)
def test_payload_at_the_xxz_cache_is_regenerated_not_run(tmp_path, kind):
    options = {"cache_dir": tmp_path / "c", "n_spins": 4, "boundary": "open", "n_delta": 8}
    first, meta = load_xxz_grid(**options)
    marker = tmp_path / "pwn"
    plant(Path(meta["cache_path"]), kind, marker)
    with pytest.warns(UserWarning, match="corrupt"):
        again, meta2 = load_xxz_grid(**options)
    assert not marker.exists()
    np.testing.assert_array_equal(again["states"], first["states"])
    assert meta2["sha256"] == meta["sha256"] == sha256_file(meta["cache_path"])


def _store(root: Path) -> ResultStore:
    return ResultStore(root, config={"name": "x"}, config_hash="abc", meta={})


def test_payload_as_a_cell_file_is_left_alone_not_run(tmp_path, capsys):
    store, marker = _store(tmp_path / "out"), tmp_path / "pwn"
    store.write_cell("good", [{"metric": "val_acc", "value": 0.9}])
    cell = store.cells_dir / "evil.json"
    cell.write_bytes(pickle.dumps(_Payload(marker)))
    assert [c["cell"] for c in store.finished_cells()] == ["good"]
    assert "evil.json is no qunlearn cell file (unreadable" in capsys.readouterr().err
    with pytest.raises(QunlearnError, match="evil.json is no qunlearn cell file.*move the file"):
        store.load_cell("evil")  # its cell would have to be written there: not ours to replace
    assert not marker.exists()
    assert cell.read_bytes() == pickle.dumps(_Payload(marker))  # neither run nor moved


def test_payload_as_the_manifest_is_refused_not_run(tmp_path):
    _store(tmp_path / "out")
    marker = tmp_path / "pwn"
    (tmp_path / "out" / "manifest.json").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(QunlearnError, match="manifest.json is unreadable.*new --out") as err:
        _store(tmp_path / "out")
    assert "\n" not in str(err.value) and not marker.exists()
