"""``takealook load generate|run|compare`` (issue 6).

``run`` starts Locust in a subprocess (``takealook.loadtests.runner``): this
process never imports locust, whose gevent monkey-patching would change it.
``compare`` and ``generate`` need no Locust at all. Options are parsed here and
handed to the library as explicit arguments; see docs/load.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from pathlib import Path

from takealook.cli.common import add_load_options, add_output_options, add_store_option, emit, load_filter, store_path
from takealook.cli.flags import add_flags, build
from takealook.cli.verdict_flags import VERDICT_FLAGS
from takealook.errors import MissingExtra, UsageError
from takealook.verdicts import Settings

RUNS_ENV = "TAKEALOOK_RUNS"
_SPAN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_seconds(text: str) -> int:
    """``90``, ``90s``, ``2m``, ``1m30s``, ``1h`` -> whole seconds."""
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    match = _SPAN.match(text)
    if not text or not match or not any(match.groups()):
        raise UsageError(f"bad duration {text!r}: use seconds or a span such as 30s, 2m, 1m30s")
    h, m, s = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s


def parse_rate(text: str) -> float:
    """``50``, ``50/s``, ``3000/m`` (or ``/min``) -> requests per second."""
    match = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*(?:/\s*(s|sec|m|min))?\s*$", str(text))
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"bad rate {text!r}: use requests per second such as 50/s (or 3000/m)")
    value = float(match.group(1))
    return value / 60.0 if match.group(2) in ("m", "min") else value


def parse_pct(text: str) -> float:
    match = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*%?\s*$", str(text))
    if not match:
        raise UsageError(f"bad percentage {text!r}: use a number such as 10 or 10%")
    return float(match.group(1))


def _runs_dir(args) -> Path:
    return Path(args.runs_dir or os.environ.get(RUNS_ENV) or Path(".takealook") / "runs")


def register(subparsers) -> None:
    parser = subparsers.add_parser("load", help="reproduce slow endpoints with Locust, compare before/after")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _register_generate(verbs)
    _register_run(verbs)
    _register_compare(verbs)


# --------------------------------------------------------------------------- run


def _register_run(verbs) -> None:
    sub = verbs.add_parser("run", help="run a suite headless and record every request",
                           description="Run a Locust suite headless; record every request raw in "
                                       ".takealook/runs/LABEL/. Arguments after --locust go to Locust unchanged.")
    sub.add_argument("suite", metavar="SUITE.py")
    sub.add_argument("--host", help="base URL of the system under test, e.g. http://127.0.0.1:8000")
    sub.add_argument("--label", help="name of the run (its folder under .takealook/runs/)")
    model = sub.add_mutually_exclusive_group()
    model.add_argument("--users", type=int, help="closed model: concurrent users (default 10)")
    model.add_argument("--rate", help="open model: arrivals per second in total, e.g. 50/s")
    sub.add_argument("--spawn-rate", type=float, help="closed model: users started per second (default: all at once)")
    sub.add_argument("--arrivals", choices=("uniform", "poisson"), default="uniform",
                     help="open model: evenly spaced or Poisson arrivals (default uniform)")
    sub.add_argument("--max-in-flight", type=int, default=1000,
                     help="open model: most tasks in flight per process (default 1000)")
    sub.add_argument("--duration", default="60s", help="measured time (default 60s)")
    sub.add_argument("--warmup", default="0s", help="time before measuring, excluded from results (default 0s)")
    sub.add_argument("--drain", default="5s", help="time for requests in flight at the end to finish (default 5s)")
    sub.add_argument("--processes", type=int, help="Locust worker processes on this machine")
    sub.add_argument("--master", action="store_true", help="be a Locust master for workers on other machines")
    sub.add_argument("--expect-workers", type=int, help="with --master: workers to wait for")
    sub.add_argument("--worker", action="store_true", help="be a Locust worker of a takealook master")
    sub.add_argument("--master-host", help="with --worker: the master's address")
    sub.add_argument("--runs-dir", help=f"where runs are kept (default ${RUNS_ENV} or .takealook/runs)")
    sub.add_argument("--replace", action="store_true", help="overwrite an earlier run with the same label")
    add_output_options(sub)
    # Last, because it takes everything after it: Locust's own options, unchanged.
    sub.add_argument("--locust", dest="locust_args", nargs=argparse.REMAINDER, default=[], metavar="ARGS",
                     help="everything after this goes to Locust unchanged (e.g. --locust --tags checkout)")
    sub.set_defaults(run=run_command)


def _require_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        raise MissingExtra("load", "locust")


def run_command(args) -> int:
    from takealook.loadtests import runner

    _require_locust()
    suite = Path(args.suite)
    extra = tuple(args.locust_args or ())
    if args.worker:
        if not args.master_host:
            raise UsageError("--worker needs --master-host")
        return runner.run_worker(suite, args.master_host, extra)
    if not args.host or not args.label:
        raise UsageError("load run needs --host URL and --label NAME")
    if args.max_in_flight < 1 or (args.users is not None and args.users < 1) or (args.processes or 1) < 1:
        raise UsageError("--users, --processes and --max-in-flight must be at least 1")
    if args.master and args.processes:
        raise UsageError("--master and --processes do not mix: --processes starts its own master")
    if args.rate:
        shape = runner.LoadShape(rate=parse_rate(args.rate), arrivals=args.arrivals, max_in_flight=args.max_in_flight)
    else:
        users = args.users or 10
        shape = runner.LoadShape(users=users, spawn_rate=args.spawn_rate or float(users))
    duration = parse_seconds(args.duration)
    if duration < 1:
        raise UsageError("--duration must be at least 1s")
    request = runner.RunRequest(
        suite=suite, host=args.host.rstrip("/"), label=args.label, runs_dir=_runs_dir(args), shape=shape,
        duration_s=duration, warmup_s=parse_seconds(args.warmup), drain_s=parse_seconds(args.drain),
        processes=args.processes, master=args.master, expect_workers=args.expect_workers,
        extra_args=extra, replace=args.replace)
    total = request.warmup_s + request.duration_s + request.drain_s
    progress = _Progress(total, request.warmup_s, request.duration_s) if _interactive() else None
    try:
        outcome = runner.run_load(request, progress)
    finally:
        if progress is not None:
            progress.done()
    _print_run_summary(args, outcome.path)
    return 0


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


class _Progress:
    """One line on stderr, rewritten: elapsed, phase, requests, req/s, p95 and errors of the last seconds."""

    def __init__(self, total: int, warmup: int, duration: int):
        self.total, self.warmup, self.duration = total, warmup, duration

    def __call__(self, state: dict) -> None:
        elapsed = float(state.get("elapsed_s") or 0)
        phase = "warm-up" if elapsed < self.warmup else "measuring" if elapsed < self.warmup + self.duration else "drain"
        p95 = state.get("p95_ms")
        line = (f"\r{elapsed:5.0f}/{self.total}s {phase:9} {state.get('requests', 0):>8} req "
                f"{state.get('rps', 0):>7.1f} req/s  p95 {'—' if p95 is None else f'{p95:.0f} ms':>8}  "
                f"errors {state.get('errors', 0)}")
        sys.stderr.write(line[:120])
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")


def _print_run_summary(args, folder: Path) -> None:
    from takealook.verdicts import stats
    from takealook.loadtests.compare import OVERALL, endpoint_series, failing_endpoints
    from takealook.loadtests.runs import load_run
    from takealook.report import load as report

    run = load_run(str(folder), _runs_dir(args))
    series = endpoint_series(run)
    names = sorted(n for n in series if n != OVERALL) + ([OVERALL] if OVERALL in series else [])
    summaries = [(name, stats.summarize([series[name]])) for name in names]
    failing = failing_endpoints(run)
    # Loud on stderr too: the summary may go to a file, and a failing endpoint makes every figure wrong.
    for name, rate, error in failing:
        print(f"takealook: {report.failing_text(name, rate, error)}", file=sys.stderr)
    top_error = {name: error for name, _, error in failing}
    emit(args, lambda: report.run_document(run.label, str(folder), run.meta, summaries, failing),
         lambda: {"schema_version": 1, "run": run.label, "folder": str(folder),
                  "meta": {k: v for k, v in run.meta.items() if k != "schema_version"},
                  "endpoints": [{"name": n, **vars(s), "top_error": top_error.get(n)} for n, s in summaries],
                  "warnings": [report.failing_text(*f) for f in failing]})


# --------------------------------------------------------------------------- compare


def _register_compare(verbs) -> None:
    sub = verbs.add_parser("compare", help="compare runs before and after a change",
                           description="Per endpoint: p50/p95/p99/mean, error rate and throughput of each side, "
                                       "the change with a block-bootstrap interval (95% unless --confidence), a verdict and the smallest "
                                       "change the runs could detect.")
    sub.add_argument("runs", nargs="*", metavar="RUN", help="BEFORE AFTER: run labels or run folders")
    sub.add_argument("--before", nargs="+", metavar="RUN", help="runs before the change (repetitions)")
    sub.add_argument("--after", nargs="+", metavar="RUN", help="runs after the change (repetitions)")
    add_flags(sub, Settings, VERDICT_FLAGS)
    sub.add_argument("--fail-on-regression", metavar="PCT",
                     help="exit 1 when an endpoint got slower by more than PCT (points for --metric errors), "
                          "or its error rate rose beyond --error-floor")
    sub.add_argument("--paired", action="store_true",
                     help="the i-th before and i-th after runs ran at the same time (two hosts side by side)")
    sub.add_argument("--runs-dir", help=f"where runs are kept (default ${RUNS_ENV} or .takealook/runs)")
    add_output_options(sub)
    sub.set_defaults(run=compare_command)


def compare_command(args) -> int:
    from takealook.loadtests.compare import compare_runs, regressions
    from takealook.loadtests.runs import load_run
    from takealook.report import load as report

    if args.runs and (args.before or args.after):
        raise UsageError("give BEFORE AFTER, or --before ... --after ..., not both")
    if args.runs:
        if len(args.runs) != 2:
            raise UsageError("give two runs, BEFORE AFTER (or --before RUN ... --after RUN ...)")
        before_refs, after_refs = [args.runs[0]], [args.runs[1]]
    else:
        if not args.before or not args.after:
            raise UsageError("give BEFORE AFTER, or --before RUN ... --after RUN ...")
        before_refs, after_refs = args.before, args.after
    threshold = parse_pct(args.fail_on_regression) if args.fail_on_regression else None
    settings = build(Settings, args, VERDICT_FLAGS)
    runs_dir = _runs_dir(args)
    before = [load_run(ref, runs_dir) for ref in before_refs]
    after = [load_run(ref, runs_dir) for ref in after_refs]
    comparison = compare_runs(before, after, metric=settings.metric, noise_floor_pct=settings.noise_floor_pct,
                              error_floor_pts=settings.error_floor_pts, resamples=settings.resamples,
                              seed=settings.seed, confidence=settings.confidence, paired=args.paired)
    found = regressions(comparison, threshold) if threshold is not None else []
    emit(args, lambda: report.compare_document(comparison, found, threshold),
         lambda: report.compare_contract(comparison, found, threshold))
    return 1 if found else 0


# --------------------------------------------------------------------------- generate


_GENERATE_EPILOG = """\
examples of logging in (${VAR} is read from the environment when the suite runs, never written into it):
  --login-form /accounts/login/ --form username='${LOAD_USER}' --form password='${LOAD_PASSWORD}'
  --login-json "POST /api/auth/token/" --body '{"username": "${API_USER}", "password": "${API_PASSWORD}"}'
      --token-from token --token-header "Authorization: Token {token}"
