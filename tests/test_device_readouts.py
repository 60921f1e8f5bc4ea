"""A device's readout (circuit noise and finite shots together, ``eval_device_shots``) and
readout-error mitigation (``eval_mitigate_readout``): exact references for the mitigation, the
statistics of the mitigated shot estimate, the readouts' random streams, both switches in the
noise sweep and the evaluation (one toy run each), compare and plot, and the bad inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn import audit
from qunlearn.cli import main
from qunlearn.errors import QunlearnError
from qunlearn.experiments import runner
from qunlearn.experiments.config import EvaluationConfig, ModelSpec, build
from qunlearn.experiments.keys import teacher_keys
from qunlearn.experiments.readouts import read_out, readout_key, readout_models
from qunlearn.experiments.unlearning_setup import load_teacher_npz
from qunlearn.models import make_model
from qunlearn.models.circuit_noise import mitigate_readout, readout_observable
from qunlearn.plotting.results import results_figures
from test_audit import run_on_toy_data, separable
from test_evaluation_readouts import CONFIG

P01, P10 = 0.06, 0.14  # readout error: α = 0.8, β = 0.08
READOUT_ONLY = {"readout_p01": P01, "readout_p10": P10}
DEVICE = {"depolarizing_1q": 0.02, "depolarizing_2q": 0.05, **READOUT_ONLY}
LINEAR = {"depth": 1, "readout": "linear"}  # p = (1 + <Z>)/2: <Z> = 2p - 1, read back exactly


def _z(p):
    return 2.0 * np.asarray(p, np.float64) - 1.0


def _points(n=6, seed=0, norm=1.0):
    x = jax.random.normal(jax.random.PRNGKey(seed), (n, 8))
    return norm * x / jnp.linalg.norm(x, axis=1, keepdims=True)


def test_mitigating_a_readout_error_gives_back_the_noiseless_model():
    """Readout error only: the calibrated inverse undoes it exactly, on unnormalised inputs too
    (β scales with ‖x‖²); the unmitigated readout is off by far more than rounding."""
    plain = make_model("qnn", 8, False, **LINEAR)
    noisy = make_model("qnn", 8, False, circuit_noise=READOUT_ONLY, **LINEAR)
    fixed = make_model("qnn", 8, False, circuit_noise=READOUT_ONLY, mitigate_readout=True, **LINEAR)
    params = plain.init(jax.random.PRNGKey(1))
    x = jnp.concatenate([_points(), _points(3, seed=1, norm=1.7)])
    # jitted: one compile per model instead of one per op of the density-matrix simulator
    exact, off, back = (
        _z(jax.jit(jax.vmap(m.apply, (None, 0)))(params, x)) for m in (plain, noisy, fixed)
    )
    np.testing.assert_allclose(back, exact, rtol=0, atol=1e-12)
    assert np.max(np.abs(off - exact)) > 1e-2


def test_mitigated_shots_are_unbiased_with_the_binomial_variance_over_alpha_squared():
    """Readout error only, S shots: over many keys the mitigated estimate's mean is the
    noiseless ⟨Z⟩ (within 5 standard errors) and its variance (1 − ⟨Z⟩_meas²)/(S α²), with
    ⟨Z⟩_meas = α⟨Z⟩ + β the noisy readout's; the unmitigated mean is off by far more."""
    shots, n_keys = 200, 4000
    alpha, beta = readout_observable({"readout_p01": P01, "readout_p10": P10})
    plain = make_model("qnn", 8, False, **LINEAR)
    hyper = {"circuit_noise": READOUT_ONLY, "shots": shots, **LINEAR}
    raw = make_model("qnn", 8, False, **hyper)
    fixed = make_model("qnn", 8, False, mitigate_readout=True, **hyper)
    params = plain.init(jax.random.PRNGKey(2))
    x = _points(4, seed=3)
    z = _z(jax.jit(jax.vmap(plain.apply, (None, 0)))(params, x))
    assert np.all(np.abs(z) < 0.6)  # away from ±1: the clip almost never binds
    keys = jax.random.split(jax.random.PRNGKey(4), n_keys)
    draws = jax.jit(
        jax.vmap(lambda m_key: (raw.sample(params, x, m_key), fixed.sample(params, x, m_key)))
    )
    p_raw, p_fixed = draws(keys)
    z_raw, z_fixed = _z(p_raw), _z(p_fixed)
    # the same counts, post-processed: mitigation of the raw estimate, draw for draw
    np.testing.assert_allclose(z_fixed, np.clip((z_raw - beta) / alpha, -1, 1), atol=1e-12)
    var = (1 - (alpha * z + beta) ** 2) / (shots * alpha**2)
    err = np.sqrt(var / n_keys)
    assert np.all(np.abs(z_fixed.mean(0) - z) < 5 * err)
    assert np.all(np.abs(z_raw.mean(0) - z) > 5 * err)  # the readout error's bias is visible
    np.testing.assert_allclose(z_fixed.var(0, ddof=1), var, rtol=5 * np.sqrt(2 / n_keys))


