"""The open model of ``load run --rate R/s``: tasks start at a fixed arrival rate.

Locust's users are a closed model: a user sends its next request only after the
previous one returned, so a server that stalls slows the load down and its
stall hides (coordinated omission: the requests that should have been sent
during the stall are never sent, never measured). Here arrivals are scheduled
in advance, ``R`` per second in total, whatever the server does; a task that
cannot start on time (all in-flight slots busy, or the load generator behind)
still counts from its scheduled time, which each sample keeps.

How it plugs into Locust: ``load run`` starts Locust with ``-u W -r W
TakealookOpenModel`` (W = number of worker processes, 1 standalone), so each
process runs one driver user, ``TakealookOpenModel``. The driver schedules
arrivals at ``R / W`` per second (worker ``i`` offset by ``i / R`` so the
streams interleave), picks a user class of the suite by its ``weight`` and one
of its tasks by task weight, and runs that one task on an idle instance of the
class (instances are created on demand, ``on_start`` runs once each, at most
``--takealook-max-in-flight`` at once per process). The suite's ``wait_time``
is not used: the arrival rate replaces think time. A task that is a TaskSet
runs one of its tasks. Arrivals are evenly spaced (``uniform``) or a Poisson
process (``poisson``: exponential gaps with the same mean).

When the measurement window ends no more tasks are scheduled; tasks still
running when Locust stops (after the drain) are recorded as failed samples
``unfinished when the run ended`` with their time so far as latency (a lower
bound), so a stall at the end is not lost either.
"""

from __future__ import annotations

import logging
import random
import time

import gevent
from gevent.lock import BoundedSemaphore
from gevent.pool import Group
from locust import User, task
from locust.exception import StopUser
from locust.runners import WorkerRunner
from locust.user.task import TaskSet

from takealook.loadtests.recorder import CURRENT, SCHEDULED, recorder_of
from takealook.loadtests.samples import UNFINISHED

logger = logging.getLogger(__name__)
_MAX_TASKSET_DEPTH = 5


class TakealookOpenModel(User):
    """One per Locust process in an open-model run: schedules the suite's tasks at a fixed rate."""

    def wait_time(self):
        return 0

    @task
    def drive(self):
        Driver(self.environment).run()


class Driver:
    def __init__(self, environment):
        self.env = environment
        options = environment.parsed_options
        self.recorder = recorder_of(environment)
        worker = isinstance(environment.runner, WorkerRunner)
        self.index = max(0, int(getattr(environment.runner, "worker_index", 0) or 0)) if worker else 0
        self.count = max(1, int(getattr(options, "expect_workers", 1) or 1)) if worker else 1
        self.rate = float(options.takealook_rate)
        self.poisson = options.takealook_arrivals == "poisson"
        self.slots = BoundedSemaphore(max(1, int(options.takealook_max_in_flight)))
        self.window = float(options.takealook_warmup) + float(options.takealook_duration)
        self.classes = [c for name, c in sorted((environment.available_user_classes or {}).items())
                        if c is not TakealookOpenModel and getattr(c, "tasks", None)]
        for user_class in self.classes:
            # Locust points only the classes it runs at --host; these run through us.
            if environment.host:
                user_class.host = environment.host
        self.idle: dict[type, list] = {c: [] for c in self.classes}
        self.running: dict = {}  # greenlet -> scheduled time
        self.group = Group()
        self.random = random.Random()
        self.done = False

    def run(self) -> None:
        if not self.classes or self.rate <= 0:
            logger.error("takealook open model: no user classes with tasks in the suite, or no rate")
            gevent.sleep(1e9)
            return
        self.recorder.before_flush.append(self.finish)
        self.recorder.outstanding.append(self.outstanding)
        per_process = self.rate / self.count
        start = time.time()
        end = start + self.window if self.window > 0 else float("inf")
        due = start + self.index / self.rate
        try:
            while not self.done and due < end:
                delay = due - time.time()
                if delay > 0:
                    gevent.sleep(delay)
                greenlet = self.group.spawn(self._one, due)
                self.running[greenlet] = due
                gap = self.random.expovariate(per_process) if self.poisson else 1.0 / per_process
                due += gap
            gevent.sleep(1e9)  # the drain: in-flight tasks finish; Locust stops us
        finally:
            self.finish()

    def outstanding(self, end: float) -> int:
        """Tasks due before ``end`` still waiting for a slot (those in a request the recorder sees)."""
        return sum(1 for g, due in list(self.running.items()) if due < end and not g.ready() and g not in CURRENT)

    def finish(self) -> None:
        """Stop scheduling; record the tasks still running as unfinished (once)."""
        if self.done:
            return
        self.done = True
        now = time.time()
        rows = []
        for greenlet, due in list(self.running.items()):
            if greenlet.ready() or greenlet in CURRENT:
                continue  # done, or inside a request: the recorder records those
            rows.append((f"{now:.6f}", f"{due:.6f}", "0.000", "TASK", "(waiting for an in-flight slot)", 0,
                         UNFINISHED, 0, "", self.index))
        self.recorder.finish_in_flight()
        self.group.kill(block=False)
        if rows:
            # Latency so far is now - scheduled: the wait column carries it (a lower bound).
            self.recorder.add_rows(rows)

    def _one(self, due: float) -> None:
        me = gevent.getcurrent()
        user = None
        try:
            with self.slots:
                user_class = self.random.choices(self.classes, [max(0, c.weight) or 1 for c in self.classes])[0]
                user = self._user(user_class)
                SCHEDULED[me] = due
                self._execute(user, self.random.choice(user_class.tasks), user, 0)
        except gevent.GreenletExit:
            raise
        except StopUser:  # the user cannot go on (its login failed): it is not reused
            user = None
        except Exception as error:  # a failing task is the suite's bug: report it as Locust does
            logger.exception("takealook open model: task failed")
            self.env.events.user_error.fire(user_instance=user, exception=error, tb=error.__traceback__)
        finally:
            SCHEDULED.pop(me, None)
            self.running.pop(me, None)
            if user is not None:
                self.idle[type(user)].append(user)

    def _user(self, user_class):
        pool = self.idle[user_class]
        if pool:
            return pool.pop()
        user = user_class(self.env)
        user.on_start()
        return user

    def _execute(self, user, task_, parent, depth: int) -> None:
        if isinstance(task_, type) and issubclass(task_, TaskSet):
            if depth >= _MAX_TASKSET_DEPTH or not task_.tasks:
                return
            taskset = task_(parent)
            self._execute(user, self.random.choice(task_.tasks), taskset, depth + 1)
        else:
            task_(parent)
