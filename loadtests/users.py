"""What generated suites import: a Locust user that logs in, marks its traffic and tells the truth.

A suite written by ``takealook load generate`` reads::

    from takealook.loadtests.users import FormLogin, TakealookUser, pick

    LOGIN = FormLogin("/accounts/login/", {"username": "${LOAD_USER}", "password": "${LOAD_PASSWORD}"})

    class WebUser(TakealookUser):
        login = LOGIN
        headers = {"Accept-Language": "en"}

        @task(3)
        def orders(self):
            self.client.get(pick(ORDERS), name="/orders/{id}")

``TakealookUser`` is Locust's ``HttpUser`` with:

- **Logging in.** ``login`` is a ``FormLogin`` (GET the page, copy the form's
  hidden inputs, the CSRF token among them, post the form to its ``action``
  with the given fields; the session keeps the cookies) or a ``JsonLogin``
  (send a JSON body, read a token from the answer by dotted path, send it in a
  header from then on; cookies are kept too). Each user logs in once
  (``on_start``) and again after a 401 or a redirect to the login page (at most
  once every ``RELOGIN_BACKOFF_S`` after a failed attempt). A login that lands
  back on the login page, or whose answer has no token, is a failed login, and
  its request a failure that says why. When no user of this process has logged
  in and one fails, the run stops: the reason is logged, set on the
  environment for ``load run``'s recorder, and the exit code is 2.
- **True outcomes.** A 401 or 403, or a redirect to a login page (the form's
  path, or a ``login``/``signin`` path with a ``next``-style parameter), is a
  failure "not logged in: ..." even when the page it lands on answers 200.
- **Headers** sent with every request (``headers``); ``${VAR}`` in them and in
  the login settings are read from the environment when the suite is loaded,
  never written into it (``login.py``).
- **Marked traffic.** Every request, and every redirect hop, carries a fresh
  ``traceparent`` and the run's ``tracestate`` mark (``marking.py``), under
  ``load run`` and under plain ``locust`` alike.

``pick(values)`` chooses one of ``(path, weight)`` pairs as often as its weight
says. Not for import outside Locust: it imports locust.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

import gevent
from locust import HttpUser
from locust.clients import HttpSession
from locust.exception import StopUser
from locust.runners import WorkerRunner

from takealook.loadtests import login as logins
from takealook.loadtests import marking
from takealook.loadtests.marking import STOP_MESSAGE, STOP_REASON

logger = logging.getLogger(__name__)
RELOGIN_BACKOFF_S = 5.0

marking.install(HttpSession)


class LoginFailed(Exception):
    """A login did not log the user in; the message says why, on one line."""


def pick(values: Sequence[tuple[str, float]]) -> str:
    """One path of ``(path, weight)`` pairs, drawn as often as its weight says."""
    return random.choices([path for path, _ in values], [weight for _, weight in values])[0]


# --------------------------------------------------------------------------- logins


class FormLogin:
    """Log in through an HTML form: ``FormLogin("/accounts/login/", {"username": "${LOAD_USER}", ...})``."""

    def __init__(self, path: str, fields: dict[str, str]):
        self.path = path
        self.fields = {name: logins.expand(value, os.environ, f"the login form's field {name}")
                       for name, value in fields.items()}
        self.paths: tuple[str, ...] = (path,)  # where a redirect means "log in first"

    def log_in(self, client) -> None:
        with client.get(self.path, name=f"{self.path} (login form)", catch_response=True) as page:
            form, problem = self._form(page)
            _outcome(page, problem)
        if problem:
            raise LoginFailed(problem)
        self.paths = tuple(dict.fromkeys((self.path, urlsplit(form.action).path)))
        data = {**form.hidden(), **self.fields}
        name = f"{urlsplit(form.action).path} (login)"
        fields = {"params": data} if form.method == "GET" else {"data": data}
        with client.request(form.method, form.action, name=name, catch_response=True, allow_redirects=False,
                            **fields) as answer:
            problem = self._answer(answer, form)
            _outcome(answer, problem)
        if problem:
            raise LoginFailed(problem)

    def _form(self, page):
        if page.status_code != 200:
            return None, (f"GET {self.path} answered {page.status_code}: is --login-form the path of the login "
                          "page?")
        form = logins.parse_form(page.text, urlsplit(page.url).path or self.path)
        if form is None:
            return None, f"the page at {self.path} has no <form>: is --login-form the path of the login page?"
        unknown = [name for name in self.fields if name not in form.names()]
        if unknown:
            return form, (f"the form at {self.path} has no field {unknown[0]!r} (its fields: "
                          f"{', '.join(form.names()) or 'none'}): fix --form")
        return form, None

    def _answer(self, answer, form) -> Optional[str]:
        status, request = answer.status_code, f"{form.method} {urlsplit(form.action).path}"
        if status >= 400 or status == 0:
            if status in (400, 403, 419) and not form.has_csrf_input:
                return (f"the form at {self.path} has no CSRF input, and the server refused the login with "
                        f"{status} ({logins.gist(answer.text)})")
            return f"{request} answered {status}: {logins.gist(answer.text)}"
        location = answer.headers.get("Location", "")
        if 300 <= status < 400 and logins.login_redirect(location, self.paths):
            return f"{request} sent the user back to the login page: check the --form values (user name, password)"
        again = logins.parse_form(answer.text, self.path) if status < 300 else None
        if again is not None and again.has_password:
            return f"{request} answered with the login form again: check the --form values (user name, password)"
        return None


class JsonLogin:
    """Log in through a JSON API: the token in the answer at ``token_from`` goes into ``token_header``."""

    def __init__(self, method: str, path: str, body: Any, token_from: Optional[str] = None,
                 token_header: str = "Authorization: Bearer {token}"):
        self.method, self.path = method.upper(), path
        self.body = logins.expand_json(body, os.environ, "the login body")
        self.token_from = token_from
        self.header = logins.check_token_header(token_header) if token_from else None
        self.paths: tuple[str, ...] = ()

    def log_in(self, client) -> None:
        if self.header is not None:
            client.headers.pop(self.header[0], None)  # an expired token must not ride on the login itself
        token = None
        with client.request(self.method, self.path, json=self.body, name=f"{self.path} (login)",
                            catch_response=True, allow_redirects=False) as answer:
            token, problem = self._token(answer)
            _outcome(answer, problem)
        if problem:
            raise LoginFailed(problem)
        if self.header is not None:
            name, template = self.header
            client.headers[name] = template.replace("{token}", str(token))

    def _token(self, answer):
        request = f"{self.method} {self.path}"
        status = answer.status_code
        if status in (404, 405):
            return None, f"{request} answered {status}: is --login-json the login endpoint?"
        if status >= 300 or status == 0:
            return None, f"{request} answered {status}: {logins.gist(answer.text or '')}"
        if not self.token_from:
            return None, None
        try:
            data = json.loads(answer.text)
        except ValueError:
            return None, f"the answer of {request} is not JSON: {logins.gist(answer.text)}"
        try:
            token = logins.dig(data, self.token_from)
        except KeyError:
            return None, (f"the answer of {request} has no {self.token_from!r} (it has: {logins.keys_of(data)}): "
                          "fix --token-from")
        if not isinstance(token, (str, int)) or token == "":
            return None, f"{self.token_from!r} in the answer of {request} is not a token: fix --token-from"
        return token, None


def _outcome(response, problem: Optional[str]) -> None:
    """Inside a ``catch_response`` block: the request failed with ``problem``, else it succeeded."""
    if problem:
        response.failure(problem)
    else:
        response.success()


# --------------------------------------------------------------------------- the session and the user


class TakealookSession(HttpSession):
    """Locust's HttpSession with the load-test mark and "not logged in" counted as a failure."""

    def request(self, method, url, name=None, catch_response=False, context={}, **kwargs):  # noqa: B006 - Locust's
        headers = dict(kwargs.pop("headers", None) or {})
        marking.mark(headers, marking.run_label(self))
        response = super().request(method, url, name=name, catch_response=True, context=context, headers=headers,
                                   **kwargs)
        user = self.user
        problem = None if user is None or user.logging_in else not_logged_in(response, user.login_paths())
        if not catch_response:
            with response:
                if problem:
                    response.failure(problem)
        if problem and response.status_code != 403:
            user.log_in_again()
        return response


