"""Roughening ratios with per-seed spread: medians, bootstrap intervals, the notebook's filter."""

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from qunlearn.compare import compare_roughening, ratio_intervals
from qunlearn.plotting.curvature import draw_roughening


def _rows(traces: dict) -> list[dict]:
    """Tidy roughening rows from {(model, ratio): [trace per seed]}."""
    rows = []
    for (model, ratio), values in traces.items():
        for seed, value in enumerate(values):
            base = {"model": model, "noise_ratio": ratio, "seed": seed}
            rows.append(base | {"metric": "trace", "value": value})
            rows.append(base | {"metric": "collapsed", "value": 0.0})
    return rows


def test_intervals_cover_the_truth_and_shrink_with_seeds():
    rng = np.random.default_rng(0)

    def draw(n):  # heavy-tailed traces, true median ratio 2 (clean median 1 = mean of clean)
        return 2 * rng.lognormal(0, 0.8, n), np.ones(n)

    few = ratio_intervals(*draw(5), same_seeds=False)
    many = ratio_intervals(*draw(80), same_seeds=False)
    assert many["median_lo"] <= 2.0 <= many["median_hi"]
    assert many["median_hi"] - many["median_lo"] < few["median_hi"] - few["median_lo"]
    same = ratio_intervals(np.full(6, 3.0), np.full(6, 3.0), same_seeds=True)
    assert same == {"median_lo": 1.0, "median_hi": 1.0, "mean_lo": 1.0, "mean_hi": 1.0}
    assert ratio_intervals([1.0], [1.0], same_seeds=True) == {}


def test_compare_reports_median_interval_and_the_notebook_filter():
    traces = {
        ("mlp", 0.0): [0.2, 0.255, 0.3, 0.25, 0.1],  # two within 0.01 of 0.25: dropped by it
        ("mlp", 0.3): [20.0, 0.245, 40.0, 30.0, 10.0],
    }
    table = {r["noise_ratio"]: r for r in compare_roughening(_rows(traces), {"mlp": "mlp"})}
    noisy = table[0.3]
    clean_mean = np.mean(traces[("mlp", 0.0)])
    assert noisy["ratios"] == pytest.approx(np.array(traces[("mlp", 0.3)]) / clean_mean)
    assert noisy["ratio_median"] == pytest.approx(20.0 / clean_mean)
    assert noisy["ratio_median_lo"] <= noisy["ratio_median"] <= noisy["ratio_median_hi"]
    assert noisy["dropped_notebook_filter"] == 1 and table[0.0]["dropped_notebook_filter"] == 2
    kept = np.array([20.0, 40.0, 30.0, 10.0]) / np.mean([0.2, 0.3, 0.1])
    assert noisy["ratio_mean_notebook_filter"] == pytest.approx(kept.mean())
    assert noisy["ratio_median_notebook_filter"] == pytest.approx(np.median(kept))


def test_bar_chart_shows_every_seed():
    traces = {("qnn", 0.0): [6.0, 6.5, 5.5, 7.0], ("qnn", 0.2): [5.0, 6.0, 4.0, 5.5]}
    fig = draw_roughening(_rows(traces), models={"qnn": "qnn_cnot"})
    (ax,) = fig.axes
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]  # the scatters
    assert sum(len(c.get_offsets()) for c in dots) == 8


def test_mean_interval_of_fig3_finals_covers_the_mean_and_shrinks_with_runs():
    from qunlearn.compare import mean_interval

    rng = np.random.default_rng(0)
    few, many = rng.normal(0.9, 0.02, 5), rng.normal(0.9, 0.02, 200)
    for values in (few, many):
        ci = mean_interval(values)
        assert ci["lo"] <= values.mean() <= ci["hi"]
    assert mean_interval(many)["hi"] - mean_interval(many)["lo"] < (
        mean_interval(few)["hi"] - mean_interval(few)["lo"]
    )
    assert mean_interval(np.full(5, 0.966)) == {"lo": 0.966, "hi": 0.966}  # identical runs
    assert mean_interval([0.5]) == {}
