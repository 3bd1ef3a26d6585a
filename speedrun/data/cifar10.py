"""Get CIFAR-10 into numpy arrays.

Source: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
2009, and the official "CIFAR-10 python version" archive
(https://www.cs.toronto.edu/~kriz/cifar.html). The archive holds the folder
``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5`` (train) and
``test_batch``: Python-2 pickles of a dict whose ``data`` is a ``(N, 3072)``
uint8 array (per row 1024 R, then 1024 G, then 1024 B values of a 32x32
row-major image) and whose ``labels`` is a list of N ints in 0..9. N is read
from each file (10000 in the official archive, fewer in the bundled subset).

Every loader returns ``(x_train, y_train, x_test, y_test)`` with images
``(N, 32, 32, 3) uint8`` (NHWC) and labels ``(N,) int32``. Nothing here ever
falls back to random data: a missing or damaged dataset raises
:class:`DataError` with a message naming the problem and the fix.

This module finds the data (path resolution, md5-checked download, the bundled
sample, TFDS); reading and verifying the archive, batches folder and npz cache
is :mod:`speedrun.data.archive`.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from speedrun.data.archive import NUM_CLASSES, TRAIN_FILES  # noqa: F401 (re-exported)
from speedrun.data.archive import (ARCHIVE_NAME, CACHE_NAME, CIFAR10_URL, FOLDER_NAME, TEST_FILE, DataError,
                                   _check, _read_archive, _read_folder, _read_npz, _write_cache)

CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# Real CIFAR-10 subset shipped with the package (5170 train / 1017 test rows).
SAMPLE_ARCHIVE = Path(__file__).parent / "sample" / "cifar-10-python-subset.tar.gz"
SAMPLE_SHA256 = "015577e57352f2a1285c646defaad2aea01e109a0a037bfa59c46c6d3214d354"
# Per-channel RGB mean / std of the training set in pixel units (0..255),
# the values used by D. Page's cifar10-fast.
CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)

_ACCEPTED = (
    "pass --config.data.path=sample (the bundled 'sample' subset) or the path of a cifar-10-python.tar.gz "
    "archive, a cifar-10-batches-py folder or a folder containing either, a cifar10.npz cache written by "
    "this loader, or 'tfds:DIR'; without data.path, $SPEEDRUN_DATA or the default cache folder is used "
    "(downloaded there if empty)"
)


class DataNotFoundError(DataError, FileNotFoundError):
    """The given dataset path does not exist or holds no CIFAR-10 files."""


def load_cifar10(path=None, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5):
    """Load CIFAR-10 (Krizhevsky 2009, official python archive) as numpy arrays.

    Args:
      path: where to find the data:
        * ``"sample"``: the bundled real subset (5170 train / 1017 test),
          sha256-verified and read straight from the archive (never cached).
        * a ``cifar-10-python.tar.gz`` archive file (any name), a
          ``cifar-10-batches-py`` folder, or a folder containing either.
        * a ``.npz`` cache written by this loader (keys x_train, y_train,
          x_test, y_test).
        * ``"tfds:DIR"``: a TFDS data dir with ``cifar10`` prepared (needs
          ``pip install tensorflow-datasets``; in the checkout
          ``pip install -e '.[tfds]'``).
        * ``None`` or ``""``: the folder ``$SPEEDRUN_DATA`` if set, else
          ``pooch.os_cache("speedrun")``; the official archive is downloaded
          there (md5-verified) when the folder holds no copy.
        After reading an archive or batches folder, ``cifar10.npz`` is written
        atomically into the data folder (the one holding the archive or the
        ``cifar-10-batches-py`` folder) and used on later calls while it is
        newer than its source; an unwritable folder only warns.
      url, md5: download location and expected md5 (used only when ``path``
        is None/'' and nothing is found locally).

    Returns:
      ``(x_train, y_train, x_test, y_test)``: images ``(N, 32, 32, 3) uint8``
      (NHWC, RGB), labels ``(N,) int32`` in 0..9.

    Raises:
      DataNotFoundError: ``path`` does not exist or holds no CIFAR-10 files.
      DataError: download failed, checksum mismatch, truncated or corrupt
        archive/pickle/cache, wrong shapes or labels out of range, or
        ``"tfds:..."`` without tensorflow-datasets installed.
    """
    if path is None or os.fspath(path) == "":
        return _load_data_folder(_default_folder(), url=url, md5=md5)
    spec = os.fspath(path)
    if spec == "sample":
        return _load_sample()
    if spec.startswith("tfds:"):
        return _load_tfds(spec[len("tfds:"):])
    p = Path(spec).expanduser()
    if not p.exists():
        raise DataNotFoundError(f"CIFAR-10 path {spec!r} does not exist — {_ACCEPTED}.")
    if p.is_file() and p.suffix == ".npz":
        return _read_npz(p)
    if p.is_file() and p.resolve() == SAMPLE_ARCHIVE.resolve():
        return _load_sample()  # never cache into the package folder
    if p.is_file():
        return _load_source(p)
    return _load_data_folder(p, url=None, md5=md5)


def dataset_name(x_train, x_test) -> str:
    """Name for result lines: ``"cifar10"`` when the arrays (any ``(N, ...)``
    arrays, e.g. the ``(N, 32, 32, 3) uint8`` images from
    :func:`load_cifar10`) have the full 50000 train / 10000 test rows,
    ``"cifar10-subset"`` otherwise. Raises nothing."""
    return "cifar10" if (len(x_train), len(x_test)) == (50000, 10000) else "cifar10-subset"


# ---------------------------------------------------------------- locating

def _default_folder() -> Path:
    env = os.environ.get("SPEEDRUN_DATA")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("speedrun"))


def _is_batches_dir(d: Path) -> bool:
    return d.is_dir() and (d / TEST_FILE).is_file()


def _find_source(d: Path) -> Path | None:
    """The raw source in folder ``d``: ``d`` itself if it is a batches folder,
    else ``d/cifar-10-batches-py``, else ``d/cifar-10-python.tar.gz``."""
    for cand in (d, d / FOLDER_NAME):
        if _is_batches_dir(cand):
            return cand
    return d / ARCHIVE_NAME if (d / ARCHIVE_NAME).is_file() else None


def _load_data_folder(d: Path, *, url: str | None, md5: str):
    """Read folder ``d``; download into it when ``url`` is given and it is empty."""
    src = _find_source(d)
    if src is not None:
        return _load_source(src)
    if (d / CACHE_NAME).is_file():
        return _read_npz(d / CACHE_NAME)
    if url is None:
        raise DataNotFoundError(
            f"no CIFAR-10 found in folder {str(d)!r} (looked for {CACHE_NAME}, "
            f"{FOLDER_NAME}/ and {ARCHIVE_NAME}) — {_ACCEPTED}."
        )
    return _load_source(_download(d, url, md5))


def _source_mtime(src: Path) -> float:
    if src.is_file():
        return src.stat().st_mtime
    return max(f.stat().st_mtime for f in src.iterdir() if f.is_file())


def _load_source(src: Path):
    """Read an archive or batches folder, using/writing the npz cache next to it."""
    cache = src.parent / CACHE_NAME
    if cache.is_file() and cache.stat().st_mtime >= _source_mtime(src):
        return _read_npz(cache)
    arrays = _read_archive(src) if src.is_file() else _read_folder(src)
    _write_cache(cache, arrays)
    return arrays


def _download(d: Path, url: str, md5: str) -> Path:
    import pooch
    import requests

    hint = (
        f"download it by hand (md5 {md5}): curl -L -o {str(d / ARCHIVE_NAME)!r} {url}; or set "
        f"SPEEDRUN_DATA to a folder holding {ARCHIVE_NAME}; or pass --config.data.path=sample for "
        "the bundled subset"
    )
    downloader = pooch.HTTPDownloader(timeout=60) if url.startswith(("http:", "https:")) else None
    try:
        fname = pooch.retrieve(url, known_hash=f"md5:{md5}", fname=ARCHIVE_NAME,
                               path=d, downloader=downloader)
    except requests.RequestException as e:
        raise DataError(f"downloading CIFAR-10 from {url} failed ({e}) — {hint}.") from e
    except ValueError as e:  # pooch's hash mismatch
        raise DataError(
            f"checksum mismatch for {url}: expected md5 {md5}; {e} — retry (the bad download was not "
            f"kept); if it fails again, {hint}."
        ) from e
    except OSError as e:
        raise DataError(f"downloading CIFAR-10 into {str(d)!r} failed ({e}) — set SPEEDRUN_DATA to a "
                        f"writable folder, or {hint}.") from e
    return Path(fname)


# ---------------------------------------------------------------- sample and TFDS

def _load_sample():
    if not SAMPLE_ARCHIVE.is_file():
        raise DataNotFoundError(f"bundled sample {str(SAMPLE_ARCHIVE)!r} is missing — restore it: git checkout -- "
                                "speedrun/data/sample (in the checkout), or reinstall speedrun.")
    raw = SAMPLE_ARCHIVE.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SAMPLE_SHA256:
        raise DataError(
            f"bundled sample {str(SAMPLE_ARCHIVE)!r} has sha256 {digest}, expected "
            f"{SAMPLE_SHA256} — restore it: git checkout -- speedrun/data/sample (in the checkout), or "
            "reinstall speedrun."
        )
    return _read_archive(io.BytesIO(raw), label=str(SAMPLE_ARCHIVE))


def _load_tfds(data_dir: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"data path 'tfds:{data_dir}' needs tensorflow-datasets, which is not installed — pip install "
            "tensorflow-datasets (or, in the speedrun checkout: pip install -e '.[tfds]')"
        ) from e
    out = []
    for split in ("train", "test"):
        try:
            ds = tfds.as_numpy(tfds.load("cifar10", split=split, data_dir=data_dir or None,
                                         batch_size=-1, download=False))
        except Exception as e:  # tfds raises assorted errors for unprepared dirs
            raise DataError(
                f"TFDS could not load cifar10/{split} from {data_dir!r} ({e}) — prepare it with "
                f"tfds build cifar10{f' --data_dir={data_dir}' if data_dir else ''}, or pass another "
                "--config.data.path"
            ) from e
        out.extend(_check(np.asarray(ds["image"]), np.asarray(ds["label"]), f"tfds:{split}",
                          "re-prepare the TFDS cifar10 dataset"))
    return tuple(out)
