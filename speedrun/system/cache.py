"""The persistent compilation cache: JAX's ``jax_compilation_cache_dir``, so that a second run of a
record loads its executables from disk instead of compiling them again.

The command line turns it on by default (:func:`speedrun.cli.main` calls :func:`enable` before
anything compiles); ``import speedrun`` changes no JAX setting, so a library user who wants it calls
``speedrun.system.cache.enable()`` (or ``enable("/some/dir")``) first. The folder, in order of
precedence: the ``--cache_dir DIR`` flag, ``$SPEEDRUN_CACHE_DIR``, then
``platformdirs.user_cache_dir("speedrun")/jax`` (``~/.cache/speedrun/jax`` on Linux). ``off`` (or
an empty value) turns the cache off, JAX's own included. The folder is never pruned (no size cap:
JAX's cap needs the ``filelock`` package); delete it at any time. Everything in it is trusted code
for JAX: do not share the folder with users you do not trust (JAX's ``set_cache_dir`` warning).

Thresholds: JAX caches only executables that took at least 1 s to compile by default; :func:`enable`
sets ``jax_persistent_cache_min_compile_time_secs`` to 0 and
``jax_persistent_cache_min_entry_size_bytes`` to -1 (no size limit), so every executable of a run is
written, small ones included. On GPUs JAX also keeps XLA's per-fusion autotuning results under the
folder (``jax_persistent_cache_enable_xla_caches``, JAX's default).

Hit or miss: :class:`Watch` listens to the ``jax.monitoring`` events that JAX records per compiled
computation (``/jax/compilation_cache/compile_requests_use_cache``, ``.../cache_hits``,
``.../cache_misses`` — the last one only when an entry is written — and
``/jax/core/compile/backend_compile_duration`` with the function's name; ``jax/_src/compiler.py``,
``jax/_src/compilation_cache.py``), so the log states what JAX did, not a guess from timings: where
a JAX version or backend does not use the cache, the status says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

ENV_VAR = "SPEEDRUN_CACHE_DIR"
OFF_VALUES = ("off", "")

_REQUEST = "/jax/compilation_cache/compile_requests_use_cache"
_HIT = "/jax/compilation_cache/cache_hits"
_WRITE = "/jax/compilation_cache/cache_misses"  # recorded when an entry is written (jax/_src/compilation_cache.py)
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"
_COMPILED = "/jax/core/compile/backend_compile_duration"  # one per computation, hit or not (pxla.py)


def default_dir() -> Path:
    """``platformdirs.user_cache_dir("speedrun") / "jax"``: the per-user cache folder of the OS."""
    import platformdirs  # noqa: PLC0415

    return Path(platformdirs.user_cache_dir("speedrun")) / "jax"


def resolve(flag: str | None = None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The cache folder: ``flag`` if given, else ``environ[ENV_VAR]`` if set, else
    :func:`default_dir`; ``None`` when the chosen value is ``off`` or empty (case and surrounding
    blanks ignored). ``~`` is expanded."""
    value = flag if flag is not None else environ.get(ENV_VAR)
    if value is None:
        return default_dir()
    if value.strip().lower() in OFF_VALUES:
        return None
    return Path(value.strip()).expanduser()


