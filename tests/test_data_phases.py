"""TFIM and cluster-Ising ground states: Hamiltonians against Kronecker products, the TFIM against
its free-fermion closed form and its gap, the cluster state's stabilisers and string order, the
labels and split, the cache, option checks and the size guard."""

import json
from functools import reduce

import numpy as np
import pytest

from qunlearn.data import ed, load_dataset
from qunlearn.data.cluster_ising import (
    cluster_ising_hamiltonian,
    cluster_ising_labels,
    cluster_ising_observables,
    load_cluster_ising,
    load_cluster_ising_grid,
    string_sites,
)
from qunlearn.data.phases import phase_split
from qunlearn.data.tfim import (
    free_fermion_energy,
    load_tfim,
    load_tfim_grid,
    tfim_grid,
    tfim_hamiltonian,
    tfim_labels,
    tfim_observables,
)
from qunlearn.errors import QunlearnError

PAULI = {"I": np.eye(2), "X": np.array([[0.0, 1], [1, 0]]), "Z": np.diag([1.0, -1.0])}


def _string(n, ops: dict[int, str]):
    """Dense Pauli string; qubit 0 is the leftmost factor (most significant bit)."""
    return reduce(np.kron, [PAULI[ops.get(k, "I")] for k in range(n)])


def _dense_tfim(h, n, boundary):
    bonds = [(i, (i + 1) % n) for i in range(n if boundary == "periodic" else n - 1)]
    return -sum(_string(n, {i: "Z", j: "Z"}) for i, j in bonds) - h * sum(
        _string(n, {i: "X"}) for i in range(n)
    )


def _dense_cluster(h1, h2, n, boundary):
    periodic = boundary == "periodic"
    sites = range(n) if periodic else range(1, n - 1)
    bonds = [(i, (i + 1) % n) for i in range(n if periodic else n - 1)]
    zxz = sum(_string(n, {(i - 1) % n: "Z", i: "X", (i + 1) % n: "Z"}) for i in sites)
    x = sum(_string(n, {i: "X"}) for i in range(n))
    xx = sum(_string(n, {i: "X", j: "X"}) for i, j in bonds)
    return -zxz - h1 * x - h2 * xx


@pytest.mark.parametrize("boundary", ["periodic", "open"])
@pytest.mark.parametrize("n", [3, 4, 5])
def test_hamiltonians_match_kronecker_products(n, boundary):
    for h in (0.0, 0.4, 1.7):
        np.testing.assert_allclose(
            tfim_hamiltonian(h, n, boundary).toarray(), _dense_tfim(h, n, boundary), atol=0
        )
    for h1, h2 in ((0.0, 0.0), (0.3, -1.1), (1.2, 0.7)):
        np.testing.assert_allclose(
            cluster_ising_hamiltonian((h1, h2), n, boundary).toarray(),
            _dense_cluster(h1, h2, n, boundary),
            atol=0,
        )


@pytest.mark.parametrize("n", [8, 12])
def test_tfim_ground_energy_is_the_free_fermion_closed_form(n):
    """Periodic chain, even-parity sector: E0 = -Σ_k sqrt(1 + h² - 2h cos k), k = ±(2m-1)π/N."""
    for h in (0.0, 0.3, 0.9, 1.0, 1.1, 1.7, 3.0):
        energy, psi = ed.lowest_eigenpair(tfim_hamiltonian(h, n, "periodic"))
        assert energy == pytest.approx(free_fermion_energy(h, n), abs=1e-10)
        assert abs(np.linalg.norm(psi) - 1) < 1e-12


def test_tfim_gap_closes_only_at_the_critical_point():
    """At h = 1 the gap falls like 1/N (N·gap → π/2 ... constant to 1%); in the paramagnet (h = 2)
    it stays at its bulk value 2(h - 1); in the ferromagnet the two lowest levels merge (symmetry
    breaking) but the gap above them (two domain walls) stays near 4(1 - h)."""
    sizes = (6, 8, 10, 12)
    gaps = {h: [] for h in (1.0, 2.0, 0.5)}
    for n in sizes:
        for h in gaps:
            levels = ed.lowest_levels(tfim_hamiltonian(h, n, "periodic"), 3)[0]
            gaps[h].append(levels[2] - levels[0] if h < 1 else levels[1] - levels[0])
    critical = np.array(gaps[1.0])
    assert np.all(np.diff(critical) < 0)
    assert np.ptp(critical * np.array(sizes)) < 0.01 * critical[0] * sizes[0]
    np.testing.assert_allclose(gaps[2.0], 2.0, rtol=0.01)
    np.testing.assert_allclose(gaps[0.5][1:], 2.0, rtol=0.15)
    assert min(gaps[2.0]) > 10 * critical[-1] and min(gaps[0.5]) > 5 * critical[-1]


