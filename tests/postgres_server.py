"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, pg_ctl start on a free
loopback port, one new database per test. Run as the `postgres` user when the tests run as root (the
server refuses root). Nothing is skipped: if PostgreSQL cannot start, the tests that need it fail."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

SERVER_SETTINGS = {
    # A test server: durability is not what is being tested, speed is welcome.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
}


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(command: list[str]) -> None:
    subprocess.run(_as_server_user(command), check=True, capture_output=True, text=True)


def server_tool(name: str) -> str:
    """A PostgreSQL server program: on PATH, or where Debian's postgresql package puts it."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL's server (Debian: apt-get install postgresql)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One server process; `new_database()` gives each test a database of its own."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="catalog-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self._names = itertools.count(1)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        os.chmod(self.folder, 0o755)

    def start(self) -> "PostgresServer":
        initdb, pg_ctl = server_tool("initdb"), server_tool("pg_ctl")
        _run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        _run([pg_ctl, *self._pg_ctl_options(), "start"])
        return self

    def restart(self) -> None:
        """`pg_ctl restart -m fast`, as an operator restarts it: every session is ended, clients see AdminShutdown."""
        _run([server_tool("pg_ctl"), *self._pg_ctl_options(), "-m", "fast", "restart"])

    def _pg_ctl_options(self) -> list[str]:
        options = " ".join(f"-c {key}={value}" for key, value in SERVER_SETTINGS.items())
        options += f" -p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
        return ["-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w"]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(_as_server_user([server_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)
