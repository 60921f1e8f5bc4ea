"""``qunlearn plot-data``: the sweep's own poisonings, embedded in 2-D and drawn by category."""

import jax
import numpy as np
import pytest

from qunlearn.cli import main
from qunlearn.data import Dataset
from qunlearn.experiments import noise_sweep, poisoning_view
from qunlearn.experiments.keys import run_keys, stable_key
from qunlearn.noise import n_poisoned
from qunlearn.plotting.poisoning import draw_poisoning


def _toy(complex_states=False, n_per_class=30, dim=16):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], n_per_class).astype(np.int32)
    x = rng.normal(size=(2 * n_per_class, dim)) + 1.5 * y[:, None]
    if complex_states:
        x = x + 1j * rng.normal(size=x.shape)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    name = "xxz" if complex_states else "mnist"
    return Dataset(name, x, y, x[:4], y[:4], {"source": {"kind": "synthetic"}})


@pytest.mark.parametrize(("complex_states", "method"), [(False, "pca"), (True, "tsne")])
def test_view_counts_match_the_poisoning(complex_states, method):
    data = _toy(complex_states)
    view = poisoning_view.poisoned_view(data, 0.3, method=method, seed=3)
    n = len(data.y_train)
    assert view.clean_xy.shape == (n, 2) and np.isfinite(view.clean_xy).all()
    assert view.flipped.sum() == n_poisoned(n, 0.3, "label_flip")
    assert view.randomised.sum() == n_poisoned(n, 0.3, "feature_randomization")
    assert view.random_xy.shape == (view.randomised.sum(), 2)

    fig = draw_poisoning(view)
    counts = {c.get_label(): len(c.get_offsets()) for ax in fig.axes for c in ax.collections}
    flipped = sum(v for k, v in counts.items() if k.startswith("flipped"))
    randomised = sum(v for k, v in counts.items() if k.startswith("randomised"))
    clean = sum(v for k, v in counts.items() if k.startswith("clean"))
    kept = sum(v for k, v in counts.items() if k.startswith("kept"))
    assert flipped == view.flipped.sum() and clean == n - flipped
    assert randomised == view.randomised.sum() and kept == n - randomised


def test_masks_are_the_sweeps_cell_poisoning():
    """The flip mask is the one run 1 of cell (mnist, qnn, label_flip, 0.2) under seed 5 uses."""
    data = _toy()
    flipped, given, _, _ = poisoning_view.poisoned_masks(data, 0.2, seed=5, model="qnn", run=1)
    cell = stable_key(jax.random.PRNGKey(5), "mnist", "qnn", "label_flip", f"{0.2:.6f}")
    keys = run_keys(cell, 4)  # a sweep with more runs draws run 1 the same way
    _, ys, masks = noise_sweep.poison_runs(
        "label_flip", keys[:, 0], data.x_train, data.y_train, 0.2
    )
    np.testing.assert_array_equal(flipped, np.asarray(masks[1]))
    np.testing.assert_array_equal(given, np.asarray(ys[1]))


def test_three_classes_draw_every_sample_and_each_flip_with_its_given_label():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20).astype(np.int32)
    x = rng.normal(size=(60, 8)) + 2.0 * y[:, None]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    data = Dataset("blobs", x, y, x[::10], y[::10], {"source": {"kind": "synthetic"}})
    view = poisoning_view.poisoned_view(data, 0.3, seed=0)
    fig = draw_poisoning(view)
    counts = {c.get_label(): len(c.get_offsets()) for ax in fig.axes for c in ax.collections}
    assert counts["clean, label 2"] == 20 - int(view.flipped[y == 2].sum())  # class 2 is drawn
    flips = {k: v for k, v in counts.items() if k.startswith("flipped")}
    assert sum(flips.values()) == view.flipped.sum() == n_poisoned(60, 0.3, "label_flip")
    for name, count in flips.items():
        a, b = (int(v) for v in name.removeprefix("flipped ").split(" -> "))
        assert a != b and count == int(np.sum(view.flipped & (y == a) & (view.given == b)))
    assert sum(c for k, c in counts.items() if k.startswith(("kept", "randomised"))) == 60


def test_plot_data_writes_the_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("qunlearn.data.load_dataset", lambda name, cache_dir=None: _toy())
    out = tmp_path / "p.png"
    assert main(["plot-data", "mnist", "--alpha", "0.3", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and f"figure: {out}" in capsys.readouterr().out
    for bad, needle in (
        (["--alpha", "1.2"], "--alpha 1.2"),
        (["--method", "umap"], "choose one of pca, tsne"),
        (["--out", str(tmp_path / "p.jpg")], "cannot write a figure"),
    ):
        assert main(["plot-data", "mnist", *bad]) == 2
        assert needle in capsys.readouterr().err
