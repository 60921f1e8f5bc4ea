"""The worked example a researcher copies (examples/own_model_and_method): copied into a fresh
directory outside the repository, installed there with ``pip install -e`` into a new virtual
environment that sees the installed qunlearn, and run through a noise sweep, an unlearning run, an
evaluation and a report at --tiny scale, as its README says. Its notebook runs too."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_model_and_method"
pytestmark = pytest.mark.slow  # installs a package and runs three experiments end to end


def _run(args, cwd, timeout=900):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a new venv with the example installed editable, the example's copy)."""
    root = tmp_path_factory.mktemp("fresh")
    copy = root / "own_model_and_method"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("results", "*.egg-info"))
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], root)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root
    )
    # the new environment sees this one's packages (qunlearn and its dependencies), as a user's
    # environment with qunlearn installed would; what it installs itself stays its own
    parent = sysconfig.get_paths()["purelib"]
    Path(purelib.strip(), "qunlearn-parent.pth").write_text(
        f"import site; site.addsitedir({parent!r})\n"
    )
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e",
          str(copy)], root)  # fmt: skip
    return python, copy


def test_the_installed_example_runs_every_study_and_its_report(installed):
    python, copy = installed
    names = _run(
        [str(python), "-c", "from qunlearn.models import MODELS; print(list(MODELS))"], copy
    )
    assert "cz_ansatz" in names  # offered by the installed package's entry point
    noises = _run([str(python), "-c", "from qunlearn.noise import NOISE; print(list(NOISE))"], copy)
    assert "swap_images" in noises
    for study in ("sweep", "unlearning", "evaluation"):
        out = _run(
            [str(python), "-m", "qunlearn", "run", f"configs/{study}.toml", "--tiny", "--out",
             f"results/{study}", "--quiet"],
            copy,
        )  # fmt: skip
        assert "computed" in out
        manifest = json.loads((copy / "results" / study / "manifest.json").read_text())
        mine = manifest["members"]["models"]["mine"]
        assert mine["reference"] == "own_study.circuits:cz_ansatz"
        assert mine["distribution"] == "own-study" and len(mine["sha256"]) == 64
    manifest = json.loads((copy / "results" / "sweep" / "manifest.json").read_text())
    assert manifest["members"]["noises"]["swap"]["reference"] == "own_study.poison:swap_images"
    manifest = json.loads((copy / "results" / "unlearning" / "manifest.json").read_text())
    method = manifest["members"]["methods"]["random_labels"]
    assert method["reference"] == "own_study.unlearn:random_label_finetune"
    _run([str(python), "-m", "qunlearn", "compare", "results/sweep"], copy)
    _run(
        [str(python), "-m", "qunlearn", "report", "results/sweep", "results/unlearning",
         "results/evaluation", "--out", "results/report.html"],
        copy,
    )  # fmt: skip
    html = (copy / "results" / "report.html").read_text()
    assert "own_study.circuits:cz_ansatz" in html and "random_labels" in html


def test_the_example_notebook_runs(installed):
    python, copy = installed
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(copy / "own_study.ipynb", as_version=4)
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(copy)}}
    )
    client.execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "breaks the model contract" in outputs  # the notebook shows a caught breach
    assert "computed" in outputs