def test_the_clip_binds_only_outside_the_physical_range():
    z = jnp.array([0.9, 0.95, -0.75, -0.85, 0.1])  # estimates per unit norm, α = 0.8, β = 0.08
    out = np.asarray(mitigate_readout(z, jnp.ones(5), 0.8, 0.08))
    np.testing.assert_allclose(out, [1.0, 1.0, -1.0, -1.0, 0.025], atol=1e-15)
    scaled = np.asarray(mitigate_readout(2.0 * z, 2.0 * jnp.ones(5), 0.8, 0.08))
    np.testing.assert_allclose(scaled, 2.0 * out, atol=1e-15)  # the ‖x‖² scale


SPEC = ModelSpec("qnn", epochs=1, batch_size=4, lr=0.1, hyper=LINEAR)


def _readouts(shots=(), device_shots=(), mitigate=False, noise=None):
    noise = {"dev": DEVICE} if noise is None else noise
    return readout_models(
        "qnn", SPEC, 8, False, shots=shots, circuit_noise=noise, device_shots=device_shots,
        mitigate=mitigate,
    )  # fmt: skip


def test_readout_names_order_and_streams():
    got = _readouts(shots=(50,), device_shots=(50, 7), mitigate=True, noise={"a": DEVICE})
    assert list(got) == [  # eval_shots, then per noise model: exact, shots, mitigated
        "shots50",
        "noise_a",
        "noise_a_shots50",
        "noise_a_shots7",
        "noise_a_mitigated",
        "noise_a_shots50_mitigated",
        "noise_a_shots7_mitigated",
    ]
    assert [(r.shots, r.device) for r in got.values()][:3] == [(50, None), (None, None), (50, "a")]
    key = jax.random.PRNGKey(0)
    streams = [readout_key(key, 50), readout_key(key, 50, "a"), readout_key(key, 50, "b")]
    streams.append(readout_key(key, 7, "a"))
    assert len({tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in streams}) == 4


def test_a_device_readout_draws_on_the_noisy_readout_from_its_own_stream():
    """``noise_dev_shots<S>``: binomial draws on the noisy ⟨Z⟩ (gate and readout noise), so its
    mean over run keys is the exact noisy readout's; its stream is neither ``shots<S>``'s nor
    another label's, and its mitigated twin post-processes the very same counts."""
    shots, n_keys = 100, 2000
    noise = {"dev": DEVICE, "other": DEVICE}
    got = _readouts(shots=(shots,), device_shots=(shots,), mitigate=True, noise=noise)
    params = make_model("qnn", 8, False, **LINEAR).init(jax.random.PRNGKey(5))
    x = _points(3, seed=6)
    names = ("noise_dev", f"noise_dev_shots{shots}", f"noise_dev_shots{shots}_mitigated")
    names += (f"shots{shots}", f"noise_other_shots{shots}")
    one = jax.jit(lambda k: {n: read_out(got[n], params, x, k) for n in names})
    out = {
        n: _z(v) for n, v in jax.vmap(one)(jax.random.split(jax.random.PRNGKey(7), n_keys)).items()
    }
    noisy, device = out["noise_dev"][0], out[f"noise_dev_shots{shots}"]
    assert np.ptp(out["noise_dev"], axis=0).max() == 0  # exact: no key
    err = np.sqrt((1 - noisy**2) / shots / n_keys)
    assert np.all(np.abs(device.mean(0) - noisy) < 5 * err)
    alpha, beta = readout_observable({"readout_p01": P01, "readout_p10": P10})
    mitigated = out[f"noise_dev_shots{shots}_mitigated"]
    np.testing.assert_allclose(mitigated, np.clip((device - beta) / alpha, -1, 1), atol=1e-12)
    for other in (f"shots{shots}", f"noise_other_shots{shots}"):  # independent draws
        assert abs(np.corrcoef(device[:, 0], out[other][:, 0])[0, 1]) < 0.15, other
    assert np.mean(device == out["noise_other_shots100"]) < 0.5


