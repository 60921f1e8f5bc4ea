"""Nothing outside ``--out`` is ever touched, and inside it only qunlearn's own files.

Around a finished tiny run (one compile for the module) each case plants what a user or a mishap
leaves: symbolic links out of the results directory (``cells/``, a cell, the manifest, the lock,
``results.csv``, a figure, ``compare.csv``, the report, the ``--out`` of compare and plot, the
results directory itself, a dataset cache file), names with ``..``, hard-linked cells and the
user's own files inside. Then run, resume, compare, plot and report run on it. Every link, ``..``
and hard link is refused with one ``error:`` line naming the path (exit 2) and the whole tree,
inside ``--out`` too, is exactly as it was; foreign files are never renamed, rewritten or deleted.
"""

import hashlib
import json
import os
import pickle
import shutil
import socket
from pathlib import Path

import pytest

from qunlearn.cli import main
from qunlearn.data.cache import default_cache_dir
from qunlearn.data.mnist import CACHE_NAME
from qunlearn.plotting.sweep import FIGURE

RUN = ["run", "fig2c_mnist", "--tiny", "--models", "mlp", "--quiet"]
CELL = "mlp__label_flip__alpha0.000"
COMMANDS = ("run", "compare", "plot", "report")
USER_NOTES = b'{"my": "notes, not a cell"}\n'


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    return out


@pytest.fixture
def ws(tmp_path, finished):
    """A workspace: ``out`` (a copy of the finished run) and ``user`` (the user's folder, with
    notes and a copy of a cell), side by side."""
    shutil.copytree(finished, tmp_path / "out")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.json").write_bytes(USER_NOTES)
    shutil.copy(finished / "cells" / f"{CELL}.json", user / "cell.json")
    return tmp_path


