"""Figures: every figure function writes its files from a small synthetic table, through the one
style module (colours, ``save``, ``mean_std_band``); none touches pyplot's figure list, the
backend or rcParams; the XXZ figure writes exactly the suffix asked for and refuses others."""

import ast
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from qunlearn.errors import QunlearnError
from qunlearn.plotting import across, curvature, data, style, sweep, unlearning

PLOTTING = Path(style.__file__).parent


@pytest.fixture(autouse=True)
def no_global_state():
    """Around every test: pyplot's figure list stays empty, rcParams and the backend unchanged."""
    plt.close("all")
    rc, backend = dict(matplotlib.rcParams), matplotlib.get_backend()
    yield
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == rc
    assert matplotlib.get_backend() == backend


def _written(paths, names):
    assert sorted(p.name for p in paths) == sorted(names)
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)


def _files(stem):
    """What ``save`` writes for a stem under this run's formats (conftest: PNG alone)."""
    return [f"{stem}{suffix}" for suffix in style.stem_suffixes()]


# ------------------------------------------------------------------------- synthetic tables


def _sweep_rows(rng):
    return [
        {"model": m, "noise": n, "alpha": a, "metric": metric, "value": rng.uniform(0.5, 1)}
        for m in ("mlp", "qnn")
        for n in ("label_flip", "feature_randomization")
        for a in (0.0, 0.5)
        for metric in ("val_acc", "train_acc_noisy_labels")
        for _ in range(2)
    ]


def _unlearning_rows(rng):
    methods = {"retrain": "reference", "finetune": "reference", "new_method": "extension"}
    return [
        {
            "model": model,
            "method": method,
            "variant": variant,
            "run": run,
            "epoch": epoch,
            "metric": metric,
            "value": rng.uniform(0, 1),
        }
        for model in ("mlp", "qnn")
        for method, variant in methods.items()
        for run in range(2)
        for epoch in range(3)
        for metric in ("val_acc", "forget_frac_poisoned_label")
    ]


def _weight_sweep_rows(rng):
    rows = []
    for run in range(2):
        for kl in (0.0, 0.5):
            for fo in (0.0, 0.2):
                rows.append(
                    {
                        "model": "mlp",
                        "method": "scrub",
                        "run": run,
                        "metric": "val_acc",
                        "value": rng.uniform(0.5, 1),
                        "kl_w": kl,
                        "fo_w": fo,
                    }
                )
        for fo in (0.0, 0.2, 0.4):
            rows.append(
                {
                    "model": "mlp",
                    "method": "gradient_ascent",
                    "run": run,
                    "metric": "val_acc",
                    "value": rng.uniform(0.5, 1),
                    "kl_w": "",
                    "fo_w": fo,
                }
            )
    return rows


def _curvature_rows(rng):
    rows = []
    for model in ("mlp", "qnn"):
        for loss in ("retain", "forget"):
            for metric in ("eig_1", "trace"):
                for teacher in ("clean_teacher", "poisoned_teacher"):
                    rows.append(
                        {
                            "model": model,
                            "method": teacher,
                            "loss": loss,
                            "metric": metric,
                            "epoch": 0,
                            "run": 0,
                            "value": rng.uniform(1, 3),
                        }
                    )
                for method in ("retrain", "finetune"):
                    for run in range(2):
                        for epoch in (0, 2):
                            rows.append(
                                {
                                    "model": model,
                                    "method": method,
                                    "loss": loss,
                                    "metric": metric,
                                    "epoch": epoch,
                                    "run": run,
                                    "value": rng.uniform(0, 4),
                                }
                            )
    return rows


def _density_rows(rng):
    grid = np.linspace(-1, 5, 12)
    rows = []
    for model in ("mlp",):
        for loss in ("retain", "forget"):
            snapshots = (("clean_teacher", 0), ("poisoned_teacher", 0), ("retrain", 2))
            for method, epoch in snapshots:
                for run in range(2):
                    density = np.exp(-((grid - rng.uniform(0, 3)) ** 2)) + 1e-9
                    rows += [
                        {
                            "model": model,
                            "loss": loss,
                            "method": method,
                            "epoch": epoch,
                            "run": run,
                            "eigenvalue": g,
                            "density": d,
                        }
                        for g, d in zip(grid, density, strict=True)
                    ]
    return rows


