"""Where the agent's CPU goes inside a busy app, by Python function: perf samples, not instructions.

Instruction counts (``agent_parts.py``) miss most of what the agent costs in place: between two of
its spans the app runs its own code, so the agent's code, inline caches and dictionaries are cold at
every span, and a function costs what it touches more than what it executes (in the bench's app a
span's encoding took ~4.6 µs, against ~0.6 µs in a loop). This samples the endpoint of
``agent_parts.py`` (Flask, 3 psycopg2 statements, one ``requests`` call; variant ``sent``) with Linux
``perf record -e cpu-clock --call-graph dwarf`` under Python's perf trampoline (``python -X perf``,
Python 3.12 and newer), charges each sample to the innermost Python function on its stack (the C it
calls included), and prints the agent's functions by microseconds a request.

Figures are of a Python that runs its calls through the trampoline (dearer calls than without it):
compare them with one another and across changes, run by run, not with native CPU time. The
wrappers of psycopg2's ``execute`` and ``cursor`` are charged with the C they call (the app's own
work, charged to the app's function without the agent), so they are left out of the total. Needs ``perf`` and a Python >= 3.12 with flask, psycopg2, requests and
opentelemetry-api/sdk installed, and takealook importable (``pip install -e .``); without them, says
so and exits 0.

    python bench/agent_profile.py [--python /path/to/python3.12] [--requests 5000] [--ids 1000000000]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

FREQUENCY = 2500  # samples a second of CPU
WARM_UP = 1500  # agent_parts.WARM_UP: the child's requests before the measured ones (sampled too)
# Wrappers whose samples are mostly the C they call, the app's own work: psycopg2's execute and cursor.
WRAPPERS = ("_traced.<locals>.traced", "_traced_connection_class.<locals>.cursor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="a Python >= 3.12 with the bench's packages")
    parser.add_argument("--requests", type=int, default=5000, help="measured requests (after 1,500 to warm up)")
    parser.add_argument("--ids", type=int, default=1000000000,
                        help="distinct ids in the paths (default: new at every request)")
    parser.add_argument("--top", type=int, default=30, help="functions listed")
    args = parser.parse_args()
    missing = _missing(args.python)
    if missing:
        print(f"agent_profile: skipped ({missing})")
        return 0
    from agent_overhead import backends

    with backends("takealook-profile-") as (work, env), tempfile.TemporaryDirectory() as tmp:
        env.update({"OTEL_SERVICE_NAME": "bench", "PYTHONPATH": os.pathsep.join([str(work), str(ROOT)]),
                    "PYTHONHASHSEED": "0", "BENCH_IDS": str(max(1, args.ids))})
        data = Path(tmp) / "perf.data"
        command = ["perf", "record", "-q", "-F", str(FREQUENCY), "-e", "cpu-clock", "--call-graph", "dwarf,16384",
                   "-o", str(data), "--", args.python, "-X", "perf", str(ROOT / "bench" / "agent_parts.py"),
                   "--child", "sent", "--requests", str(args.requests)]
        subprocess.run(command, env=env, cwd=work, capture_output=True, check=True)
        counts, total = _innermost(data)
    requests = args.requests + WARM_UP
    per_sample = 1e6 / FREQUENCY / requests  # µs a request that one sample stands for
    ours = {name: count for name, count in counts.items() if f":{ROOT}/" in name and "/agent/" in name}
    counted = {name: count for name, count in ours.items() if not name.startswith(WRAPPERS)}
    wrapped = sum(count for name, count in ours.items() if name.startswith(WRAPPERS))
    print(f"{total:,} samples of the app's process; the agent's functions: {sum(ours.values()):,}; "
          f"{args.ids:,} distinct ids; µs a request, Python {_version(args.python)} with -X perf")
    print(f"{'µs/request':>11}  function")
    for name, count in sorted(counted.items(), key=lambda item: -item[1])[:args.top]:
        print(f"{count * per_sample:>11.2f}  {name.replace(str(ROOT) + '/', '')}")
    print(f"{sum(counted.values()) * per_sample:>11.2f}  total, the wrappers of psycopg2's execute and cursor left "
          f"out ({wrapped * per_sample:.1f} with the C they call, the app's own work mostly)")
    return 0


def _innermost(data: Path) -> tuple:
    """({python function: samples whose innermost Python frame it is}, all samples)."""
    script = subprocess.Popen(["perf", "script", "-i", str(data), "-F", "ip,sym"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    counts: collections.Counter = collections.Counter()
    total = 0
    stack: list = []

    def charge():
        nonlocal total
        if stack:
            total += 1
            counts[next((symbol[4:] for symbol in stack if symbol.startswith("py::")), "(no Python frame)")] += 1

    for line in script.stdout:
        if line[:1] in (" ", "\t"):
            parts = line.split(None, 1)
            stack.append(parts[1].strip() if len(parts) > 1 else "")
        else:
            charge()
            stack.clear()
    charge()
    script.wait()
    return counts, total


def _missing(python: str) -> str:
    if shutil.which("perf") is None:
        return "Linux perf is not installed"
    probe = subprocess.run([python, "-c", "import sys, flask, psycopg2, requests, opentelemetry.sdk, takealook; "
                            "sys.exit(0 if sys.version_info >= (3, 12) else 3)"], capture_output=True)
    if probe.returncode == 3:
        return f"{python} is older than 3.12: pass --python with a 3.12 or newer"
    if probe.returncode:
        return f"{python} lacks a package: {probe.stderr.decode().strip().splitlines()[-1]}"
    return ""


def _version(python: str) -> str:
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
