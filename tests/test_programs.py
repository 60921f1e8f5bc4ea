"""The in-process program cache (:mod:`qunlearn.experiments.programs`): a second build of the same
form returns the first build's program, and anything that changes the traced program (a static
option, a model hyperparameter, a value's type, a patched global, a mutated input) is a miss. A
wrong hit would be a silent wrong result, so the runs below compare numbers, not only objects."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qunlearn.data import Dataset
from qunlearn.experiments import noise_sweep, programs, runner
from qunlearn.experiments.config import CONFIG_TYPES, build
from qunlearn.models import make_model

SWEEP = {"epochs": 2, "batch_size": 8, "lr": 1.0, "n_train": 16}


def _mlp(**hyper):
    return make_model("mlp", 4, False, hidden=[3], **hyper)


def test_the_same_form_shares_one_program_across_fresh_models():
    build = programs.shared(noise_sweep.sweep_program)
    first = build(_mlp(), **SWEEP)
    assert build(_mlp(), **SWEEP) is first  # equal models built apart, one program


@pytest.mark.parametrize(
    ("model", "options"),
    [
        (_mlp(), {**SWEEP, "lr": 0.5}),  # a float baked into the program
        (_mlp(), {**SWEEP, "label_smoothing": 0.1}),
        (_mlp(), {**SWEEP, "batching": "stream"}),
        (_mlp(bound=3.0), SWEEP),  # a model hyperparameter (same shapes, other numbers)
        (make_model("mlp", 4, False, hidden=[4]), SWEEP),
        (make_model("mlp", 5, False, hidden=[3]), SWEEP),  # the model's input size
        (_mlp(), {**SWEEP, "lr": 1}),  # 1 where 1.0 was: another type, another key
    ],
    ids=["lr", "label_smoothing", "batching", "hyper", "hidden", "input_dim", "type"],
)
def test_one_static_difference_is_another_program(model, options):
    build = programs.shared(noise_sweep.sweep_program)
    assert build(model, **options) is not build(_mlp(), **SWEEP)


def test_equal_values_of_other_types_have_other_fingerprints():
    values = (1, 1.0, True, [1], (1,), np.int64(1), np.float64(1.0), np.float32(1.0), 0.0, -0.0)
    keys = [programs.fingerprint(v) for v in values]
    assert len(set(keys)) == len(keys)
    assert programs.fingerprint(float("nan")) == programs.fingerprint(float("nan"))
    a = np.arange(3.0)
    assert programs.fingerprint(a) == programs.fingerprint(a.copy())
    assert programs.fingerprint(a) != programs.fingerprint(a + 1)
    assert programs.fingerprint(a) != programs.fingerprint(a.astype(np.float32))


SCALE = 2.0


def _scaled():
    return SCALE


def _scale_program():
    return jax.jit(lambda x: x * _scaled())


def test_a_patched_global_is_a_miss(monkeypatch):
    build = programs.shared(_scale_program)
    assert float(build()(1.0)) == 2.0
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 3.0)  # read two calls down
    assert float(build()(1.0)) == 3.0


def _sum_program(weights: list):
    return jax.jit(lambda x: x * sum(weights))


def test_a_mutated_input_is_a_miss():
    build = programs.shared(_sum_program)
    weights = [1.0]
    build(weights)  # not called yet: it reads the list when it first traces
    weights.append(5.0)
    assert float(build([1.0])(2.0)) == 2.0


def test_a_tracer_bypasses_the_cache():
    seen = []

    def builder(scale):
        seen.append(1)
        return lambda x: x * scale

    jax.jit(lambda s: programs.shared(builder)(s)(1.0))(2.0)
    jax.jit(lambda s: programs.shared(builder)(s)(1.0))(2.0)
    assert len(seen) == 2
    with pytest.raises(programs.Unkeyable):
        jax.jit(lambda s: programs.fingerprint(s))(jnp.ones(1))


def test_capacity_drops_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(programs, "CAPACITY", 2)
    monkeypatch.setattr(programs, "_programs", type(programs._programs)())
    build = programs.shared(_sum_program)
    one, two = build([1.0]), build([2.0])
    assert build([1.0]) is one  # now the most recent
    build([3.0])
    assert build([1.0]) is one and build([2.0]) is not two


CONFIG = {
    "experiment": "noise_sweep",
    "name": "shared",
    "dataset": "mnist",
    "models": {
        "mlp": {"model": "mlp", "hyper": {"hidden": [3]}, "epochs": 3, "batch_size": 8, "lr": 0.05}
    },
    "noises": ["label_flip"],
    "alphas": [0.25],
    "runs": 2,
}


@pytest.mark.parametrize(
    "change",
    [{"label_smoothing": 0.2}, {"hyper": {"hidden": [3], "bound": 2.0}}],
    ids=["program-option", "model-hyper"],
)
def test_a_run_after_another_config_equals_the_run_alone(change, tmp_path, monkeypatch):
    """Two configs that differ in one static option (same shapes, other numbers): the second
    run, made after the first in this process, equals the second run made alone (a wrong hit
    would give the first config's numbers). A rerun of the first shares its programs."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 8).astype(np.int32)
    x = rng.normal(size=(16, 6)) + y[:, None]
    data = Dataset("mnist", x, y, x[::2], y[::2], {"source": {"kind": "synthetic"}})
    monkeypatch.setattr(noise_sweep, "load_dataset", lambda name, cache_dir=None, **kw: data)
    first = build(CONFIG_TYPES["noise_sweep"], CONFIG)
    other = dict(CONFIG, models={"mlp": CONFIG["models"]["mlp"] | change})
    second = build(CONFIG_TYPES["noise_sweep"], other)

    programs.clear()
    alone = runner.run(second, tmp_path / "alone", progress=False).root
    programs.clear()
    runner.run(first, tmp_path / "first", progress=False)
    n = len(programs._programs)
    runner.run(first, tmp_path / "again", progress=False)
    assert len(programs._programs) == n  # the same config: its programs were shared
    after = runner.run(second, tmp_path / "after", progress=False).root
    assert len(programs._programs) > n
    table = (after / "results.csv").read_bytes()
    assert table == (alone / "results.csv").read_bytes()
    assert table != (tmp_path / "first" / "results.csv").read_bytes()
