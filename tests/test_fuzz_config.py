"""Property tests over the config schema (Hypothesis): every key of every experiment kind, set to
values in range, at the edges, out of range and of the wrong type, starting from the shipped
configs' ``[tiny]`` settings.

The property: ``qunlearn run`` either passes every check, or exits 2 with one ``error:`` line, no
traceback, and ``--out`` never created. The runner's ``locked`` (the first thing that touches
``--out``) is replaced by a stand-in that asserts ``--out`` is still absent and stops the run, so
an example costs the config and plan checks only, never training.

And counts against the data: a count a data set cannot give (held-out examples, validation
examples, eigenvalues of a model, oracles for the null band) is refused with a line naming the
key, the value and the most allowed, and a count it can give is used exactly, never shrunk.

Profiles: the default tier runs a fixed, derandomised handful of examples per kind (about 20 s on
2 cores); ``-m slow`` runs ``SLOW_EXAMPLES`` random ones per kind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import tempfile
import typing
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qunlearn.cli import main
from qunlearn.errors import QunlearnError
from qunlearn.experiments import roughening, runner
from qunlearn.experiments.config import (
    CONFIG_TYPES,
    MAX_INT,
    EvalSpec,
    ModelSpec,
    UnlearnSpec,
    load_config,
)
from qunlearn.experiments.engine import Progress

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BASES = {  # kind -> the shipped config whose [tiny] settings the examples start from
    "noise_sweep": "fig2c_mnist",
    "unlearning": "fig3a_mnist",
    "roughening": "roughening_mnist",
    "curvature": "curvature_mnist",
    "evaluation": "eval_fig3a_mnist",
}
SPECS = {"noise_sweep": ModelSpec, "roughening": ModelSpec, "evaluation": EvalSpec}
TABLE = "mlp"  # the model table every example keeps (--models mlp): cheap to build

FAST = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same examples on every run of the default tier
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SLOW_EXAMPLES = 150
SLOW = settings(FAST, max_examples=SLOW_EXAMPLES, derandomize=False)


# ---------------------------------------------------------------------------------------------
# Values: in range, at the edges, out of range, of the wrong type

INT_EDGES = [-1, 0, 1, 2, 3, 4, 5, 12, 20, 40, 49, 50, 75, 174, 175, 249, 250, 251, 500]
INT_EDGES += [1135, 2144, 2145, 5918, 100_000, 100_001, MAX_INT, MAX_INT + 1, 2**63, 10**30]
FLOAT_EDGES = [0.0, -0.0, 1e-300, 1e-3, 0.3, 0.5, 0.999999, 1.0, 10.0, 10.5, 1e300]
FLOAT_EDGES += [-0.5, math.inf, -math.inf, math.nan]
CHOICES = {  # string keys with a closed set of values (plus whatever text Hypothesis makes)
    "dataset": ["mnist", "xxz", "mnst"],
    "model": ["mlp", "qnn", "qnn_cnot", "mpl"],
    "input": ["native", "realified", "realfied"],
    "batching": ["epoch", "stream", "streem"],
    "devices": ["one", "all", "two"],
    "noise": ["label_flip", "feature_randomization", "flip"],
    "hessian_dtype": ["model", "complex64", "float16"],
    "sweep_dtype": ["model", "complex64", "float16"],
    "name": ["x", "../../etc", "n" * 101, "a b"],
    "experiment": [*CONFIG_TYPES, "noise_swep"],
    "noises": ["label_flip", "feature_randomization", "label_flp"],
    "methods": ["retrain", "finetune", "scrub", "gradient_ascent", "neggrad_plus", "retrian"],
}
DICTS = {  # table-valued keys: small tables that mean something, and some that do not
    "dataset_options": [
        {},
        {"n_per_class": 10},
        {"n_per_class": 1},
        {"n_per_class": 100_000},
        {"encoding": "reference"},
        {"encoding": "unit", "n_per_class": 3},
        {"n_spins": 4},
        {"n_per_class": "x"},
    ],
    "hyper": [{}, {"hidden": [3]}, {"hidden": []}, {"hiden": [4]}, {"hidden": [0]}],
    "method_options": [{}, {"scrub": {"kl_w": 0.5}}, {"scrub": {"kl_w": -1.0}}, {"nope": {}}],
    "sweep": [{}, {"scrub": {"kl_w": [0.0, 0.5]}}, {"scrub": {"kl_w": []}}, {"x": 1}],
    "models": [{}],
}

# no ":": "pkg.module:callable" names a user's member, which the run would import
texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters=":"),
    max_size=8,
)
# in range (mostly), at the edges, anywhere (mostly out of range)
ints = st.one_of(
    st.integers(1, 300), st.sampled_from(INT_EDGES), st.integers(-5, 600), st.integers()
)
floats = st.one_of(st.floats(1e-3, 1.0), st.sampled_from(FLOAT_EDGES), st.floats())
wrong = st.one_of(
    texts, st.booleans(), st.lists(st.integers(0, 3), max_size=2), st.just({"a": 1}), floats
)


def values_for(name: str, tp) -> st.SearchStrategy:
    """Values for the config field ``name`` of type ``tp``: mostly of its type (edges and out of
    range included), sometimes of another."""
    origin = typing.get_origin(tp)
    if tp is bool:
        right = st.booleans()
    elif tp is int:
        right = ints
    elif tp is float:
        right = floats
    elif tp is str:
        right = st.one_of(st.sampled_from(CHOICES.get(name, ["x"])), texts)
    elif origin is tuple:
        (item, _) = typing.get_args(tp)
        element = {int: ints, float: floats}.get(
            item, st.one_of(st.sampled_from(CHOICES.get(name, ["x"])), texts)
        )
        right = st.lists(element, max_size=4)
    else:  # a table
        right = st.sampled_from(DICTS.get(name, [{}]))
    return st.one_of(right, right, right, wrong)


def toml(value) -> str:
    """``value`` as a TOML literal (what a user types after ``key=``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):  # a basic string: quotes, backslashes and controls escaped
        return (
            '"'
            + "".join(
                f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 32 or ord(c) == 127 else c
                for c in value
            )
            + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + "}"


def keys_of(kind: str) -> list[tuple[str, object]]:
    """(override key, type) of every top-level field of a kind and every field of its model
    table, plus two dataset options."""
    config = CONFIG_TYPES[kind]
    spec = SPECS.get(kind, UnlearnSpec)
    hints, spec_hints = typing.get_type_hints(config), typing.get_type_hints(spec)
    keys = [(f.name, hints[f.name]) for f in dataclasses.fields(config) if f.name != "models"]
    keys += [(f"models.{TABLE}.{f.name}", spec_hints[f.name]) for f in dataclasses.fields(spec)]
    return [*keys, ("dataset_options.n_per_class", int), ("dataset_options.encoding", str)]


# ---------------------------------------------------------------------------------------------
# The property


class Planned(Exception):
    """Raised by the stand-in ``locked``: every check passed and --out is still untouched."""


def run_checks(kind: str, overrides: list[str]) -> tuple[str, str]:
    """``qunlearn run`` of the kind's tiny config with ``overrides`` up to the point where it
    would lock ``--out``: ("planned", "") or ("refused", the error line). Asserts the property."""
    with tempfile.TemporaryDirectory(prefix="qunlearn-fuzz-") as tmp:
        out = Path(tmp) / "out"

        @contextlib.contextmanager
        def locked(root, **_):
            assert not Path(root).exists(), f"{root} exists before every check passed"
            raise Planned
            yield  # pragma: no cover

        argv = [
            "run",
            str(CONFIGS / f"{BASES[kind]}.toml"),
            "--tiny",
            "--models",
            TABLE,
            "--quiet",
            "--out",
            str(out),
            *overrides,
        ]
        err = io.StringIO()
        try:
            with mock.patch.object(runner, "locked", locked), contextlib.redirect_stderr(err):
                code = main(argv)
        except Planned:
            assert not out.exists()
            return "planned", ""
        text = err.getvalue()
        assert code == 2, text
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and text.endswith(errors[0] + "\n"), text
        assert "Traceback" not in text
        assert not out.exists() and list(Path(tmp).iterdir()) == []
        return "refused", errors[0]


@st.composite
def overrides_for(draw, kind: str) -> list[str]:
    """One or two overrides of distinct keys of ``kind``."""
    keys = keys_of(kind)
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique_by=lambda k: k[0]))
    return [f"{key}={toml(draw(values_for(key.rsplit('.', 1)[-1], tp)))}" for key, tp in chosen]


