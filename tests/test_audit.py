"""The unlearning audit (qunlearn.audit and the evaluation experiment) on constructed cases:
identical ensembles are at distance 0, two halves of one ensemble fall in the estimator's null
band, a shifted ensemble does not; attacks: AUC against brute force, ≈ 0.5 on random scores,
clearly above 0.5 for models trained with the forget set; stability statistics against their
definitions; members and non-members disjoint; one compilation per ensemble program."""

import itertools
import json

import numpy as np
import pytest

from qunlearn import audit
from qunlearn.data import Dataset, load_dataset, non_member_pool
from qunlearn.experiments import evaluation, runner
from qunlearn.experiments.config import EvaluationConfig, build

RNG = np.random.default_rng(0)


def _ensemble(n, examples=400, shift=0.0, seed=1):
    """Margins (n, examples): per example its own mean and scale (so the null band, computed for
    standard normals, applies: both estimators are invariant to a per-example affine map)."""
    rng = np.random.default_rng(seed)
    mu = np.random.default_rng(99).normal(0, 3, examples)
    sd = np.random.default_rng(98).uniform(0.2, 2.0, examples)
    return mu + sd * (rng.standard_normal((n, examples)) + shift)


@pytest.mark.parametrize("estimator", ["histogram_kl", "gaussian_kl"])
def test_identical_ensembles_are_at_distance_zero(estimator):
    a = _ensemble(16)
    fn = getattr(audit, estimator)
    d = fn(a, a, 20) if estimator == "histogram_kl" else fn(a, a)
    assert np.all(np.abs(d) < 1e-12)
    constant = np.ones((5, 7))
    assert np.all(audit.histogram_kl(constant, constant) == 0)


def test_oracle_halves_fall_in_the_null_band_and_a_shift_does_not():
    oracles = _ensemble(64, seed=2)
    band = audit.null_band(32, 32, bins=20, examples=400)
    halves = audit.histogram_kl(oracles[:32], oracles[32:], 20)
    assert np.median(halves) <= band["histogram_kl"][1]
    g_halves = audit.gaussian_kl(oracles[:32], oracles[32:])
    assert np.median(g_halves) <= band["gaussian_kl"][1]
    shifted = _ensemble(32, shift=1.5, seed=3)
    assert np.median(audit.histogram_kl(shifted, oracles[32:], 20)) > 2 * band["histogram_kl"][1]
    assert np.median(audit.gaussian_kl(shifted, oracles[32:])) > 3 * band["gaussian_kl"][1]


def test_gaussian_kl_matches_its_closed_form():
    a, b = RNG.normal(1.0, 2.0, (200, 3)), RNG.normal(-0.5, 0.7, (300, 3))
    mu_a, var_a, mu_b, var_b = a.mean(0), a.var(0), b.mean(0), b.var(0)
    expected = np.log(np.sqrt(var_b / var_a)) + (var_a + (mu_a - mu_b) ** 2) / (2 * var_b) - 0.5
    np.testing.assert_allclose(audit.gaussian_kl(a, b), expected, rtol=1e-12)


def test_auc_and_roc_against_brute_force():
    pos, neg = RNG.normal(0.5, 1, 60), RNG.normal(0, 1, 80)
    pos[:5] = neg[:5]  # ties count half
    pairs = [(p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)]
    assert audit.auc(pos, neg) == pytest.approx(np.mean(pairs), abs=1e-12)
    fpr, tpr = audit.roc_curve(pos, neg)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    for target in (0.01, 0.05, 0.2):
        best = max(
            (pos >= t).mean() for t in np.concatenate([pos, neg]) if (neg >= t).mean() <= target
        )
        assert audit.tpr_at_fpr(pos, neg, target) == pytest.approx(best)


def test_an_attack_on_random_scores_is_at_chance():
    rng = np.random.default_rng(5)
    assert abs(audit.auc(rng.random(4000), rng.random(4000)) - 0.5) < 0.02
    group, oracles = _ensemble(16, seed=6), _ensemble(32, seed=7)
    positive, negative = audit.ulira(group, oracles)
    assert abs(audit.attack_summary(positive, negative)["auc"] - 0.5) < 0.05


def test_ulira_finds_an_ensemble_that_differs_from_the_oracles():
    # two unit normals 2 sd apart: the best possible AUC is Phi(2 / sqrt 2) = 0.92
    group, oracles = _ensemble(16, shift=2.0, seed=8), _ensemble(32, seed=9)
    summary = audit.attack_summary(*audit.ulira(group, oracles))
    assert summary["auc"] > 0.85
    assert summary["identified_frac"] > 0.5


