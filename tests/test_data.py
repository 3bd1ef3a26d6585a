"""Tests for speedrun.data: the bundled real CIFAR-10 subset, every accepted
path form, the npz cache, error messages, and the download path against a
local HTTP server on 127.0.0.1 (no internet needed)."""

import functools
import hashlib
import http.server
import importlib.util
import os
import pickle
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from speedrun.data import cifar10 as data  # noqa: E402
from speedrun.data import DataError, DataNotFoundError, load_cifar10  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"data_batch_1": 1102, "data_batch_2": 1017, "data_batch_3": 1017,
        "data_batch_4": 1017, "data_batch_5": 1017, "test_batch": 1017}


@pytest.fixture(scope="module")
def extracted_once(tmp_path_factory):
    dst = tmp_path_factory.mktemp("extracted")
    with tarfile.open(data.SAMPLE_ARCHIVE) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dst, filter="data")
        else:
            tar.extractall(dst)
    return dst / data.FOLDER_NAME


@pytest.fixture
def extracted(tmp_path, extracted_once):
    """A fresh copy of cifar-10-batches-py/ under tmp_path."""
    return Path(shutil.copytree(extracted_once, tmp_path / data.FOLDER_NAME))


@pytest.fixture
def archive_dir(tmp_path):
    """tmp_path/arch/ holding the sample renamed to cifar-10-python.tar.gz."""
    d = tmp_path / "arch"
    d.mkdir()
    shutil.copy(data.SAMPLE_ARCHIVE, d / data.ARCHIVE_NAME)
    return d