def _roughening_rows():
    traces = {("mlp", 0.0): (0.2, 0.3), ("mlp", 0.3): (5.0, 9.0), ("qnn", 0.0): (6.0, 6.4)}
    return [
        {
            "dataset": "mnist",
            "model": model,
            "noise_ratio": ratio,
            "seed": seed,
            "metric": metric,
            "value": value,
        }
        for (model, ratio), values in traces.items()
        for seed, trace in enumerate(values)
        for metric, value in (("trace", trace), ("collapsed", float(seed == 1)))
    ]


XXZ = dict(
    deltas=np.linspace(-1.0, 2.0, 25),
    train=([-0.8, -0.5], [1.5, 1.8]),
    val=([-0.6], [1.7]),
    window=(0.2, 1.2),
)


def _xxz(path):
    d = XXZ["deltas"]
    return data.plot_xxz_phase_diagram(
        d, -0.4 - 0.1 * d, np.tanh(d), XXZ["train"], XXZ["val"], XXZ["window"], path
    )


# --------------------------------------------------------------------------- every figure


def test_noise_sweep_figure(tmp_path):
    rows = _sweep_rows(np.random.default_rng(0))
    reference = [r | {"value": 0.9} for r in rows if r["model"] == "mlp"]
    paths = sweep.plot_noise_sweep(rows, tmp_path, reference=reference, title="sweep")
    _written(paths, _files("fig2_noise_sweep"))


def test_readout_figure_draws_every_readout_of_the_same_params():
    """eval_shots / eval_circuit_noise metrics: one curve each beside the exact one, in that
    order (shots by count, then noise models); a sweep without them has no readout figure."""
    base = [r for r in _sweep_rows(np.random.default_rng(0)) if r["metric"] == "val_acc"]
    extra = [
        r | {"metric": m, "value": r["value"] * 0.9}
        for r in base
        for m in ("val_acc_shots1000", "val_acc_shots100", "val_acc_noise_torino")
    ]
    assert sweep.readout_metrics(base) == []
    assert sweep.readout_metrics(base + extra) == [
        "val_acc_shots100",
        "val_acc_shots1000",
        "val_acc_noise_torino",
    ]
    fig = sweep.draw_readouts(base + extra)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["exact", "S = 100", "S = 1000", "noise torino"]
    style.close(fig)


def _across_row(results, dataset, size, model, role, alpha_c, width, clean):
    return {
        "results": results,
        "dataset": dataset,
        "size": size,
        "model": model,
        "role": role,
        "noise": "label_flip",
        "val_acc_alpha0": clean,
    } | (
        {}
        if alpha_c is None
        else {
            "alpha_c": alpha_c,
            "alpha_c_lo": alpha_c - 0.02,
            "alpha_c_hi": alpha_c + 0.03,
            "width": width,
            "width_lo": width * 0.7,
            "width_hi": width * 1.2,
        }
    )


