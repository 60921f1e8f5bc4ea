"""XXZ ground states: Hamiltonian convention, exact diagonalisation, phase, split, cache, figure;
option checks, the size guard and progress output."""

import io
import json
from functools import reduce
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from qunlearn.data import load_dataset
from qunlearn.data import xxz as xxz_mod
from qunlearn.data.cache import sha256_file
from qunlearn.data.xxz import (
    ground_state,
    load_xxz,
    load_xxz_grid,
    split_indices,
    xxz_grid,
    xxz_hamiltonian,
    zz_observables,
)
from qunlearn.errors import QunlearnError
from qunlearn.plotting.data import xxz_figure

PAULI = {
    "I": np.eye(2),
    "X": np.array([[0, 1], [1, 0]]),
    "Y": np.array([[0, -1j], [1j, 0]]),
    "Z": np.diag([1.0, -1.0]),
}


def _kron_hamiltonian(delta, n, boundary):
    """Dense H from Kronecker products; qubit 0 is the leftmost factor (most significant bit)."""

    def two_site(p, i, j):
        return reduce(np.kron, [PAULI[p] if k in (i, j) else PAULI["I"] for k in range(n)])

    bonds = [(i, (i + 1) % n) for i in range(n if boundary == "periodic" else n - 1)]
    h = sum(
        two_site("X", i, j) + two_site("Y", i, j) + delta * two_site("Z", i, j) for i, j in bonds
    )
    assert np.allclose(h.imag, 0)
    return h.real


@pytest.mark.parametrize("boundary", ["periodic", "open"])
@pytest.mark.parametrize("n", [3, 4, 5])
def test_hamiltonian_matches_kronecker_products(n, boundary):
    for delta in (-0.7, 1.3):
        np.testing.assert_allclose(
            xxz_hamiltonian(delta, n, boundary).toarray(),
            _kron_hamiltonian(delta, n, boundary),
            atol=0,
        )


@pytest.mark.parametrize("boundary", ["periodic", "open"])
@pytest.mark.parametrize("n", [4, 6, 8])
def test_ground_energy_matches_dense_eigh(n, boundary):
    for delta in (-1.0, -0.5, 0.0, 0.5, 1.0, 2.0):
        energy, psi = ground_state(delta, n, boundary)
        dense = xxz_hamiltonian(delta, n, boundary).toarray()
        assert energy == pytest.approx(np.linalg.eigh(dense)[0][0], abs=1e-11)
        np.testing.assert_allclose(dense @ psi, energy * psi, atol=1e-10)


@pytest.mark.parametrize("delta", [-0.5, 0.5, 1.5])
def test_n12_residual_and_norm(delta):
    energy, psi = ground_state(delta, 12, "periodic")
    assert psi.shape == (4096,) and psi.dtype == np.complex128
    assert abs(np.linalg.norm(psi) - 1) < 1e-12
    h = xxz_hamiltonian(delta, 12, "periodic")
    assert np.linalg.norm(h @ psi - energy * psi) <= 1e-8
    # The ground state lies in the Sz = 0 sector.
    magnetisation = 12 - 2 * np.array([bin(b).count("1") for b in range(4096)])
    assert np.sum(np.abs(psi[magnetisation != 0]) ** 2) < 1e-20


def test_phase_is_deterministic():
    e1, psi1 = ground_state(0.3, 10, "periodic")
    e2, psi2 = ground_state(0.3, 10, "periodic")
    assert e1 == e2 and np.array_equal(psi1, psi2)
    top = np.flatnonzero(np.abs(psi1) >= np.abs(psi1).max() * (1 - 1e-8))[0]
    assert psi1[top].imag == 0 and psi1[top].real > 0
    assert np.all(psi1.imag == 0)  # H is real, so the whole fixed state is real


def test_fix_phase_removes_a_global_phase():
    _, psi = ground_state(0.7, 6, "open")
    np.testing.assert_allclose(xxz_mod.fix_phase(psi * np.exp(2.1j)), psi, atol=1e-14)
    np.testing.assert_allclose(xxz_mod.fix_phase(-psi), psi, atol=1e-14)


