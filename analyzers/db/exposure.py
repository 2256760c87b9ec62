"""Exposure: is this database reachable, and enterable, from the internet?

``exposure(session)`` returns findings, each with a severity and the fix:

- ``public_address``: the address we reached the server at is a public one
  (``classify_address``: loopback, private RFC 1918 / unique-local, link-local,
  shared CGNAT, socket, or public);
- ``ssl_off``; ``ssl_not_required`` (``host`` lines, not ``hostssl``, for
  remote clients; one finding listing the lines); ``connection_unencrypted`` (this very connection, remote,
  without TLS);
- ``listen_all``: ``listen_addresses`` is ``*``, ``0.0.0.0`` or ``::``;
- from ``pg_hba_file_rules`` when the role may read it (superuser, or granted):
  ``hba_open_to_world`` (``0.0.0.0/0``, ``::/0``, ``all``) and ``hba_weak_auth``
  (``trust``, ``password`` (cleartext), ``md5`` on non-local lines), each one
  finding that lists its lines (``data["rules"]``, each with its severity);
  else ``hba_unreadable`` says what to grant;
- ``superuser_role``: the connecting role is a superuser;
- ``password_encryption_md5``, and ``md5_password_hashes`` when ``pg_authid``
  is readable.

``address_findings(host, hostaddr)`` is the address check alone, without a
connection, for tests and for DSNs that could not be reached.
"""

from __future__ import annotations

import ipaddress

import psycopg

from takealook.analyzers.db.connection import Session
from takealook.analyzers.db.findings import SEVERITIES as _SEVERITY_ORDER
from takealook.analyzers.db.findings import Finding

_SETTINGS_SQL = """
SELECT current_setting('ssl') AS ssl, current_setting('listen_addresses') AS listen_addresses,
       current_setting('password_encryption') AS password_encryption,
       coalesce((SELECT s.ssl FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()), false) AS connection_ssl
"""

_HBA_SQL = """
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
FROM pg_hba_file_rules ORDER BY line_number
"""

_MD5_SQL = "SELECT rolname FROM pg_authid WHERE rolpassword LIKE 'md5%%' ORDER BY rolname"

_WORLD = {("0.0.0.0", "0.0.0.0"), ("::", "::")}
HBA_FIX_TAIL = "then SELECT pg_reload_conf();"


def classify_address(address: str | None) -> str:
    """socket | loopback | private | link-local | shared | public | unspecified | name."""
    if not address:
        return "socket"  # libpq's default: the Unix socket
    if address.startswith("/") or address.startswith("@"):
        return "socket"
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return "loopback" if address.lower() == "localhost" else "name"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "shared"
    if ip.is_private:
        return "private"
    return "public" if ip.is_global else "private"


def is_remote(kind: str) -> bool:
    return kind not in ("socket", "loopback")


def address_findings(host: str | None, hostaddr: str | None) -> list[Finding]:
    """``public_address`` when the server was (or would be) reached at a public address."""
    for address in (hostaddr, host):
        if address and classify_address(address) == "public":
            shown = host if host and host != address else address
            return [Finding(
                "public_address", "high", f"the database is reached at a public address ({shown})",
                detail=f"{address} is routable from the internet: anyone can try to log in, and scanners do",
                fix="move it to a private network (VPC, private IP) and let the firewall or security group "
                    "admit port 5432 from the app servers only; connect the apps over the private address",
                subject=address, data={"host": host, "address": address})]
    return []


def exposure(session: Session) -> list[Finding]:
    info = session.conn.info
    try:
        hostaddr = info.hostaddr or None  # the address libpq actually connected to
    except psycopg.Error:  # libpq older than 12 cannot tell
        hostaddr = None
    host = info.host
    kind = classify_address(hostaddr or host)
    settings = session.query_one(_SETTINGS_SQL)
    session.end()
    findings = address_findings(host, hostaddr)
    findings += _ssl(settings, kind)
    findings += _listen(settings["listen_addresses"])
    findings += _hba(session, settings["ssl"] == "on")
    findings += _roles(session, settings["password_encryption"])
    return findings


def _ssl(settings: dict, kind: str) -> list[Finding]:
    if settings["ssl"] != "on":
        return [Finding(
            "ssl_off", "high" if kind == "public" else "medium", "SSL is off: passwords and data cross the network "
            "in clear text", subject="ssl", data={"setting": "ssl", "value": settings["ssl"]},
            fix="set ssl = on with ssl_cert_file and ssl_key_file, use hostssl lines in pg_hba.conf, and "
                "sslmode=verify-full in the apps' DSNs; then SELECT pg_reload_conf();")]
    if is_remote(kind) and not settings["connection_ssl"]:
        return [Finding(
            "connection_unencrypted", "medium", "this connection is not encrypted although the server offers SSL",
            subject="sslmode", fix="add sslmode=verify-full (or at least require) to the DSN",
            data={"address_kind": kind})]
    return []


def _listen(value: str) -> list[Finding]:
    items = {item.strip() for item in value.split(",")}
    if not items & {"*", "0.0.0.0", "::"}:
        return []
    return [Finding(
        "listen_all", "medium", f"listen_addresses = '{value}': the server listens on every interface",
        detail="a public interface, if the machine has one, accepts connections too",
        fix="set listen_addresses to localhost and the private interface only (e.g. 'localhost,10.0.0.5'), "
            "then restart PostgreSQL", subject="listen_addresses", data={"setting": "listen_addresses",
                                                                         "value": value})]


