"""A throw-away PostgreSQL server for the tests, from the machine's own packages (Debian's
``postgresql``: ``/usr/lib/postgresql/<version>/bin``; ``.ci/run`` installs it where missing).

:func:`start` runs ``initdb`` into a temporary folder as an unprivileged user (``postgres`` when the
tests run as root), starts the server with ``pg_ctl`` on a free port of 127.0.0.1 (its socket in the
same folder), creates a login user with a password and a database it owns, and returns a
:class:`Server` whose ``url`` is ``postgresql://USER:PASSWORD@127.0.0.1:PORT/DB``; ``stop()`` stops
it and removes the folder. Anything that keeps a server from starting is :class:`Unavailable` with
the reason (the fixture skips on it, or fails when ``CI=true``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD, DATABASE = "sweeper", "sweep-pw-7f3a", "sweeps"


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here (the message says why and how to get one)."""


def bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: the newest ``/usr/lib/postgresql/*/bin``, else the
    one on PATH.

    Raises:
      Unavailable: none found."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl) — apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server: ``url`` (the test user's), ``port``, ``datadir`` (the temporary folder)."""

    url: str
    port: int
    datadir: Path
    _ctl: list

    def admin_url(self, database: str = "postgres") -> str:
        """A superuser URL over the folder's unix socket (trusted, no password)."""
        return f"postgresql://pgadmin@/{database}?host={self.datadir / 'socket'}&port={self.port}"

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and remove its folder."""
        subprocess.run([*self._ctl, "-D", str(self.datadir / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.datadir, ignore_errors=True)


def _run(cmd, as_user, what, timeout=120):
    proc = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise Unavailable(f"{what} failed (exit {proc.returncode}): {' '.join((proc.stderr or proc.stdout).split())[:400]}")
    return proc


def start() -> Server:
    """Start a server; see the module docstring.

    Raises:
      Unavailable: no binaries, no unprivileged user to run it as, or initdb/pg_ctl/psql failed."""
    bins = bindir()
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and no user 'postgres' to run the server as — "
                              "apt-get install postgresql creates it") from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise Unavailable("running as root without runuser (util-linux) to start the server as 'postgres'")
        as_user = [runuser, "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="speedrun-pg-"))
    try:
        (tmp / "socket").mkdir()
        if as_user:
            shutil.chown(tmp, "postgres")
            shutil.chown(tmp / "socket", "postgres")
        data = tmp / "data"
        _run([str(bins / "initdb"), "-D", str(data), "-U", "pgadmin", "--auth-local=trust",
              "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C"], as_user, "initdb")
        ctl = [*as_user, str(bins / "pg_ctl")]
        for attempt in range(3):  # a port taken between choosing and binding: choose again
            port = _free_port()
            opts = (f"-p {port} -c listen_addresses=127.0.0.1 -k {tmp / 'socket'} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            proc = subprocess.run([*ctl, "-D", str(data), "-o", opts, "-l", str(tmp / "server.log"), "-w", "-t", "60",
                                   "start"], capture_output=True, text=True, timeout=90)
            if proc.returncode == 0:
                break
        else:
            log = (tmp / "server.log").read_text()[-400:] if (tmp / "server.log").exists() else proc.stderr
            raise Unavailable(f"pg_ctl start failed: {' '.join(log.split())}")
        server = Server(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}", port, tmp, ctl)
        psql = [str(bins / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(tmp / "socket"), "-p", str(port),
                "-U", "pgadmin", "-d", "postgres"]
        try:
            _run([*psql, "-c", f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"], as_user, "CREATE ROLE")
            _run([*psql, "-c", f"CREATE DATABASE {DATABASE} OWNER {USER}"], as_user, "CREATE DATABASE")
        except BaseException:
            server.stop()
            raise
        return server
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