def tree(root: Path, skip=()) -> dict:
    """Every entry under ``root`` (links not followed): a link's target, a file's SHA-256 and
    modification time, or "dir"; top-level names in ``skip`` left out."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if key.split(os.sep)[0] in skip:
                continue
            st = path.lstat()
            if path.is_symlink():
                out[key] = ("link", os.readlink(path))
            elif path.is_file():
                out[key] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
            else:
                out[key] = "dir"
    return out


def command(name: str, out: Path, ws: Path, *extra: str) -> list[str]:
    """The argv of ``qunlearn NAME`` on results directory ``out`` (report: into ws/page/)."""
    if name == "run":
        return [*RUN, "--out", str(out), *extra]
    if name == "report":
        return ["report", str(out), "--out", str(ws / "page" / "report.html"), *extra]
    return [name, str(out), *extra]


def refused(argv: list[str], ws: Path, capsys, *named) -> str:
    """Run the CLI: exit 2, one ``error:`` line naming each of ``named``, and the whole
    workspace (inside ``--out`` too) exactly as it was. Returns the message."""
    before = tree(ws)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in named:
        assert str(part) in lines[0], lines[0]
    assert tree(ws) == before
    return lines[0]


def link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)


# ---------------------------------------------------------------------------------------------
# Links out of the results directory


@pytest.mark.parametrize("name", COMMANDS)
def test_a_cells_folder_linked_elsewhere_is_refused(ws, capsys, name):
    """The issue's example: cells/ is a link to the user's folder holding notes.json; the old
    store renamed it to notes.corrupt there (and wrote cells into it)."""
    link(ws / "out" / "cells", ws / "user")
    refused(command(name, ws / "out", ws), ws, capsys, ws / "out" / "cells", "symbolic link")


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize(
    "planted, target",
    [
        (f"cells/{CELL}.json", "cell.json"),  # verifies: the old store reused it through the link
        ("cells/mlp__label_flip__alpha0.500.json", "notes.json"),
        ("manifest.json", "manifest.json"),
    ],
)
def test_a_cell_or_manifest_linked_elsewhere_is_refused(ws, capsys, name, planted, target):
    out = ws / "out"
    if target == "manifest.json":
        shutil.copy(out / "manifest.json", ws / "user" / target)
    link(out / planted, ws / "user" / target)
    refused(command(name, out, ws), ws, capsys, out / planted, "symbolic link")


@pytest.mark.parametrize(
    "planted, content",
    [
        # a stale lock: the old store renamed the link aside and then deleted it
        (".lock", json.dumps({"pid": 2**22 + 1, "host": socket.gethostname(), "started": 0})),
        (".lock.stale", "the user's file"),
        ("results.csv", "my,table\n1,2\n"),
        ("compare.csv", "my,table\n1,2\n"),
        (f"{FIGURE}.png", "my picture"),
    ],
)
def test_a_run_refuses_any_link_in_its_results_directory(ws, capsys, planted, content):
    out, user_file = ws / "out", ws / "user" / "file"
    user_file.write_text(content)
    link(out / planted, user_file)
    refused(command("run", out, ws), ws, capsys, out / planted, "symbolic link")


@pytest.mark.parametrize(
    "name, planted",
    [
        ("compare", "compare.csv"),
        ("compare", "compare.json"),
        ("plot", f"{FIGURE}.png"),  # the old plot drew through it, over the user's picture
        ("plot", f"{FIGURE}.pdf"),
    ],
)
def test_compare_and_plot_never_write_through_a_link(ws, capsys, monkeypatch, name, planted):
    monkeypatch.delenv("QUNLEARN_FIGURE_FORMATS")  # PNG and PDF, as a user's plot writes
    out, user_file = ws / "out", ws / "user" / "file"
    user_file.write_bytes(b"the user's own bytes")
    link(out / planted, user_file)
    refused(command(name, out, ws), ws, capsys, out / planted, "symbolic link")


@pytest.mark.parametrize("name", ["compare", "plot"])
def test_an_out_of_compare_or_plot_that_is_a_link_is_refused(ws, capsys, name):
    """--out of compare and plot is theirs to write: a link to the user's folder is refused
    (the old commands wrote compare.csv and the figures into it)."""
    linked = ws / "elsewhere"
    linked.symlink_to(ws / "user")
    argv = command(name, ws / "out", ws, "--out", str(linked))
    refused(argv, ws, capsys, linked, "symbolic link")


def test_a_report_out_that_is_a_link_is_refused(ws, capsys):
    page = ws / "report.html"
    page.symlink_to(ws / "user" / "notes.json")
    argv = ["report", str(ws / "out"), "--out", str(page)]
    refused(argv, ws, capsys, page, "symbolic link")


@pytest.mark.parametrize("name", ["run", "compare", "plot"])
def test_a_results_directory_that_is_a_link_into_another_run_is_refused(ws, capsys, name):
    """The old run rewrote the other run's manifest and tables through it; compare and plot
    wrote their files there."""
    shutil.copytree(ws / "out", ws / "other")
    (ws / "mine").symlink_to(ws / "other")
    refused(command(name, ws / "mine", ws), ws, capsys, ws / "mine", "symbolic link")


def test_a_refinement_inside_a_linked_results_directory_is_refused(ws, capsys):
    (ws / "mine").symlink_to(ws / "out")
    argv = command("run", ws / "mine", ws, "--refine", "--refine-grid", "0.2:0.2:0.1")
    refused(argv, ws, capsys, ws / "mine", "symbolic link")


def test_a_dataset_cache_file_linked_elsewhere_is_never_replaced(ws, capsys):
    """A cache file that does not verify is regenerated; one that is a link is refused instead
    (the old loader replaced the link)."""
    cache = ws / "cache"
    cache.mkdir()
    sidecar = CACHE_NAME.removesuffix(".npz") + ".json"
    shutil.copy(default_cache_dir() / sidecar, cache / sidecar)
    (ws / "user" / "data.npz").write_bytes(b"the user's data")
    (cache / CACHE_NAME).symlink_to(ws / "user" / "data.npz")
    argv = ["data", "mnist", "--cache-dir", str(cache)]
    refused(argv, ws, capsys, cache / CACHE_NAME, "symbolic link")


# ---------------------------------------------------------------------------------------------
# Names with "..", hard links


@pytest.mark.parametrize("name", COMMANDS)
def test_a_path_with_dot_dot_after_a_folder_is_refused(ws, capsys, name):
    """``out/cells/../../user`` is ``user`` to the kernel: the out-of-tree write that a link
    inside the path would make; refused by its name."""
    sneaky = ws / "out" / "cells" / ".." / ".." / "user"
    if name == "run":
        argv = command(name, sneaky, ws)
    elif name == "report":
        argv = ["report", str(ws / "out"), "--out", str(sneaky / "report.html")]
    else:
        argv = command(name, ws / "out", ws, "--out", str(sneaky))
    refused(argv, ws, capsys, "'..'")


def test_a_hard_linked_cell_is_refused(ws, capsys):
    cell = ws / "out" / "cells" / f"{CELL}.json"
    cell.unlink()
    os.link(ws / "user" / "cell.json", cell)
    refused(command("run", ws / "out", ws), ws, capsys, cell, "hard link")


# ---------------------------------------------------------------------------------------------
# The user's own files inside the results directory


def plant_foreign(out: Path) -> dict[Path, bytes]:
    """Files of the user's in ``out`` under names a cell or lock could have: never ours."""
    foreign = {
        out / "cells" / "notes.json": USER_NOTES,
        out / "cells" / "evil.json": pickle.dumps({"a": 1}),
        out / "cells" / "list.json": b"[1, 2, 3]",
        out / "cells" / "broken.json": b"{",
        out / ".lock.stale-notes": b"not a lock",
        out / "notes.txt": b"my notes",
    }
    for path, data in foreign.items():
        path.write_bytes(data)
    return foreign


