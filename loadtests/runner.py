"""Start Locust for ``load run`` in a subprocess and turn what it recorded into a run folder.

The CLI never imports locust (it monkey-patches with gevent at import); this
module builds a ``python -m locust`` command line with our plugin
(``_locust_closed.py`` or ``_locust_open.py``) in front of the suite, runs it,
reads ``progress.json`` for the progress line, and writes ``run.json`` at the
end (see ``runs.py``). Locust's own options pass through: ``--processes``,
``--master``/``--expect-workers``, and anything after ``--locust``.

Every request is marked with the run's label (``--takealook-label``, see
``marking.py``) so analyses of the traces keep load traffic apart. Before
Locust starts, every ``${VAR}`` the suite reads (its login and headers) must be
set in the environment. A suite that finds no user can log in stops the run;
``run_load`` then raises ``InputError`` with the reason.

Locust runs for warm-up + duration + drain seconds. The drain lets requests in
flight at the end of the window finish, so the slowest requests are not the
ones cut off; requests due after the window are recorded but not measured.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from takealook.errors import ConnectionFailed, InputError, TakealookError, UsageError
from takealook.loadtests.runs import check_label, file_sha256, git_commit, new_run_dir, write_meta

HERE = Path(__file__).resolve().parent
CLOSED_ENTRY = HERE / "_locust_closed.py"
OPEN_ENTRY = HERE / "_locust_open.py"
OPEN_USER_CLASS = "TakealookOpenModel"
LOG_FILE = "locust.log"
_STARTUP_GRACE = 60.0  # seconds Locust may take to start and to write its reports


@dataclass(frozen=True)
class LoadShape:
    """Closed model (``users``, ``spawn_rate``) or open model (``rate`` requests/s)."""

    users: Optional[int] = None
    spawn_rate: Optional[float] = None
    rate: Optional[float] = None
    arrivals: str = "uniform"
    max_in_flight: int = 1000

    @property
    def model(self) -> str:
        return "open" if self.rate else "closed"

    def describe(self) -> dict:
        if self.rate:
            return {"model": "open", "rate": self.rate, "arrivals": self.arrivals, "max_in_flight": self.max_in_flight}
        return {"model": "closed", "users": self.users, "spawn_rate": self.spawn_rate}


@dataclass(frozen=True)
class RunRequest:
    suite: Path
    host: str
    label: str
    runs_dir: Path
    shape: LoadShape
    duration_s: int = 60
    warmup_s: int = 0
    drain_s: int = 5
    processes: Optional[int] = None
    master: bool = False
    expect_workers: Optional[int] = None
    extra_args: tuple[str, ...] = ()
    replace: bool = False


@dataclass(frozen=True)
class RunOutcome:
    path: Path
    meta: dict = field(default_factory=dict)


def check_host(host: str, timeout: float = 3.0) -> None:
    """Raise ConnectionFailed unless something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--host must be a URL such as http://127.0.0.1:8000, not {host!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as error:
        raise ConnectionFailed(f"cannot reach {host} ({error.strerror or error}): start the server or fix --host") from error


def check_suite(suite: Path) -> None:
    """Fail early on a suite that is missing, does not compile (an import error shows when Locust loads
    it), or reads an environment variable that is not set."""
    if not suite.is_file():
        raise InputError(f"suite {suite} does not exist")
    source = suite.read_bytes()
    try:
        compile(source, str(suite), "exec")
    except SyntaxError as error:
        raise InputError(f"suite {suite} does not import: SyntaxError at line {error.lineno}: {error.msg}") from error
    from takealook.loadtests.login import missing_variables

    missing = missing_variables(source.decode("utf-8", "replace"), os.environ)
    if missing:
        names = " and ".join("${" + name + "}" for name in missing)
        exports = " ".join(f"{name}=..." for name in missing)
        raise InputError(f"suite {suite} reads {names} from the environment, and "
                         f"{'it is' if len(missing) == 1 else 'they are'} not set: export {exports} and run again")


def locust_command(request: RunRequest, folder: Path) -> list[str]:
    shape = request.shape
    entry = OPEN_ENTRY if shape.rate else CLOSED_ENTRY
    total = request.warmup_s + request.duration_s + request.drain_s
    command = [sys.executable, "-m", "locust", "-f", f"{entry},{request.suite}", "--headless",
               "--host", request.host, "--run-time", f"{total}s", "--only-summary",
               "--csv", str(folder / "locust"), "--html", str(folder / "locust.html"),
               "--exit-code-on-error", "0", "--stop-timeout", "0",
               "--takealook-dir", str(folder), "--takealook-label", request.label,
               "--takealook-warmup", str(request.warmup_s),
               "--takealook-duration", str(request.duration_s)]
    workers = request.processes or (request.expect_workers if request.master else None) or 1
    if request.processes:
        # Locust's master binds every interface on port 5557 by default; worker processes on this
        # machine only need loopback, and a free port lets two runs (or test sessions) coexist.
        port = str(_free_port())
        command += ["--processes", str(request.processes), "--master-bind-host", "127.0.0.1",
                    "--master-bind-port", port, "--master-port", port]
    if request.master:
        command += ["--master", "--expect-workers", str(request.expect_workers or 1)]
    if shape.rate:
        command += ["--users", str(workers), "--spawn-rate", str(workers), "--takealook-rate", str(shape.rate),
                    "--takealook-arrivals", shape.arrivals, "--takealook-max-in-flight", str(shape.max_in_flight)]
    else:
        command += ["--users", str(shape.users), "--spawn-rate", str(shape.spawn_rate)]
    command += list(request.extra_args)
    if shape.rate:
        command.append(OPEN_USER_CLASS)
    return command


