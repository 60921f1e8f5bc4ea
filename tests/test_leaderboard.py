"""The evaluation's leaderboard on constructed cases: the bootstrap over teachers recomputes
score_groups' statistics exactly on each draw, is reproducible from its seed and brackets the
point value; ranks (one method clearly better: rank 1; identical methods: one shared rank);
missing resamples or timings give n/a, never a crash; the Pareto front."""

import math

import numpy as np

from qunlearn import audit, leaderboard
from qunlearn.compare import evaluation_leaderboard
from qunlearn.experiments import evaluation
from qunlearn.plotting.evaluation import leaderboard_figure, pareto_front

T, U, K = 4, 2, 16


def _poisoning(n_train=30, n_val=20, n_out=6, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros(n_train, bool)
    mask[rng.choice(n_train, 10, replace=False)] = True
    return {
        "mask": mask,
        "y_noisy": rng.integers(0, 2, n_train),
        "y_true": rng.integers(0, 2, n_train),
        "y_val": rng.integers(0, 2, n_val),
        "y_non_member": rng.integers(0, 2, n_out),
    }


def _margins(n, shift=0.0, seed=1, examples=56):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, examples))


GROUPS = {"teacher": _margins(T, 2.0), "retrain": _margins(T * U, seed=2)}
GROUPS["finetune"] = _margins(T * U, 1.0, seed=3)
ORACLES = _margins(K, seed=4)


def _boot(seed=0, resamples=40):
    return evaluation.bootstrap_groups(
        GROUPS, ORACLES, _poisoning(), bins=5, design=(T, U), seed=seed, resamples=resamples
    )


def test_each_resample_is_score_groups_on_the_drawn_teachers():
    rows = _boot()
    picks = np.random.default_rng((0, evaluation.BOOTSTRAP_STREAM)).integers(0, T, (40, T))
    for b in (0, 17, 39):
        drawn = {
            g: m.reshape(T, -1, m.shape[1])[picks[b]].reshape(-1, m.shape[1])
            for g, m in GROUPS.items()
        }
        scores, _, _ = evaluation.score_groups(
            drawn, ORACLES, _poisoning(), bins=5, design=(T, U), seed=0
        )
        for group in GROUPS:
            (row,) = [r for r in rows if (r["group"], r["resample"]) == (group, b)]
            for metric, split in evaluation.BOOTSTRAP_METRICS.items():
                (want,) = [
                    s["value"]
                    for s in scores
                    if (s["group"], s["split"], s["metric"]) == (group, split, metric)
                ]
                assert row[metric] == want, (group, b, metric)


def test_the_bootstrap_is_reproducible_from_its_seed_and_brackets_the_point():
    assert _boot(seed=0) == _boot(seed=0)
    assert _boot(seed=0) != _boot(seed=1)
    scores, _, _ = evaluation.score_groups(
        GROUPS, ORACLES, _poisoning(), bins=5, design=(T, U), seed=0
    )
    point = {
        (s["group"], s["metric"]): s["value"]
        for s in scores
        if (s["split"], s["metric"]) == ("val", "acc_true_mean")
    }
    rows = _boot(resamples=200)
    for group in GROUPS:
        values = [r["acc_true_mean"] for r in rows if r["group"] == group]
        lo, hi = leaderboard.percentile_interval(values)
        assert lo <= point[(group, "acc_true_mean")] <= hi
        assert lo < hi  # the teachers differ: a real spread


def test_tpr_at_fpr_rows_matches_the_roc_curve():
    rng = np.random.default_rng(5)
    tied = rng.integers(0, 12, (30, 50)).astype(float), rng.integers(0, 10, (30, 230)) * 1.0
    distinct = rng.normal(1, 1, (30, 50)), rng.normal(0, 1, (30, 230))
    for positive, negative in (tied, distinct):
        for fpr in (0.0, 0.01, 0.05, 0.5, 1.0):
            want = [audit.tpr_at_fpr(p, n, fpr) for p, n in zip(positive, negative, strict=True)]
            assert audit.tpr_at_fpr_rows(positive, negative, fpr).tolist() == want