def test_observables_on_product_states():
    n = 6
    neel = np.zeros(1 << n, complex)
    neel[int("010101", 2)] = 1
    ferro = np.zeros(1 << n, complex)
    ferro[0] = 1
    assert zz_observables(neel, n, "periodic") == pytest.approx((-1.0, n))
    assert zz_observables(ferro, n, "open") == pytest.approx((1.0, 0.0))


def test_default_split_is_the_reference_selection():
    split = split_indices(xxz_grid())
    np.testing.assert_array_equal(split["train"][0], np.arange(107, 188, 2))
    np.testing.assert_array_equal(split["train"][1], np.arange(200, 281, 2))
    np.testing.assert_array_equal(split["val"][0], np.arange(106, 189, 2))
    np.testing.assert_array_equal(split["val"][1], np.arange(199, 282, 2))
    assert [len(s) for s in split["train"] + split["val"]] == [41, 41, 42, 42]


def test_custom_grid_rule_and_explicit_indices():
    deltas = xxz_grid(0.0, 2.0, 21)  # step 0.1
    split = split_indices(deltas)
    assert np.all(np.isin(deltas[split["train"][0]], deltas[(deltas > 0) & (deltas < 1)]))
    assert np.all(deltas[np.concatenate(split["train"][1:] + split["val"][1:])] > 1)
    explicit = split_indices(deltas, train_idx=([2, 4], [15, 17]), val_idx=([3], [16]))
    assert [s.tolist() for s in explicit["train"]] == [[2, 4], [15, 17]]
    bad = [
        ({"train_idx": ([2], [30])}, "outside"),
        ({"train_idx": ([2], [5])}, "Δ > 1"),
        ({"train_idx": ([12], [15])}, "-1 < Δ < 1"),
        ({"train_idx": ([3], [15]), "val_idx": ([3], [16])}, "overlap"),
        ({"train_idx": ([2, 2], [15])}, "repeats"),
        ({"train_idx": [1, 2, 3]}, "pair"),
    ]
    for kwargs, message in bad:
        with pytest.raises(QunlearnError, match=message):
            split_indices(deltas, **kwargs)
    with pytest.raises(QunlearnError, match="no grid points"):
        split_indices(xxz_grid(2.0, 3.0, 11))


def test_dataset_shapes_and_order(tmp_path):
    ds = load_dataset("xxz", cache_dir=tmp_path, n_spins=4)
    assert ds.x_train.shape == (82, 16) and ds.x_val.shape == (84, 16)
    assert ds.x_train.dtype == np.complex128 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train, np.repeat([0, 1], 41))
    np.testing.assert_array_equal(ds.y_val, np.repeat([0, 1], 42))
    np.testing.assert_allclose(np.linalg.norm(ds.x_val, axis=1), 1, atol=1e-12)
    np.testing.assert_array_equal(ds.x_train[0], ground_state(xxz_grid()[107], 4, "periodic")[1])
    np.testing.assert_array_equal(ds.x_val[-1], ground_state(xxz_grid()[281], 4, "periodic")[1])
    assert ds.info["train_idx"][1][0] == 200 and ds.info["cache_sha256"] == sha256_file(
        ds.info["cache_path"]
    )
    json.dumps(ds.info)


def test_random_phase_option_only_rotates_each_state(tmp_path):
    fixed = load_dataset("xxz", cache_dir=tmp_path, n_spins=4)
    rand = load_dataset("xxz", cache_dir=tmp_path, n_spins=4, phase="random", phase_seed=3)
    for split in ("x_train", "x_val"):
        a, b = getattr(fixed, split), getattr(rand, split)
        ratio = np.sum(np.conj(a) * b, axis=1)  # <fixed|random> = e^{i phi} per state
        np.testing.assert_allclose(np.abs(ratio), 1, atol=1e-12)
        np.testing.assert_allclose(b, ratio[:, None] * a, atol=1e-12)
        assert np.std(np.angle(ratio)) > 0.5  # really random, not one shared phase
    # phases belong to grid points and flow from the seed: one seed, one dataset
    again = load_dataset("xxz", cache_dir=tmp_path, n_spins=4, phase="random", phase_seed=3)
    np.testing.assert_array_equal(again.x_train, rand.x_train)
    other = load_dataset("xxz", cache_dir=tmp_path, n_spins=4, phase="random", phase_seed=4)
    assert not np.allclose(other.x_train, rand.x_train)
    assert rand.info["phase"] == "random (PRNGKey(3))" and fixed.info["phase"] == "fixed"
    with pytest.raises(QunlearnError, match="phase must be 'fixed' or 'random'"):
        load_dataset("xxz", cache_dir=tmp_path, n_spins=4, phase="arbitrary")


