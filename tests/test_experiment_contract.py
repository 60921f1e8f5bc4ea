"""One contract over every experiment kind in ``EXPERIMENTS`` (a new kind is covered by adding its
tiny config here, and the first test fails until one is): through the cell engine it writes a
results directory, prints the summary line, a rerun computes nothing, compare and plot read it,
and a run interrupted by Ctrl-C or SIGTERM resumes to the uninterrupted run's tables."""

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from qunlearn.cli import main
from qunlearn.data import Dataset
from qunlearn.experiments import (
    curvature,
    evaluation,
    noise_sweep,
    roughening,
    runner,
    unlearning,
)
from qunlearn.experiments.config import CONFIG_TYPES, build
from qunlearn.experiments.engine import InProcess, Interrupted, Progress

MODEL = {"model": "mlp", "hyper": {"hidden": [4]}, "epochs": 3, "batch_size": 16, "lr": 0.05}
UNLEARN = {**MODEL, "unlearn_epochs": 2, "unlearn_batch_size": 0, "unlearn_lr": 0.01}
TINY = {
    "noise_sweep": {
        "experiment": "noise_sweep",
        "name": "c_sweep",
        "dataset": "mnist",
        "models": {"mlp": MODEL},
        "noises": ["label_flip"],
        "alphas": [0.0, 0.2],
        "runs": 2,
    },
    "unlearning": {
        "experiment": "unlearning",
        "name": "c_unlearn",
        "dataset": "mnist",
        "models": {"mlp": UNLEARN},
        "methods": ["retrain", "finetune"],
        "alpha": 0.3,
        "runs": 2,
    },
    "roughening": {
        "experiment": "roughening",
        "name": "c_rough",
        "dataset": "mnist",
        "models": {"mlp": MODEL},
        "noise_ratios": [0.0, 0.3],
        "seeds": [0, 1],
        "n_train_per_class": 10,
        "n_hessian_per_class": 5,
        "top_k": 2,
    },
    "curvature": {
        "experiment": "curvature",
        "name": "c_curv",
        "dataset": "mnist",
        "models": {"mlp": UNLEARN},
        "methods": ["finetune"],
        "alpha": 0.3,
        "runs": 1,
        "every": 1,
        "n_val": 10,
        "top_k": 2,
        "density_points": 20,
    },
    "evaluation": {
        "experiment": "evaluation",
        "name": "c_eval",
        "dataset": "mnist",
        "models": {"mlp": {**UNLEARN, "oracles": 6, "teachers": 3, "unlearn_seeds": 1}},
        "methods": ["retrain", "finetune"],
        "alpha": 0.3,
    },
}
MODULES = {
    "noise_sweep": noise_sweep,
    "unlearning": unlearning,
    "roughening": roughening,
    "curvature": curvature,
    "evaluation": evaluation,
}


def _toy(n_per_class=20, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class).astype(np.int32)
    x = rng.normal(size=(2 * n_per_class, dim)) + 1.5 * y[:, None]
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


@pytest.fixture
def toy_data(monkeypatch):
    x, y = _toy()
    x_val, y_val = _toy(10, seed=1)
    data = Dataset("mnist", x, y, x_val, y_val, {"source": {"kind": "synthetic"}})
    for module in MODULES.values():
        monkeypatch.setattr(module, "load_dataset", lambda name, cache_dir=None, **kw: data)
    # the evaluation's non-members: validation rows, never training rows
    monkeypatch.setattr(
        evaluation,
        "non_member_pool",
        lambda d, n, **kw: (np.concatenate([x_val[:n], x_val[10 : 10 + n]]), np.repeat([0, 1], n)),
    )


# kind -> the results directory of a finished, uninterrupted run of its tiny config on the toy
# data: the one test_run_rerun_compare_plot made, else one made by the first test that needs it
# (one xdist worker runs the module: --dist loadfile).
WHOLE: dict[str, Path] = {}


def _whole(kind: str, tmp_path: Path) -> Path:
    if kind not in WHOLE:
        config = build(CONFIG_TYPES[kind], TINY[kind])
        WHOLE[kind] = runner.run(config, tmp_path / "whole", progress=False).root
    return WHOLE[kind]


def test_every_kind_has_a_tiny_contract_config():
    assert set(TINY) == set(runner.EXPERIMENTS) == set(CONFIG_TYPES)


def _write(tmp_path, kind):
    path = tmp_path / f"{kind}.toml"
    # TOML from JSON-like data: inline tables and lists are valid TOML when written this way
    lines = []
    for key, value in TINY[kind].items():
        if key == "models":
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    for name, spec in TINY[kind]["models"].items():
        lines.append(f"[models.{name}]")
        for key, value in spec.items():
            text = (
                "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
                if isinstance(value, dict)
                else json.dumps(value)
            )
            lines.append(f"{key} = {text}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", sorted(TINY))
def test_run_rerun_compare_plot(kind, tmp_path, toy_data, capsys):
    from qunlearn.plotting.results import plot_results_dir

    out = tmp_path / "out"
    path = _write(tmp_path, kind)
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    plan = runner.EXPERIMENTS[kind](build(CONFIG_TYPES[kind], TINY[kind]), progress=Progress(False))
    n = len(plan.cells)
    assert f"cells: {n} computed, 0 reused" in first
    WHOLE.setdefault(kind, out)
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert f"cells: 0 computed, {n} reused" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    if kind != "curvature":  # no published numbers to compare curvature with
        assert main(["compare", str(out), "--out", str(tmp_path / "cmp")]) == 0
        assert (tmp_path / "cmp" / "compare.csv").is_file()
    assert plot_results_dir(out)  # at least one figure


class _InterruptAfter(InProcess):
    """Computes ``n`` cells, then raises what Ctrl-C (or SIGTERM) raises inside the next one."""

    def __init__(self, n: int, signum: int):
        self.left, self.signum = n, signum

    def map(self, store, items):
        for cell_id, cell in items:
            if self.left == 0:
                raise (
                    KeyboardInterrupt if self.signum == signal.SIGINT else Interrupted(self.signum)
                )
            self.left -= 1
            yield cell_id, cell.compute(store)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("kind", sorted(TINY))
def test_interrupted_runs_resume_to_the_same_tables(kind, signum, tmp_path, toy_data):
    config = build(CONFIG_TYPES[kind], TINY[kind])
    whole = _whole(kind, tmp_path)
    with pytest.raises(Interrupted) as err:
        runner.run(config, tmp_path / "cut", progress=False, executor=_InterruptAfter(1, signum))
    assert err.value.signum == signum
    cut = tmp_path / "cut"
    assert not (cut / ".lock").exists()
    last = json.loads((cut / "manifest.json").read_text())["last_run"]
    assert last["interrupted"] and len(last["computed"]) == 1
    resumed = runner.run(config, cut, progress=False)
    assert resumed.manifest["last_run"]["reused"] == last["computed"]
    tables = sorted(p.name for p in whole.glob("*.csv"))
    assert tables
    for table in tables:
        assert (cut / table).read_bytes() == (whole / table).read_bytes(), table
