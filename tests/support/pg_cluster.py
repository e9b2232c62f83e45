"""Start and stop a throwaway PostgreSQL cluster for the test suite.

The cluster lives in a fresh temporary directory (data directory, socket
directory and server log), listens on a free loopback port with ``trust``
authentication, and runs with durability switched off for speed. ``stop()``
kills it and removes the directory.

``initdb`` refuses to run as root, so when the tests run as root (as CI does)
the temporary tree is handed to the ``postgres`` user and ``initdb``/``pg_ctl``
run through ``runuser -u postgres --``. Otherwise they run directly.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from types import TracebackType

import psycopg
from psycopg import sql

__all__ = [
    "PostgresCluster",
    "PostgresClusterError",
    "PostgresUnavailable",
    "find_postgres_bin",
    "start_cluster",
]

_SERVICE_USER = "postgres"
_SUPERUSER = "postgres"
_HOST = "127.0.0.1"
_START_ATTEMPTS = 3
_LOG_TAIL_LINES = 40


class PostgresUnavailable(Exception):
    """The PostgreSQL server binaries (or the means to run them) are missing."""


class PostgresClusterError(RuntimeError):
    """The binaries exist but the cluster could not be initialised or started."""


def _version_key(path: pathlib.Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> numeric key; non-numeric sorts first.
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_postgres_bin() -> pathlib.Path | None:
    """Return the directory holding ``initdb`` and ``pg_ctl``, or ``None``.

    Prefers the newest ``/usr/lib/postgresql/*/bin`` (Debian layout), then
    ``pg_config --bindir``.
    """
    candidates = [
        p
        for p in pathlib.Path("/usr/lib/postgresql").glob("*/bin")
        if (p / "initdb").is_file() and (p / "pg_ctl").is_file()
    ]
    if candidates:
        return max(candidates, key=_version_key)

    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
        bindir = pathlib.Path(out)
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: pathlib.Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


def _chown_tree(root: pathlib.Path, user: str) -> None:
    shutil.chown(root, user=user, group=user)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            shutil.chown(os.path.join(dirpath, name), user=user, group=user)