def not_logged_in(response, login_paths: Sequence[str]) -> Optional[str]:
    """Why a response says the user is not logged in: a 401, a 403, or a redirect to a login page."""
    status = response.status_code
    if status in (401, 403):
        return f"not logged in: {status} {getattr(response, 'reason', '') or ''}".strip()
    for hop in (*getattr(response, "history", ()), response):
        location = hop.headers.get("Location", "") if 300 <= hop.status_code < 400 else ""
        if logins.login_redirect(location, login_paths):
            return f"not logged in: {hop.status_code} redirect to {urlsplit(location).path}"
    return None


class TakealookUser(HttpUser):
    """``HttpUser`` that logs in (``login``), sends ``headers``, and counts "not logged in" as a failure."""

    abstract = True
    login: Optional[Any] = None  # a FormLogin or a JsonLogin
    headers: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Read once, when the suite is loaded: a missing variable stops it before any request.
        cls._sent_headers = {name: logins.expand(value, os.environ, f"the header {name}")
                             for name, value in cls.headers.items()}

    def __init__(self, environment):
        super().__init__(environment)
        self.client = TakealookSession(base_url=self.host, request_event=environment.events.request, user=self,
                                       pool_manager=self.pool_manager)
        self.client.trust_env = False
        self.client.headers.update(getattr(self, "_sent_headers", {}))
        self.logging_in = False
        self._next_login = 0.0

    def login_paths(self) -> tuple[str, ...]:
        return self.login.paths if self.login is not None else ()

    def on_start(self):
        if self.login is None:
            return
        try:
            self._log_in()
        except LoginFailed as failure:
            _count_login(self.environment, str(failure))
            raise StopUser() from None
        _count_login(self.environment, None)

    def log_in_again(self) -> None:
        """After a 401 or a redirect to the login page; failed attempts are retried after a pause."""
        if self.login is None or self.logging_in or time.monotonic() < self._next_login:
            return
        try:
            self._log_in()
        except LoginFailed:
            self._next_login = time.monotonic() + RELOGIN_BACKOFF_S

    def _log_in(self) -> None:
        self.logging_in = True
        try:
            self.login.log_in(self.client)
        finally:
            self.logging_in = False


def _count_login(environment, failure: Optional[str]) -> None:
    """Tally logins in this process; the first failure before any success stops the run."""
    tally = getattr(environment, "takealook_logins", None)
    if tally is None:
        tally = environment.takealook_logins = {"ok": 0, "failed": 0}
    tally["failed" if failure else "ok"] += 1
    if failure and tally["ok"] == 0:
        _stop_run(environment, f"no user could log in: {failure}")


def _stop_run(environment, reason: str) -> None:
    if getattr(environment, STOP_REASON, None) is not None:
        return
    setattr(environment, STOP_REASON, reason)
    logger.error("takealook: %s", reason)
    environment.process_exit_code = 2
    runner = environment.runner
    if isinstance(runner, WorkerRunner):  # the master stops the run for all its workers
        runner.send_message(STOP_MESSAGE, {"reason": reason})
    elif runner is not None:
        gevent.spawn(runner.quit)  # not from this greenlet: quitting kills the users, this one among them