def test_cache_reused_then_regenerated_after_corruption(tmp_path, monkeypatch):
    options = {"cache_dir": tmp_path, "n_spins": 6, "boundary": "open", "n_delta": 40}
    first, meta = load_xxz_grid(**options)
    generate = xxz_mod.generate_xxz_grid
    monkeypatch.setattr(xxz_mod, "generate_xxz_grid", lambda *a: pytest.fail("cache not reused"))
    again, _ = load_xxz_grid(**options)
    np.testing.assert_array_equal(again["states"], first["states"])

    path = tmp_path / meta["cache_path"].rsplit("/", 1)[1]
    path.write_bytes(b"garbage")
    calls = []
    monkeypatch.setattr(xxz_mod, "generate_xxz_grid", lambda *a: calls.append(1) or generate(*a))
    with pytest.warns(UserWarning, match="corrupt"):
        fixed, meta2 = load_xxz_grid(**options)
    assert calls == [1] and meta2["sha256"] == meta["sha256"] == sha256_file(path)
    np.testing.assert_array_equal(fixed["states"], first["states"])


def test_cache_name_depends_on_parameters(tmp_path):
    paths = {
        load_xxz_grid(cache_dir=tmp_path, n_spins=4, n_delta=n, boundary=b)[1]["cache_path"]
        for n, b in [(10, "open"), (11, "open"), (10, "periodic")]
    }
    assert len(paths) == 3 and len(list(tmp_path.glob("xxz_N4_*.npz"))) == 3


def test_bad_parameters():
    with pytest.raises(QunlearnError, match="boundary"):
        xxz_hamiltonian(1.0, 4, "twisted")
    with pytest.raises(QunlearnError, match="delta_min < delta_max"):
        xxz_grid(2.0, 1.0, 5)


def test_figure(tmp_path):
    before = dict(matplotlib.rcParams)
    written = xxz_figure(tmp_path, tmp_path / "fig" / "xxz.pdf", n_spins=4)
    assert [p.name for p in written] == ["xxz.pdf"]  # exactly the file asked for
    assert all(p.stat().st_size > 1000 for p in written)
    assert dict(matplotlib.rcParams) == before
    with pytest.raises(QunlearnError, match="unknown option"):
        xxz_figure(tmp_path, tmp_path / "x.png", n_qubits=4)


# ---------------------------------------------------------------------------------------------
# Options are checked up front, each error naming dataset_options.<key>

