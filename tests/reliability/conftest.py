"""Private PostgreSQL servers and a packet-dropping port for the fault tests.

The shared server on 5432 serves every other test (and other people's runs), so the chaos
and outage tests never touch it: the module-scoped ``private_pg`` runs ``initdb`` into a temp
dir (as the ``postgres`` user when we are root: initdb refuses root), starts ``postgres`` on a
free port with its socket in that dir and trust auth, and stops it at teardown.
``password_pg`` is the same with scram-sha-256 password auth over TCP (every other server
here trusts any password, so a wrong one could not be tried). ``blackhole_port`` is a port
whose SYNs the kernel drops, like a firewalled or vanished host.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A TCP port nobody listens on right now (closed again before it is returned)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrivatePostgres:
    """One throw-away server. ``url(db)`` gives a SQLAlchemy URL to database ``db``."""

    bin_dir: Path
    data_dir: Path
    port: int
    log: Path
    password: str | None = None  # the superuser's, when TCP connections need one

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200")
        self._ctl("-o", opts, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def restart(self) -> None:
        # `pg_ctl restart` = a fast stop (checkpoint: committed WAL is flushed) + a start;
        # done as two calls so the start gets the log file again (else the server keeps
        # our stdout pipe open).
        self.stop()
        self.start()

    def admin(self):
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                password=self.password, dbname="postgres", connect_timeout=5)
        conn.autocommit = True
        return conn

    def new_database(self) -> str:
        name = f"rel_{uuid.uuid4().hex[:10]}"
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def url(self, db: str, password: str | None = None) -> str:
        password = password or self.password
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql+psycopg2://{auth}@127.0.0.1:{self.port}/{db}"


def _private_server(password: str | None = None):
    """initdb + start a server (trust auth, or scram-sha-256 over TCP with ``password`` for
    the superuser); yields it and removes it afterwards."""
    bin_dir = _pg_bin()
    if bin_dir is None:  # pragma: no cover - .ci/run installs PostgreSQL
        pytest.fail("initdb not found: install postgresql (see INFRA.md)")
    root = Path(tempfile.mkdtemp(prefix="psy-pg-"))
    data = root / "data"
    data.mkdir()
    auth = ["-A", "trust"]
    if password:
        (root / "pwfile").write_text(password + "\n")
        auth = ["--auth-local", "trust", "--auth-host", "scram-sha-256",
                f"--pwfile={root / 'pwfile'}"]
    if os.geteuid() == 0:
        for path in (root, data, *root.glob("pwfile")):
            shutil.chown(path, "postgres", "postgres")
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", *auth,
              "--no-sync", "-E", "UTF8"]
    if os.geteuid() == 0:
        initdb = ["runuser", "-u", "postgres", "--", *initdb]
    subprocess.run(initdb, check=True, capture_output=True, timeout=120)
    pg = PrivatePostgres(bin_dir, data, free_port(), root / "server.log", password)
    if os.geteuid() == 0:
        pg.log.touch()
        shutil.chown(pg.log, "postgres", "postgres")
    pg.start()
    yield pg
    with contextlib.suppress(subprocess.CalledProcessError):  # a test may have stopped it
        pg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg():
    """A running private PostgreSQL (trust auth) for this test module, stopped afterwards."""
    yield from _private_server()


@pytest.fixture(scope="module")
def password_pg():
    """A running private PostgreSQL whose TCP logins need the password ``pg.password``."""
    yield from _private_server(password="right-" + uuid.uuid4().hex[:12])


@pytest.fixture
def blackhole_port():
    """A port on 127.0.0.1 that drops every new connection attempt, as a host behind a
    firewall that drops packets (or a vanished one) does: the client hears nothing until its
    own timeout, where a closed port answers at once.

    How: a listening socket with a backlog of 0 whose accept queue is filled and never
    accepted; Linux then drops the SYNs. (An outside address such as 10.255.255.1 is not
    used: sandboxes and CI runners often answer every outside address through a proxy.)
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in (*fillers, server):
        sock.close()
