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
"""

from __future__ import annotations

import gzip
import hashlib
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

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# Real CIFAR-10 subset shipped with the package (5170 train / 1017 test rows).
SAMPLE_ARCHIVE = Path(__file__).parent / "sample" / "cifar-10-python-subset.tar.gz"
SAMPLE_SHA256 = "015577e57352f2a1285c646defaad2aea01e109a0a037bfa59c46c6d3214d354"
# Per-channel RGB mean / std of the training set in pixel units (0..255),
# the values used by D. Page's cifar10-fast.
CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)

ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
CACHE_NAME = "cifar10.npz"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
_KEYS = ("x_train", "y_train", "x_test", "y_test")
_ACCEPTED = (
    "accepted values: 'sample' (bundled subset), a cifar-10-python.tar.gz archive, "
    "a cifar-10-batches-py folder or a folder containing it or the archive, "
    "a cifar10.npz cache written by this loader, 'tfds:DIR', or None/'' "
    "for $SPEEDRUN_DATA or the default cache folder (downloads if empty)"
)


class DataError(RuntimeError):
    """CIFAR-10 could not be obtained: failed download, bad checksum, corrupt
    or malformed file. The message says what went wrong and how to fix it."""


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
          ``pip install 'speedrun[tfds]'``).
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
        archive/pickle/cache, wrong shapes or labels out of range.
      ImportError: ``"tfds:..."`` without tensorflow-datasets installed.
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
        raise DataNotFoundError(f"CIFAR-10 path {spec!r} does not exist; {_ACCEPTED}.")
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
            f"{FOLDER_NAME}/ and {ARCHIVE_NAME}); {_ACCEPTED}."
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
        f"Download {ARCHIVE_NAME} (md5 {md5}) from {url} by hand and put it in "
        f"{str(d)!r}, or set SPEEDRUN_DATA to a folder holding it, or pass "
        f"--config.data.path=... (use 'sample' for the bundled subset)."
    )
    downloader = pooch.HTTPDownloader(timeout=60) if url.startswith(("http:", "https:")) else None
    try:
        fname = pooch.retrieve(url, known_hash=f"md5:{md5}", fname=ARCHIVE_NAME,
                               path=d, downloader=downloader)
    except requests.RequestException as e:
        raise DataError(f"downloading CIFAR-10 from {url} failed ({e}). {hint}") from e
    except ValueError as e:  # pooch's hash mismatch
        raise DataError(
            f"checksum mismatch for {url}: expected md5 {md5}; {e} "
            f"Delete {str(d / ARCHIVE_NAME)!r} if present and retry. {hint}"
        ) from e
    except OSError as e:
        raise DataError(f"downloading CIFAR-10 into {str(d)!r} failed ({e}). {hint}") from e
    return Path(fname)


# ---------------------------------------------------------------- reading

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
    fix = f"delete {name!r} (and any {CACHE_NAME}) and re-download/re-extract it"
    try:
        d = _NumpyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ...
        raise DataError(f"corrupt CIFAR-10 pickle {name!r} ({type(e).__name__}: {e}); {fix}.") from e
    if not isinstance(d, dict):
        raise DataError(f"CIFAR-10 pickle {name!r} is not a dict; {fix}.")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"CIFAR-10 pickle {name!r} lacks 'data'/'labels' (keys {sorted(d)}); {fix}.")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"CIFAR-10 pickle {name!r}: 'data' is {shape} {dtype}, expected (N, 3072) uint8; {fix}.")
    try:
        labels = np.asarray(d["labels"], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"CIFAR-10 pickle {name!r}: labels are not integers ({e}); {fix}.") from e
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _check(np.ascontiguousarray(images), labels, name, fix)


def _check(images, labels, name: str, fix: str):
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DataError(f"{name!r}: images are {images.shape} {images.dtype}, expected (N, 32, 32, 3) uint8; {fix}.")
    if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "iu":
        raise DataError(f"{name!r}: labels are {labels.shape} {labels.dtype} for {len(images)} images; {fix}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{name!r}: labels span {labels.min()}..{labels.max()}, expected 0..9; {fix}.")
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
            raise DataError(f"CIFAR-10 folder {str(d)!r} lacks {fname}; re-extract {ARCHIVE_NAME} there.")
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
            f"truncated or corrupt archive {label!r} ({type(e).__name__}: {e}); "
            f"delete it and download {ARCHIVE_NAME} again."
        ) from e
    missing = [w for w in wanted if w not in found]
    if missing:
        raise DataError(f"archive {label!r} lacks {', '.join(missing)}; delete it and download {ARCHIVE_NAME} again.")
    return _join([found[f] for f in TRAIN_FILES], found[TEST_FILE])


def _load_sample():
    if not SAMPLE_ARCHIVE.is_file():
        raise DataNotFoundError(f"bundled sample {str(SAMPLE_ARCHIVE)!r} is missing; reinstall speedrun.")
    raw = SAMPLE_ARCHIVE.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SAMPLE_SHA256:
        raise DataError(
            f"bundled sample {str(SAMPLE_ARCHIVE)!r} has sha256 {digest}, expected "
            f"{SAMPLE_SHA256}; restore it (git checkout / reinstall speedrun)."
        )
    return _read_archive(io.BytesIO(raw), label=str(SAMPLE_ARCHIVE))


def _read_npz(p: Path):
    fix = f"delete {str(p)!r} so it is rebuilt from the archive"
    try:
        with np.load(p, allow_pickle=False) as z:
            x_train, y_train, x_test, y_test = (z[k] for k in _KEYS)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"corrupt CIFAR-10 cache {str(p)!r} ({type(e).__name__}: {e}); {fix}.") from e
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


def _load_tfds(data_dir: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "path='tfds:DIR' needs tensorflow-datasets: pip install 'speedrun[tfds]'"
        ) from e
    out = []
    for split in ("train", "test"):
        try:
            ds = tfds.as_numpy(tfds.load("cifar10", split=split, data_dir=data_dir or None,
                                         batch_size=-1, download=False))
        except Exception as e:  # tfds raises assorted errors for unprepared dirs
            raise DataError(
                f"TFDS could not load cifar10/{split} from {data_dir!r} ({e}); prepare it with "
                f"`tfds build cifar10 --data_dir={data_dir}` or use another data path."
            ) from e
        out.extend(_check(np.asarray(ds["image"]), np.asarray(ds["label"]), f"tfds:{split}",
                          "re-prepare the TFDS cifar10 dataset"))
    return tuple(out)
