"""The study's storage: an Optuna RDB storage at a URL (SQLite file or database server), heartbeats.

``sqlite:///FILE`` (the default, one machine) or a server every worker reaches —
``postgresql://USER:PASSWORD@HOST[:PORT]/DB`` (driver psycopg 3, SQLAlchemy 2.1's default:
``pip install 'speedrun[postgres]'``; ``postgresql+psycopg2://`` for psycopg2) or ``mysql+pymysql://...``. Every running trial records a
heartbeat every ``grace_period / 6`` seconds (``RDBStorage(heartbeat_interval=, grace_period=)``);
a trial without one for ``grace_period`` seconds is failed by ``optuna.storages.fail_stale_trials``
and queued again by Optuna's ``RetryHeartbeatStaleTrialCallback`` (``RetryFailedTrialCallback``
before Optuna 4.9). A URL that does not open is a :class:`speedrun.errors.ConfigError` naming the URL
with its password masked and the fix. docs/sweeps.md: the many-machine set-up.
"""

from __future__ import annotations

import inspect
import re
import time
import warnings

import optuna
import sqlalchemy.engine
import sqlalchemy.exc

from speedrun.errors import ConfigError

#: Default seconds without a heartbeat before another worker fails a running trial (``--grace_period``).
GRACE_S = 180
#: Heartbeats per grace period: a trial is failed after this many beats in a row are missing.
BEATS_PER_GRACE = 6
DOCS = "docs/sweeps.md"
#: The pip package of each database driver SQLAlchemy imports.
PIP = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "pymysql", "MySQLdb": "mysqlclient"}


def heartbeat_interval(grace_period: int) -> int:
    """Seconds between a running trial's heartbeats for ``grace_period`` seconds of grace (>= 1)."""
    return max(1, int(grace_period) // BEATS_PER_GRACE)


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``postgresql://u:***@host/db``), for messages
    and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: mask what looks like USER:PASSWORD@
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _retry_callback():
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls()  # max_retry None: a trial is re-queued each time its worker is lost, as a killed one here


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # seconds a writer waits for another's lock
    # a server: give up on an unreachable host after 10 s; reconnect after an idle connection was dropped
    return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}


def _fix(url: str, err: BaseException) -> str:
    """The message's ``<what> — <fix>`` for an error opening ``url``."""
    shown = masked(url)
    if isinstance(err, (sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError)):
        return (f"--storage {shown!r} is not a storage URL SQLAlchemy knows ({' '.join(str(err).split())}) — "
                "pass e.g. --storage=sqlite:///sweep.db or --storage=postgresql://USER:PASSWORD@HOST/DB")
    if isinstance(err, ImportError):
        cause = err  # Optuna re-raises the driver's ImportError as its own, without a name
        while cause.name is None and isinstance(cause.__cause__ or cause.__context__, ImportError):
            cause = cause.__cause__ or cause.__context__
        name = cause.name or str(err)
        pip = PIP.get(name.split(".")[0], name)
        return (f"--storage {shown!r} needs the database driver {name!r}, which is not installed — pip install "
                f"{pip} (or, in the speedrun checkout: pip install -e '.[postgres]' for PostgreSQL)")
    text = " ".join(str(getattr(err, "orig", None) or err).split())
    if url.startswith("sqlite"):
        return (f"--storage {shown!r} does not open ({type(err).__name__}: {text}) — pass e.g. "
                "--storage=sqlite:///sweep.db in a folder that exists and you can write")
    user = sqlalchemy.engine.make_url(url).username or "USER"
    database = sqlalchemy.engine.make_url(url).database or "DB"
    if "password authentication failed" in text or "password" in text and "supplied" in text:
        fix = (f"put the password of {user!r} in the URL (postgresql://{user}:PASSWORD@HOST/{database}), or set it "
               f"on the server (ALTER ROLE {user} PASSWORD '...'; a new user: createuser --pwprompt {user})")
    elif "database" in text and "does not exist" in text:
        fix = f"create it on the server: createdb --owner {user} {database} ({DOCS})"
    elif "role" in text and "does not exist" in text:
        fix = f"create the user on the server: createuser --pwprompt {user} ({DOCS})"
    else:
        fix = (f"check the URL's host and port, and that the server runs and accepts connections from this "
               f"machine (listen_addresses, pg_hba.conf: {DOCS})")
    return f"--storage {shown!r} does not connect ({text}) — {fix}"


def open_storage(url: str, grace_period: int = GRACE_S) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage at ``url`` with heartbeats (:func:`heartbeat_interval`, ``grace_period``
    seconds) whose stale trials Optuna queues again. Workers that create the tables at the same
    moment are retried (up to 5 times).

    Raises:
      ConfigError: a URL that does not open — unknown scheme, driver not installed, host unreachable,
        wrong password, missing database, unwritable SQLite file — with the URL's password masked.
    """
    params = inspect.signature(optuna.storages.RDBStorage).parameters  # Optuna < 4.9: failed_trial_callback
    callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    sqlite = url.startswith("sqlite")
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                                  heartbeat_interval=heartbeat_interval(grace_period),
                                                  grace_period=int(grace_period), **{callback: _retry_callback()})
        except Exception as err:
            # another worker creating the tables (or, on SQLite, holding the lock) at the same moment
            racing = isinstance(err, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) or (
                sqlite and isinstance(err, sqlalchemy.exc.OperationalError)
                and ("locked" in str(err) or "already exists" in str(err)))
            if racing and attempt < 4:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ConfigError(_fix(url, err)) from err
    raise AssertionError("unreachable")


def backend(storage):
    """The RDB storage under Optuna's cache wrapper (``study._storage``), or ``storage`` itself."""
    return getattr(storage, "_backend", storage)


def grace_of(storage) -> int:
    """The grace period (seconds) ``storage`` was opened with, :data:`GRACE_S` when it has none."""
    return int(getattr(backend(storage), "grace_period", None) or GRACE_S)


def is_sqlite(storage) -> bool:
    """Whether ``storage`` is a SQLite file (its workers share one machine's process table)."""
    return str(getattr(backend(storage), "url", "")).startswith("sqlite")
