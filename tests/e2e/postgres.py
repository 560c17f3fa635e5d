"""A throw-away PostgreSQL cluster for the real-Airflow tests: Airflow's LocalExecutor runs tasks in
parallel only on a metadata DB that takes parallel writers, which SQLite does not.

The cluster uses Debian's ``postgresql`` package (``.ci/run`` installs it with apt when it is
missing; GitHub's Ubuntu runners ship it). It lives in a fresh temporary directory, listens on a free
loopback port with trust authentication, keeps nothing durable (``fsync=off``) and is always stopped
and deleted at the end. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user (or ``$DATRIS_PG_USER``).

Use it through the session fixtures (re-exported by ``tests/e2e/conftest.py``): ``postgres_cluster``
(call ``postgres_cluster.new_database()`` for a fresh, empty database per Airflow stack) or
``postgres_url`` (the SQLAlchemy URL of the cluster's own empty ``airflow`` database); or directly::

    with PostgresCluster() as cluster:
        url = cluster.url  # postgresql+psycopg2://airflow@127.0.0.1:<port>/airflow
        other = cluster.new_database()  # postgresql+psycopg2://airflow@127.0.0.1:<port>/airflow_1

Set ``DATRIS_PG_BINDIR`` to use another PostgreSQL installation's ``bin`` folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

DATABASE = "airflow"
ROLE = "airflow"
# Room for every component's connection pool plus parallel task slots, with a second triggerer.
MAX_CONNECTIONS = 300
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed, or the cluster would not start."""


def find_bindir() -> Path:
    """The ``bin`` folder holding ``initdb``, ``pg_ctl`` and ``postgres``: ``$DATRIS_PG_BINDIR``, else the
    newest Debian/Ubuntu ``/usr/lib/postgresql/<version>/bin``, else whatever ``initdb`` is on PATH."""
    override = os.environ.get("DATRIS_PG_BINDIR")
    candidates = [Path(override)] if override else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p.parent.name))
    candidates.extend(reversed(versions))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresUnavailable(
        "PostgreSQL's server programs (initdb, pg_ctl) were not found: install them with "
        "`apt-get install -y postgresql`, or set DATRIS_PG_BINDIR to their folder"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One PostgreSQL server with one empty database, for the life of a ``with`` block (or
    :meth:`start` to :meth:`stop`)."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.port = free_port()
        self.root: Path | None = None
        self._started = False
        self._databases = 0
        self._run_as = self._server_user()

    @staticmethod
    def _server_user() -> pwd.struct_passwd | None:
        """Who runs the server: nobody else when not root; as root, a system user."""
        if os.geteuid() != 0:
            return None
        name = os.environ.get("DATRIS_PG_USER", "postgres")
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise PostgresUnavailable(
                f"PostgreSQL will not run as root and there is no {name!r} user: install the postgresql "
                "package (it creates one), or set DATRIS_PG_USER to an unprivileged user"
            ) from None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "the cluster is not started"
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "the cluster is not started"
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the cluster's ``airflow`` database (psycopg2 driver)."""
        return f"postgresql+psycopg2://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, program: str, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        command = [str(self.bindir / program), *args]
        run_as = self._run_as
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
            env={**os.environ, "LC_ALL": "C", "HOME": str(self.root)},
        )
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            raise PostgresUnavailable(
                f"{program} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log[-4000:]}"
            )

    def start(self) -> PostgresCluster:
        self.root = Path(tempfile.mkdtemp(prefix="datris-e2e-pg-"))
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data_dir), "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync")
            options = " ".join(
                [
                    f"-p {self.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={self.root}",
                    f"-c max_connections={MAX_CONNECTIONS}",
                    # Throw-away data: no durability work slows the test down.
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                ]
            )
            self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w", "start")
            self._started = True
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, DATABASE)
        except BaseException:
            self.stop()
            raise
        return self

    def new_database(self) -> str:
        """Create one more empty database and return its SQLAlchemy URL: each Airflow stack of a session
        gets a metadata DB of its own, with nothing left over from an earlier stack."""
        self._databases += 1
        name = f"{DATABASE}_{self._databases}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, name)
        return f"postgresql+psycopg2://{ROLE}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server (immediately: nothing is kept) and delete its files."""
        if self.root is None:
            return
        if self._started:
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=30)
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A running throw-away PostgreSQL cluster, stopped and deleted at the end of the session."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The SQLAlchemy URL of the session's throw-away PostgreSQL database."""
    return postgres_cluster.url