def _hba(session: Session, ssl_on: bool) -> list[Finding]:
    try:
        rules = session.query(_HBA_SQL)
    except psycopg.errors.InsufficientPrivilege:
        return [Finding(
            "hba_unreadable", "info", "pg_hba.conf rules could not be checked",
            detail="pg_hba_file_rules is readable by superusers only unless granted",
            fix=f"run the audit as a superuser, or GRANT SELECT ON pg_hba_file_rules TO {session.user}; "
                f"GRANT EXECUTE ON FUNCTION pg_hba_file_rules() TO {session.user};",
            subject="pg_hba.conf", data={})]
    finally:
        session.end()
    return hba_findings(rules, ssl_on)


def hba_findings(rules: list[dict], ssl_on: bool) -> list[Finding]:
    """Findings for pg_hba_file_rules rows (a pure function of the rows): one per kind, listing its lines."""
    found: dict[str, list[tuple[str, str, str, dict]]] = {}  # kind -> (severity, what, fix, rule data)
    for rule in rules:
        if rule.get("error") or rule["type"] == "local":
            continue
        address = rule["address"] or ""
        world = address == "all" or (address, rule["netmask"] or "") in _WORLD
        loopback = classify_address(address) == "loopback"
        method = rule["auth_method"]
        data = {"line": rule["line_number"], "type": rule["type"], "address": address, "netmask": rule["netmask"],
                "auth_method": method, "databases": rule["database"], "users": rule["user_name"]}
        shown = "all addresses" if address == "all" else f"{address}/{rule['netmask']}"
        if world and method != "reject":
            found.setdefault("hba_open_to_world", []).append((
                "critical" if method == "trust" else "high", f"{shown} ({rule['type']}, {method})",
                f"replace {address} by the app servers' addresses (e.g. 10.0.0.0/8)", data))
        weak = _weak_auth(method, world, loopback)
        if weak:
            severity, why, fix = weak
            found.setdefault("hba_weak_auth", []).append((severity, f"{method} for {shown} ({why})", fix, data))
        if ssl_on and rule["type"] == "host" and not loopback and method not in ("reject", "trust"):
            found.setdefault("ssl_not_required", []).append((
                "medium", f"{shown} without SSL", "use hostssl instead of host", data))
    return [_hba_finding(kind, items) for kind, items in found.items()]


_HBA_TITLES = {"hba_open_to_world": "admit the whole internet", "hba_weak_auth": "use weak authentication",
               "ssl_not_required": "accept remote clients without SSL"}


def _hba_finding(kind: str, items: list[tuple[str, str, str, dict]]) -> Finding:
    """One finding for every pg_hba.conf line of one kind: the worst line's severity, each line listed."""
    severity = min((item[0] for item in items), key=lambda s: _SEVERITY_ORDER.index(s))
    lines = [item[3]["line"] for item in items]
    where = f"pg_hba.conf line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}"
    fixes: dict[str, list[int]] = {}
    for _, _, fix, data in items:
        fixes.setdefault(fix, []).append(data["line"])
    fix = "; ".join(f"{text} on line{'s' if len(at) > 1 else ''} {', '.join(map(str, at))}"
                    for text, at in fixes.items())
    rules = [{**data, "severity": sev, "what": what} for sev, what, _, data in items]
    return Finding(kind, severity, f"{where} {_HBA_TITLES[kind]}",
                   detail="; ".join(f"line {data['line']}: {what}" for _, what, _, data in items),
                   fix=f"{fix}, {HBA_FIX_TAIL}", subject="pg_hba.conf", data={"lines": lines, "rules": rules})


def _weak_auth(method: str, world: bool, loopback: bool):
    if method == "trust":
        if loopback:
            return ("low", "any local OS user can connect as any role without a password",
                    "use scram-sha-256 (or peer on local lines)")
        return ("critical", "anyone who reaches the port connects without a password",
                "use scram-sha-256 instead of trust")
    if method == "password":
        return ("high", "passwords cross the network in clear text", "use scram-sha-256 instead of password")
    if method == "md5":
        return ("high" if world else "medium", "md5 hashes are weak and replayable if stolen",
                "set password_encryption = 'scram-sha-256', set each password again, then use scram-sha-256")
    return None


def _roles(session: Session, password_encryption: str) -> list[Finding]:
    findings = []
    if session.is_superuser:
        findings.append(Finding(
            "superuser_role", "high", f"connected as superuser {session.user}",
            detail="if an application uses this role, any SQL injection owns the whole server "
                   "(COPY ... PROGRAM runs shell commands)",
            fix="give each app its own role with only the privileges it needs (CREATE ROLE app LOGIN; "
                "GRANT ... ON SCHEMA/TABLES) and keep superuser for administration",
            subject=session.user, data={"role": session.user}))
    if password_encryption == "md5":
        findings.append(Finding(
            "password_encryption_md5", "medium", "password_encryption = md5",
            fix="ALTER SYSTEM SET password_encryption = 'scram-sha-256'; SELECT pg_reload_conf(); then set "
                "each role's password again (\\password in psql)", subject="password_encryption",
            data={"setting": "password_encryption", "value": "md5"}))
    try:
        md5_roles = [row["rolname"] for row in session.query(_MD5_SQL)]
    except psycopg.errors.InsufficientPrivilege:
        md5_roles = []  # pg_authid is superuser-only; nothing to say without it
    finally:
        session.end()
    if md5_roles:
        findings.append(Finding(
            "md5_password_hashes", "medium", f"{len(md5_roles)} roles still have md5 password hashes",
            detail=", ".join(md5_roles[:20]), subject="pg_authid", data={"roles": md5_roles},
            fix="with password_encryption = 'scram-sha-256', set these roles' passwords again"))
    return findings