@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_cluster_state_stabilisers_and_string_order(boundary):
    n = 8
    _, psi = ed.lowest_eigenpair(cluster_ising_hamiltonian((0.0, 0.0), n, boundary))
    sites = range(n) if boundary == "periodic" else range(1, n - 1)
    for i in sites:  # every ZXZ term of H is +1
        assert ed.pauli_expectation(psi, n, (i,), ((i - 1) % n, (i + 1) % n)) == pytest.approx(
            1.0, abs=1e-10
        )
    obs = cluster_ising_observables(psi, n, boundary)
    assert obs["sop"] == pytest.approx(1.0, abs=1e-10) and obs["zxz"] == pytest.approx(1.0)
    assert string_sites(8) == (2, 6, (3, 5)) and string_sites(12) == (3, 9, (4, 6, 8))
    # deep in the paramagnet the string order is gone
    _, para = ed.lowest_eigenpair(cluster_ising_hamiltonian((4.0, 0.0), n, boundary))
    assert abs(cluster_ising_observables(para, n, boundary)["sop"]) < 0.05


def test_observables_on_product_states():
    n = 6
    up = np.zeros(1 << n, complex)
    up[0] = 1
    plus = np.full(1 << n, 2 ** (-n / 2), complex)
    assert tfim_observables(up, n) == pytest.approx({"zz_far": 1.0, "mx": 0.0})
    assert tfim_observables(plus, n, "open") == pytest.approx({"zz_far": 0.0, "mx": 1.0})
    assert cluster_ising_observables(plus, n)["mx"] == pytest.approx(1.0)


def test_tfim_labels_and_split():
    h = tfim_grid()
    labels = tfim_labels(h, 0.1)
    assert np.all(h[labels == 0] <= 0.9 + 1e-9) and np.all(h[labels == 1] >= 1.1 - 1e-9)
    assert np.sum(labels == 0) == np.sum(labels == 1) == 91
    assert tfim_labels([0.5, 1.0, 1.5], 0.0).tolist() == [0, -1, 1]  # h = 1 is never labelled
    split = phase_split(labels, "tfim", ("a", "b"))
    assert [len(s) for s in split["train"] + split["val"]] == [45, 45, 46, 46]
    for label in (0, 1):
        assert not np.intersect1d(split["train"][label], split["val"][label]).size
    # an unequal split thins the larger class's training points to the smaller's count
    uneven = phase_split(np.array([0] * 10 + [1] * 4), "x", ("a", "b"))
    assert [len(s) for s in uneven["train"]] == [2, 2] and len(uneven["val"][0]) == 5


def test_tfim_dataset(tmp_path):
    ds = load_dataset("tfim", cache_dir=tmp_path, n_spins=6, n_h=41)
    h = tfim_grid(0.0, 2.0, 41)
    assert ds.x_train.shape[1] == 64 and ds.x_train.dtype == np.complex128
    n = len(ds.y_train) // 2
    np.testing.assert_array_equal(ds.y_train, np.repeat([0, 1], n))
    train = np.concatenate(ds.info["train_idx"])
    assert np.all(h[train[:n]] < 0.9 + 1e-9) and np.all(h[train[n:]] > 1.1 - 1e-9)
    k = ds.info["train_idx"][1][0]
    np.testing.assert_array_equal(ds.x_train[n], ed.lowest_eigenpair(tfim_hamiltonian(h[k], 6))[1])
    assert ds.info["cache_sha256"] == ed.read_npz(ds.info["cache_path"])[1]["sha256"]
    json.dumps(ds.info)
    arrays, _ = load_tfim_grid(cache_dir=tmp_path, n_spins=6, n_h=41)
    assert arrays["zz_far"][0] == pytest.approx(1.0) and arrays["zz_far"][-1] < 0.2
    assert np.all(np.diff(arrays["zz_far"]) <= 1e-12)  # the order falls with the field


def test_cluster_ising_labels_reproduce_the_exact_line(tmp_path):
    """On h2 = 0 (free fermions, critical at h1 = 1) the string-order labels are exactly h1 < 1."""
    options = {"n_spins": 8, "n_h1": 17, "n_h2": 9}
    ds = load_dataset("cluster_ising", cache_dir=tmp_path, **options)
    arrays, _ = load_cluster_ising_grid(cache_dir=tmp_path, **options)
    points = arrays["points"]
    labels = cluster_ising_labels(arrays["sop"], ds.info["critical_sop"], 0.0)
    line = np.abs(points[:, 1]) < 1e-12
    h1 = points[line, 0]
    assert np.all(np.diff(arrays["sop"][line]) < 0)
    np.testing.assert_array_equal(labels[line], np.where(h1 < 1, 0, np.where(h1 > 1, 1, -1)))
    origin = np.flatnonzero(np.all(np.abs(points) < 1e-12, axis=1))
    assert labels[origin].tolist() == [0] and ds.x_train.shape[1] == 256
    assert len(ds.y_train) % 2 == 0 and set(ds.y_val.tolist()) == {0, 1}


