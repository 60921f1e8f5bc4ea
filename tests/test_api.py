"""The Python API (qunlearn.run / load / configs, Results) and shipped configs by name: the same
checks and store as the CLI (the CLI reuses the API's cells), read-only views (compare and plot
write nothing), a cheap ``import qunlearn`` that sets no JAX flag, and one-line errors."""

import json
import os
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import qunlearn
from qunlearn import api
from qunlearn.cli import main
from qunlearn.compare import compare_results_dir
from qunlearn.errors import QunlearnError
from qunlearn.experiments.config import load_config
from qunlearn.experiments.runner import VerifiedResults
from qunlearn.plotting.style import stem_suffixes

TINY_MLP = dict(tiny=True, models=["mlp"], progress=False)  # 4 cells, 5 epochs: seconds
SHIPPED = sorted(
    p.name.removesuffix(".toml")
    for p in (resources.files("qunlearn") / "configs").iterdir()
    if p.name.endswith(".toml")
)


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny Fig 2c MLP sweep run through the API (by the shipped config's name)."""
    out = tmp_path_factory.mktemp("api") / "sweep"
    return qunlearn.run("fig2c_mnist", out=out, **TINY_MLP)


def test_run_returns_the_verified_results(finished):
    assert isinstance(finished, qunlearn.Results)
    assert finished.config["name"] == "fig2c_mnist" and list(finished.config["models"]) == ["mlp"]
    assert len(finished.last_run["computed"]) == 4 and finished.last_run["reused"] == []
    assert finished.tables == ["results.csv"]
    assert finished.rows() == VerifiedResults(finished.root).table()
    assert "fig2c_mnist" in repr(finished)


def test_table_is_a_dataframe_of_the_same_rows(finished):
    table, rows = finished.table(), finished.rows()
    assert len(table) == len(rows) == 2 * 2 * 2 * 2 * 2  # noises x alphas x runs x 2 metrics
    assert {"model", "noise", "alpha", "metric", "value"} <= set(table.columns)
    assert table["value"].dtype.kind == "f"
    assert sorted(table["value"]) == sorted(float(r["value"]) for r in rows)


def test_table_without_pandas_names_rows(finished, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(QunlearnError, match=r"pip install pandas.*rows\(\)"):
        finished.table()
    assert finished.rows()  # still there


def test_unknown_table_names_the_tables(finished):
    with pytest.raises(QunlearnError, match=r"no table 'result.csv' \(did you mean 'results.csv'"):
        finished.rows("result.csv")


def test_compare_and_plot_write_nothing_and_match_the_cli(finished, tmp_path):
    before = snapshot(finished.root)
    ours = finished.compare()
    figures = finished.plot()
    assert snapshot(finished.root) == before
    cli = compare_results_dir(finished.root, tmp_path / "cmp")
    assert ours["table"] == cli["table"] and ours["text"] == cli["text"]
    assert ours["text"].startswith("data: mnist, encoding 'reference'")
    assert list(figures) == ["fig2_noise_sweep"]
    assert all(isinstance(f, Figure) for f in figures.values())
    assert [p.name for p in finished.save_plots(tmp_path / "figs")] == [
        f"fig2_noise_sweep{suffix}" for suffix in stem_suffixes()
    ]


def test_load_is_read_only_and_refuses_what_is_no_results_directory(finished, tmp_path):
    before = snapshot(finished.root)
    loaded = qunlearn.load(finished.root)
    assert loaded.rows() == finished.rows() and loaded.compare()["table"]
    assert snapshot(finished.root) == before
    with pytest.raises(QunlearnError, match="not found"):
        qunlearn.load(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(QunlearnError, match="no manifest.json"):
        qunlearn.load(tmp_path / "plain")


def test_the_cli_reuses_the_api_cells(finished, capsys):
    """Same config, same store: the command line on the API's directory computes nothing."""
    code = main(["run", "fig2c_mnist", "--tiny", "--models", "mlp", "--out", str(finished.root)])
    assert code == 0
    assert "cells: 0 computed, 4 reused" in capsys.readouterr().out


@pytest.mark.parametrize(
    "call, phrases",
    [
        (lambda out: api.run("fig2c_mnst", out=out), ["did you mean 'fig2c_mnist'", "demo"]),
        (lambda out: api.run("fig2c_mnist", out=out, overrides={"runs": 2}), ["'key=value'"]),
        (lambda out: api.run("fig2c_mnist", out=out, overrides=["runs=0"]), ["runs = 0"]),
        (lambda out: api.run("fig2c_mnist", out=""), ["out is empty"]),
        (lambda out: api.run(42, out=out), ["cannot run a int"]),
        (
            lambda out: api.run(load_config("demo"), out=out, tiny=True),
            ["dataclasses.replace"],
        ),
    ],
)
def test_bad_calls_fail_in_one_line_before_anything_is_written(tmp_path, call, phrases):
    with pytest.raises(QunlearnError) as err:
        call(tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and all(p in message for p in phrases), message
    assert list(tmp_path.iterdir()) == []


def test_prepare_default_out_and_a_config_object():
    config, out = api.prepare("fig2c_mnist", tiny=True)
    assert out == Path("results") / "fig2c_mnist-tiny"
    config2, out2 = api.prepare(config, "x", models=None)
    assert config2 is config and out2 == Path("x")
    assert api.prepare("fig2c_mnist", models="mlp")[0].models.keys() == {"mlp"}


def test_a_dict_of_a_config_files_keys_is_that_config():
    """What a notebook writes instead of a file: the TOML's keys and tables as a dict, with the
    same tiny, overrides and models; the caller's dict is left as it was."""
    import tomllib

    text = (resources.files("qunlearn") / "configs" / "fig2c_mnist.toml").read_text()
    data = tomllib.loads(text)
    before = json.dumps(data, sort_keys=True)
    options = dict(overrides=["runs=2"], tiny=True, models="mlp")
    from_dict, out = api.prepare(data, **options)
    assert from_dict == api.prepare("fig2c_mnist", **options)[0]
    assert (
        out == Path("results") / "fig2c_mnist-tiny" and json.dumps(data, sort_keys=True) == before
    )
    data.pop("tiny")
    with pytest.raises(QunlearnError, match="the config dict has no \\[tiny\\] table"):
        api.prepare(data, tiny=True)


# ------------------------------------------------------------------------ shipped configs


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("fig2c_mnist", "fig2c_mnist.toml"):
        assert load_config(name).name == "fig2c_mnist"
    # a file of that name in the current folder wins over the shipped config
    (tmp_path / "fig2c_mnist").write_text(
        (resources.files("qunlearn") / "configs" / "demo.toml").read_text()
    )
    assert load_config("fig2c_mnist").name == "demo"


def test_a_folder_path_is_not_taken_for_a_name(tmp_path, capsys):
    message = _cli_error(capsys, "run", "configs_elsewhere/fig2c_mnist.toml", "--out", tmp_path)
    assert "not found" in message and "pass just 'fig2c_mnist'" in message
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_is_one_line_with_did_you_mean_and_the_list(tmp_path, capsys):
    message = _cli_error(capsys, "run", "fig3a_mnsit", "--out", tmp_path / "o")
    assert "did you mean 'fig3a_mnist'" in message
    assert all(name in message for name in SHIPPED)


def test_configs_lists_every_shipped_config_one_line_each(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == SHIPPED
    by_name = {line.split()[0]: line.split(maxsplit=2) for line in lines}
    assert by_name["fig2c_mnist"][1] == "noise_sweep"
    assert by_name["fig2c_mnist"][2].startswith("Paper Fig 2c: MNIST 1 vs 9")
    assert by_name["roughening_mnist"][1] == "roughening"
    assert [e["name"] for e in qunlearn.configs()] == SHIPPED


def _cli_error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0].removeprefix("error: ")


# --------------------------------------------------------------------------- JAX flags


def test_import_is_cheap_and_x64_is_set_only_when_run_runs(finished):
    """In a fresh interpreter (the test session itself runs with x64 on): importing qunlearn
    loads no JAX; load() sets no flag; run() (here reusing every cell) turns x64 on."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import qunlearn
        state = {{"jax_imported": "jax" in sys.modules, "api": callable(qunlearn.run)}}
        import jax
        qunlearn.load({str(finished.root)!r}).rows()
        state["x64_after_load"] = jax.config.jax_enable_x64
        res = qunlearn.run("fig2c_mnist", out={str(finished.root)!r}, tiny=True,
                           models=["mlp"], progress=False)
        state["x64_after_run"] = jax.config.jax_enable_x64
        state["reused"] = len(res.last_run["reused"])
        print(json.dumps(state))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state == {
        "jax_imported": False,
        "api": True,
        "x64_after_load": False,
        "x64_after_run": True,
        "reused": 4,
    }
