"""Who may import whom (docs/architecture.md), checked by import-linter's contracts in pyproject.toml.

grimp finds a package's modules by walking its folder, and the parts live beside
``takealook/`` (setuptools' package-dir maps ``takealook.agent`` to ``agent/``), so
the test lays out the installed shape with symlinks (grimp follows them) and runs
``lint-imports`` on it. Every import counts, module-level or inside a function.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import script

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("agent", "collector", "analyzers", "loadtests")


def _installed_shape(where: Path, replace: dict[str, str] | None = None) -> Path:
    """``where/takealook`` as installed: takealook/'s files, and each part as a subpackage.

    ``replace`` maps a path inside the package (``analyzers/traces/rates.py``) to new text.
    """
    package = where / "takealook"
    package.mkdir()
    for entry in (ROOT / "takealook").iterdir():
        (package / entry.name).symlink_to(entry)
    for part in PARTS:
        (package / part).symlink_to(ROOT / part, target_is_directory=True)
    for relative, text in (replace or {}).items():
        # A real copy of the part with one file changed: the symlinked original stays untouched.
        part, _, _ = relative.partition("/")
        (package / part).unlink()
        subprocess.run(["cp", "-r", str(ROOT / part), str(package / part)], check=True)
        (package / relative).write_text(text)
    return where


def _lint(where: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run([script("lint-imports"), "--no-cache", str(ROOT / "pyproject.toml")], cwd=where, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept(tmp_path):
    out = _lint(_installed_shape(tmp_path))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Analyzed" in out.stdout and "broken" in out.stdout
    kept = [line for line in out.stdout.splitlines() if line.rstrip().endswith("KEPT") or "KEPT (" in line]
    assert len(kept) >= 7, out.stdout


def test_a_function_level_import_past_the_read_api_breaks_a_contract(tmp_path):
    rates = (ROOT / "analyzers" / "traces" / "rates.py").read_text()
    lazy = rates + "\n\ndef _sneaky():\n    from takealook.collector.store import SpanStore  # noqa: F401\n"
    out = _lint(_installed_shape(tmp_path, {"analyzers/traces/rates.py": lazy}))
    assert out.returncode == 1, out.stdout[-3000:]
    assert "takealook.analyzers.traces.rates -> takealook.collector.store" in out.stdout


def test_locust_outside_the_load_tests_breaks_a_contract(tmp_path):
    summary = (ROOT / "analyzers" / "traces" / "stats.py").read_text()
    lazy = summary + "\n\ndef _load():\n    import locust  # noqa: F401\n"
    out = _lint(_installed_shape(tmp_path, {"analyzers/traces/stats.py": lazy}))
    assert out.returncode == 1 and "takealook.analyzers.traces.stats -> locust" in out.stdout, out.stdout[-3000:]