# ---- the evaluation: one toy run with both switches ------------------------------------------

SHOTS = 40
SWITCHES = {
    "eval_circuit_noise": {"dev": DEVICE},
    "eval_device_shots": [SHOTS],
    "eval_mitigate_readout": True,
}
NAMES = ("noise_dev", f"noise_dev_shots{SHOTS}", "noise_dev_mitigated")
NAMES += (f"noise_dev_shots{SHOTS}_mitigated",)


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        return run_on_toy_data(mp, CONFIG | SWITCHES, tmp_path_factory.mktemp("device") / "out")


def test_the_evaluation_reads_every_ensemble_out_on_the_device(device_run):
    store = device_run
    with np.load(store.companion_path("qnn__teachers.margins.npz"), allow_pickle=False) as f:
        saved = {k: f[k] for k in f.files}
    assert sorted(saved) == sorted(["margins", *(f"margins_{n}" for n in NAMES)])
    # recomputed from the saved teachers and the documented key of a device readout
    config = build(EvaluationConfig, CONFIG | SWITCHES)
    t = config.models["qnn"].teachers
    hyper = {"depth": 1, "circuit_noise": DEVICE, "shots": SHOTS}
    device = make_model("qnn", 8, False, **hyper)
    params = load_teacher_npz(
        store.companion_path("qnn__teachers.npz"), make_model("qnn", 8, False, depth=1)
    )[0]
    keys = teacher_keys(jax.random.PRNGKey(config.seed), "mnist", "qnn", t)[:, 1]
    (x, _), (xv, _), (xo, _) = separable(20, 1), separable(20, 2), separable(20, 3)
    probes = jnp.asarray(np.concatenate([x, xv, xo[:6], xo[20:26]]))
    margins = jax.jit(lambda p, k: audit.margin(device.sample(p, probes, k)))
    shot = saved[f"margins_noise_dev_shots{SHOTS}"]
    for i in range(t):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], params)
        again = margins(p, readout_key(keys[i], SHOTS, "dev"))
        np.testing.assert_allclose(shot[i], np.asarray(again), rtol=1e-9, atol=1e-9)
        # not the stream of eval_shots' shots<S>
        assert not np.allclose(shot[i], np.asarray(margins(p, readout_key(keys[i], SHOTS))))
    rows = runner.VerifiedResults(store.root).table("results.csv")
    assert {r["readout"] for r in rows} == {"exact", *NAMES}