def test_leave_one_out_fits_match_refitting():
    values = RNG.normal(size=(6, 4))
    mu, var = audit._leave_one_out(values)
    for j in range(6):
        rest = np.delete(values, j, 0)
        np.testing.assert_allclose(mu[j], rest.mean(0), rtol=1e-12)
        np.testing.assert_allclose(var[j], np.maximum(rest.var(0, ddof=1), audit.VAR_FLOOR))


def test_flip_rate_counts_disagreeing_pairs():
    margins = RNG.normal(size=(7, 30))
    pairs = list(itertools.combinations(range(7), 2))
    brute = np.mean(
        [[(margins[a, i] > 0) != (margins[b, i] > 0) for a, b in pairs] for i in range(30)]
    )
    assert audit.flip_rate(margins) == pytest.approx(brute)


def test_nested_variance_recovers_known_components():
    rng = np.random.default_rng(11)
    t, u, examples = 40, 6, 200
    values = rng.normal(0, 2.0, (t, 1, examples)) + rng.normal(0, 0.5, (t, u, examples))
    between, within = audit.nested_variance(values)
    assert between == pytest.approx(4.0, rel=0.25)
    assert within == pytest.approx(0.25, rel=0.1)
    assert audit.nested_variance(np.ones((3, 2))) == (0.0, 0.0)


def test_population_attack_scores_each_model():
    members = np.full((2, 10), 3.0)  # confident in label 1
    assert np.all(audit.population_attack(members, np.ones(10), -members, np.ones(10)) == 1.0)
    assert np.all(audit.population_attack(members, np.ones(10), members, np.ones(10)) == 0.5)


# --- the experiment ----------------------------------------------------------------------------


def test_mnist_non_members_are_neither_training_nor_validation_images():
    dataset = load_dataset("mnist", n_per_class=40)
    x, y = non_member_pool(dataset, 15)
    assert np.bincount(y).tolist() == [15, 15]
    seen = {row.tobytes() for row in np.concatenate([dataset.x_train, dataset.x_val])}
    assert not any(row.tobytes() in seen for row in x)


def test_val_based_non_members_are_never_training_states():
    rng = np.random.default_rng(0)
    x_train, x_val = rng.normal(size=(10, 4)), rng.normal(size=(12, 4))
    y = np.repeat([0, 1], 5).astype(np.int32)
    y_val = np.repeat([0, 1], 6).astype(np.int32)
    data = Dataset("xxz", x_train, y, x_val, y_val, {"n_train_per_class": [5, 5]})
    x, labels = non_member_pool(data, 4)
    assert np.bincount(labels).tolist() == [4, 4]
    assert not any((row == x_train).all(1).any() for row in x)
    assert all((row == x_val).all(1).any() for row in x)


MODEL = {"model": "mlp", "hyper": {"hidden": [16]}, "epochs": 80, "batch_size": 40, "lr": 0.05}
CONFIG = {
    "experiment": "evaluation",
    "name": "audit_toy",
    "dataset": "mnist",
    "models": {
        "mlp": {
            **MODEL,
            "unlearn_epochs": 40,
            "unlearn_batch_size": 0,
            "unlearn_lr": 0.05,
            "oracles": 16,
            "teachers": 4,
            "unlearn_seeds": 2,
        }
    },
    "methods": ["retrain", "finetune", "scrub"],
    "alpha": 0.3,
}


def separable(n, seed):
    """2n unit-norm examples in 8 dimensions, two classes shifted apart (n each)."""
    r = np.random.default_rng(seed)
    y = np.repeat([0, 1], n).astype(np.int32)
    x = r.normal(size=(2 * n, 8)) + 1.2 * y[:, None]
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def run_on_toy_data(mp, config, out):
    """``config`` run into ``out`` on separable toy data, non-members from a third draw (members
    and non-members disjoint by construction); ``mp``: the MonkeyPatch that swaps the data in."""
    (x, y), (xv, yv), (xo, _) = separable(20, 1), separable(20, 2), separable(20, 3)
    data = Dataset(
        "mnist", x, y, xv, yv, {"source": {"kind": "synthetic"}, "n_train_per_class": [20, 20]}
    )
    mp.setattr(evaluation, "load_dataset", lambda name, cache_dir=None, **kw: data)
    mp.setattr(
        evaluation,
        "non_member_pool",
        lambda d, n, **kw: (
            np.concatenate([xo[:n], xo[20 : 20 + n]]),
            np.repeat([0, 1], n).astype(np.int32),
        ),
    )
    return runner.run(build(EvaluationConfig, config), out, progress=False)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """An evaluation of an MLP on separable toy data."""
    with pytest.MonkeyPatch.context() as mp:
        store = run_on_toy_data(mp, CONFIG, tmp_path_factory.mktemp("audit") / "out")
    return store, build(EvaluationConfig, CONFIG)