class PostgresCluster:
    """A running throwaway cluster. Create it with :func:`start_cluster`."""

    url: str

    def __init__(
        self,
        *,
        bindir: pathlib.Path,
        root: pathlib.Path,
        port: int,
        as_service_user: bool,
    ) -> None:
        self.bindir = bindir
        self.root = root
        self.datadir = root / "data"
        self.sockdir = root / "sock"
        self.logfile = root / "postgres.log"
        self.port = port
        self.host = _HOST
        self._as_service_user = as_service_user
        self._stopped = False
        self.url = self.url_for("postgres")
        self._server_version: int | None = None

    # -- helpers ----------------------------------------------------------

    def url_for(self, dbname: str) -> str:
        quoted = urllib.parse.quote(dbname, safe="")
        return f"postgresql+psycopg://{_SUPERUSER}@{self.host}:{self.port}/{quoted}"

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=_SUPERUSER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    # -- public API -------------------------------------------------------

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (optionally from ``template``); return its URL."""
        with self._connect() as conn:
            if template is None:
                stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            else:
                stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
                if self._version(conn) >= 150000:
                    # PostgreSQL 15's default (WAL_LOG) writes every page of the copy to the
                    # WAL; copying the files is cheaper for a small template, and durability
                    # is off here anyway (measured on the seeded template: ~190 ms of server
                    # CPU per database instead of ~280 ms).
                    stmt = sql.SQL("{} STRATEGY FILE_COPY").format(stmt)
            conn.execute(stmt)
        return self.url_for(name)

    def _version(self, conn: psycopg.Connection[tuple[object, ...]]) -> int:
        if self._server_version is None:
            self._server_version = conn.info.server_version
        return self._server_version

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, terminating its connections."""
        stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with self._connect() as conn:
            conn.execute(stmt)

    def stop(self) -> None:
        """Stop the server immediately and remove its files. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _run(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                as_service_user=self._as_service_user,
                cwd=self.root,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _run(
    argv: list[str],
    *,
    as_service_user: bool,
    cwd: pathlib.Path,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    if as_service_user:
        argv = ["runuser", "-u", _SERVICE_USER, "--", *argv]
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n{(proc.stdout + proc.stderr).strip()}"


def _initdb(bindir: pathlib.Path, root: pathlib.Path, as_service_user: bool) -> None:
    datadir = root / "data"
    base = [
        str(bindir / "initdb"),
        "-D",
        str(datadir),
        "-A",
        "trust",
        "-U",
        _SUPERUSER,
        "--encoding=UTF8",
        "--no-sync",
    ]
    first = _run([*base, "--locale=C.UTF-8"], as_service_user=as_service_user, cwd=root)
    if first.returncode == 0:
        return
    shutil.rmtree(datadir, ignore_errors=True)
    second = _run([*base, "--no-locale"], as_service_user=as_service_user, cwd=root)
    if second.returncode == 0:
        return
    raise PostgresClusterError(
        "initdb failed.\n"
        f"With --locale=C.UTF-8: {_describe(first)}\n"
        f"With --no-locale: {_describe(second)}"
    )


def _pg_ctl_start(
    bindir: pathlib.Path, root: pathlib.Path, port: int, as_service_user: bool
) -> subprocess.CompletedProcess[str]:
    options = (
        f"-F -p {port} -k {root / 'sock'} -c listen_addresses={_HOST}"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    return _run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "-l",
            str(root / "postgres.log"),
            "start",
        ],
        as_service_user=as_service_user,
        cwd=root,
        timeout=90,
    )


def start_cluster() -> PostgresCluster:
    """Initialise and start a throwaway cluster on a free loopback port.

    Raises :class:`PostgresUnavailable` if the server binaries (or, as root,
    ``runuser``/the ``postgres`` user) are missing, and
    :class:`PostgresClusterError` if ``initdb`` or ``pg_ctl start`` fails.
    """
    bindir = find_postgres_bin()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: looked in "
            "/usr/lib/postgresql/*/bin and `pg_config --bindir`. "
            "Install them, e.g. `apt-get install postgresql`."
        )

    as_service_user = os.geteuid() == 0
    if as_service_user:
        if shutil.which("runuser") is None:
            raise PostgresUnavailable(
                "Running as root, but `runuser` is missing (needed to run initdb "
                f"as the {_SERVICE_USER!r} user; it is part of util-linux)."
            )
        try:
            pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"Running as root, but there is no {_SERVICE_USER!r} user to run "
                "initdb as (initdb refuses to run as root). Install the "
                "`postgresql` package or create the user."
            ) from None

    root = pathlib.Path(tempfile.mkdtemp(prefix="cgt-pg-"))
    try:
        (root / "sock").mkdir()
        if as_service_user:
            _chown_tree(root, _SERVICE_USER)
            probe = _run(["test", "-w", str(root)], as_service_user=True, cwd=pathlib.Path("/"))
            if probe.returncode != 0:
                raise PostgresClusterError(
                    f"The {_SERVICE_USER!r} user cannot write to {root}; is a parent "
                    "directory (check TMPDIR) closed to other users?"
                )

        _initdb(bindir, root, as_service_user)

        failure = ""
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            proc = _pg_ctl_start(bindir, root, port, as_service_user)
            if proc.returncode == 0:
                return PostgresCluster(
                    bindir=bindir, root=root, port=port, as_service_user=as_service_user
                )
            log_tail = _tail(root / "postgres.log")
            failure = f"pg_ctl start failed ({_describe(proc)})\nServer log tail:\n{log_tail}"
            # Another process may have taken the port between probe and start.
            if "could not bind" not in log_tail and "already in use" not in log_tail:
                break
        raise PostgresClusterError(failure)
    except BaseException:
        # Best effort: make sure a half-started server does not outlive us.
        pidfile_exists = (root / "data" / "postmaster.pid").exists()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if pidfile_exists:
                _run(
                    [str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                    as_service_user=as_service_user,
                    cwd=root,
                    timeout=60,
                )
        shutil.rmtree(root, ignore_errors=True)
        raise
