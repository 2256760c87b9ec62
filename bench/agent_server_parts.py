"""The agent's parts counted in the real server: gunicorn under callgrind, the app's worker and the helper.

``agent_parts.py`` calls the endpoint in-process through WSGI; this runs the
endpoint of ``agent_overhead.py`` (Flask, 3 psycopg2 statements, one
``requests`` call) the way users run it, ``gunicorn -w 1`` (sync worker) under
``takealook-run``, with valgrind's callgrind following every process of it.
After a warm-up the counters are zeroed, ``--requests`` requests are driven
from a client outside valgrind, and the counters of the worker and of the
export helper are read. Each variant adds one part of the agent to the one
before (``TAKEALOOK_DISABLED_INSTRUMENTATIONS``; spans made and dropped until
the last one, which exports them):

  none        the app alone, gunicorn without takealook-run
  server      + WSGI/Flask hooks and the server span
  db          + cursor wrapping, statement scrubbing, 3 DB spans
  http        + the outbound call's span and traceparent
  exported    + spans encoded and handed to the helper; the helper frames and posts them

Every variant runs with the same environment variables, names and number
(``requests`` reads all of ``os.environ`` at each call, ~25,000 instructions a
variable here). Instructions do not move with the machine's load: one run per
variant is enough. Under valgrind a request takes ~25 times as long, so the
helper's timed work (a post at least once a second) is done more often than
natively: its count is an upper bound.

    python bench/agent_server_parts.py [--requests 500] [--ids 100]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from agent_overhead import BIN, IDS, WORKERS, backends, descendants, drive, stop, wait_port  # noqa: E402

from takealook.pgcluster import free_port  # noqa: E402

SPANS_PER_REQUEST = 5
DISABLED = "TAKEALOOK_DISABLED_INSTRUMENTATIONS"
# (takealook-run or not, instrumentations turned off, spans exported); "none" sets the same variables.
VARIANTS = {
    "none": (False, "none-of-them", "none"),
    "server": (True, "psycopg2,psycopg,urllib3,httpx,urllib,logging", "none"),
    "db": (True, "urllib3,httpx,urllib,logging", "none"),
    "http": (True, "logging", "none"),
    "exported": (True, "logging", "otlp"),
}
PARTS = [("WSGI/Flask hooks, server span", "server", "none"),
         ("cursor wrapping, scrubbing, 3 DB spans", "db", "server"),
         ("HTTP client span, traceparent", "http", "db"),
         ("spans queued, encoded in batches, hand-off", "exported", "http")]


def count(work: Path, env: dict, name: str, requests: int, valgrind: str) -> dict:
    """Instructions per request of the worker and of the helper, for one variant."""
    traced, disabled, exporter = VARIANTS[name]
    out = work / f"callgrind.{name}"
    out.mkdir()
    port = free_port()
    command = [valgrind, "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}/%p"]
    command += [str(BIN / "takealook-run"), "--service", "bench"] if traced else []
    command += [str(BIN / "gunicorn"), "-w", "1", *WORKERS["new"], "--timeout", "600", "-b", f"127.0.0.1:{port}",
                "benchapp:app"]
    variant_env = {**env, DISABLED: disabled, "OTEL_TRACES_EXPORTER": exporter, "OTEL_SERVICE_NAME": "bench"}
    proc = subprocess.Popen(command, env=variant_env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_port(port, proc, timeout=300)
        drive(port, 1500, keep_alive=False)  # warm up: imports, caches, the statement texts, volatile keys
        time.sleep(1.5)
        pids = descendants(proc.pid)
        subprocess.run(["callgrind_control", "-z", *map(str, pids)], capture_output=True, check=False)
        drive(port, requests, keep_alive=False)
        time.sleep(1.5)  # the helper's last post of these spans
        subprocess.run(["callgrind_control", "-d", *map(str, pids)], capture_output=True, check=False)
    finally:
        stop([proc])
    found = {"worker": 0, "helper": 0}
    for pid in pids:
        dumps = sorted(out.glob(f"{pid}.*"))
        if not dumps:
            continue
        text = dumps[-1].read_text(errors="replace")
        total = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
        command_line = re.search(r"^cmd:\s*(.*)$", text, re.M)
        if total is None or command_line is None:
            continue
        kind = "helper" if "takealook.agent.exporter" in command_line.group(1) else "worker"
        found[kind] = max(found[kind], int(total.group(1)) / requests)  # the master does next to nothing
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="measured requests per variant")
    parser.add_argument("--ids", type=int, default=100,
                        help="distinct ids in the paths (default 100; 1000000000: a new id at every request)")
    args = parser.parse_args()
    IDS[0] = max(1, args.ids)
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    with backends("takealook-server-parts-") as (work, env):
        counts = {name: count(work, env, name, args.requests, valgrind) for name in VARIANTS}
    print(f"gunicorn -w 1 (sync worker), {args.requests} requests of {SPANS_PER_REQUEST} spans a variant, "
          f"{IDS[0]:,} distinct ids; "
          f"the app alone: {counts['none']['worker']:,.0f} instructions a request")
    print(f"{'part':<46}{'instr/request':>15}{'instr/span':>12}")
    rows = [(label, counts[after]["worker"] - counts[before]["worker"]) for label, after, before in PARTS]
    rows.append(("the helper: recv, frame, post (upper bound)", counts["exported"]["helper"]))
    for label, value in rows + [("total (app + helper)", sum(value for _, value in rows))]:
        print(f"{label:<46}{value:>15,.0f}{value / SPANS_PER_REQUEST:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
