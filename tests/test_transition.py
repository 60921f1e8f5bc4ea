"""α_c of a noise sweep: the logistic fit, its bootstrap intervals, and refining the alpha grid."""

import csv
import json

import numpy as np
import pytest

from qunlearn.cli import main
from qunlearn.data import Dataset
from qunlearn.experiments import noise_sweep, transition
from qunlearn.experiments.transition import (
    bootstrap_transition,
    crossing,
    fit_curve,
    logistic_drop,
)

TRUE = {"lo": 0.08, "hi": 0.96, "centre": 0.47, "scale": 0.035}  # asymmetric: α_c != centre
ALPHAS = np.round(np.arange(0.0, 0.95, 0.05), 3)


def _synthetic(runs: int, seed: int, noise: float = 0.04) -> dict:
    """{alpha: runs draws of the true curve plus Gaussian run-to-run noise}."""
    rng = np.random.default_rng(seed)
    mean = logistic_drop(ALPHAS, **TRUE)
    return {
        float(a): list(m + noise * rng.normal(size=runs)) for a, m in zip(ALPHAS, mean, strict=True)
    }


def test_crossing_is_where_the_curve_equals_one_half():
    alpha_c = crossing(**TRUE)
    assert logistic_drop(alpha_c, **TRUE) == pytest.approx(0.5, abs=1e-12)
    assert alpha_c != pytest.approx(TRUE["centre"], abs=1e-3)  # asymmetric drop
    assert crossing(0.6, 0.95, 0.5, 0.05) is None  # never falls through 0.5


def test_fit_of_an_exact_curve_recovers_its_parameters():
    fit = fit_curve(ALPHAS, logistic_drop(ALPHAS, **TRUE))
    for name, value in TRUE.items():
        assert fit[name] == pytest.approx(value, abs=1e-4), name
    assert fit["alpha_c"] == pytest.approx(crossing(**TRUE), abs=1e-4)
    assert fit["width"] == pytest.approx(2 * np.log(9) * TRUE["scale"], abs=1e-3)


def test_bootstrap_interval_covers_the_true_alpha_c():
    fit = bootstrap_transition(_synthetic(runs=6, seed=3), resamples=200, seed=0)
    true_c, true_width = crossing(**TRUE), 2 * np.log(9) * TRUE["scale"]
    assert fit["alpha_c_lo"] <= true_c <= fit["alpha_c_hi"]
    assert fit["alpha_c_lo"] <= fit["alpha_c"] <= fit["alpha_c_hi"]
    assert fit["width_lo"] <= true_width <= fit["width_hi"]
    assert fit["alpha_c_hi"] - fit["alpha_c_lo"] < 0.1
    assert fit["crossing_fraction"] == 1.0 and fit["runs"] == 6


def test_interval_shrinks_with_more_runs():
    def ci_width(runs):
        fit = bootstrap_transition(_synthetic(runs=runs, seed=1), resamples=200, seed=0)
        return fit["alpha_c_hi"] - fit["alpha_c_lo"]

    few, many = ci_width(4), ci_width(64)
    assert many < 0.5 * few  # ~ 1/sqrt(16) = 0.25 expected


def test_bootstrap_is_seeded_and_drops_diverged_runs():
    data = _synthetic(runs=5, seed=2)
    with_nan = {a: [*v, float("nan")] for a, v in data.items()}
    one, two = (bootstrap_transition(with_nan, resamples=50, seed=4) for _ in range(2))
    assert one == two
    assert one["runs"] == 5


def test_a_remembered_bootstrap_is_the_computed_one_and_never_shared():
    data = _synthetic(runs=4, seed=5)
    first = bootstrap_transition(data, resamples=30, seed=1)
    first["alpha_c"] = -1.0  # a caller's edit stays in its copy
    again = bootstrap_transition({a: np.asarray(v) for a, v in data.items()}, resamples=30, seed=1)
    assert again["alpha_c"] != -1.0
    transition._bootstrap.cache_clear()
    assert bootstrap_transition(data, resamples=30, seed=1) == again  # = computed afresh
    assert bootstrap_transition(data, resamples=30, seed=2) != again  # the seed is in the key


