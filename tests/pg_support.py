"""A private PostgreSQL server for tests: initdb in a temporary folder, loopback only.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it); nothing of
the machine's own clusters is used. initdb and the server refuse to run as root, so as root
they run as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.ports import free_port

#: Set (by ``.ci/run``) to make a missing PostgreSQL a failure instead of a skip.
REQUIRE_ENV = "SEDTUNE_REQUIRE_POSTGRES"


def pg_bin() -> str | None:
    """The folder of initdb/pg_ctl (newest Debian version first), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return os.path.dirname(found[0])
    which = shutil.which("initdb")
    return os.path.dirname(which) if which else None


@dataclass
class PgServer:
    """A running server: ``url(db)`` gives a SQLAlchemy URL (psycopg 3, trust auth)."""

    port: int
    user: str

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test (dropped afterwards); yields its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """Start a throw-away server on a free loopback port; stop it and delete its files after.

    Raises:
        FileNotFoundError: PostgreSQL's server binaries are not installed.
        RuntimeError: initdb or pg_ctl failed (with their error output).
    """
    bindir = pg_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    user = "postgres" if as_root else pwd.getpwuid(os.geteuid()).pw_name
    root = tempfile.mkdtemp(prefix="sedtune-pg-")  # under /tmp: reachable by the postgres user
    data = os.path.join(root, "data")

    def run(*args: str) -> None:
        proc = subprocess.run([*run_as, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{os.path.basename(args[0])} failed: {proc.stderr.strip()[-2000:]}")

    try:
        if as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
        port = free_port()
        run(f"{bindir}/initdb", "-D", data, "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -w: returns once the server accepts connections.
        run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "server.log"), "-o", opts, "-w", "-t",
            "60", "start")
        yield PgServer(port, user)
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