def test_histogram_kl_matches_numpy_histograms():
    rng = np.random.default_rng(6)
    sample, reference = rng.normal(size=(7, 25)), rng.normal(0.5, 1, (19, 25))
    want = []
    for s, r in zip(sample.T, reference.T, strict=True):
        edges = np.linspace(min(s.min(), r.min()), max(s.max(), r.max()), 9)
        p = np.histogram(s, edges)[0] + 0.5
        q = np.histogram(r, edges)[0] + 0.5
        p, q = p / p.sum(), q / q.sum()
        want.append((p * np.log(p / q)).sum())
    np.testing.assert_allclose(audit.histogram_kl(sample, reference, 8), want, rtol=1e-12)


def test_ranks_share_the_best_rank_and_put_nan_last():
    assert leaderboard.ranks(np.array([0.3, 0.1, 0.3, np.nan])).tolist() == [2, 1, 2, 4]


def _scores(resid: dict) -> dict:
    out = {}
    for group, r in resid.items():
        out[("mlp", group)] = {
            ("forget", "residual"): r,
            ("forget", "ulira_tpr_at_1pct_fpr"): 0.5,
            ("val", "acc_true_mean"): 0.9,
        }
    return out


def _klom(values: dict, n=200, seed=0) -> dict:
    """{group: klom_p50 per resample}: the value plus small noise shared by identical groups."""
    noise = np.random.default_rng(seed).normal(0, 0.01, n)
    return {
        ("mlp", g): {"klom_p50": v + noise, "acc_true_mean": 0.9 + noise} for g, v in values.items()
    }


def test_a_clearly_better_method_ranks_first_and_identical_ones_tie():
    klom = {"teacher": 2.0, "retrain": 1.0, "good": 1.1, "same_a": 1.6, "same_b": 1.6}
    resid = {g: (v - 1.0) / 1.0 for g, v in klom.items()}
    rows = leaderboard.leaderboard_rows(_scores(resid), _klom(klom), {})
    by = {r["method"]: r for r in rows}
    assert (by["retrain"]["rank"], by["retrain"]["rank_lo"], by["retrain"]["rank_hi"]) == (1, 1, 1)
    assert (by["good"]["rank"], by["good"]["rank_lo"], by["good"]["rank_hi"]) == (2, 2, 2)
    tie = [(by[m]["rank"], by[m]["rank_lo"], by[m]["rank_hi"]) for m in ("same_a", "same_b")]
    assert tie[0] == tie[1] == (3, 3, 3)
    assert by["teacher"]["rank"] is None and rows[-1]["method"] == "teacher"
    for r in rows:  # every interval holds its point value (to rounding: resamples differ by it)
        assert r["resid_lo"] - 1e-12 <= r["resid"] <= r["resid_hi"] + 1e-12
    assert all(r["cost"] is None for r in rows)  # no timings: n/a


def test_a_clean_reference_without_resamples_keeps_the_intervals_and_is_not_ranked():
    """A partial or clean-data request adds the clean oracles: a reference row, never resampled."""
    klom = {"teacher": 2.0, "retrain": 1.0, "good": 1.1}
    scores = _scores({g: (v - 1.0) for g, v in klom.items()} | {"clean_oracle": None})
    rows = leaderboard.leaderboard_rows(scores, _klom(klom), {})
    assert [r["method"] for r in rows] == ["retrain", "good", "clean_oracle", "teacher"]
    by = {r["method"]: r for r in rows}
    assert by["good"]["resid_lo"] is not None and by["good"]["rank"] == 2
    assert by["clean_oracle"]["rank"] is None and by["clean_oracle"]["resid_lo"] is None


def test_overlapping_methods_share_a_rank_interval():
    klom = {"teacher": 2.0, "retrain": 1.0}
    noise = np.random.default_rng(1).normal(0, 0.05, (2, 300))
    draws = _klom(klom, 300) | {
        ("mlp", "a"): {"klom_p50": 1.5 + noise[0], "acc_true_mean": noise[0]},
        ("mlp", "b"): {"klom_p50": 1.51 + noise[1], "acc_true_mean": noise[1]},
    }
    rows = leaderboard.leaderboard_rows(
        _scores({"teacher": 1, "retrain": 0, "a": 0.5, "b": 0.51}), draws, {}
    )
    by = {r["method"]: r for r in rows}
    assert (by["a"]["rank"], by["b"]["rank"]) == (2, 3)
    assert (
        by["a"]["rank_lo"] == by["b"]["rank_lo"] == 2
        and by["a"]["rank_hi"] == by["b"]["rank_hi"] == 3
    )


