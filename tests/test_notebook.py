"""examples/fig2_small.ipynb runs headless (nbclient, a fresh IPython kernel) from a clean folder
and shows its figures inline. Its parameters cell is set to the MLP half of the tiny sweep (the
QNN half alone takes about a minute on 2 cores); every other cell runs as shipped."""

import base64
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "fig2_small.ipynb"


def _outputs(cell, kind: str) -> list:
    return [o for o in cell.outputs if o.output_type == kind]


@pytest.mark.slow  # the whole notebook in a kernel (10 s cold)
def test_the_example_notebook_runs_and_shows_its_figures(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "ship it clean"
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert "MODELS = None" in params.source and "TINY = True" in params.source
    params.source = params.source.replace("MODELS = None", 'MODELS = ["mlp"]')

    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()  # raises CellExecutionError naming the cell on any error

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in _outputs(c, "error")]
    by_source = {c.source.splitlines()[0]: c for c in code}
    table = by_source["table = res.table()"]
    assert "text/html" in _outputs(table, "execute_result")[0].data  # a DataFrame
    compare = "".join(o.text for o in _outputs(by_source["comparison = res.compare()"], "stream"))
    assert compare.startswith("data: mnist, encoding 'reference'")
    shown = [o for o in _outputs(by_source["figures = res.plot()"], "display_data")]
    assert len(shown) == 1 and base64.b64decode(shown[0].data["image/png"])[:4] == b"\x89PNG"

    out = tmp_path / "results" / "fig2_small"
    assert (out / "manifest.json").is_file() and (out / "results.csv").is_file()
    assert not list(out.glob("*.png")) and not (out / "compare.csv").exists()  # nothing asked