def test_cache_is_reused(tmp_path, monkeypatch):
    first = load_tfim(cache_dir=tmp_path, n_spins=5, n_h=11, margin=0.0)
    monkeypatch.setattr(ed, "lowest_eigenpair", lambda *a: pytest.fail("cache not reused"))
    again = load_tfim(cache_dir=tmp_path, n_spins=5, n_h=11, margin=0.0)
    np.testing.assert_array_equal(first.x_val, again.x_val)


# ---------------------------------------------------------------------------------------------
# Bad inputs: one line, nothing created


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("tfim", {"h_min": 1.2}, r"tfim: the grid has 0 point\(s\) in the ferromagnetic"),
        ("tfim", {"h_max": 0.95}, r"tfim: the grid has 0 point\(s\) in the paramagnetic"),
        ("tfim", {"margin": -0.1}, r"dataset_options.margin must be >= 0"),
        ("tfim", {"h_min": 3.0}, r"dataset_options.h_min must be below dataset_options.h_max"),
        ("tfim", {"n_h": 1}, r"dataset_options.n_h must be an integer in \[2, "),
        ("tfim", {"n_spins": 2}, r"dataset_options.n_spins must be an integer >= 3"),
        ("tfim", {"boundary": "twisted"}, r"dataset_options.boundary must be 'periodic' or"),
        ("tfim", {"phase": "any"}, r"dataset_options.phase must be 'fixed' or 'random'"),
        ("cluster_ising", {"n_spins": 3}, r"dataset_options.n_spins must be an integer >= 4"),
        ("cluster_ising", {"h2_max": -2.0}, r"dataset_options.h2_min must be below"),
    ],
)
def test_bad_options_one_line_nothing_created(tmp_path, name, options, message):
    cache = tmp_path / "c"
    with pytest.raises(QunlearnError, match=message) as err:
        base = {"n_spins": 4, "n_h": 21} if name == "tfim" else {"n_spins": 4, "n_h1": 3}
        load_dataset(name, cache_dir=cache, **{**base, **options})
    assert "\n" not in str(err.value)
    assert not cache.exists()  # the TFIM's labels are known before any ground state


def test_cluster_grid_in_one_phase_is_refused(tmp_path):
    with pytest.raises(QunlearnError) as err:
        load_cluster_ising(cache_dir=tmp_path, n_spins=6, h1_min=1.3, h2_min=0.5, n_h1=3, n_h2=3)
    assert str(err.value).startswith("cluster_ising: the grid has 0 point(s) in the SPT")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["tfim", "cluster_ising"])
def test_40_spins_refused_with_the_estimate(tmp_path, name):
    cache = tmp_path / "c"
    with pytest.raises(QunlearnError) as err:
        load_dataset(name, cache_dir=cache, n_spins=40)
    message = str(err.value)
    assert message.startswith(f"{name} with n_spins = 40 needs ~") and "TiB" in message
    assert "of exact diagonalisation here" in message and "\n" not in message
    assert "use n_spins <= " in message
    assert not cache.exists()


# ---------------------------------------------------------------------------------------------
# Iris


def test_iris_two_classes_amplitude_encoded():
    from sklearn.datasets import load_iris

    ds = load_dataset("iris")
    assert ds.x_train.shape == (50, 4) and ds.x_val.shape == (50, 4)
    np.testing.assert_array_equal(ds.y_train, np.repeat([0, 1], 25))
    np.testing.assert_allclose(np.linalg.norm(ds.x_val, axis=1), 1.0, atol=1e-12)
    raw = load_iris()
    versicolor = raw.data[raw.target == 1]
    mean, std = np.array(ds.info["train_mean"]), np.array(ds.info["train_std"])
    z = (versicolor[1] - mean) / std  # the first validation flower: the class's second row
    np.testing.assert_allclose(ds.x_val[0], z / np.linalg.norm(z), atol=1e-15)
    other = load_dataset("iris", classes=[2, 0])
    assert other.info["classes"] == ["virginica", "setosa"]
    for bad in ([1, 1], [0, 3], [1], "12"):
        message = r"dataset_options.classes must be at least two different"
        with pytest.raises(QunlearnError, match=message):
            load_dataset("iris", classes=bad)


def test_phase_figures(tmp_path):
    import matplotlib

    from qunlearn.plotting.data import cluster_ising_figure, tfim_figure

    before = dict(matplotlib.rcParams)
    tfim = tfim_figure(tmp_path, tmp_path / "fig" / "tfim.png", n_spins=5, n_h=21)
    cluster = cluster_ising_figure(tmp_path, tmp_path / "ci.pdf", n_spins=5, n_h1=5, n_h2=7)
    assert tfim == [tmp_path / "fig" / "tfim.png"] and cluster == [tmp_path / "ci.pdf"]
    assert all(p.stat().st_size > 1000 for p in tfim + cluster)
    assert dict(matplotlib.rcParams) == before
    with pytest.raises(QunlearnError, match="unknown option"):
        tfim_figure(tmp_path, tmp_path / "x.png", n_qubits=4)
