"""Exposure checks on a cluster configured to be exposed, and the address classification without a network.

The exposed cluster is our own ``PrivateCluster`` (never the shared one): SSL
off, pg_hba.conf open to 0.0.0.0/0 and ::/0 with md5 and cleartext password,
trust for 10.0.0.0/8, md5 password hashes, pg_stat_statements not preloaded,
and ``listen_addresses = '*'``. So that ``'*'`` binds nothing reachable, its
server runs in a network namespace of its own (``unshare --net``) and the
tests reach it over its Unix socket; where namespaces are not allowed it
listens on 127.0.0.1 and the ``listen_all`` check is covered by the pure test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from takealook.analyzers.db.audit import audit_database
from takealook.analyzers.db.exposure import address_findings, classify_address, hba_findings
from takealook.pgcluster import PrivateCluster, find_bindir
from tests.analyzers.db.test_cli import takealook

HBA = [
    "local all postgres trust",
    "local all app md5",
    "host all all 0.0.0.0/0 md5",
    "host all all ::/0 password",
    "host all all 10.0.0.0/8 trust",
]
WRAPPER = """#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = start ]; then exec unshare --net --map-current-user "{real}/pg_ctl" "$@"; fi
done
exec "{real}/pg_ctl" "$@"
"""


def _server_user_can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    argv = ["unshare", "--net", "--map-current-user", "true"]
    if os.geteuid() == 0:
        argv = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(argv)]
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _isolated_bindir(folder: Path) -> Path:
    """The server binaries, with a pg_ctl that starts the server in a new network namespace."""
    real = find_bindir()
    folder.mkdir(mode=0o755)
    os.chmod(folder.parent, 0o755)
    for entry in real.iterdir():
        if entry.name != "pg_ctl":
            (folder / entry.name).symlink_to(entry)
    wrapper = folder / "pg_ctl"
    wrapper.write_text(WRAPPER.format(real=real))
    wrapper.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def exposed():
    isolated = _server_user_can_unshare()
    settings = {"ssl": "off", "password_encryption": "md5", "shared_preload_libraries": "''"}
    if isolated:
        settings["listen_addresses"] = "'*'"
    # Not under pytest's tmp folder: the server runs as `postgres` when we are root, and must reach the binaries.
    scratch = Path(tempfile.mkdtemp(prefix="takealook-exposed-"))
    bindir = _isolated_bindir(scratch / "bin") if isolated else None
    cluster = PrivateCluster(settings=settings, hba_lines=HBA, bindir=bindir)
    try:
        cluster.start()
        cluster.psql("CREATE ROLE app LOGIN PASSWORD 'right-pass'")
        cluster.create_database("exposed")
        cluster.create_database("plain")
        cluster.psql("CREATE EXTENSION pg_stat_statements", dbname="exposed")

        def dsn(db: str, user: str = "postgres", password: str | None = None) -> str:
            auth = f" password={password}" if password else ""
            return f"host={cluster.socket_dir} port={cluster.port} dbname={db} user={user}{auth}"

        yield SimpleNamespace(dsn=dsn, isolated=isolated, port=cluster.port)
    finally:
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def by_kind(findings):
    out = {}
    for finding in findings:
        out.setdefault(finding.kind, []).append(finding)
    return out


def test_exposed_cluster_as_superuser(exposed):
    dsn, isolated = exposed.dsn, exposed.isolated
    found = by_kind(audit_database(dsn("exposed")).findings)
    assert [f.severity for f in found["ssl_off"]] == ["medium"]  # high when reached at a public address
    (open_to_world,) = found["hba_open_to_world"]  # one finding per kind, every line listed
    world = {(r["address"], r["auth_method"]): r["severity"] for r in open_to_world.data["rules"]}
    assert world == {("0.0.0.0", "md5"): "high", ("::", "password"): "high"} and open_to_world.severity == "high"
    (weak_auth,) = found["hba_weak_auth"]
    weak = {(r["address"], r["auth_method"]): r["severity"] for r in weak_auth.data["rules"]}
    assert weak == {("0.0.0.0", "md5"): "high", ("::", "password"): "high", ("10.0.0.0", "trust"): "critical"}
    assert weak_auth.severity == "critical" and len(weak_auth.data["lines"]) == 3
    assert all(f"line {line}" in weak_auth.detail for line in weak_auth.data["lines"])
    assert weak_auth.fix.endswith("then SELECT pg_reload_conf();")
    assert [f.subject for f in found["superuser_role"]] == ["postgres"]
    assert found["password_encryption_md5"][0].fix.startswith("ALTER SYSTEM SET password_encryption = 'scram-sha-256'")
    assert found["md5_password_hashes"][0].data["roles"] == ["app"]
    (not_loaded,) = found["extension_not_loaded"]
    assert "shared_preload_libraries" in not_loaded.fix
    assert "public_address" not in found  # a Unix socket
    if isolated:
        assert [f.data["value"] for f in found["listen_all"]] == ["*"]
        with pytest.raises(ConnectionRefusedError):  # '*' bound inside the server's own network namespace only
            socket.create_connection(("127.0.0.1", exposed.port), timeout=2).close()
    else:
        assert "listen_all" not in found


def test_missing_preload_says_so(exposed):
    dsn = exposed.dsn
    (missing,) = [f for f in audit_database(dsn("plain")).findings if f.kind == "missing_extension"
                  and f.subject == "pg_stat_statements"]
    assert missing.fix.startswith("add pg_stat_statements to shared_preload_libraries")


def test_app_role_cannot_read_hba(exposed):
    dsn = exposed.dsn
    found = by_kind(audit_database(dsn("exposed", "app", "right-pass")).findings)
    (hba,) = found["hba_unreadable"]
    assert hba.severity == "info" and "GRANT SELECT ON pg_hba_file_rules TO app" in hba.fix
    assert "superuser_role" not in found and "md5_password_hashes" not in found
    assert "ssl_off" in found and "password_encryption_md5" in found


def test_wrong_password_is_one_line_and_masked(exposed):
    dsn = exposed.dsn
    out = takealook("db", "audit", "--dsn", dsn("exposed", "app", "wrong-pass-zz"))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert 'password authentication failed for user "app"' in line and "check the password" in line
    assert "wrong-pass-zz" not in line and "password=****" in line


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("localhost", "loopback"), ("10.1.2.3", "private"),
    ("172.16.5.4", "private"), ("192.168.1.10", "private"), ("fd12:3456::1", "private"),
    ("169.254.10.1", "link-local"), ("100.64.3.2", "shared"), ("0.0.0.0", "unspecified"),
    ("34.120.55.1", "public"), ("2600:1f18:abcd::1", "public"), ("::ffff:52.1.2.3", "public"),
    ("/var/run/postgresql", "socket"), (None, "socket"), ("db.example.com", "name"),
])
def test_classify_address(address, kind):
    assert classify_address(address) == kind


def test_public_dsn_host():
    (finding,) = address_findings("db.example.com", "34.120.55.1")
    assert finding.kind == "public_address" and finding.severity == "high"
    assert "db.example.com" in finding.title and "private network" in finding.fix
    assert address_findings("52.1.2.3", None)[0].data["address"] == "52.1.2.3"
    for host, hostaddr in (("10.0.0.5", None), ("db.internal", "10.0.0.5"), ("/tmp", None), ("127.0.0.1", None)):
        assert address_findings(host, hostaddr) == []


def test_hba_rules_pure():
    rules = [
        {"line_number": 3, "type": "hostssl", "database": ["all"], "user_name": ["all"], "address": "all",
         "netmask": None, "auth_method": "scram-sha-256", "error": None},
        {"line_number": 4, "type": "host", "database": ["app"], "user_name": ["app"], "address": "10.0.0.0",
         "netmask": "255.0.0.0", "auth_method": "scram-sha-256", "error": None},
        {"line_number": 5, "type": "host", "database": ["all"], "user_name": ["all"], "address": "0.0.0.0",
         "netmask": "0.0.0.0", "auth_method": "reject", "error": None},
        {"line_number": 6, "type": "host", "database": ["all"], "user_name": ["all"], "address": "127.0.0.1",
         "netmask": "255.255.255.255", "auth_method": "trust", "error": None},
    ]
    rules.append({**rules[3], "line_number": 7, "address": "10.1.0.0", "netmask": "255.255.0.0",
                  "auth_method": "password"})
    rules.append({**rules[3], "line_number": 8, "address": "::1", "netmask": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"})
    found = [(f.kind, f.data["lines"], f.severity) for f in hba_findings(rules, ssl_on=True)]
    assert found == [("hba_open_to_world", [3], "high"), ("ssl_not_required", [4, 7], "medium"),
                     ("hba_weak_auth", [6, 7, 8], "high")]
    (weak,) = [f for f in hba_findings(rules, ssl_on=True) if f.kind == "hba_weak_auth"]
    assert weak.title == "pg_hba.conf lines 6, 7, 8 use weak authentication"
    assert weak.fix.startswith("use scram-sha-256 (or peer on local lines) on lines 6, 8; "
                               "use scram-sha-256 instead of password on line 7")