def test_compare_and_plot_show_the_device_readouts(device_run, tmp_path, capsys):
    assert main(["compare", str(device_run.root), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    for name in NAMES:
        assert f"readout noise {name[6:]}" in text, name
    summary = json.loads((tmp_path / "compare.json").read_text())["readouts"]["summary"]
    assert {r["readout"] for r in summary} == {"exact", *NAMES}
    figure = results_figures(runner.VerifiedResults(device_run.root))["evaluation_readouts"]
    ticks = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert ticks[0] == "exact\n(S = inf)" and sorted(ticks[1:]) == sorted(
        "noise\n" + n[6:] for n in NAMES
    )


# ---- the noise sweep: the program, compare and plot ------------------------------------------


def test_the_sweep_adds_a_metric_per_device_readout_from_the_same_params():
    from qunlearn.experiments.noise_sweep import METRICS, sweep_program

    x = _points(8, seed=8)
    y = (jnp.arange(8) % 2) * 1.0
    readouts = _readouts(device_shots=(SHOTS,), mitigate=True)
    model = make_model("qnn", 8, False, **LINEAR)
    keys = jax.random.split(jax.random.PRNGKey(9), 2).reshape(1, 2, -1)
    settings = {"epochs": 1, "batch_size": 4, "lr": 0.1, "n_train": 8}
    out = sweep_program(model, readouts=readouts, **settings)(
        keys[:, 0], keys[:, 1], x[None], y[None], x, y
    )
    assert sorted(out) == sorted([*METRICS, *(f"val_acc_{n}" for n in NAMES)])
    # recomputed: the trained params are those of the plain program (same keys)
    params = make_supervised_params(model, keys, x, y, settings)
    for name in NAMES:
        p = read_out(readouts[name], params, x, keys[0, 1])
        assert float(out[f"val_acc_{name}"][0]) == float(jnp.mean((p > 0.5) == (y > 0.5))), name


def make_supervised_params(model, keys, x, y, settings):
    from qunlearn.train import make_supervised_train

    train = make_supervised_train(model, **settings)
    params, _ = train(keys[0, 1], model.init(keys[0, 0]), {"x": x, "y": y}, None)
    return params


def test_sweep_compare_and_plot_pick_up_the_device_metrics():
    from qunlearn.compare import readout_transitions
    from qunlearn.plotting.sweep import draw_readouts

    rows = [
        {"dataset": "tfim", "model": "qnn", "noise": "label_flip", "alpha": a, "run": r,
         "seed": 0, "metric": m, "value": v}
        for m in ("val_acc", *(f"val_acc_{n}" for n in NAMES))
        for r in range(2)
        for a, v in ((0.0, 1.0), (0.2, 0.95), (0.4, 0.8), (0.6, 0.2), (0.8, 0.05))
    ]  # fmt: skip
    found = {r["readout"] for r in readout_transitions(rows)}
    assert found == {"exact", *(f"noise {n[6:]}" for n in NAMES)}
    figure = draw_readouts(rows)
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert {f"noise {n[6:]}" for n in NAMES} <= set(labels)


# ---- bad input: one line, exit 2, nothing written --------------------------------------------

NOISE = "eval_circuit_noise={dev={readout_p01=0.02}}"
BAD = [
    ((NOISE, "eval_device_shots=[0]"), "config.eval_device_shots has 0: list positive shot"),
    ((NOISE, "eval_device_shots=[-1]"), "config.eval_device_shots has -1: list positive shot"),
    ((NOISE, "eval_device_shots=[1.5]"), "config.eval_device_shots[0] must be an integer"),
    (("eval_device_shots=[100]",), "config.eval_device_shots reads out the eval_circuit_noise"),
    (("eval_mitigate_readout=true",), "config.eval_mitigate_readout reads out the eval_circuit"),
    ((NOISE, 'eval_mitigate_readout="yes"'), "config.eval_mitigate_readout"),
    (
        ("eval_circuit_noise={g={depolarizing_1q=0.01}}", "eval_mitigate_readout=true"),
        "eval_circuit_noise.g: readout-error mitigation needs a readout error",
    ),
    (
        ("eval_circuit_noise={c={readout_p01=0.5,readout_p10=0.5}}", "eval_mitigate_readout=true"),
        "eval_circuit_noise.c: readout_p01 + readout_p10 = 1 >= 1",
    ),
    (
        ("eval_circuit_noise={d={readout_p10=1.5}}", "eval_device_shots=[100]"),
        "circuit_noise.readout_p10 = 1.5 must be a probability",
    ),
    (
        (
            "eval_circuit_noise={a={readout_p01=0.1},a_shots5={readout_p01=0.1}}",
            "eval_device_shots=[5]",
        ),
        "the readout 'noise_a_shots5' would be named twice",
    ),
]


@pytest.mark.parametrize("config", ["fig2_tfim.toml", "eval_fig3a_mnist.toml"])
@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_device_readouts_are_one_line_and_write_nothing(
    tmp_path, capsys, config, overrides, message
):
    out = tmp_path / "out"
    assert main(["run", config, "--tiny", "--out", str(out), *overrides]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line
    assert not out.exists()


def test_unset_switches_keep_the_config_hash(tmp_path):
    from qunlearn.experiments.config import config_hash, load_config

    path = tmp_path / "c.toml"
    path.write_text(
        'experiment = "noise_sweep"\nname = "s"\ndataset = "mnist"\nnoises = ["label_flip"]\n'
        "alphas = [0.0]\nruns = 1\neval_circuit_noise = {d = {readout_p01 = 0.1}}\n"
        '[models.qnn]\nmodel = "qnn"\nepochs = 1\nbatch_size = 8\nlr = 0.01\n'
    )
    plain = config_hash(load_config(path))
    assert config_hash(load_config(path, ["eval_device_shots=[]"])) == plain
    assert config_hash(load_config(path, ["eval_mitigate_readout=false"])) == plain
    assert config_hash(load_config(path, ["eval_device_shots=[10]"])) != plain
    assert config_hash(load_config(path, ["eval_mitigate_readout=true"])) != plain


def test_mitigation_hyper_is_refused_without_a_readout_error():
    with pytest.raises(QunlearnError, match="hyper.mitigate_readout: readout-error mitigation"):
        make_model("qnn", 8, False, depth=1, mitigate_readout=True)
    with pytest.raises(QunlearnError, match="hyper.mitigate_readout = 1 must be true or false"):
        make_model("qnn", 8, False, depth=1, circuit_noise=READOUT_ONLY, mitigate_readout=1)