def test_across_figure_one_row_per_data_set_widths_on_one_axis(tmp_path):
    """One row per data set (MLP and QNN run apart share theirs), in the rows' order; the width
    panel one axis for all; a model that learns little (hollow) or whose fit never crosses 0.5
    gets the reason instead of markers; the legend names each model once."""
    rows = [
        _across_row("t8", "tfim", "8 spins", "mlp", "mlp", 0.52, 0.88, 1.0),
        _across_row("t8", "tfim", "8 spins", "qnn", "qnn", 0.51, 0.18, 1.0),
        _across_row("t8", "tfim", "8 spins", "lr", "logistic", 0.50, 0.40, 0.97),
        _across_row("t14m", "tfim", "14 spins", "mlp", "mlp", 0.53, 0.90, 1.0),
        _across_row("t14q", "tfim", "14 spins", "qnn", "qnn", 0.50, 0.16, 1.0),
        _across_row("i", "iris", "1 vs 2, amplitude", "mlp", "mlp", 0.5, 1.08, 0.92),
        _across_row("i", "iris", "1 vs 2, amplitude", "qnn", "qnn", 0.29, 3.2, 0.58),
        _across_row("m", "mnist", "3 vs 5", "qnn", "qnn", None, None, 0.8),
    ]
    fig = across.draw_across(rows)
    alpha_ax, width_ax, clean_ax = fig.axes
    ticks = [t.get_text() for t in alpha_ax.get_yticklabels()]
    assert ticks == ["tfim\n8 spins", "tfim\n14 spins", "iris\n1 vs 2, amplitude", "mnist\n3 vs 5"]
    assert width_ax.get_shared_y_axes().joined(width_ax, alpha_ax)
    assert width_ax.get_xlim()[1] >= 1.08 * 1.2  # every width's bar on the one axis
    texts = [t.get_text() for t in alpha_ax.texts]
    assert texts == ["qnn: learns little (val 0.58 at α = 0)", "qnn: no crossing"]
    assert width_ax.get_xlim()[1] < 1.5  # the unlearnt fit's width left out, not on the axis
    points = [line for line in clean_ax.lines if line.get_marker() == "o"]
    assert len(points) == len(rows)  # every model's clean accuracy, crossing or not
    hollow = [line for line in points if line.get_markerfacecolor() == "white"]
    assert [line.get_xdata()[0] for line in hollow] == [0.58]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["mlp", "qnn", "logistic"]
    _written(style.save(fig, tmp_path / "across.png"), ["across.png"])


def test_unlearning_figures(tmp_path):
    rng = np.random.default_rng(1)
    config = {
        "name": "u",
        "dataset": "mnist",
        "models": {"mlp": {"model": "mlp"}, "qnn": {"model": "qnn"}},
        "sweep": {"scrub": ["kl_w", "fo_w"]},
    }
    paths = unlearning.plot_unlearning_dir(
        tmp_path, _unlearning_rows(rng), config, _weight_sweep_rows(rng)
    )
    _written(paths, _files("fig3_unlearning") + _files("fig3_sweep"))


def test_curvature_figures(tmp_path):
    rng = np.random.default_rng(2)
    paths = curvature.plot_curvature_dir(
        tmp_path, _curvature_rows(rng), {"name": "c"}, _density_rows(rng)
    )
    names = [n for stem in ("eig_1", "trace", "density") for n in _files(f"curvature_{stem}")]
    _written(paths, names)


def test_roughening_figure(tmp_path):
    paths = curvature.plot_roughening(
        _roughening_rows(), tmp_path, models={"mlp": "mlp", "qnn": "qnn_cnot"}, title="r"
    )
    _written(paths, _files("roughening_trace_ratio"))


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg", ".PNG"])
def test_xxz_figure_writes_exactly_the_suffix_asked_for(tmp_path, suffix):
    path = tmp_path / "fig" / f"xxz{suffix}"
    assert _xxz(path) == [path]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [path.name]
    head = path.read_bytes()[:5]
    assert head == {".png": b"\x89PNG\r", ".pdf": b"%PDF-", ".svg": b"<?xml"}[suffix.lower()]


@pytest.mark.parametrize("name", ["x.txt", "x.jpeg", "x"])
def test_unsupported_suffix_is_refused_naming_the_supported_ones(tmp_path, name):
    for draw in (_xxz, lambda p: data.xxz_figure(tmp_path / "cache", p, n_spins=4)):
        with pytest.raises(QunlearnError, match=r"\.png, \.pdf, \.svg") as err:
            draw(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)
    assert list(tmp_path.iterdir()) == []  # refused before any data is loaded or file written


def test_xxz_figure_from_the_grid(tmp_path):
    path = tmp_path / "xxz.svg"
    assert data.xxz_figure(tmp_path, path, n_spins=4) == [path]
    assert path.stat().st_size > 1000


# ------------------------------------------------------------------------------ the style


