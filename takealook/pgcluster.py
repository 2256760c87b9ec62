"""A private, throwaway PostgreSQL cluster: for the tests and for ``takealook demo``.

``PrivateCluster`` runs ``initdb`` into a temporary folder, preloads
``pg_stat_statements``, listens on a free port on 127.0.0.1 only (and on a
Unix socket inside its folder), and removes everything on ``stop()``. As root
it runs the server as the ``postgres`` user, since PostgreSQL refuses to run as
root. It never touches another cluster on the machine.

Uses only the standard library and the server's own binaries (``initdb``,
``pg_ctl``, ``psql``); ``find_bindir()`` says where they are and what to install
when they are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

from takealook.errors import TakealookError

BINDIR_ENV = "TAKEALOOK_PG_BINDIR"


class ClusterError(TakealookError):
    """The private cluster could not be set up."""


def find_bindir() -> Path:
    """The folder holding initdb/pg_ctl: $TAKEALOOK_PG_BINDIR, Debian's layout, or PATH."""
    if os.environ.get(BINDIR_ENV):
        return Path(os.environ[BINDIR_ENV])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    candidates += [p for p in (shutil.which("initdb"),) if p]
    for path in candidates:
        if os.access(path, os.X_OK):
            return Path(path).parent
    raise ClusterError(
        "PostgreSQL server binaries (initdb) not found: run `make setup-system` as root, "
        "or `apt-get install postgresql postgresql-<major>-hypopg`, or set TAKEALOOK_PG_BINDIR"
    )


def _version_key(path: str) -> tuple:
    parts = Path(path).parts
    try:
        return (int(parts[-3]),)
    except (ValueError, IndexError):
        return (0,)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateCluster:
    """A PostgreSQL server of our own. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        settings: dict[str, str] | None = None,
        hba_lines: Iterable[str] | None = None,
        locale: str = "C.UTF-8",
        bindir: Path | None = None,
        keep: bool = False,
    ):
        self.bindir = bindir or find_bindir()
        self.settings = dict(settings or {})
        self.hba_lines = list(hba_lines) if hba_lines is not None else None
        self.locale = locale
        self.keep = keep
        self.port = 0
        self.root: Path | None = None
        self._run_as = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError as error:
                raise ClusterError("running as root needs a `postgres` user to run the server") from error

    # -- paths
    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "sock"

    @property
    def sharedir(self) -> Path:
        out = subprocess.run([str(self.bindir / "pg_config"), "--sharedir"], capture_output=True, text=True) \
            if (self.bindir / "pg_config").exists() else None
        if out is not None and out.returncode == 0:
            return Path(out.stdout.strip())
        return Path("/usr/share/postgresql") / self.bindir.parent.name

    def extension_available(self, name: str) -> bool:
        return (self.sharedir / "extension" / f"{name}.control").exists()

    # -- lifecycle
    def start(self) -> "PrivateCluster":
        self.root = Path(tempfile.mkdtemp(prefix="takealook-pg-"))
        os.chmod(self.root, 0o755)
        self.socket_dir.mkdir()
        if self._run_as:
            for path in (self.root, self.socket_dir):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", f"--locale={self.locale}", "--no-sync"])
        self._configure()
        last_error = ""
        for _ in range(3):  # the free port can be taken between our probe and the server's bind
            self.port = free_port()
            self._write_conf({"port": str(self.port)}, "takealook-port.conf")
            result = self._run(["pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.root / "server.log"),
                                "start"], check=False)
            if result.returncode == 0:
                return self
            last_error = self.log_tail()
        self.stop()
        raise ClusterError(f"the private PostgreSQL did not start: {last_error.strip().splitlines()[-1:]}")

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data / "postmaster.pid").exists():
            self._run(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"], check=False)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> "PrivateCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- use
    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={user} dbname={dbname} connect_timeout=10"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql over the Unix socket; returns unaligned output."""
        result = self._run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                            "-p", str(self.port), "-U", "postgres", "-d", dbname, "-c", sql])
        return result.stdout

    def create_database(self, name: str) -> str:
        if not name.replace("_", "").isalnum():
            raise ClusterError(f"database name {name!r}: use letters, digits and _")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def reload(self) -> None:
        self._run(["pg_ctl", "-D", str(self.data), "reload"])

    def restart(self) -> None:
        self._run(["pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "-l", str(self.root / "server.log"), "restart"])

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- internals
    def _configure(self) -> None:
        base = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
            "compute_query_id": "on",
            "max_connections": "200",
            # A throwaway cluster: durability buys nothing here, speed does.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        base.update(self.settings)
        conf = self.data / "postgresql.conf"
        with open(conf, "a", encoding="utf-8") as out:
            out.write("\n# takealook private cluster\ninclude_if_exists = 'takealook-port.conf'\n")
            for key, value in base.items():
                out.write(f"{key} = {value}\n")
        if self.hba_lines is not None:
            (self.data / "pg_hba.conf").write_text("\n".join(self.hba_lines) + "\n", encoding="utf-8")

    def _write_conf(self, values: dict[str, str], name: str) -> None:
        path = self.data / name
        path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()), encoding="utf-8")
        if self._run_as:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        argv = [str(self.bindir / argv[0])] + argv[1:]
        kwargs = {}
        if self._run_as:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", **kwargs)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ClusterError(f"{Path(argv[0]).name} failed: {detail[-1] if detail else result.returncode}")
        return result
