"""The foundation: packaging, the CLI's skeleton, the private PostgreSQL fixture."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import script

ROOT = Path(__file__).resolve().parent.parent
PARTS = {"agent": "takealook.agent", "collector": "takealook.collector",
         "analyzers": "takealook.analyzers", "loadtests": "takealook.loadtests"}


def _declared_packages() -> set[str]:
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(data["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared():
    declared = _declared_packages()
    found = set()
    for folder, name in PARTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    for init in (ROOT / "takealook").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    assert found - declared == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_wheel_installs_parts_under_takealook(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("takealook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for part in PARTS.values():
        assert part.replace(".", "/") + "/__init__.py" in names
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"agent", "collector", "analyzers", "loadtests", "tests", "bench"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "takealook = takealook.cli:main" in text and "takealook-run = takealook.agent.run:main" in text


def test_version_and_help():
    out = subprocess.run([script("takealook"), "--version"], capture_output=True, text=True, check=True)
    from takealook import __version__

    assert out.stdout.strip() == f"takealook {__version__}"
    out = subprocess.run([script("takealook"), "--help"], capture_output=True, text=True, check=True)
    for command in ("collect", "traces", "db", "load", "report", "demo"):
        assert command in out.stdout


def test_no_command_is_usage_error():
    out = subprocess.run([script("takealook")], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


def test_private_postgres_has_what_the_audit_needs(pg, pg_db):
    import psycopg

    with psycopg.connect(pg_db, autocommit=True) as conn:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        assert "pg_stat_statements" in preload
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        conn.execute("CREATE TABLE t (id int)")
        (oid,) = conn.execute("SELECT indexrelid FROM hypopg_create_index('CREATE INDEX ON t (id)')").fetchone()
        assert oid > 0
        if pg.cluster is not None:
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