def test_a_drop_sharper_than_the_grid_is_flagged_unresolved():
    coarse = {0.3: [0.85, 0.84], 0.4: [0.86, 0.85], 0.5: [0.4, 0.55], 0.6: [0.17, 0.18]}
    assert bootstrap_transition(coarse, resamples=50)["resolved"] is False
    assert bootstrap_transition(_synthetic(runs=4, seed=0), resamples=20)["resolved"] is True


def test_no_transition_inside_the_grid_gives_no_alpha_c():
    flat = {float(a): [0.98 - 0.01 * a, 0.97] for a in ALPHAS}  # XXZ QNN under feature noise
    fit = bootstrap_transition(flat, resamples=50)
    assert fit["alpha_c"] is None and fit["alpha_c_lo"] is None


# --- compare and plot show it; refining the grid --------------------------------------------

CONFIG = """\
experiment = "noise_sweep"
name = "refined"
dataset = "mnist"
noises = ["label_flip"]
alphas = [0.0, 0.2, 0.4, 0.6, 0.8]
runs = 2

[models.mlp]
model = "mlp"
hyper = { hidden = [4] }
epochs = 3
batch_size = 16
lr = 0.05
"""


@pytest.fixture
def toy_data(monkeypatch):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20).astype(np.int32)
    x = rng.normal(size=(40, 16)) + 1.5 * y[:, None]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    data = Dataset("mnist", x, y, x[::2], y[::2], {"source": {"kind": "synthetic"}})
    monkeypatch.setattr(noise_sweep, "load_dataset", lambda name, cache_dir=None, **kw: data)


def _cells(path):
    return sorted(p.stem for p in (path / "cells").glob("*.json"))


