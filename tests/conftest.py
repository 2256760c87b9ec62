"""Fixtures shared by every part's tests.

``pg``: one real PostgreSQL for the whole test session, with pg_stat_statements
preloaded and HypoPG installed. A private cluster (initdb into a temporary
folder, 127.0.0.1 on a free port) unless ``TAKEALOOK_TEST_DSN`` names a server
to use instead. ``pg.create_database()`` gives each test its own database.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from takealook.pgcluster import PrivateCluster

ROOT = Path(__file__).resolve().parent.parent
TEST_DSN_ENV = "TAKEALOOK_TEST_DSN"
_names = itertools.count(1)


class TestDatabase:
    """What a test gets from ``pg``: DSNs and fresh databases on a real server."""

    __test__ = False

    def __init__(self, cluster: PrivateCluster | None, dsn: str | None):
        self.cluster = cluster
        self._dsn = dsn

    def dsn(self, dbname: str = "postgres") -> str:
        if self.cluster is not None:
            return self.cluster.dsn(dbname)
        import psycopg.conninfo

        params = psycopg.conninfo.conninfo_to_dict(self._dsn)
        params["dbname"] = dbname
        return psycopg.conninfo.make_conninfo(**params)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its DSN."""
        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        import psycopg
        import psycopg.conninfo

        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @property
    def hypopg_available(self) -> bool:
        import psycopg

        with psycopg.connect(self.dsn()) as conn:
            row = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'hypopg'").fetchone()
        return bool(row[0])


@pytest.fixture(scope="session")
def pg():
    external = os.environ.get(TEST_DSN_ENV)
    if external:
        yield TestDatabase(None, external)
        return
    cluster = PrivateCluster()
    cluster.start()
    try:
        yield TestDatabase(cluster, None)
    finally:
        cluster.stop()


@pytest.fixture
def pg_db(pg):
    """A fresh database for one test, dropped afterwards."""
    dsn = pg.create_database()
    yield dsn
    pg.drop_database(dsn)


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    def ready():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited with {proc.returncode} before listening: {out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(ready, timeout, message=f"port {port}")


PYTHON = sys.executable
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    return str(BIN / name)
