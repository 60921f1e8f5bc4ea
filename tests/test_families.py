"""Open families: members by reference, by registration and by entry point; the public contract
checks (``qunlearn.testing``) catch each family's breaches in one line; a user's members run in
every experiment kind and are recorded in the manifest; reading a results directory never imports
a module that its manifest names.

The members below are referenced as ``test_families:NAME`` (pytest puts tests/ on ``sys.path``).
"""

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qunlearn
from qunlearn.data import DATASETS, Dataset, load_dataset
from qunlearn.errors import QunlearnError, first_line
from qunlearn.experiments import runner
from qunlearn.experiments.config import CONFIG_TYPES, build
from qunlearn.families import Family
from qunlearn.models import MODELS, make_model
from qunlearn.models.mlp import mlp
from qunlearn.noise import NOISE, flip_labels
from qunlearn.testing import ContractError, check_dataset, check_method, check_model, check_noise
from qunlearn.train import bce
from qunlearn.unlearn import METHODS, finetune, make_method

HERE = os.path.dirname(__file__)

# --- a user's members ------------------------------------------------------------------------


def user_mlp(input_dim, complex_input, hidden=(4,)):
    return mlp(input_dim, complex_input, hidden=hidden)


def toy_loader(*, cache_dir=None, n_per_class=20, dim=16):
    rng = np.random.default_rng(0)

    def draw(n):
        y = np.repeat([0, 1], n).astype(np.int32)
        x = rng.normal(size=(2 * n, dim)) + 1.5 * y[:, None]
        return x / np.linalg.norm(x, axis=1, keepdims=True), y

    (x, y), (x_val, y_val) = draw(n_per_class), draw(10)
    return Dataset("toy", x, y, x_val, y_val, {"source": {"kind": "synthetic"}})


def user_method(model, *, n_retain, n_forget, epochs, batch_size, strength=1.0):
    return finetune(
        model, n_retain=n_retain, n_forget=n_forget, epochs=epochs, batch_size=batch_size,
        ce_w=strength,
    )  # fmt: skip


def user_noise(key, x, y, alpha, *, flip_too=False):
    """An alpha share of each class gets another random row's features (and a flipped label if
    ``flip_too``), written as a user would: NumPy-style indexing of x with a traced permutation."""
    _, flipped, mask = flip_labels(key, x, y, alpha)
    rows = jax.random.permutation(jax.random.fold_in(key, 1), x.shape[0])
    return jnp.where(mask[:, None], x[rows], x), (flipped if flip_too else y), mask


# --- names: references, registration, entry points -------------------------------------------


def test_a_reference_resolves_without_registration_and_names_stay_importless():
    assert "test_families:user_mlp" in MODELS  # well-formed: known without importing
    model = make_model("test_families:user_mlp", 16, False, hidden=(3,))
    assert model.name == "test_families:user_mlp"
    assert "no_such_pkg.deep:thing" in MODELS and "no_such_pkg.deep" not in sys.modules
    assert list(MODELS)[:3] == ["mlp", "qnn", "qnn_cnot"]