"""


def _register_generate(verbs) -> None:
    sub = verbs.add_parser("generate", help="write a locustfile from the traces in the store",
                           description="Write a plain locustfile from the real traffic in the span store: one task "
                                       "per entry endpoint, weighted by traffic, with real parameter values.",
                           epilog=_GENERATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_store_option(sub)
    sub.add_argument("--host", help="default host written into the suite")
    sub.add_argument("--since", default="24h", help="use traces from this far back (default 24h)")
    sub.add_argument("--service", action="append", help="only entry endpoints of this service (repeatable)")
    add_load_options(sub)
    sub.add_argument("--slow-weight", type=float, default=1.0,
                     help="count requests at or above their endpoint's p90 this many times when weighting "
                          "parameter values (default 1)")
    sub.add_argument("--values", type=int, default=20, help="parameter values kept per endpoint (default 20)")
    sub.add_argument("--seed", type=int, default=1, help="seed of the value sampling (default 1)")
    sub.add_argument("--include-writes", action="store_true",
                     help="replay POST/PUT/PATCH/DELETE endpoints too (left out by default)")
    sub.add_argument("--header", action="append", default=[], metavar='"NAME: VALUE"',
                     help="send this header with every request (repeatable; ${VAR} from the environment)")
    login = sub.add_argument_group("logging in (each simulated user logs in first, and again after a 401)")
    login.add_argument("--login-form", metavar="PATH", help="the login page: its form is posted with --form fields "
                                                            "and its hidden inputs (the CSRF token)")
    login.add_argument("--form", action="append", default=[], metavar="NAME=VALUE",
                       help="a field of the login form (repeatable)")
    login.add_argument("--login-json", metavar='"METHOD PATH"', help="a JSON login endpoint, sent --body")
    login.add_argument("--body", metavar="JSON", help="with --login-json: the JSON body")
    login.add_argument("--token-from", metavar="DOTTED.PATH",
                       help="with --login-json: where the token is in the answer (user.token, access)")
    login.add_argument("--token-header", metavar="TEMPLATE",
                       help='with --token-from: the header that carries it (default "Authorization: Bearer {token}")')
    sub.add_argument("-o", "--output", required=True, metavar="SUITE.py", help="the locustfile to write")
    sub.add_argument("--force", action="store_true", help="overwrite SUITE.py if it exists")
    sub.set_defaults(run=generate_command)


def suite_options(args):
    """The login, headers and writes options of ``load generate``, checked; UsageError says what is wrong."""
    import json

    from takealook.errors import InputError
    from takealook.loadtests import login as logins
    from takealook.loadtests.suitefile import FormLogin, JsonLogin, SuiteOptions

    if args.login_form and args.login_json:
        raise UsageError("give one way to log in: --login-form or --login-json, not both")
    if args.form and not args.login_form:
        raise UsageError("--form gives fields of the login form: add --login-form PATH")
    if (args.body or args.token_from or args.token_header) and not args.login_json:
        raise UsageError("--body, --token-from and --token-header go with --login-json \"METHOD PATH\"")
    if args.token_header and not args.token_from:
        raise UsageError("--token-header needs --token-from: where the token is in the login answer")
    try:
        headers = tuple(logins.parse_header(text) for text in args.header)
        login = None
        if args.login_form:
            if not args.login_form.startswith("/"):
                raise UsageError(f"--login-form {args.login_form!r}: give the path of the login page, "
                                 "e.g. /accounts/login/")
            if not args.form:
                raise UsageError("--login-form needs the fields to fill: --form username='${LOAD_USER}' "
                                 "--form password='${LOAD_PASSWORD}'")
            login = FormLogin(args.login_form, tuple(logins.parse_field(text) for text in args.form))
        elif args.login_json:
            method, path = logins.parse_request_line(args.login_json)
            body = args.body or "{}"
            try:
                json.loads(body)
            except ValueError as error:
                raise UsageError(f"--body is not JSON ({error}); put ${{VAR}} inside quotes: "
                                 "'{\"password\": \"${API_PASSWORD}\"}'") from None
            template = args.token_header or "Authorization: Bearer {token}"
            if args.token_from:
                logins.check_token_header(template)
                if not all(args.token_from.split(".")):
                    raise UsageError(f"--token-from {args.token_from!r}: a dotted path such as user.token")
            login = JsonLogin(method, path, body, args.token_from, template if args.token_from else None)
    except InputError as error:
        raise UsageError(str(error)) from None
    return SuiteOptions(headers, login, args.include_writes)


def _clear_text_secrets(options) -> list[str]:
    """Login fields and headers that look secret and are written into the suite as they are."""
    from takealook.loadtests.login import variables
    from takealook.loadtests.suitefile import FormLogin

    pairs = list(options.headers)
    if isinstance(options.login, FormLogin):
        pairs += list(options.login.fields)
    return [name for name, value in pairs
            if re.search(r"pass|secret|token|key|auth|cookie", name, re.I) and value and not variables(value)]


def generate_command(args) -> int:
    import time

    from takealook.cli.common import write_text
    from takealook.loadtests import generate

    since_ns = time.time_ns() - parse_seconds(args.since) * 1_000_000_000 if args.since else None
    if Path(args.output).exists() and not args.force:
        raise UsageError(f"{args.output} exists (you may have edited it); pass --force to overwrite it")
    if args.values < 1 or args.slow_weight <= 0:
        raise UsageError("--values must be at least 1 and --slow-weight above 0")
    options = suite_options(args)
    suite = generate.from_store(store_path(args), since_ns, tuple(args.service or ()), args.host,
                                args.values, args.slow_weight, args.seed, options, load_filter(args))
    write_text(args.output, suite.text)
    print(f"{len(suite.endpoints)} endpoints from {suite.traces} traces", file=sys.stderr)
    for label, why in suite.left_out:
        print(f"takealook: left out {label}: {why}", file=sys.stderr)
    for name in _clear_text_secrets(options):
        print(f"takealook: note: {name} is written into {args.output} as given; "
              f"use ${{VAR}} to read it from the environment instead", file=sys.stderr)
    names = options.variables()
    if names:
        print(f"takealook: the suite reads {', '.join('$' + n for n in names)} from the environment when it runs",
              file=sys.stderr)
    return 0