def assert_same(a, b):
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def no_temp_files(d):
    return not [p for p in Path(d).iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def raw():
    """Independent decoding of every batch straight from the sample archive."""
    out = {}
    with tarfile.open(data.SAMPLE_ARCHIVE) as tar:
        for member in tar:
            if member.isfile() and member.name.rsplit("/", 1)[-1] in ROWS:
                f = tar.extractfile(member)
                out[member.name.rsplit("/", 1)[-1]] = pickle.load(f, encoding="bytes")
    return out


# ------------------------------------------------------------------ sample

def test_sample_shapes_dtypes(sample):
    x_train, y_train, x_test, y_test = sample
    assert x_train.shape == (5170, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (1017, 32, 32, 3) and x_test.dtype == np.uint8
    assert y_train.shape == (5170,) and y_train.dtype == np.int32
    assert y_test.shape == (1017,) and y_test.dtype == np.int32
    assert x_train.flags.c_contiguous and x_test.flags.c_contiguous
    assert data.dataset_name(x_train, x_test) == "cifar10-subset"
    assert data.dataset_name(np.empty((50000, 1)), np.empty((10000, 1))) == "cifar10"


def test_sample_rows_per_file(sample, raw):
    rows = {name: raw[name][b"data"].shape[0] for name in ROWS}
    assert rows == ROWS
    assert sum(rows[f] for f in data.TRAIN_FILES) == len(sample[0])
    assert rows["test_batch"] == len(sample[2])


def test_sample_labels(sample):
    _, y_train, _, y_test = sample
    assert y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    train_counts = np.bincount(y_train, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert len(train_counts) == len(test_counts) == 10
    assert train_counts.min() >= 479 and train_counts.max() <= 562
    assert test_counts.min() >= 87 and test_counts.max() <= 114


def test_sample_pixels_match_independent_decoding(sample, raw):
    x_train, y_train, x_test, _ = sample
    test = raw["test_batch"][b"data"]
    np.testing.assert_array_equal(x_test[0], test[0].reshape(3, 32, 32).transpose(1, 2, 0))
    np.testing.assert_array_equal(x_test[-1], test[-1].reshape(3, 32, 32).transpose(1, 2, 0))
    last = raw["data_batch_5"]
    np.testing.assert_array_equal(x_train[-1], last[b"data"][-1].reshape(3, 32, 32).transpose(1, 2, 0))
    assert y_train[-1] == last[b"labels"][-1]
    # channel 0 is red: the per-channel means are close to the published ones
    np.testing.assert_allclose(x_train.mean(axis=(0, 1, 2)), data.CIFAR10_MEAN, atol=2.0)


def test_sample_does_not_write_cache(sample):
    assert not (data.SAMPLE_ARCHIVE.parent / data.CACHE_NAME).exists()
    assert_same(load_cifar10(data.SAMPLE_ARCHIVE), sample)  # explicit path: no cache either
    assert not (data.SAMPLE_ARCHIVE.parent / data.CACHE_NAME).exists()


# ------------------------------------------------------------ path forms

def test_archive_path_writes_cache(sample, archive_dir):
    arrays = load_cifar10(archive_dir / data.ARCHIVE_NAME)
    assert_same(arrays, sample)
    cache = archive_dir / data.CACHE_NAME
    assert cache.is_file() and no_temp_files(archive_dir)
    assert_same(load_cifar10(cache), sample)  # the cache alone
    assert_same(load_cifar10(str(archive_dir / data.ARCHIVE_NAME)), sample)  # via cache


def test_extracted_folder(sample, extracted):
    assert_same(load_cifar10(extracted), sample)
    cache = extracted.parent / data.CACHE_NAME
    assert cache.is_file()
    assert_same(load_cifar10(cache), sample)


def test_parent_folder(sample, extracted):
    assert_same(load_cifar10(extracted.parent), sample)
    assert (extracted.parent / data.CACHE_NAME).is_file()
    assert_same(load_cifar10(extracted.parent), sample)  # second time from the cache


def test_folder_with_archive(sample, archive_dir):
    assert_same(load_cifar10(archive_dir), sample)
    assert (archive_dir / data.CACHE_NAME).is_file()


def test_env_var_folder(sample, archive_dir, monkeypatch):
    monkeypatch.setenv("SPEEDRUN_DATA", str(archive_dir))
    assert_same(load_cifar10(), sample)
    assert (archive_dir / data.CACHE_NAME).is_file()
    assert_same(load_cifar10(""), sample)


def test_stale_cache_is_rebuilt(sample, archive_dir):
    cache = archive_dir / data.CACHE_NAME
    cache.write_bytes(b"old junk")
    os.utime(cache, (1_000_000, 1_000_000))  # older than the archive
    assert_same(load_cifar10(archive_dir), sample)
    assert_same(load_cifar10(cache), sample)


def test_unwritable_folder_warns_and_skips_cache(sample, archive_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only folder")

    monkeypatch.setattr("speedrun.data.archive.tempfile.NamedTemporaryFile", refuse)
    with pytest.warns(UserWarning, match="could not write CIFAR-10 cache"):
        arrays = load_cifar10(archive_dir)
    assert_same(arrays, sample)
    assert not (archive_dir / data.CACHE_NAME).exists()


# ---------------------------------------------------------------- errors

def test_nonexistent_path(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as e:
        load_cifar10(tmp_path / "nope")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DataError)
    assert "--config.data.path=sample" in str(e.value) and "tfds:DIR" in str(e.value)


def test_empty_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="no CIFAR-10 found"):
        load_cifar10(tmp_path)


def test_truncated_archive(archive_dir):
    arch = archive_dir / data.ARCHIVE_NAME
    raw = arch.read_bytes()
    arch.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt archive") as e:
        load_cifar10(arch)
    assert "download" in str(e.value)
    assert not (archive_dir / data.CACHE_NAME).exists() and no_temp_files(archive_dir)


def test_garbage_archive(archive_dir):
    (archive_dir / data.ARCHIVE_NAME).write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    with pytest.raises(DataError, match="archive"):
        load_cifar10(archive_dir)
    assert not (archive_dir / data.CACHE_NAME).exists()


def test_corrupt_pickle(extracted):
    (extracted / "data_batch_1").write_bytes(b"garbage bytes, not a pickle" * 50)
    with pytest.raises(DataError, match="corrupt CIFAR-10 pickle.*data_batch_1"):
        load_cifar10(extracted)
    assert not (extracted.parent / data.CACHE_NAME).exists()


def test_pickle_cannot_run_code(extracted, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (extracted / "data_batch_1").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(DataError, match="unexpected object"):
        load_cifar10(extracted)
    assert not marker.exists()


def _write_batch(path, data_array, labels):
    path.write_bytes(pickle.dumps({"data": data_array, "labels": labels}, protocol=2))


def test_wrong_shape(extracted):
    _write_batch(extracted / "data_batch_1", np.zeros((20, 100), np.uint8), [0] * 20)
    with pytest.raises(DataError, match=r"\(N, 3072\) uint8"):
        load_cifar10(extracted)


def test_wrong_dtype(extracted):
    _write_batch(extracted / "data_batch_1", np.zeros((20, 3072), np.float32), [0] * 20)
    with pytest.raises(DataError, match="uint8"):
        load_cifar10(extracted)


def test_label_count_mismatch(extracted):
    _write_batch(extracted / "data_batch_1", np.zeros((20, 3072), np.uint8), [0] * 19)
    with pytest.raises(DataError, match="labels"):
        load_cifar10(extracted)


def test_missing_keys(extracted):
    (extracted / "test_batch").write_bytes(pickle.dumps({"pixels": 1}, protocol=2))
    with pytest.raises(DataError, match="lacks 'data'/'labels'"):
        load_cifar10(extracted)


def test_label_out_of_range(extracted):
    _write_batch(extracted / "data_batch_2", np.zeros((20, 3072), np.uint8), [0] * 19 + [10])
    with pytest.raises(DataError, match=r"expected 0\.\.9"):
        load_cifar10(extracted)
    assert not (extracted.parent / data.CACHE_NAME).exists()


def test_missing_batch_file(extracted):
    (extracted / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        load_cifar10(extracted)


def test_corrupt_npz(tmp_path):
    bad = tmp_path / data.CACHE_NAME
    bad.write_bytes(b"PK\x03\x04 this is not a real zip file" * 10)
    with pytest.raises(DataError, match="corrupt CIFAR-10 cache") as e:
        load_cifar10(bad)
    assert "delete" in str(e.value)


def test_npz_with_bad_contents(tmp_path):
    bad = tmp_path / data.CACHE_NAME
    np.savez(bad, x_train=np.zeros((2, 32, 32, 3), np.uint8), y_train=np.array([0, 11]),
             x_test=np.zeros((1, 32, 32, 3), np.uint8), y_test=np.array([0]))
    with pytest.raises(DataError, match="delete"):
        load_cifar10(bad)
    np.savez(bad, x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="corrupt CIFAR-10 cache"):
        load_cifar10(bad)


def test_tfds_needs_extra():
    if importlib.util.find_spec("tensorflow_datasets") is not None:
        pytest.skip("tensorflow_datasets is installed")
    with pytest.raises(DataError) as e:
        load_cifar10("tfds:/nonexistent")
    # what installs it: the package from PyPI, or this checkout's extra (speedrun is not on an index)
    assert "pip install tensorflow-datasets" in str(e.value) and "pip install -e '.[tfds]'" in str(e.value)
    assert 'tfds = ["tensorflow-datasets' in (ROOT / "pyproject.toml").read_text()  # the extra exists


# ------------------------------------------- download (local server only)

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve the sample as cifar-10-python.tar.gz from 127.0.0.1; yields (url, md5)."""
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(data.SAMPLE_ARCHIVE, root / data.ARCHIVE_NAME)
    md5 = hashlib.md5((root / data.ARCHIVE_NAME).read_bytes()).hexdigest()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{data.ARCHIVE_NAME}", md5
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{data.ARCHIVE_NAME}"


def test_download_ok(sample, server, tmp_path, monkeypatch):
    url, md5 = server
    folder = tmp_path / "cache"
    monkeypatch.setenv("SPEEDRUN_DATA", str(folder))
    assert_same(load_cifar10(url=url, md5=md5), sample)
    assert (folder / data.ARCHIVE_NAME).is_file() and (folder / data.CACHE_NAME).is_file()
    # later runs need no network
    assert_same(load_cifar10(url=closed_port_url(), md5=md5), sample)


def test_download_bad_checksum(server, tmp_path, monkeypatch):
    url, _ = server
    folder = tmp_path / "cache"
    monkeypatch.setenv("SPEEDRUN_DATA", str(folder))
    with pytest.raises(DataError, match="checksum mismatch") as e:
        load_cifar10(url=url, md5="0" * 32)
    assert "0" * 32 in str(e.value) and "retry" in str(e.value)
    assert not folder.exists() or not list(folder.iterdir())


def test_download_missing_file(server, tmp_path, monkeypatch):
    url, md5 = server
    monkeypatch.setenv("SPEEDRUN_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="failed"):
        load_cifar10(url=url.replace(data.ARCHIVE_NAME, "missing.tar.gz"), md5=md5)


def test_download_offline(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SPEEDRUN_DATA", str(folder))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    url = closed_port_url()
    with pytest.raises(DataError, match="failed") as e:
        load_cifar10(url=url)
    msg = str(e.value)
    for part in ("by hand", data.ARCHIVE_NAME, data.CIFAR10_MD5, url, str(folder),
                 "SPEEDRUN_DATA", "--config.data.path"):
        assert part in msg, part
    assert not folder.exists() or not list(folder.iterdir())