def _rows(path):
    with open(path / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_refine_adds_only_new_alphas_and_compare_reads_them(tmp_path, toy_data, capsys):
    config, out = tmp_path / "c.toml", tmp_path / "out"
    config.write_text(CONFIG)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    args = ["run", str(config), "--out", str(out), "--quiet", "--refine"]
    assert main([*args, "--refine-grid", "0.3:0.5:0.1"]) == 0
    (refined,) = out.glob("refine-*")
    assert refined.name == "refine-0.300-0.500-0.100"
    assert _cells(refined) == ["mlp__label_flip__alpha0.300", "mlp__label_flip__alpha0.500"]
    assert len(_cells(out)) == 5  # the sweep itself is untouched

    # a refinement cell is the cell a sweep listing that alpha computes (keys name the cell)
    direct = tmp_path / "direct"
    assert main(["run", str(config), "alphas=[0.3]", "--out", str(direct), "--quiet"]) == 0
    assert [r["value"] for r in _rows(direct)] == [
        r["value"] for r in _rows(refined) if r["alpha"] == "0.3"
    ]

    capsys.readouterr()
    assert main(["compare", str(out)]) == 0
    text = capsys.readouterr().out
    alphas = {r["alpha"] for r in _rows_of_compare(out)}
    assert {"0.3", "0.5", "0.0", "0.8"} <= alphas
    assert "alpha_c mnist mlp label_flip: ours" in text and "(fit " in text
    summary = json.loads((out / "compare.json").read_text())
    (crit,) = summary["critical_alpha"]
    assert {"alpha_c_fit_ours", "alpha_c_fit_ours_lo", "width_ours", "alpha_c_paper"} <= set(crit)

    assert main(["plot", str(out)]) == 0
    assert (out / "fig2_noise_sweep.png").stat().st_size > 0

    # several sweeps: one table and one figure across them; the results directories untouched
    before = {p: p.stat().st_mtime_ns for d in (out, direct) for p in d.rglob("*")}
    capsys.readouterr()
    assert main(["compare", str(out), str(direct)]) == 0
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("mnist")]
    assert len(table) == 2 and f"{crit['alpha_c_fit_ours']:.3f} [" in table[0]
    assert "not comparable: the logistic fit needs 4+ noise ratios, here 1" in table[1]
    across = tmp_path / "across"
    assert main(["compare", str(out), str(direct), "--out", str(across)]) == 0
    assert sorted(p.name for p in across.iterdir()) == ["across.csv", "across.json"]
    assert [r["results"] for r in json.loads((across / "across.json").read_text())["rows"]] == [
        str(out),
        str(direct),
    ]
    assert main(["plot", str(out), str(direct), "--across", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 0
    assert main(["plot", str(out), str(direct)]) == 2
    assert "pass --across FILE.png" in capsys.readouterr().err
    missing = ["compare", str(out), str(tmp_path / "missing"), "--out", str(tmp_path / "no")]
    assert main(missing) == 2 and not (tmp_path / "no").exists()
    assert {p: p.stat().st_mtime_ns for d in (out, direct) for p in d.rglob("*")} == before

    # every alpha there already: nothing to do; another config: refused before anything is run
    assert main([*args, "--refine-grid", "0.2:0.4:0.2"]) == 0
    assert "nothing to refine" in capsys.readouterr().out
    assert main([*args, "runs=3"]) == 2
    assert "holds results of another config" in capsys.readouterr().err
    assert main([*args, "--refine-grid", "0.5:0.3:0.1"]) == 2
    assert "LO <= HI" in capsys.readouterr().err


def _rows_of_compare(out):
    with open(out / "compare.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_shot_and_noise_readouts_get_their_own_transition_beside_the_exact_one():
    """A sweep with ``eval_shots`` / ``eval_circuit_noise`` has ``val_acc_shots<S>`` /
    ``val_acc_noise_<label>`` rows: compare fits α_c per readout (here curves shifted by +0.1)
    next to the exact ``val_acc``; without them, nothing."""
    from qunlearn.compare import readout_transitions

    def rows(curve, metric):
        return [
            {"dataset": "d", "model": "qnn", "noise": "label_flip", "alpha": a, "run": i}
            | {"metric": metric, "value": v}
            for a, values in curve.items()
            for i, v in enumerate(values)
        ]

    exact = _synthetic(runs=4, seed=1)
    shifted = {round(a + 0.1, 3): v for a, v in exact.items() if a + 0.1 < 0.95}
    found = readout_transitions(
        rows(exact, "val_acc")
        + rows(shifted, "val_acc_shots100")
        + rows(shifted, "val_acc_noise_torino")
    )
    by = {r["readout"]: r for r in found}
    assert list(by) == ["S=100", "noise torino", "exact"]
    for shifted_readout in ("S=100", "noise torino"):
        fit = by[shifted_readout]
        assert fit["alpha_c"] == pytest.approx(by["exact"]["alpha_c"] + 0.1, abs=1e-3)
        assert fit["alpha_c_lo"] < fit["alpha_c"] < fit["alpha_c_hi"]
    assert readout_transitions(rows(exact, "val_acc")) == []


# --- across data sets: one table of several sweeps --------------------------------------------


def _tidy(curve: dict, dataset: str, model: str, metric: str = "val_acc") -> list[dict]:
    return [
        {"dataset": dataset, "model": model, "noise": "label_flip", "alpha": a, "run": i}
        | {"metric": metric, "value": v}
        for a, values in curve.items()
        for i, v in enumerate(values)
    ]


MODELS = {
    "mlp": {"model": "mlp", "hyper": {"hidden": [64, 16]}},
    "qnn": {"model": "qnn", "hyper": {"depth": 4}},
    "lr": {"model": "mlp", "hyper": {"hidden": []}},  # the logistic-regression control
}


def _sweep(name, dataset, options, data, curves):
    """A noise sweep as :func:`qunlearn.compare.across_rows` reads one."""
    config = {"experiment": "noise_sweep", "dataset": dataset, "dataset_options": options}
    config["models"] = {m: MODELS[m] for m in curves}
    rows = [r for m, curve in curves.items() for r in _tidy(curve, dataset, m)]
    return {"results": name, "config": config, "data": data, "rows": rows}


def test_across_rows_fit_each_sweep_and_order_tfim_by_spins(monkeypatch):
    """One row per data set and model: the same α_c and width as a bootstrap of that curve alone,
    the clean accuracy at α = 0, sizes from the manifest's data block (else the config's options),
    the control recognised by its empty hidden layers; TFIM rows by spins whatever the order."""
    import functools

    from qunlearn.compare import across_rows, format_across
    from qunlearn.experiments import transition

    fewer = functools.partial(bootstrap_transition, resamples=40)  # the statistic, not its cost
    monkeypatch.setattr(transition, "bootstrap_transition", fewer)
    sharp, broad = _synthetic(runs=4, seed=1), _synthetic(runs=4, seed=2, noise=0.02)
    flat = {a: [0.55, 0.6] for a in ALPHAS}  # never learnt, never crosses 0.5
    results = [
        _sweep(
            "t12",
            "tfim",
            {"phase": "random"},
            {"parameters": {"n_spins": 12}, "phase": "random (PRNGKey(0))"},
            {"qnn": sharp},
        ),
        _sweep(
            "m35",
            "mnist",
            {"digits": [3, 5]},
            {"encoding": "reference", "parameters": {"digits": [3, 5]}},
            {"qnn": flat},
        ),
        _sweep("t8", "tfim", {"n_spins": 8}, {}, {"lr": sharp, "mlp": broad}),
    ]
    rows = across_rows(results)
    assert [(r["results"], r["model"], r["role"]) for r in rows] == [
        ("t8", "mlp", "mlp"),
        ("t8", "lr", "logistic"),
        ("t12", "qnn", "qnn"),
        ("m35", "qnn", "qnn"),
    ]
    sizes = ["8 spins"] * 2 + ["12 spins, random phase", "3 vs 5, reference"]
    assert [r["size"] for r in rows] == sizes
    expected = fewer(sharp)
    assert rows[0]["alpha_c"] != pytest.approx(expected["alpha_c"], abs=1e-6)  # another curve
    for row in rows[1:3]:
        assert row["alpha_c"] == pytest.approx(expected["alpha_c"], abs=1e-12)
        assert (row["width_lo"], row["width_hi"]) == pytest.approx(
            (expected["width_lo"], expected["width_hi"]), abs=1e-12
        )
        assert row["alpha_c_lo"] < row["alpha_c"] < row["alpha_c_hi"]
        assert row["val_acc_alpha0"] == pytest.approx(np.mean(sharp[0.0]))
        assert row["runs"] == 4
    assert rows[-1]["alpha_c"] is None and rows[-1]["val_acc_alpha0"] == pytest.approx(0.575)

    text = format_across(rows).splitlines()
    assert len(text) == 1 + len(rows)
    assert "logistic (lr)" in text[2] and f"{expected['alpha_c']:.3f} [" in text[2]
    assert "not comparable: the fitted curve never crosses 0.5" in text[-1]


def test_a_curve_that_never_crosses_one_half_says_so_instead_of_a_width():
    """A noise a model shrugs off (val accuracy above 0.5 at every alpha): no α_c, and no width
    or "sharper than the grid" from a fit that has no crossing."""
    from qunlearn.compare.sweep import critical_alphas, format_critical

    rng = np.random.default_rng(0)
    curve = {float(a): list(0.9 - 0.1 * a + 0.01 * rng.normal(size=3)) for a in ALPHAS}
    key = ("digits", "mine", "swap")
    table = [
        {"dataset": "digits", "model": "mine", "noise": "swap", "alpha": a, "metric": "val_acc"}
        | {"ours_mean": np.mean(v)}
        for a, v in curve.items()
    ]
    (entry,) = critical_alphas(table, {key: curve})
    assert entry["alpha_c_ours"] is None and entry["alpha_c_fit_ours"] is None
    line = format_critical([entry])
    assert line == (
        "alpha_c digits mine swap: ours - (not comparable: the mean curve never crosses 0.5) "
        "(fit not comparable: the fitted curve never crosses 0.5), paper -"
    )


def test_sweeps_of_a_users_data_set_with_other_options_get_other_sizes():
    """The across table's size column: what the built-ins' keys say, else (a user's data set)
    its options, so two sweeps of one data set with different options are told apart."""
    from qunlearn.compare.across import data_size

    assert data_size({"dataset_options": {"sep": 2.0, "n": 40}}, {}) == ("n=40, sep=2.0", None)
    assert data_size({"dataset_options": {"sep": 1.0}}, {}) == ("sep=1.0", None)
    assert data_size({"dataset_options": {"n_spins": 8}}, {}) == ("8 spins", 8)  # as before
    assert data_size({}, {}) == ("", None)