def test_save_writes_png_and_pdf_for_a_stem_and_exactly_a_named_file(tmp_path, monkeypatch):
    monkeypatch.delenv(style.FORMATS_ENV)  # the default, as a user's plot writes
    fig = style.new_figure(2, 2)
    fig.subplots().plot([0, 1], [0, 1])
    stem = tmp_path / "sub" / "figure"
    _written(style.save(fig, stem), ["figure.png", "figure.pdf"])
    assert (tmp_path / "sub" / "figure.pdf").read_bytes()[:5] == b"%PDF-"
    assert fig.axes == []  # closed (cleared)
    fig = style.new_figure(2, 2)
    fig.subplots().plot([0, 1], [0, 1])
    assert style.save(fig, tmp_path / "one.svg") == [tmp_path / "one.svg"]
    with pytest.raises(QunlearnError, match="'.gif' is not a supported figure format"):
        style.save(style.new_figure(1, 1), tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()


@pytest.mark.parametrize(
    ("formats", "names"),
    [("png", ["f.png"]), ("SVG, .png", ["f.svg", "f.png"]), ("pdf,pdf", ["f.pdf"])],
)
def test_the_formats_variable_chooses_what_a_stem_writes(tmp_path, monkeypatch, formats, names):
    monkeypatch.setenv(style.FORMATS_ENV, formats)
    fig = style.new_figure(2, 2)
    fig.subplots().plot([0, 1], [0, 1])
    _written(style.save(fig, tmp_path / "f"), names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert style.save(style.new_figure(1, 1), tmp_path / "one.svg") == [tmp_path / "one.svg"]


@pytest.mark.parametrize("formats", ["jpeg", "png,", "png;pdf"])
def test_unknown_formats_are_one_line_before_anything_is_drawn(
    tmp_path, monkeypatch, capsys, formats
):
    from qunlearn.cli import main

    monkeypatch.setenv(style.FORMATS_ENV, formats)
    with pytest.raises(QunlearnError, match="name one or more of png, pdf, svg") as err:
        style.save(style.new_figure(1, 1), tmp_path / "f")
    assert "\n" not in str(err.value) and repr(formats) in str(err.value)
    assert main(["plot", str(tmp_path / "no_results_yet")]) == 2  # refused before reading it
    assert capsys.readouterr().err.startswith(f"error: {style.FORMATS_ENV}={formats!r}: name")
    assert list(tmp_path.iterdir()) == []


def test_save_closes_a_pyplot_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert plt.get_fignums()
    style.save(fig, tmp_path / "p.png")
    assert plt.get_fignums() == []


def test_mean_std_band_draws_the_band_in_the_line_colour():
    ax = style.new_figure(2, 2).subplots()
    x, mean, std = [0, 1, 2], np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.0, 1.0])
    for color in ("tab:green", None):
        line, band = style.mean_std_band(ax, x, mean, std, "o-", color=color, label="m")
        assert line.get_label() == "m" and line.get_marker() == "o"
        np.testing.assert_allclose(
            band.get_facecolor()[0][:3], matplotlib.colors.to_rgb(line.get_color())
        )
        assert band.get_alpha() == style.BAND_ALPHA
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(0.5) and ys.max() == pytest.approx(4.0)


def test_colours_live_in_the_style_module_only():
    assert style.model_color("qnn_cnot") == style.model_color("qnn") == "tab:red"
    assert style.model_color("mlp") == "tab:blue" and style.model_color("cnn") is None
    assert style.method_color("retrain") == "tab:green"
    assert style.method_color("x") in style.OTHER_METHOD_COLORS  # a user's method: stable colour
    assert style.ordered_methods(["zeta", "scrub", "retrain", "alpha", "scrub"]) == [
        "retrain",
        "scrub",
        "alpha",
        "zeta",
    ]
    for path in PLOTTING.glob("*.py"):
        if path.name != "style.py":
            assert "tab:" not in path.read_text(), f"{path.name} defines its own colours"


def test_plotting_uses_no_pyplot():
    """No module of the plotting package imports pyplot or selects a backend."""
    for path in PLOTTING.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                names = []
            assert not any("pyplot" in n for n in names), path.name
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr != "use", f"{path.name} selects a matplotlib backend"