@pytest.mark.parametrize(
    "reference, fragment",
    [
        (
            "no_such_pkg_xyz.circuits:ansatz",
            "cannot import module 'no_such_pkg_xyz.circuits' named by model "
            "'no_such_pkg_xyz.circuits:ansatz': ModuleNotFoundError: No module named "
            "'no_such_pkg_xyz'; install it (pip install -e .) or add its folder to PYTHONPATH",
        ),
        ("test_families:user_mpl", "module 'test_families' has no 'user_mpl' (did you mean"),
        ("test_families:HERE", "is not callable"),
        ("broken_on_import:f", "cannot import module 'broken_on_import' named by model"),
    ],
)
def test_a_reference_that_does_not_resolve_is_one_line(reference, fragment, tmp_path, monkeypatch):
    (tmp_path / "broken_on_import.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(QunlearnError) as err:
        make_model(reference, 16, False)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_qunlearn_data_describes_a_loader_named_by_reference(capsys):
    from qunlearn.cli import main

    assert main(["data", "test_families:toy_loader"]) == 0
    out = capsys.readouterr().out
    assert "train    40 samples (label 0: 20, label 1: 20)" in out
    assert "cache    none" in out and "?" not in out  # a user's loader need not cache
    data = toy_loader()
    data.info["source"] = "synthetic blobs"  # any JSON, not only qunlearn's own {"kind": ...}
    assert "source   synthetic blobs" in qunlearn.data.describe(data)


def test_a_users_error_ending_in_a_colon_keeps_the_line_that_names_the_problem():
    err = ValueError("vmap got inconsistent sizes for array axes to be mapped:\n  * size 20\n  * 3")
    assert first_line(err) == (
        "ValueError: vmap got inconsistent sizes for array axes to be mapped: * size 20"
    )
    assert first_line(KeyError()) == "KeyError: (no message)"


def test_registration_rules():
    family = Family("model", "qunlearn.test-none", {"mlp": mlp})
    family.register("mine", user_mlp)
    assert family.resolve("mine") is user_mlp and "mine" in family
    family.register("mine", user_mlp)  # the same factory again is fine
    with pytest.raises(QunlearnError, match="registered already: pass replace=True"):
        family.register("mine", mlp)
    family.register("mine", mlp, replace=True)
    with pytest.raises(QunlearnError, match="'mlp': it is a built-in"):
        family.register("mlp", user_mlp)
    with pytest.raises(QunlearnError, match="names result files"):
        family.register("a/b", user_mlp)
    with pytest.raises(QunlearnError, match="is not callable"):
        family.register("x", 3)


def test_the_public_register_functions_fill_each_family():
    for register, family, member in (
        (qunlearn.register_model, MODELS, user_mlp),
        (qunlearn.register_method, METHODS, user_method),
        (qunlearn.register_dataset, DATASETS, toy_loader),
        (qunlearn.register_noise, NOISE, user_noise),
    ):
        register("t_member", member)
        try:
            assert family.resolve("t_member") is member and "t_member" in list(family)
            assert family.provenance("t_member")["source"] == "registered"
        finally:
            family.unregister("t_member")
        assert "t_member" not in family


def test_entry_points_offer_names_imported_only_when_used(monkeypatch):
    found = importlib.metadata.EntryPoint(
        name="ep_mlp", value="test_families:user_mlp", group="qunlearn.models"
    )
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group=None, **kw: [found] if group == "qunlearn.models" else real(group=group),
    )
    assert "ep_mlp" in MODELS and "ep_mlp" in list(MODELS)
    assert make_model("ep_mlp", 16, False).name == "ep_mlp"
    assert MODELS.provenance("ep_mlp")["reference"] == "test_families:user_mlp"