def enable(path: str | os.PathLike | None = None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Turn JAX's persistent compilation cache on in the folder :func:`resolve` gives for ``path``
    (a folder, ``"off"``, or ``None`` for ``$SPEEDRUN_CACHE_DIR`` / the default), or off; return the
    folder (created if missing), or ``None`` when off. Call it before the computations whose
    executables should be cached; calling it again with another folder switches folders.

    Sets ``jax_enable_compilation_cache``, ``jax_compilation_cache_dir``,
    ``jax_persistent_cache_min_compile_time_secs`` (0) and
    ``jax_persistent_cache_min_entry_size_bytes`` (-1) in ``jax.config`` — process-wide JAX state.

    Raises:
      speedrun.errors.ConfigError: the folder cannot be created or written.
    """
    import jax  # noqa: PLC0415
    from jax.experimental.compilation_cache import compilation_cache  # noqa: PLC0415

    from speedrun.errors import ConfigError  # noqa: PLC0415

    folder = resolve(None if path is None else str(path), environ)
    current = (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir)
    if folder is None:
        if current[0]:
            compilation_cache.reset_cache()  # JAX decides once per process whether it uses the cache
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"the compilation cache folder {str(folder)!r} is not writable ({err.strerror or err}) "
                          f"— pass --cache_dir DIR (or {ENV_VAR}=DIR) with a folder you can write, or "
                          f"--cache_dir off to run without the cache") from None
    if current != (True, str(folder)):
        compilation_cache.reset_cache()  # JAX opens its folder, and decides to use it, once: switching resets
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder


def active_dir() -> str | None:
    """The folder JAX's persistent cache uses now, or ``None`` when it is off (no folder set, or
    ``jax_enable_compilation_cache`` false)."""
    import jax  # noqa: PLC0415

    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir or None


class Watch:
    """What the persistent cache did for each computation compiled while active (a context manager).

    Attributes:
      folder: :func:`active_dir` when the watch started.
      compiles: ``[(function name, status, seconds saved or None)]`` in compile order, the name as
        JAX records it (``"jit(epoch)"``); status ``"hit"`` (loaded from the cache), ``"miss"``
        (compiled and written), ``"not written"`` (compiled; JAX looked the cache up but did not write
        the entry: a threshold, host callbacks or a non-zero process), ``"not used"`` (JAX did not use
        the cache for it: off, or not supported for this backend by this JAX), ``"off"`` (no folder).
    """

    def __init__(self) -> None:
        self.folder: str | None = None
        self.compiles: list[tuple[str, str, float | None]] = []
        self._pending: dict[str, Any] = {}

    def _event(self, event: str, **kwargs: Any) -> None:  # noqa: ARG002
        if event in (_REQUEST, _HIT, _WRITE):
            self._pending[event] = True

    def _duration(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == _SAVED:
            self._pending[_SAVED] = duration
        elif event == _COMPILED:
            p, self._pending = self._pending, {}
            status = ("off" if self.folder is None else "hit" if p.get(_HIT) else "miss" if p.get(_WRITE)
                      else "not written" if p.get(_REQUEST) else "not used")
            self.compiles.append((str(kwargs.get("fun_name", "?")), status, p.get(_SAVED)))

    def __enter__(self) -> "Watch":
        import jax  # noqa: PLC0415

        self.folder = active_dir()
        jax.monitoring.register_event_listener(self._event)
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        return self

    def __exit__(self, *exc: Any) -> None:
        import jax  # noqa: PLC0415

        jax.monitoring.unregister_event_listener(self._event)
        jax.monitoring.unregister_event_duration_listener(self._duration)

    def status(self, name: str) -> str | None:
        """The status of the last compile of function ``name`` (``"epoch"`` matches ``"jit(epoch)"``),
        or ``None`` if none was seen."""
        found = [s for n, s, _ in self.compiles if n in (name, f"jit({name})")]
        return found[-1] if found else None

    def summary(self, main: str = "epoch") -> str:
        """One line for the run log: the folder, the status of ``main``'s executable, and the count
        of each status over every compile seen, e.g. ``"/home/u/.cache/speedrun/jax: epoch executable
        hit; 12 hit, 1 miss"``; ``"off"`` without a folder."""
        if self.folder is None:
            return f"off (--cache_dir off or {ENV_VAR}=off); every executable compiled"
        counts: dict[str, int] = {}
        for _, s, _ in self.compiles:
            counts[s] = counts.get(s, 0) + 1
        main_status = self.status(main) or "not compiled here"
        notes = {"not used": " (this JAX does not use the persistent cache for this backend)",
                 "not written": " (JAX did not write it: a threshold or host callbacks)"}
        return (f"{self.folder}: {main} executable {main_status}{notes.get(main_status, '')}; "
                + ", ".join(f"{n} {s}" for s, n in counts.items()))