@pytest.mark.parametrize("name", COMMANDS)
def test_foreign_files_inside_are_left_alone(ws, capsys, name):
    """The old store renamed every ``cells/*.json`` that did not verify (``notes.corrupt``...)
    and deleted every ``.lock.stale*``."""
    out = ws / "out"
    foreign = plant_foreign(out)
    outside = tree(ws, skip={"out", "page"})
    code = main(command(name, out, ws))
    err = capsys.readouterr().err
    assert code == 0, err
    assert tree(ws, skip={"out", "page"}) == outside
    for path, data in foreign.items():
        assert path.read_bytes() == data, path
    assert not list(out.rglob("*.corrupt*")) and not list(out.rglob("*.foreign*"))


def test_a_resume_next_to_foreign_files_computes_only_its_cell(ws, finished, capsys):
    out = ws / "out"
    foreign = plant_foreign(out)
    (out / "cells" / f"{CELL}.json").unlink()
    outside = tree(ws, skip={"out"})
    assert main(command("run", out, ws)) == 0
    captured = capsys.readouterr()
    assert "cells: 1 computed, 3 reused" in captured.out
    assert (
        captured.err.count("notes.json is no qunlearn cell file") == 1
    )  # said once, not per table
    assert tree(ws, skip={"out"}) == outside
    for path, data in foreign.items():
        assert path.read_bytes() == data, path
    assert (out / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


def test_a_foreign_file_under_a_cells_name_is_refused_not_moved(ws, capsys):
    """A file without a cell header where a cell is to be written: the old store renamed it to
    ``.corrupt`` and wrote the cell in its place."""
    cell = ws / "out" / "cells" / f"{CELL}.json"
    cell.write_bytes(USER_NOTES)
    refused(command("run", ws / "out", ws), ws, capsys, cell, "no qunlearn cell file")


def test_a_damaged_cell_of_ours_is_still_moved_aside(ws, capsys):
    """The other side of the rule: a truncated cell file (it has the cell header) is ours, set
    aside as ``.corrupt`` and recomputed, as before."""
    cell = ws / "out" / "cells" / f"{CELL}.json"
    whole = cell.read_bytes()
    cell.write_bytes(whole[: len(whole) // 2])
    assert main(command("run", ws / "out", ws)) == 0
    assert "does not verify" in capsys.readouterr().err
    assert cell.with_suffix(".corrupt").read_bytes() == whole[: len(whole) // 2]
    assert json.loads(cell.read_bytes())["rows"] == json.loads(whole)["rows"]  # recomputed