def run_load(request: RunRequest, progress: Optional[Callable[[dict], None]] = None) -> RunOutcome:
    """Run the suite and return the finished run folder. Raises TakealookError on bad input or a failed run."""
    check_label(request.label)
    check_suite(request.suite)
    if not request.master:
        check_host(request.host)
    folder = new_run_dir(request.label, request.runs_dir, request.replace)
    command = locust_command(request, folder.resolve())
    meta = {
        "label": request.label, "suite": str(request.suite), "suite_sha256": file_sha256(request.suite),
        "host": request.host, "git_commit": git_commit(Path.cwd()),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "warmup_s": request.warmup_s, "duration_s": request.duration_s, "drain_s": request.drain_s,
        "load": request.shape.describe(), "processes": request.processes,
        "master": request.master, "expect_workers": request.expect_workers,
        "python": platform.python_version(), "takealook_version": _version(), "command": command,
    }
    limit = request.warmup_s + request.duration_s + request.drain_s + _STARTUP_GRACE
    interrupted = False
    with open(folder / LOG_FILE, "wb") as log:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        try:
            _wait(proc, folder, limit, progress)
        except KeyboardInterrupt:
            interrupted = True
            _stop(proc, signal.SIGINT, 5.0)
    recording = _read_json(folder / "recording.json")
    meta.update({k: v for k, v in recording.items() if k != "pid"})
    meta["exit_code"] = proc.returncode
    meta["interrupted"] = interrupted
    write_meta(folder, meta)
    if interrupted:  # Ctrl-C before Locust recorded its start is still Ctrl-C, not a failed start
        raise KeyboardInterrupt
    if "t0" not in recording:
        raise _startup_failure(request, folder, proc.returncode)
    if meta.get("stopped_because"):
        raise InputError(f"{meta['stopped_because']} (the run stopped; what it recorded is in {folder})")
    if proc.returncode not in (0, None):
        raise TakealookError(f"Locust exited with {proc.returncode}: {_last_error(folder)} (see {folder / LOG_FILE}); "
                             f"what it recorded is in {folder}")
    return RunOutcome(folder, meta)


def run_worker(suite: Path, master_host: str, extra_args: tuple[str, ...] = ()) -> int:
    """Run a Locust worker for a takealook master on another machine (foreground, Locust's output)."""
    check_suite(suite)
    command = [sys.executable, "-m", "locust", "-f", f"{OPEN_ENTRY},{suite}", "--worker",
               "--master-host", master_host, *extra_args]
    return subprocess.call(command)


def _wait(proc: subprocess.Popen, folder: Path, limit: float, progress) -> None:
    deadline = time.monotonic() + limit
    while proc.poll() is None:
        if time.monotonic() > deadline:
            _stop(proc, signal.SIGTERM, 10.0)
            raise TakealookError(f"Locust did not finish within {limit:.0f}s; stopped it (see {folder / LOG_FILE})")
        if progress is not None:
            state = _read_json(folder / "progress.json")
            if state:
                progress(state)
        time.sleep(0.25)


def _stop(proc: subprocess.Popen, sig: int, wait: float) -> None:
    """``sig``, then SIGTERM (Locust's graceful quit), then SIGKILL, each given ``wait`` seconds."""
    for next_signal in (sig, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, next_signal)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _startup_failure(request: RunRequest, folder: Path, code) -> TakealookError:
    text = (folder / LOG_FILE).read_text(errors="replace")
    last = _last_error(folder)
    if "No User class found" in text:
        return InputError(f"suite {request.suite} defines no Locust User class (see {folder / LOG_FILE})")
    if "Traceback" in text and (str(request.suite) in text or request.suite.name in text):
        return InputError(f"suite {request.suite} does not import: {last}")
    return TakealookError(f"Locust did not start (exit {code}): {last} (see {folder / LOG_FILE})")


def _last_error(folder: Path) -> str:
    try:
        lines = [line.strip() for line in (folder / LOG_FILE).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "error" in line:
            return line[-300:]
    return lines[-1][-300:] if lines else "no output"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _version() -> str:
    from takealook import __version__

    return __version__