def test_a_package_installed_after_a_run_is_named_by_the_next(tmp_path, monkeypatch):
    """The distributions behind members are read once, and again when a folder on ``sys.path``
    changed: a package installed in a running process (a notebook's ``pip install``) is named
    with its version by the next run, not hidden by what the first one read."""
    (tmp_path / "late_pkg.py").write_text("def ansatz(input_dim, complex_input):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = MODELS.provenance("late_pkg:ansatz")
    assert "distribution" not in first and first["file"] == str(tmp_path / "late_pkg.py")
    info = tmp_path / "late_pkg-1.2.3.dist-info"  # what pip writes beside the module
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: late-pkg\nVersion: 1.2.3\n")
    (info / "top_level.txt").write_text("late_pkg\n")
    later = MODELS.provenance("late_pkg:ansatz")
    assert (later["distribution"], later["version"]) == ("late-pkg", "1.2.3")
    assert later["sha256"] == first["sha256"]


# --- the contract checks: built-ins pass, each breach is one line ----------------------------


def test_check_method_refuses_an_unknown_option_and_runs_c_classes_when_asked():
    assert "deterministic under a fixed key" in check_method(user_method, n_classes=3)
    assert "deterministic under a fixed key" in check_method(_binary_only_method)
    with pytest.raises(ContractError) as err:
        check_method(_binary_only_method, n_classes=3)
    assert "two epochs raised ValueError: Incompatible shapes for broadcasting" in str(err.value)
    with pytest.raises(ContractError) as err:
        check_method(user_method, options={"strenght": 2})
    assert str(err.value) == (
        "unlearning method 'test_families:user_method' has no option 'strenght' (did you mean "
        "'strength'?): its options are ['strength']"
    )


def test_user_members_pass_the_public_checks():
    assert "gradient = finite differences" in check_model(user_mlp)
    assert "deterministic under a fixed key" in check_method(user_method, options={"strength": 2})
    assert "deterministic" in check_dataset(toy_loader, n_per_class=6)
    assert "vmap over keys = loop" in check_noise(user_noise)
    assert "vmap over keys = loop" in check_noise(user_noise, flip_too=True)  # with an option


def _nan_model(input_dim, complex_input):
    init, apply = mlp(input_dim, complex_input, hidden=(3,))
    return init, lambda p, x: apply(p, x) * jnp.nan


def _vector_model(input_dim, complex_input):
    init, apply = mlp(input_dim, complex_input, hidden=(3,))
    return init, lambda p, x: jnp.stack([apply(p, x), 1 - apply(p, x)])


def _logit_model(input_dim, complex_input):
    init, apply = mlp(input_dim, complex_input, hidden=(3,))
    return init, lambda p, x: 10 * apply(p, x) - 5


_CALLS = []


def _stateful_model(input_dim, complex_input):
    init, apply = mlp(input_dim, complex_input, hidden=(3,))

    def impure(p, x):  # a call counter leaks into the output
        _CALLS.append(1)
        return apply(p, x) * (0.5 + 0.5 / len(_CALLS))

    return init, impure


def _seeded_random_model(input_dim, complex_input):
    init, apply = mlp(input_dim, complex_input, hidden=(3,))
    draws = np.random.default_rng(0)  # NumPy randomness: a new constant in each trace

    return init, lambda p, x: apply(p, x) * draws.uniform(0.5, 1.0)


def _numpy_model(input_dim, complex_input):
    init, apply = mlp(input_dim, complex_input, hidden=(3,))
    return init, lambda p, x: np.clip(apply(p, x), 0.0, 1.0)  # NumPy on a traced value


def _stopped_gradient_model(input_dim, complex_input):
    init, apply = mlp(input_dim, complex_input, hidden=(3,))
    return init, lambda p, x: jax.lax.stop_gradient(apply(p, x) ** 2) + 0.0 * apply(p, x)


def _one_argument_model(input_dim):
    return mlp(input_dim, False)


def _dict_method(model, *, n_retain, n_forget, epochs, batch_size):
    return {"objective": None}


def _nan_method(model, *, n_retain, n_forget, epochs, batch_size):
    method = finetune(
        model, n_retain=n_retain, n_forget=n_forget, epochs=epochs, batch_size=batch_size
    )
    return method._replace(objective=lambda params, batch, extra: jnp.nan)


def _binary_only_method(model, *, n_retain, n_forget, epochs, batch_size):
    method = finetune(
        model, n_retain=n_retain, n_forget=n_forget, epochs=epochs, batch_size=batch_size
    )

    def objective(params, batch, extra):  # binary cross-entropy: one probability per example
        p = jax.vmap(model.apply, (None, 0))(params, batch["x"])
        return jnp.mean(bce(p, batch["y"]))

    return method._replace(objective=objective)


def _positional_method(model, n_retain):
    return None


def _vague_method(model, *, n_retain, n_forget, epochs, batch_size):
    method = finetune(
        model, n_retain=n_retain, n_forget=n_forget, epochs=epochs, batch_size=batch_size
    )
    return method._replace(sampled="yes")


def _unsorted_loader(*, cache_dir=None):
    data = toy_loader()
    order = np.random.default_rng(0).permutation(len(data.y_train))
    return Dataset("toy", data.x_train[order], data.y_train[order], data.x_val, data.y_val, {})


def _nan_loader(*, cache_dir=None):
    data = toy_loader()
    data.x_train[3, 0] = np.nan
    return data


def _ternary_loader(*, cache_dir=None):
    data = toy_loader()
    return Dataset("toy", data.x_train, data.y_train * 2, data.x_val, data.y_val, {})


def _one_based_loader(*, cache_dir=None):
    data = toy_loader()
    return Dataset("toy", data.x_train, data.y_train + 1, data.x_val, data.y_val + 1, {})


def _leaky_noise(key, x, y, alpha):
    x2, y2, mask = flip_labels(key, x, y, alpha)
    return x2 * 2, y2, mask  # changes every row, marks only the flipped ones


def _int_mask_noise(key, x, y, alpha):
    x2, y2, mask = flip_labels(key, x, y, alpha)
    return x2, y2, mask.astype(jnp.int32)


def _always_noise(key, x, y, alpha):
    return flip_labels(key, x, y, max(alpha, 0.5))


BREACHES = [
    (check_model, _nan_model, "apply(params, x) is nan (NaN or infinite)"),
    (check_model, _vector_model, "apply(params, x) of ONE example must be a scalar"),
    (check_model, _logit_model, "is outside [0, 1]: return a probability"),
    (check_model, _stateful_model, "apply is not pure: two calls with the same params"),
    (check_model, _stopped_gradient_model, "a central finite difference"),
    (check_model, _seeded_random_model, "apply is not pure: two calls with the same params"),
    (check_model, _numpy_model, "jax.jit(apply) raised TracerArrayConversionError"),
    (check_model, _one_argument_model, "wrong signature: a model factory is factory(input_dim,"),
    (check_method, _dict_method, "must return a qunlearn.unlearn.Method, got dict"),
    (check_method, _nan_method, "the objective is not finite on the tiny task"),
    (check_method, _positional_method, "wrong signature: a method factory is factory(model, *,"),
    (check_method, _vague_method, "Method.sampled must be True or False, got 'yes'"),
    (check_dataset, _unsorted_loader, "the training split is not class-sorted in equal blocks"),
    (check_dataset, _nan_loader, "x_train holds NaN or infinite values"),
    (check_dataset, _ternary_loader, "the training labels are [0, 2]: number the classes 0..C-1"),
    (
        check_dataset,
        _one_based_loader,
        "the training labels are [1, 2]: number the classes 0..C-1 "
        "with none left out (here: subtract 1)",
    ),
    (check_noise, _leaky_noise, "it changed rows outside its mask"),
    (check_noise, _int_mask_noise, "mask must be bool (True = poisoned), got int32"),
    (check_noise, _always_noise, "alpha = 0 poisoned 10 samples; poison none"),
]


@pytest.mark.parametrize(
    "check, member, fragment", BREACHES, ids=[m.__name__.strip("_") for _, m, _ in BREACHES]
)
def test_each_breach_is_caught_in_one_line_naming_the_member(check, member, fragment):
    with pytest.raises(ContractError) as err:
        check(member)
    line = str(err.value)
    assert fragment in line, line
    assert "\n" not in line and member.__qualname__ in line and "breaks the" in line


# --- a user's members in every experiment kind ------------------------------------------------

MODEL = {
    "model": "test_families:user_mlp",
    "hyper": {"hidden": [4]},
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.05,
}
UNLEARN = {**MODEL, "unlearn_epochs": 2, "unlearn_batch_size": 0, "unlearn_lr": 0.01}
MINE = {"mine": {"method": "test_families:user_method", "strength": 0.5}}
DATA = {"dataset": "test_families:toy_loader", "dataset_options": {"n_per_class": 12}}
KINDS = {
    "noise_sweep": {
        "noises": ["label_flip", "mine"],
        "noise_options": {"mine": {"noise": "test_families:user_noise", "flip_too": True}},
        "alphas": [0.0, 0.3],
        "runs": 1,
    },
    "unlearning": {"methods": ["mine"], "method_options": MINE, "alpha": 0.3, "runs": 1},
    "roughening": {
        "noise_ratios": [0.0, 0.3],
        "seeds": [0],
        "n_train_per_class": 8,
        "n_hessian_per_class": 4,
        "top_k": 2,
    },
    "curvature": {
        "methods": ["mine"],
        "method_options": MINE,
        "alpha": 0.3,
        "runs": 1,
        "every": 2,
        "n_val": 6,
        "top_k": 2,
        "density_points": 10,
    },
    "evaluation": {"methods": ["retrain", "mine"], "method_options": MINE, "alpha": 0.3},
}


def _config(kind: str) -> dict:
    spec = MODEL if kind in ("noise_sweep", "roughening") else UNLEARN
    if kind == "evaluation":
        spec = {**UNLEARN, "oracles": 6, "teachers": 3, "unlearn_seeds": 1}
    return {"experiment": kind, "name": f"u_{kind}", **DATA, "models": {"u": spec}} | KINDS[kind]


@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.slow) if k == "curvature" else k for k in sorted(KINDS)],
)
def test_user_members_run_in_every_kind_and_are_recorded(kind, tmp_path):
    from qunlearn.plotting.results import plot_results_dir

    config = build(CONFIG_TYPES[kind], _config(kind))
    store = runner.run(config, tmp_path / "out", progress=False)
    members = store.manifest["members"]
    assert members["dataset"]["reference"] == "test_families:toy_loader"
    assert members["models"]["u"]["source"] == "reference"
    with open(__file__, "rb") as f:
        import hashlib

        assert members["models"]["u"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    if "methods" in KINDS[kind]:
        assert members["methods"]["mine"]["reference"] == "test_families:user_method"
    if kind == "noise_sweep":
        assert members["noises"]["mine"]["reference"] == "test_families:user_noise"
    assert store.manifest["last_run"]["computed"]
    assert plot_results_dir(tmp_path / "out")


# --- breaches found by `run` before --out is touched -------------------------------------------


def _broken_method(model, *, n_retain, n_forget, epochs, batch_size):
    method = finetune(
        model, n_retain=n_retain, n_forget=n_forget, epochs=epochs, batch_size=batch_size
    )

    def objective(params, batch, extra):
        raise ValueError("my objective has a bug")

    return method._replace(objective=objective)


@pytest.mark.parametrize(
    "kind, change, fragment",
    [
        (
            "noise_sweep",
            {"models": {"u": {**MODEL, "model": "test_families:_nan_model", "hyper": {}}}},
            "models.u: model 'test_families:_nan_model' breaks the model contract: "
            "apply(params, x) is nan",
        ),
        (
            "unlearning",
            {"method_options": {"mine": {"method": "test_families:_broken_method"}}},
            "unlearning method 'mine' fails on models.u (traced on the data's shapes): "
            "ValueError: my objective has a bug",
        ),
        (
            "noise_sweep",
            {"noise_options": {"mine": {"noise": "test_families:_leaky_noise"}}},
            "noise kind 'test_families:_leaky_noise' breaks the noise contract: it changed rows",
        ),
        (
            "noise_sweep",
            {"dataset": "test_families:_unsorted_loader", "dataset_options": {}},
            "the training split is not class-sorted",
        ),
    ],
    ids=["nan-model", "raising-method", "leaky-noise", "unsorted-data"],
)
def test_run_refuses_a_breach_before_out_is_touched(kind, change, fragment, tmp_path):
    config = build(CONFIG_TYPES[kind], _config(kind) | change)
    with pytest.raises(QunlearnError) as err:
        runner.run(config, tmp_path / "out", progress=False)
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kind, narrowed, typo",
    [
        ("unlearning", {"methods": ["retrain"]}, {"method_options": MINE | {"mien": {"ce_w": 1}}}),
        (
            "noise_sweep",
            {"noises": ["label_flip"]},
            {"noise_options": KINDS["noise_sweep"]["noise_options"] | {"mien": {"flip_too": 1}}},
        ),
    ],
)
def test_an_unlisted_alias_table_is_kept_and_a_stray_table_is_a_typo(kind, narrowed, typo):
    """``methods=["retrain"]`` on the command line narrows a config whose alias tables define
    more (as the options of an unlisted built-in are kept); a table that is neither listed, nor a
    built-in, nor an alias is refused with the closest name."""
    config = build(CONFIG_TYPES[kind], _config(kind) | narrowed)  # "mine" stays defined
    assert "mine" not in (getattr(config, "methods", ()) or config.noises)
    with pytest.raises(QunlearnError, match=r"\.mien \(did you mean 'mine'\?\) names no"):
        build(CONFIG_TYPES[kind], _config(kind) | narrowed | typo)


