"""Run folders: where ``load run`` keeps a run and how ``load compare`` finds it.

A run lives in ``.takealook/runs/LABEL/`` (under the current folder; the CLI's
``--runs-dir`` moves it):

``run.json``          metadata (below), written when the run ends
``samples.csv.gz``    every request, raw (see ``samples.py``)
``locust_stats.csv``, ``locust_stats_history.csv``, ``locust_failures.csv``,
``locust_exceptions.csv``, ``locust.html``   Locust's own reports
``locust.log``        Locust's output

``run.json`` keys: ``schema_version`` (1), ``label``, ``suite`` (path),
``suite_sha256``, ``host``, ``git_commit`` (of the current folder, null outside
a repository), ``started_at`` (ISO 8601, UTC), ``t0`` (epoch seconds the load
started), ``warmup_s``, ``duration_s``, ``drain_s``, ``load`` (``{"model":
"open", "rate": R, "arrivals": "uniform"}`` or ``{"model": "closed", "users": N,
"spawn_rate": R}``), ``processes``, ``locust_version``, ``python``,
``takealook_version``, ``samples``, ``unfinished`` (open-model tasks still
running when Locust stopped, recorded as failed), ``samples_lost``,
``locust_requests`` (Locust's own count: ``samples - unfinished`` when nothing
was lost),
``command`` (the Locust command line), ``exit_code``.

Measured requests are those due in ``[t0 + warmup, t0 + warmup + duration)``;
the warm-up and the final drain (time given to requests still in flight) are
kept in the file but excluded from comparisons.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from takealook.errors import InputError, UsageError
from takealook.loadtests.samples import SAMPLES_FILE, Sample, read_samples

SCHEMA_VERSION = 1
META_FILE = "run.json"
DEFAULT_RUNS_DIR = Path(".takealook") / "runs"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Run:
    label: str
    path: Path
    meta: dict[str, Any]
    samples: tuple[Sample, ...]  # all recorded samples, ordered by when they were due

    @property
    def window(self) -> tuple[float, float]:
        begin = float(self.meta["t0"]) + float(self.meta.get("warmup_s", 0))
        return begin, begin + float(self.meta["duration_s"])

    def measured(self) -> list[Sample]:
        """Samples due inside the measurement window (no warm-up, no drain)."""
        begin, end = self.window
        return [s for s in self.samples if begin <= s.at < end]


def check_label(label: str) -> str:
    if not _LABEL.match(label or ""):
        raise UsageError(f"bad run label {label!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    return label


def new_run_dir(label: str, runs_dir: Path, replace: bool = False) -> Path:
    """Create the folder of a new run. Refuses to overwrite an earlier run unless ``replace``."""
    path = Path(runs_dir) / check_label(label)
    if path.exists():
        if not replace:
            raise UsageError(f"run {label!r} already exists in {path}; pick another --label or pass --replace")
        for child in path.iterdir():
            if child.is_file():
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_run(ref: str, runs_dir: Path) -> Path:
    """A run label (looked up in ``runs_dir``) or the path of a run folder."""
    candidates = [Path(ref)] if (os.sep in ref or ref.startswith(".")) else [Path(runs_dir) / ref, Path(ref)]
    for path in candidates:
        if (path / META_FILE).is_file():
            return path
    for path in candidates:
        if path.is_dir():
            raise InputError(f"{path} has no {META_FILE}: not a finished takealook run (was it interrupted?)")
    raise InputError(f"no run {ref!r}: neither {Path(runs_dir) / ref} nor a folder {ref!r} exists "
                     f"(list runs with: ls {runs_dir})")


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {meta_path}: {error}") from error
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path} is not a run description")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(f"{path} was recorded with run schema version {version!r}; this takealook reads version "
                         f"{SCHEMA_VERSION}: record the run again with this version")
    for key in ("t0", "duration_s"):
        if not isinstance(meta.get(key), (int, float)):
            raise InputError(f"{meta_path} has no {key!r}: the run did not start (see locust.log beside it)")
    return meta


def load_run(ref: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Run:
    path = resolve_run(ref, runs_dir)
    meta = read_meta(path)
    samples = read_samples(path / SAMPLES_FILE)
    return Run(label=str(meta.get("label") or path.name), path=path, meta=meta, samples=tuple(samples))


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    target = Path(path) / META_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **meta}, indent=2), encoding="utf-8")
    tmp.replace(target)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def git_commit(folder: Path) -> Optional[str]:
    """The commit checked out in ``folder`` (with ``+dirty`` when there are changes), None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
