"""Read and verify the on-disk CIFAR-10 formats: the official "CIFAR-10 python version" archive
(Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html) as a ``.tar.gz`` or its extracted
``cifar-10-batches-py/`` folder, whose batch pickles are unpickled by a restricted unpickler that
builds only numpy arrays, and the ``cifar10.npz`` cache this package writes atomically next to
them. Every reader returns ``(x_train, y_train, x_test, y_test)`` with images
``(N, 32, 32, 3) uint8`` (NHWC) and labels ``(N,) int32`` in 0..9, and raises :class:`DataError`
(message naming the file and the fix) on a truncated, corrupt or malformed file; the batch layout
is described in :mod:`speedrun.data.cifar10`, which finds, downloads and dispatches to these.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

ARCHIVE_NAME = "cifar-10-python.tar.gz"
#: Where the official archive is (named in the messages; :mod:`speedrun.data.cifar10` downloads it).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
CACHE_NAME = "cifar10.npz"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(RuntimeError):
    """CIFAR-10 could not be obtained: failed download, bad checksum, corrupt
    or malformed file. The message says what went wrong and how to fix it.
    Defined here, where the readers raise it; public as ``speedrun.data.DataError``
    (and ``speedrun.data.cifar10.DataError``)."""


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, so a bad file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in pickle")
        return super().find_class(module, name)


def _decode_batch(raw: bytes, name: str):
    """Decode one batch pickle into ``(N, 32, 32, 3) uint8`` and ``(N,) int32``."""
    fix = f"delete {name!r} (and any {CACHE_NAME} next to it) and download or extract it again"
    try:
        d = _NumpyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ...
        raise DataError(f"corrupt CIFAR-10 pickle {name!r} ({type(e).__name__}: {' '.join(str(e).split())}) — "
                        f"{fix}.") from e
    if not isinstance(d, dict):
        raise DataError(f"CIFAR-10 pickle {name!r} is not a dict — {fix}.")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"CIFAR-10 pickle {name!r} lacks 'data'/'labels' (keys {sorted(d)}) — {fix}.")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"CIFAR-10 pickle {name!r}: 'data' is {shape} {dtype}, expected (N, 3072) uint8 — {fix}.")
    try:
        labels = np.asarray(d["labels"], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"CIFAR-10 pickle {name!r}: labels are not integers ({e}) — {fix}.") from e
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _check(np.ascontiguousarray(images), labels, name, fix)


def _check(images, labels, name: str, fix: str):
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DataError(f"{name!r}: images are {images.shape} {images.dtype}, expected (N, 32, 32, 3) uint8 — {fix}.")
    if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "iu":
        raise DataError(f"{name!r}: labels are {labels.shape} {labels.dtype} for {len(images)} images — {fix}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{name!r}: labels span {labels.min()}..{labels.max()}, expected 0..9 — {fix}.")
    return images, labels.astype(np.int32)


def _join(batches, test):
    x_train = np.concatenate([b[0] for b in batches])
    y_train = np.concatenate([b[1] for b in batches])
    return x_train, y_train, test[0], test[1]


def _read_folder(d: Path):
    batches = []
    for fname in (*TRAIN_FILES, TEST_FILE):
        f = d / fname
        if not f.is_file():
            raise DataError(f"CIFAR-10 folder {str(d)!r} lacks {fname} — extract {ARCHIVE_NAME} again "
                            f"(tar -xzf {ARCHIVE_NAME} -C {str(d.parent)!r}), or pass the archive itself")
        batches.append(_decode_batch(f.read_bytes(), str(f)))
    return _join(batches[:-1], batches[-1])


def _read_archive(src, label: str | None = None):
    """Read the batches from a .tar.gz given as a path or a binary file object."""
    label = label or str(src)
    wanted = (*TRAIN_FILES, TEST_FILE)
    found = {}
    try:
        tar = tarfile.open(src if isinstance(src, Path) else None, "r:*",
                           fileobj=None if isinstance(src, Path) else src)
        with tar:
            for member in tar:  # stream order: one pass over the gzip data
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in found:
                    raw = tar.extractfile(member).read()
                    found[base] = _decode_batch(raw, f"{label}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(
            f"truncated or corrupt archive {label!r} ({type(e).__name__}: {' '.join(str(e).split())}) — "
            f"delete it and download {ARCHIVE_NAME} again from {CIFAR10_URL}."
        ) from e
    missing = [w for w in wanted if w not in found]
    if missing:
        raise DataError(f"archive {label!r} lacks {', '.join(missing)} — delete it and download {ARCHIVE_NAME} "
                        f"again from {CIFAR10_URL}.")
    return _join([found[f] for f in TRAIN_FILES], found[TEST_FILE])


def _read_npz(p: Path):
    fix = f"delete {str(p)!r} (it is rebuilt from the archive or folder next to it)"
    try:
        with np.load(p, allow_pickle=False) as z:
            x_train, y_train, x_test, y_test = (z[k] for k in _KEYS)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"corrupt CIFAR-10 cache {str(p)!r} ({type(e).__name__}: {e}) — {fix}.") from e
    x_train, y_train = _check(x_train, y_train, f"{p}:train", fix)
    x_test, y_test = _check(x_test, y_test, f"{p}:test", fix)
    return x_train, y_train, x_test, y_test


def _write_cache(cache: Path, arrays) -> None:
    """Write the npz cache atomically (temp file + os.replace); warn on failure."""
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(dir=cache.parent, prefix=".cifar10-", suffix=".npz.tmp",
                                         delete=False) as f:
            tmp = f.name
            np.savez(f, **dict(zip(_KEYS, arrays)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, cache)
        tmp = None
    except OSError as e:
        warnings.warn(f"could not write CIFAR-10 cache {str(cache)!r} ({e}); continuing without it.")
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
