"""Locust plugin of ``load run``: record every request raw and send a W3C ``traceparent``.

Locust loads this module in the subprocess that ``takealook load run`` starts
(``python -m locust -f <entry>,SUITE.py ...``). Never import it in the CLI or
another part: importing locust monkey-patches the process with gevent.

What it does, on every Locust process:

- Wraps ``HttpSession.request`` and ``FastHttpSession.request`` so each request
  carries a fresh ``traceparent`` (sampled) unless the suite set one, and the
  run's mark in ``tracestate`` (``marking.py``: the agent carries it to every
  span, and analyses leave load traffic out); each redirect hop of an
  ``HttpSession`` or ``FastHttpSession`` gets a ``traceparent`` of its own. It remembers the trace id;
  a ``traceresponse`` header from the server (on the first hop) wins (the
  agent's traces then join each load-test request).
- A suite that finds no user can log in (``users.py``) says why; that reason
  goes into ``recording.json`` as ``stopped_because`` (workers send it to the
  master, which stops the run).
- Listens to Locust's ``request`` event and turns each request into a raw
  sample row (``samples.py``). Requests still in flight when the test stops
  (after the drain) are recorded too, as failed ``unfinished when the run
  ended`` rows with their time so far (a lower bound): Locust drops them, and
  they are the slowest.
- Standalone runs end the drain early, as soon as nothing due inside the
  measurement window is still running.
- Standalone or master: writes ``samples.csv.gz``, ``recording.json`` (start
  time, Locust version, counts) and ``progress.json`` (read by the CLI's
  progress line) into ``--takealook-dir``. Locust's own CSV/HTML cover the
  whole run (warm-up and drain included).
- Worker (``--processes`` or ``--worker``): streams its rows to the master in
  custom messages; when the test stops, the master asks every worker to flush
  and waits (at most 10 s) for each to say how many rows it sent, so rows lost
  on the way are counted in ``recording.json``, never silently missing.

Options added to Locust's command line: ``--takealook-dir``,
``--takealook-warmup``, ``--takealook-duration``, ``--takealook-label`` and, for the open model (see
``open_model.py``), ``--takealook-rate``, ``--takealook-arrivals``,
``--takealook-max-in-flight``.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import gevent
import locust
from locust import events
from locust.clients import HttpSession
from locust.contrib.fasthttp import FastHttpSession, FastRequest
from locust.runners import MasterRunner, WorkerRunner

from takealook.loadtests import marking
from takealook.loadtests.marking import STOP_MESSAGE, STOP_REASON
from takealook.loadtests.samples import SAMPLES_FILE, UNFINISHED, SampleWriter

RECORDING_FILE = "recording.json"
PROGRESS_FILE = "progress.json"
TRACE_KEY = "takealook_trace_id"
SCHEDULED_KEY = "takealook_scheduled"
_SEND_INTERVAL = 0.5  # seconds between two batches a worker sends to the master
_FLUSH_WAIT = 10.0  # seconds the master waits for the workers' last rows

# Scheduled time of the task each greenlet is running (open model), read by the
# first request the task makes. Keyed by greenlet: gevent has no context variables
# we could rely on across the versions Locust supports.
SCHEDULED: dict[Any, float] = {}
# Requests in flight per greenlet: (method, name, start, scheduled, trace id). What was
# still running when Locust stopped is recorded as unfinished from here.
CURRENT: dict[Any, tuple[str, str, float, Optional[float], str]] = {}


# --------------------------------------------------------------------------- trace context


def _with_trace(original: Callable) -> Callable:
    @functools.wraps(original)
    def request(self, method, url, *args, **kwargs):
        headers = dict(kwargs.get("headers") or {})
        trace_id = marking.mark(headers, marking.run_label(self))
        kwargs["headers"] = headers
        context = dict(kwargs.get("context") or {})
        context[TRACE_KEY] = trace_id
        scheduled = SCHEDULED.pop(gevent.getcurrent(), None)
        if scheduled is not None:
            context[SCHEDULED_KEY] = scheduled
        kwargs["context"] = context
        me = gevent.getcurrent()
        name = str(kwargs.get("name") or getattr(self, "request_name", None) or urlsplit(str(url)).path or url)
        CURRENT[me] = (str(method).upper(), name, time.time(), scheduled, trace_id)
        try:
            return original(self, method, url, *args, **kwargs)
        finally:
            CURRENT.pop(me, None)

    request.takealook_wrapped = True
    return request


for _session in (HttpSession, FastHttpSession):
    if not getattr(_session.request, "takealook_wrapped", False):
        _session.request = _with_trace(_session.request)
marking.install(HttpSession)
marking.install_fast(FastRequest)


# --------------------------------------------------------------------------- recording


def _error_text(exception: BaseException) -> str:
    text = f"{type(exception).__name__}: {exception}" if str(exception) else type(exception).__name__
    return " ".join(text.split())[:200]


class Recorder:
    """Collects sample rows on one Locust process and gets them into the run folder."""

    def __init__(self, environment):
        self.env = environment
        options = environment.parsed_options
        self.is_worker = isinstance(environment.runner, WorkerRunner)
        self.is_master = isinstance(environment.runner, MasterRunner)
        folder = getattr(options, "takealook_dir", "") or ""
        self.folder = Path(folder) if folder and not self.is_worker else None
        self.buffer: list[tuple] = []
        self.sent = 0
        self.writer: Optional[SampleWriter] = None
        self.received: dict[str, int] = {}
        self.announced: dict[str, int] = {}
        self._flushed: set[str] = set()
        self.recent: deque = deque()
        self.errors = 0
        self.total = 0
        self.unfinished = 0
        self.t0: Optional[float] = None
        self.before_flush: list[Callable[[], None]] = []  # the open model finishes its in-flight tasks here
        self.outstanding: list[Callable[[float], int]] = []  # tasks due before a time and not done
        self.cut_off: set = set()  # CURRENT entries (requests) recorded as unfinished
        options_duration = float(getattr(options, "takealook_duration", 0) or 0)
        self.window = float(getattr(options, "takealook_warmup", 0) or 0) + options_duration
        self._greenlets: list = []
        self.closed = False
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = SampleWriter(self.folder / SAMPLES_FILE)
            self._write_json(RECORDING_FILE, {"locust_version": locust.__version__, "pid": os.getpid()})

    # ---------------------------------------------------------------- rows

    def on_request(self, request_type, name, response_time, response_length=0, response=None, context=None,
                   exception=None, start_time=None, **_ignored) -> None:
        if self.cut_off and CURRENT.get(gevent.getcurrent()) in self.cut_off:
            return  # already recorded as unfinished (the master asked for the rows before it ended)
        context = context or {}
        start = start_time if start_time is not None else time.time() - (response_time or 0) / 1000.0
        trace_id = context.get(TRACE_KEY, "")
        # The request the suite named is the first hop; later hops are traces of their own.
        history = getattr(response, "history", None)
        headers = getattr(history[0] if history else response, "headers", None)
        if headers:
            server_trace = marking.trace_id_of(headers.get("traceresponse") or "")
            trace_id = server_trace or trace_id
        scheduled = context.get(SCHEDULED_KEY)
        row = (
            f"{start:.6f}",
            "" if scheduled is None else f"{scheduled:.6f}",
            f"{float(response_time or 0):.3f}",
            str(request_type),
            str(name),
            int(getattr(response, "status_code", 0) or 0),
            "" if exception is None else _error_text(exception),
            int(response_length or 0),
            trace_id,
            max(0, int(getattr(self.env.runner, "worker_index", 0) or 0)),
        )
        self.add_rows([row])

    def add_rows(self, rows: list[tuple]) -> None:
        if self.closed:
            return  # a request finishing after Locust began quitting: its run is already written
        if self.is_worker:
            self.buffer.extend(rows)
            return
        self._count(rows)
        if self.writer is not None:
            self.writer.write_rows(rows)

    def _count(self, rows: list[tuple]) -> None:
        now = time.time()
        for row in rows:
            self.total += 1
            failed = bool(row[6])
            self.errors += failed
            self.unfinished += row[6] == UNFINISHED
            wait = max(0.0, float(row[0]) - float(row[1])) * 1000.0 if row[1] else 0.0
            self.recent.append((now, float(row[2]) + wait, failed))
        while self.recent and self.recent[0][0] < now - 5.0:
            self.recent.popleft()

    # ---------------------------------------------------------------- lifecycle

    def on_test_start(self, **_ignored) -> None:
        self.t0 = time.time()
        if self.is_worker:
            self._greenlets.append(gevent.spawn(self._send_loop))
            return
        if self.folder is not None:
            self._update_recording({"t0": self.t0})
            self._greenlets.append(gevent.spawn(self._progress_loop))
            if not self.is_master and self.window > 0:
                self._greenlets.append(gevent.spawn(self._end_drain_early))

    def _end_drain_early(self) -> None:
        """Standalone: once the window is over and nothing due in it is still running, stop.

        The drain (Locust's run time past the window) is a ceiling for slow requests to finish;
        most runs need none of it. Distributed runs cannot see their workers' requests and
        wait the whole drain.
        """
        end = self.t0 + self.window
        gevent.sleep(max(0.0, end - time.time()))
        while True:
            busy = sum(1 for entry in list(CURRENT.values()) if (entry[3] or entry[2]) < end)
            busy += sum(check(end) for check in self.outstanding)
            if busy == 0:
                self._update_recording({"drain_ended_early": round(time.time() - end, 3)})
                self.env.runner.quit()
                return
            gevent.sleep(0.05)

    def finish_in_flight(self) -> None:
        """Record requests still in flight on this process as unfinished (their time so far: a lower bound)."""
        now = time.time()
        rows = []
        for entry in list(CURRENT.values()):
            if entry in self.cut_off:
                continue
            self.cut_off.add(entry)
            method, name, start, scheduled, trace_id = entry
            rows.append((f"{start:.6f}", "" if scheduled is None else f"{scheduled:.6f}",
                         f"{(now - start) * 1000.0:.3f}", method, name, 0, UNFINISHED, 0, trace_id,
                         max(0, int(getattr(self.env.runner, "worker_index", 0) or 0))))
        if rows:
            self.add_rows(rows)

    def on_test_stopping(self, **_ignored) -> None:
        self.finish_in_flight()
        for hook in self.before_flush:
            hook()
        if self.is_master:
            self._collect_from_workers()
        if self.writer is not None:
            self.writer.flush()

    def on_quitting(self, **_ignored) -> None:
        # On Ctrl-C Locust may quit without test_stopping: stop the open model's scheduling here too.
        for hook in self.before_flush:
            hook()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        if self.is_worker:
            self._send(final=True)
            return
        if self.writer is None:
            return
        self.writer.close()
        self.closed = True
        lost = sum(max(0, self.announced[w] - self.received.get(w, 0)) for w in self.announced)
        self._update_recording({
            "stopped_because": getattr(self.env, STOP_REASON, None),
            "samples": self.writer.count,
            "unfinished": self.unfinished,
            "samples_lost": lost,
            "workers_reporting": len(self.announced),
            # Locust's own count of the same requests (warm-up and drain included): a cross-check.
            "locust_requests": int(self.env.runner.stats.total.num_requests),
            "ended": time.time(),
        })
        self._write_progress()

    # ---------------------------------------------------------------- distributed mode

    def _send_loop(self) -> None:
        while True:
            gevent.sleep(_SEND_INTERVAL)
            self._send()

    def _send(self, final: bool = False) -> None:
        rows, self.buffer = self.buffer, []
        if rows:
            self.sent += len(rows)
            self.env.runner.send_message("takealook_samples", {"rows": rows, "sent": self.sent})
        elif final:
            self.env.runner.send_message("takealook_samples", {"rows": [], "sent": self.sent})

    def on_flush_request(self, environment, msg, **_ignored) -> None:  # worker
        self.finish_in_flight()
        for hook in self.before_flush:
            hook()
        self._send()
        environment.runner.send_message("takealook_flushed", {"sent": self.sent})

    def on_samples(self, environment, msg, **_ignored) -> None:  # master
        rows = [tuple(row) for row in msg.data["rows"]]
        self.received[msg.node_id] = self.received.get(msg.node_id, 0) + len(rows)
        self.announced[msg.node_id] = max(self.announced.get(msg.node_id, 0), int(msg.data["sent"]))
        self.add_rows(rows)

    def on_flushed(self, environment, msg, **_ignored) -> None:  # master
        self.announced[msg.node_id] = max(self.announced.get(msg.node_id, 0), int(msg.data["sent"]))
        self._flushed.add(msg.node_id)

    def on_stop_request(self, environment, msg, **_ignored) -> None:  # master
        if getattr(environment, STOP_REASON, None) is None:
            setattr(environment, STOP_REASON, str(msg.data.get("reason") or "a worker stopped the run"))
            environment.process_exit_code = 2
            gevent.spawn(environment.runner.quit)

    def _collect_from_workers(self) -> None:
        workers = [client.id for client in self.env.runner.clients.all]
        for worker in workers:
            self.env.runner.send_message("takealook_flush", None, client_id=worker)
        deadline = time.monotonic() + _FLUSH_WAIT
        while time.monotonic() < deadline and not self._flushed.issuperset(workers):
            gevent.sleep(0.05)
        for worker in set(workers) - self._flushed:
            self.announced.setdefault(worker, self.received.get(worker, 0))

    # ---------------------------------------------------------------- files

    def _progress_loop(self) -> None:
        while True:
            gevent.sleep(1.0)
            if self.writer is not None:
                self.writer.flush()
            self._write_progress()

    def _write_progress(self) -> None:
        latencies = sorted(latency for _, latency, _ in self.recent)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None
        span = min(5.0, max(0.001, time.time() - (self.t0 or time.time())))
        self._write_json(PROGRESS_FILE, {
            "elapsed_s": round(time.time() - (self.t0 or time.time()), 3),
            "requests": self.total,
            "errors": self.errors,
            "rps": round(len(latencies) / span, 2),
            "p95_ms": p95,
        })

    def _update_recording(self, values: dict) -> None:
        path = self.folder / RECORDING_FILE
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(values)
        self._write_json(RECORDING_FILE, data)

    def _write_json(self, name: str, data: dict) -> None:
        target = self.folder / name
        tmp = target.with_name(name + ".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(target)


_RECORDERS: dict[int, Recorder] = {}


def recorder_of(environment) -> Recorder:
    return _RECORDERS[id(environment)]


@events.init_command_line_parser.add_listener
def _add_options(parser, **_ignored) -> None:
    parser.add_argument("--takealook-dir", default="", help="takealook: run folder to record samples into")
    parser.add_argument("--takealook-label", default="", help="takealook: run label marked on every request")
    parser.add_argument("--takealook-warmup", type=float, default=0.0, help="takealook: warm-up seconds")
    parser.add_argument("--takealook-duration", type=float, default=0.0, help="takealook: measured seconds")
    parser.add_argument("--takealook-rate", type=float, default=0.0,
                        help="takealook: open model, requests per second in total (0: closed model)")
    parser.add_argument("--takealook-arrivals", choices=("uniform", "poisson"), default="uniform",
                        help="takealook: open model arrival process")
    parser.add_argument("--takealook-max-in-flight", type=int, default=1000,
                        help="takealook: open model, most tasks running at once per process")


@events.init.add_listener
def _on_init(environment, **_ignored) -> None:
    recorder = Recorder(environment)
    _RECORDERS[id(environment)] = recorder
    environment.events.request.add_listener(recorder.on_request)
    environment.events.test_start.add_listener(recorder.on_test_start)
    environment.events.test_stopping.add_listener(recorder.on_test_stopping)
    environment.events.quitting.add_listener(recorder.on_quitting)
    if recorder.is_master:
        environment.runner.register_message("takealook_samples", recorder.on_samples)
        environment.runner.register_message("takealook_flushed", recorder.on_flushed)
        environment.runner.register_message(STOP_MESSAGE, recorder.on_stop_request)
    elif recorder.is_worker:
        environment.runner.register_message("takealook_flush", recorder.on_flush_request)