class _Elsewhere:
    """An executor whose cells run in other processes (what the runner sees of a Dask one)."""

    def map(self, store, items):
        raise AssertionError("no cell may start")


def test_a_registered_member_is_refused_for_workers_before_out_is_touched(tmp_path):
    qunlearn.register_model("u_registered", user_mlp)
    try:
        spec = {**MODEL, "model": "u_registered"}
        config = build(
            CONFIG_TYPES["noise_sweep"], _config("noise_sweep") | {"models": {"u": spec}}
        )
        with pytest.raises(QunlearnError) as err:
            runner.run(config, tmp_path / "out", progress=False, executor=_Elsewhere())
        assert str(err.value) == (
            "models.u: 'u_registered' is registered in this process only, and the workers, other "
            "processes, cannot see it: name it by its reference 'test_families:user_mlp' instead "
            "(or offer it through an entry point)"
        )
        assert not (tmp_path / "out").exists()
    finally:
        MODELS.unregister("u_registered")


def test_a_reference_in_a_list_that_names_files_points_to_its_alias_table():
    with pytest.raises(QunlearnError) as err:
        build(
            CONFIG_TYPES["unlearning"],
            _config("unlearning") | {"methods": ["test_families:user_method"]},
        )
    assert 'method_options.mine = { method = "test_families:user_method" }' in str(err.value)