def test_intervals_hold_their_point_when_every_resample_is_shifted():
    """Repeating teachers raises every resample's KLoM (retrain's on Fig 3a's MLP: all 1000
    resamples above its point): the interval keeps the resamples' spread and drops their shift,
    so it holds the point (a plain percentile interval, [.66, .74] here, missed .5), and an
    accuracy's interval stays inside [0, 1]."""
    noise = np.random.default_rng(2).normal(0, 0.02, (3, 400))
    draws = {
        ("mlp", "teacher"): {"klom_p50": 2.0 + 0 * noise[0], "acc_true_mean": 0.8 + noise[0]},
        ("mlp", "retrain"): {"klom_p50": 1.0 + 0 * noise[0], "acc_true_mean": 0.99 + noise[1]},
        ("mlp", "a"): {"klom_p50": 1.7 + noise[2], "acc_true_mean": 0.9 + noise[2]},
    }
    scores = _scores({"teacher": 1.0, "retrain": 0.0, "a": 0.5})
    scores[("mlp", "retrain")][("val", "acc_true_mean")] = 0.995
    by = {r["method"]: r for r in leaderboard.leaderboard_rows(scores, draws, {})}
    resid = draws[("mlp", "a")]["klom_p50"] - 1.0  # (a - retrain) / (teacher - retrain)
    assert leaderboard.percentile_interval(resid)[0] > 0.5  # the old interval missed the point
    lo, hi = by["a"]["resid_lo"], by["a"]["resid_hi"]
    assert lo < 0.5 < hi
    want = np.subtract(*np.percentile(resid, [97.5, 2.5]))
    assert math.isclose(hi - lo, want, rel_tol=1e-9)  # the resamples' spread, unchanged
    assert by["retrain"]["val_acc_lo"] < 0.995 <= by["retrain"]["val_acc_hi"] == 1.0


def test_no_resamples_and_no_timings_give_point_values_and_n_a():
    results = [
        {"model": "mlp", "group": g, "split": split, "metric": metric, "value": v}
        | {"models": 3, "oracles": 12}
        for g, k in (("teacher", 2.0), ("retrain", 1.0), ("finetune", math.nan))
        for split, metric, v in (("forget", "klom_p50", k), ("val", "acc_true_mean", 0.9))
    ]
    manifest = {
        "config": {"experiment": "evaluation"},
        "timings": {"mlp__finetune": {"seconds": 1.0}},
    }
    rows = evaluation_leaderboard(results, [], manifest)
    by = {r["method"]: r for r in rows}
    assert by["retrain"]["rank"] == 1 and by["retrain"]["rank_lo"] is None
    assert by["finetune"]["resid"] is None and by["finetune"]["rank"] is None
    assert all(r["cost"] is None and r["forget"] == "poison" for r in rows)
    text = leaderboard.format_leaderboard(rows)
    assert "n/a" in text and "nan" not in text.lower()


def test_the_pareto_front_keeps_what_nothing_beats():
    points = [(0.0, 0.7), (0.5, 0.9), (0.6, 0.8), (1.0, 0.95), (1.2, 0.95)]
    assert pareto_front(points) == [(0.0, 0.7), (0.5, 0.9), (1.0, 0.95)]


def test_an_interval_that_misses_its_point_still_draws():
    """A bootstrap percentile interval can lie beside its point (clean_random's GA: .94 in
    [.96, .98]); matplotlib refuses negative bar lengths."""
    from qunlearn.plotting.evaluation import leaderboard_figure

    row = {"forget": "poison", "model": "mlp", "method": "gradient_ascent", "cost": 1.0}
    row |= {"resid": 0.94, "resid_lo": 0.96, "resid_hi": 0.98}
    row |= {"val_acc": 0.5, "val_acc_lo": 0.45, "val_acc_hi": 0.55}
    assert leaderboard_figure([row]) is not None


def test_a_leaderboard_with_nothing_to_draw_has_no_figure():
    assert (
        leaderboard_figure(
            [{"forget": "poison", "model": "m", "method": "x", "resid": None, "val_acc": 0.9}]
        )
        is None
    )