def _value(store, group, split, metric):
    verified = runner.VerifiedResults(store.root)
    (row,) = [
        r
        for r in verified.table()
        if (r["group"], r["split"], r["metric"]) == (group, split, metric)
    ]
    return float(row["value"])


def test_models_trained_with_the_forget_set_are_detected(toy_run):
    store, _ = toy_run
    assert _value(store, "teacher", "forget", "ulira_auc") > 0.7
    assert _value(store, "teacher", "forget", "mia_loss_auc_mean") > 0.6
    # fresh retrain runs never saw D_f: the attack is near chance, the oracles' own loss attack too
    assert abs(_value(store, "retrain", "forget", "ulira_auc") - 0.5) < 0.15
    assert abs(_value(store, "oracle", "forget", "mia_loss_auc_mean") - 0.5) < 0.15
    # calibration: the teacher is farther from the oracles than fresh oracles are
    assert _value(store, "teacher", "forget", "klom_p50") > _value(
        store, "retrain", "forget", "klom_p50"
    )


def test_each_ensemble_program_compiles_once(toy_run):
    store, config = toy_run
    timings = json.loads((store.root / "manifest.json").read_text())["timings"]
    # the oracles, retrain, finetune and scrub share one compiled program (one Method form, runs
    # in calls of teachers x unlearn_seeds)
    compiled = {cell: t["includes_compile"] for cell, t in timings.items()}
    assert compiled["mlp__oracles"]
    assert not any(compiled[f"mlp__{m}"] for m in ("retrain", "finetune", "scrub"))


def test_every_group_is_judged_at_one_size(toy_run):
    store, config = toy_run
    rows = runner.VerifiedResults(store.root).table()
    sizes = {r["group"]: int(r["models"]) for r in rows if r["metric"] == "klom_p50"}
    teachers = config.models["mlp"].teachers
    assert {sizes[g] for g in ("teacher", "retrain", "finetune", "scrub")} == {teachers}
    assert sizes["oracle_half"] == config.models["mlp"].oracles // 2


def test_the_leaderboard_has_one_row_per_method_with_intervals(toy_run, tmp_path):
    from qunlearn.compare import compare_results_dir, read_csv
    from qunlearn.plotting.results import plot_results_dir

    store, config = toy_run
    result = compare_results_dir(store.root, tmp_path / "cmp")
    board = read_csv(tmp_path / "cmp" / "leaderboard.csv")
    methods = [(r["model"], r["method"]) for r in board if r["method"] != "teacher"]
    assert sorted(methods) == [("mlp", m) for m in ("finetune", "retrain", "scrub")]
    assert methods[0] == ("mlp", "retrain")  # by rank: retrain's residual is 0 by definition
    for r in board:
        for stat in ("resid", "ulira_tpr_at_1pct_fpr", "val_acc"):
            lo, value, hi = (float(r[f"{stat}{end}"]) for end in ("_lo", "", "_hi"))
            assert np.isfinite([lo, value, hi]).all() and lo <= hi, (r["method"], stat)
        if r["method"] != "teacher":
            assert 1 <= int(r["rank_lo"]) <= int(r["rank"]) <= int(r["rank_hi"]) <= 3
            assert float(r["cost"]) > 0  # the runs' wall time over retrain's
    assert "leaderboard, forget request 'poison'" in result["text"]
    written = plot_results_dir(store.root, tmp_path / "fig")
    assert tmp_path / "fig" / "evaluation_leaderboard.png" in written


def test_the_leaderboard_of_a_run_without_run_times_shows_cost_n_a(toy_run):
    from qunlearn.compare import evaluation_leaderboard

    store, _ = toy_run
    verified = runner.VerifiedResults(store.root)
    manifest = json.loads(json.dumps(verified.manifest))
    for timing in manifest["timings"].values():  # as a run before run_seconds recorded them
        timing.pop("run_seconds", None)
    board = evaluation_leaderboard(verified.table(), verified.table("bootstrap.csv"), manifest)
    assert board and all(r["cost"] is None for r in board)
    assert all(r["resid_lo"] is not None for r in board)