@pytest.mark.parametrize(
    "kind, change, fragment",
    [
        (
            "unlearning",
            {"methods": ["random_labels"], "method_options": {}},
            "or name your own in method_options.random_labels = "
            '{ method = "package.module:callable" }',
        ),
        (
            "noise_sweep",
            {"noises": ["swap"], "noise_options": {}},
            'or name your own in noise_options.swap = { noise = "package.module:fn" }',
        ),
    ],
)
def test_a_name_in_a_list_without_its_alias_table_says_where_to_add_it(kind, change, fragment):
    """A user's member named in the list but left out of the alias table: the line says where
    the reference goes, not only the closest built-in."""
    with pytest.raises(QunlearnError) as err:
        build(CONFIG_TYPES[kind], _config(kind) | change)
    assert fragment in str(err.value), str(err.value)


# --- a results directory is data: readers never import what its manifest names ----------------


def test_reading_results_never_imports_a_module_the_manifest_names(tmp_path):
    marker = tmp_path / "imported.txt"
    (tmp_path / "planted_member.py").write_text(
        textwrap.dedent(
            f"""
            open({str(marker)!r}, "a").write("imported\\n")
            from test_families import toy_loader, user_mlp
            """
        )
    )
    config = _config("noise_sweep") | {
        "dataset": "planted_member:toy_loader",
        "models": {"u": {**MODEL, "model": "planted_member:user_mlp"}},
        "noises": ["label_flip"],
        "noise_options": {},
    }
    sys.path.insert(0, str(tmp_path))
    try:
        runner.run(build(CONFIG_TYPES["noise_sweep"], config), tmp_path / "out", progress=False)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("planted_member", None)
    assert marker.read_text() == "imported\n"  # run imports it (once), as it must
    marker.unlink()
    reader = textwrap.dedent(
        f"""
        import sys
        import qunlearn
        from qunlearn.cli import main
        out = {str(tmp_path / "out")!r}
        assert main(["compare", out, "--out", out + "-cmp"]) == 0
        assert main(["plot", out, "--out", out + "-plot"]) == 0
        assert main(["report", out, "--out", out + "-report.html"]) == 0
        qunlearn.load(out).table()
        assert "planted_member" not in sys.modules
        """
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), HERE])}
    done = subprocess.run(
        [sys.executable, "-c", reader], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not marker.exists(), "a reader imported the module its manifest names"
    assert (tmp_path / "out-report.html").is_file()
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["members"]["models"]


def test_load_dataset_and_make_method_name_the_member_in_their_errors():
    with pytest.raises(QunlearnError, match="dataset 'test_families:_nan_loader' breaks the data"):
        load_dataset("test_families:_nan_loader")
    model = make_model("mlp", 4, False, hidden=(2,))
    with pytest.raises(QunlearnError, match="'test_families:_dict_method' breaks the method"):
        make_method(
            "test_families:_dict_method", model, n_retain=4, n_forget=2, epochs=1, batch_size=2
        )