BAD_OPTIONS = [
    ({"n_spins": True}, r"dataset_options.n_spins must be an integer in \[2, 20\], got True \(b"),
    ({"n_spins": 4.0}, r"dataset_options.n_spins must be an integer .*got 4.0 \(float\)"),
    ({"n_spins": 1}, r"dataset_options.n_spins must be an integer in \[2, 20\], got 1$"),
    ({"n_spins": "4"}, r"dataset_options.n_spins .*got '4' \(str\)"),
    ({"n_delta": False}, r"dataset_options.n_delta must be an integer .*\(bool\)"),
    ({"n_delta": 40.5}, r"dataset_options.n_delta .*\(float\)"),
    ({"n_delta": 1}, r"dataset_options.n_delta must be an integer in \[2, "),
    ({"delta_min": True}, r"dataset_options.delta_min must be a finite number, got True"),
    ({"delta_min": "-1"}, r"dataset_options.delta_min must be a finite number"),
    ({"delta_max": float("inf")}, r"dataset_options.delta_max must be a finite number"),
    ({"delta_min": 2.0}, r"dataset_options.delta_min must be below dataset_options.delta_max"),
    ({"boundary": "twisted"}, r"dataset_options.boundary must be 'periodic' or 'open'"),
    ({"phase": "arbitrary"}, r"dataset_options.phase must be 'fixed' or 'random'"),
    ({"phase": None}, r"dataset_options.phase must be 'fixed' or 'random', got None"),
    ({"phase_seed": 1.5}, r"dataset_options.phase_seed must be an integer"),
    ({"phase_seed": True}, r"dataset_options.phase_seed .*\(bool\)"),
    ({"train_idx": ([107.5], [200])}, r"dataset_options.train_idx must be a pair of integer"),
    ({"val_idx": ([300], [200])}, r"dataset_options.val_idx has indices outside \[0, 293\)"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_option_is_named_before_anything_is_generated(tmp_path, options, message):
    cache = tmp_path / "c"
    with pytest.raises(QunlearnError, match=message) as err:
        load_xxz(cache_dir=cache, **{"n_spins": 4, **options})
    assert "\n" not in str(err.value)
    assert not cache.exists()  # refused before the cache directory was even created


def test_bad_range_through_load_dataset(tmp_path):
    with pytest.raises(QunlearnError, match=r"dataset_options.n_spins must be an integer in"):
        load_dataset("xxz", cache_dir=tmp_path / "c", n_spins=21)
    with pytest.raises(QunlearnError, match=r"dataset_options.boundary .*did you mean 'open'"):
        load_xxz_grid(cache_dir=tmp_path / "c", n_spins=4, boundary="opne")
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------
# Size guard


def test_size_guard_refuses_what_does_not_fit_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(xxz_mod, "BASE_BYTES", 0)
    monkeypatch.setattr(xxz_mod, "memory_limit_bytes", lambda: 100_000)  # fits 5 spins, not 6
    monkeypatch.setattr(xxz_mod, "generate_xxz_grid", lambda *a: pytest.fail("must not generate"))
    cache = tmp_path / "c"
    with pytest.raises(QunlearnError) as err:
        load_dataset("xxz", cache_dir=cache, n_spins=6, n_delta=40)
    message = str(err.value)
    # states 40 x 2**6 x 16 B = 40 KiB, 3 copies, + Hamiltonian and Lanczos vectors 49 KiB
    assert message.startswith("xxz with n_spins = 6 needs ~169 KiB for 40 ground states (40 KiB")
    assert "this machine has 98 KiB" in message and "of exact diagonalisation here" in message
    assert message.endswith("use n_spins <= 5, or n_delta <= 16") and "\n" not in message
    assert "QUNLEARN_XXZ_MAX_HOURS=" not in message  # waiting longer does not make it fit
    assert not cache.exists()


def test_size_guard_refuses_what_takes_too_long(tmp_path, monkeypatch):
    monkeypatch.setenv("QUNLEARN_XXZ_MAX_HOURS", "1e-9")
    cache = tmp_path / "c"
    with pytest.raises(QunlearnError) as err:
        load_xxz_grid(cache_dir=cache, n_spins=6, n_delta=40)
    message = str(err.value)
    assert message.startswith("xxz with n_spins = 6 needs ~") and "\n" not in message
    assert "limit 0 s, QUNLEARN_XXZ_MAX_HOURS" in message
    assert message.endswith("set QUNLEARN_XXZ_MAX_HOURS=1 to wait that long")
    assert not cache.exists()
    monkeypatch.setenv("QUNLEARN_XXZ_MAX_HOURS", "soon")
    with pytest.raises(QunlearnError, match="QUNLEARN_XXZ_MAX_HOURS='soon' is not a positive"):
        load_xxz_grid(cache_dir=cache, n_spins=6, n_delta=40)


def test_size_guard_default_bound_refuses_20_spins(monkeypatch):
    """The issue's case: 20 spins on the default grid is refused at once, not run for hours (the
    time is extrapolated from a measured 12-spin ground state, so this stays fast)."""
    monkeypatch.setattr(xxz_mod, "memory_limit_bytes", lambda: 2**50)  # only time can refuse
    with pytest.raises(QunlearnError, match=r"n_spins = 20 needs .* h of exact diagonalisation"):
        xxz_mod.check_size(20, "periodic", -1.0, 2.0, 293)
    grid, need = xxz_mod.estimate_bytes(20, 293)
    assert grid == 293 * 16 * 2**20 and need > 3 * grid  # ~4.6 GiB of states, held 3 times


def test_cached_grid_loads_without_the_guard(tmp_path, monkeypatch):
    first, _ = load_xxz_grid(cache_dir=tmp_path, n_spins=4, n_delta=12)
    monkeypatch.setattr(xxz_mod, "memory_limit_bytes", lambda: 0)
    again, _ = load_xxz_grid(cache_dir=tmp_path, n_spins=4, n_delta=12)
    np.testing.assert_array_equal(again["states"], first["states"])


def test_unwritable_cache_dir_is_refused_before_generating(monkeypatch):
    """Also as root (CI): nobody can create files in /proc/self."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    monkeypatch.setattr(xxz_mod, "generate_xxz_grid", lambda *a: pytest.fail("must not generate"))
    with pytest.raises(QunlearnError, match="cache directory /proc/self is not writable"):
        load_dataset("xxz", cache_dir="/proc/self", n_spins=4, n_delta=300)


# ---------------------------------------------------------------------------------------------
# Progress


def test_progress_in_a_log_is_plain_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(xxz_mod, "PROGRESS_AFTER_S", 0.0)
    load_xxz_grid(cache_dir=tmp_path, n_spins=4, n_delta=20)
    err = capsys.readouterr().err  # captured stderr is not a terminal
    lines = err.splitlines()
    assert lines[0].startswith("xxz: exact diagonalisation of 20 ground states of 4 spins")
    ticks = [line for line in lines if "ground states (" in line]
    assert len(ticks) == 10  # one per 10%
    assert ticks[0].startswith("xxz n_spins=4: 2/20 ground states (10%), ")
    assert ticks[-1].startswith("xxz n_spins=4: 20/20 ground states (100%), ")
    assert "\r" not in err and "\x1b" not in err
    load_xxz_grid(cache_dir=tmp_path, n_spins=4, n_delta=20)  # cached: silent
    assert capsys.readouterr().err == ""


def test_progress_quiet_when_quick(tmp_path, capsys):
    load_xxz_grid(cache_dir=tmp_path, n_spins=4, n_delta=20)
    assert capsys.readouterr().err == ""


def test_progress_on_a_terminal_is_a_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(xxz_mod, "PROGRESS_AFTER_S", 0.0)
    stream = Terminal()
    progress = xxz_mod._GridProgress(5, "xxz n_spins=4", stream=stream)
    for _ in range(5):
        progress.update()
    progress.close()
    assert "\r" in stream.getvalue() and "xxz n_spins=4:" in stream.getvalue()  # tqdm's bar


@pytest.mark.slow
def test_full_default_grid_n12(tmp_path):
    ds = load_xxz(cache_dir=tmp_path)
    assert ds.x_train.shape == (82, 4096) and ds.x_val.shape == (84, 4096)
    arrays, _ = load_xxz_grid(cache_dir=tmp_path)
    for k in (0, 150, 292):
        h = xxz_hamiltonian(arrays["deltas"][k], 12, "periodic")
        psi = arrays["states"][k]
        assert np.linalg.norm(h @ psi - arrays["energies"][k] * psi) <= 1e-8


def test_cli_figure_with_another_format_is_one_line_before_any_data(tmp_path, capsys):
    from qunlearn.cli import main

    cache = tmp_path / "cache"
    argv = ["data", "xxz", "--cache-dir", str(cache), "--figure", str(tmp_path / "x.gif")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    want = f"--figure {tmp_path / 'x.gif'}: use a file name ending in one of .png, .pdf, .svg"
    assert err == f"error: {want}\n"
    assert list(tmp_path.iterdir()) == []  # refused before the data set is loaded or cached
