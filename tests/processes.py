"""Real processes for tests (apps, servers, a collector): started with their output in a log, stopped at the end."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import wait_for_port

ROOT = Path(__file__).resolve().parent.parent


class Processes:
    """Starts processes in their own sessions; ``stop`` ends them newest first (a collector started
    first is stopped last, after the apps have flushed their spans to it)."""

    def __init__(self, tmp_path: Path, cwd: Path | None = None):
        self.tmp_path = tmp_path
        self.cwd = cwd
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, argv: list[str], env: dict, cwd: Path | None = None, port: int | None = None,
              timeout: float = 30.0) -> subprocess.Popen:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TAKEALOOK_"))}
        full_env.update({"PYTHONPATH": str(ROOT), "OTEL_METRIC_EXPORT_INTERVAL": "500", "PYTHONUNBUFFERED": "1"})
        full_env.update(env)
        log = self.tmp_path / f"process-{len(self.started)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(argv, cwd=cwd or self.cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.started.append((proc, log))
        if port is not None:
            try:
                wait_for_port(port, timeout, proc)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{self.logs()}") from None
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.args}\n{log.read_text()}" for p, log in self.started)

    def stop(self) -> None:
        for proc, _ in reversed(self.started):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