KINDS = sorted(BASES)


def _fuzz(kind: str, overrides: list[str]) -> None:
    outcome, _ = run_checks(kind, overrides)
    event(outcome)  # --hypothesis-show-statistics: how many examples passed, how many refused


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(data=st.data())
def test_any_value_of_any_key_passes_or_is_one_line_and_touches_nothing(kind, data):
    _fuzz(kind, data.draw(overrides_for(kind)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@SLOW
@given(data=st.data())
def test_any_value_of_any_key_longer_profile(kind, data):
    _fuzz(kind, data.draw(overrides_for(kind)))


def test_the_shipped_tiny_configs_pass_the_checks():
    """The starting points pass (so a refusal above is the override's doing)."""
    for kind in KINDS:
        assert run_checks(kind, []) == ("planned", ""), kind


# ---------------------------------------------------------------------------------------------
# Counts against the data: refused exactly when the data cannot give them, used exactly otherwise

PER_CLASS = 250  # the tiny MNIST training set: the first 250 ones and 250 nines
N_VAL = 2144  # every 1 and 9 of the MNIST test split
MLP_PARAMS = 1024 * 8 + 8 + 8 * 2 + 2 + 2 + 1  # the tiny roughening MLP [8, 2] on 1024 inputs


def _plan(name: str, overrides: list[str]):
    config = load_config(CONFIGS / f"{name}.toml", overrides, tiny=True, models=[TABLE])
    kind = config.experiment
    return config, runner.EXPERIMENTS[kind](config, cache_dir=None, progress=Progress(False))


def _refused(name: str, overrides: list[str], *phrases: str) -> None:
    """Planning ``name`` with ``overrides`` fails with one line holding every phrase."""
    with pytest.raises(QunlearnError) as err:
        _plan(name, overrides)
    message = str(err.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, (phrase, message)


def _split_sizes(n_train: int, n_hessian: int) -> None:
    overrides = [f"n_train_per_class={n_train}", f"n_hessian_per_class={n_hessian}"]
    if n_train + n_hessian <= PER_CLASS:
        _plan("roughening_mnist", overrides)
        y = np.repeat([0, 1], PER_CLASS)
        train, hess = roughening.stratified_split(jax.random.PRNGKey(0), y, n_train, n_hessian)
        assert (len(train), len(hess)) == (2 * n_train, 2 * n_hessian)  # never fewer
        assert not set(np.asarray(train).tolist()) & set(np.asarray(hess).tolist())
    elif n_hessian >= PER_CLASS or n_train < PER_CLASS:
        _refused("roughening_mnist", overrides, f"n_hessian_per_class = {n_hessian}", "at most")
    else:
        most = PER_CLASS - n_hessian
        _refused("roughening_mnist", overrides, f"n_train_per_class = {n_train}", f"at most {most}")


def _top_k(top_k: int) -> None:
    if top_k <= MLP_PARAMS:
        _plan("roughening_mnist", [f"top_k={top_k}"])
    else:
        _refused("roughening_mnist", [f"top_k={top_k}"], f"top_k = {top_k}", f"{MLP_PARAMS}")


def _n_val(n_val: int) -> None:
    if n_val <= N_VAL:
        _plan("curvature_mnist", [f"n_val={n_val}"])
    else:
        _refused("curvature_mnist", [f"n_val={n_val}"], f"n_val = {n_val}", f"{N_VAL}")


def _oracles(oracles: int, teachers: int, seeds: int) -> None:
    overrides = [
        f"models.{TABLE}.oracles={oracles}",
        f"models.{TABLE}.teachers={teachers}",
        f"models.{TABLE}.unlearn_seeds={seeds}",
    ]
    path = CONFIGS / "eval_fig3a_mnist.toml"
    if oracles >= 2 * teachers * seeds:
        load_config(path, overrides, tiny=True, models=[TABLE])
        return
    with pytest.raises(QunlearnError) as err:
        load_config(path, overrides, tiny=True, models=[TABLE])
    message = str(err.value)
    assert f"oracles = {oracles}" in message and f"oracles >= {2 * teachers * seeds}" in message


def near(limit: int, spread: int = 3) -> st.SearchStrategy:
    """Integers at and around ``limit`` (the edges), and some anywhere below 2 x limit."""
    return st.one_of(st.integers(limit - spread, limit + spread), st.integers(1, 2 * limit))


COUNT_PROPERTIES = {  # name -> (check, {argument: values})
    "roughening split": (_split_sizes, {"n_train": near(175), "n_hessian": near(75)}),
    "top_k": (_top_k, {"top_k": st.one_of(st.integers(1, 8), near(MLP_PARAMS, 1))}),
    # passing values from a short list: each new n_val compiles the plan's seeded draw again
    "n_val": (_n_val, {"n_val": st.one_of(st.sampled_from([0, 40, N_VAL]), near(N_VAL))}),
    "oracles": (
        _oracles,
        {"oracles": st.integers(4, 30), "teachers": st.integers(3, 6), "seeds": st.integers(1, 3)},
    ),
}


@pytest.mark.parametrize("name", COUNT_PROPERTIES)
@settings(FAST, max_examples=8)
@given(data=st.data())
def test_counts_are_refused_exactly_when_the_data_cannot_give_them(name, data):
    check, arguments = COUNT_PROPERTIES[name]
    check(**{key: data.draw(values, label=key) for key, values in arguments.items()})


@pytest.mark.slow
@pytest.mark.parametrize("name", COUNT_PROPERTIES)
@settings(SLOW, max_examples=60)
@given(data=st.data())
def test_counts_longer_profile(name, data):
    check, arguments = COUNT_PROPERTIES[name]
    check(**{key: data.draw(values, label=key) for key, values in arguments.items()})


def test_the_reproductions_of_issue_32_are_refused_with_the_most_allowed():
    _refused("roughening_mnist", ["n_hessian_per_class=200"], "= 200", "at most 75")
    _refused("roughening_mnist", ["n_train_per_class=250"], "leaves no held-out", "at most 200")
