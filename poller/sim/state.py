"""The emulator's mutable state: its clock, jobs, answer caches, fault settings and counters."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from aiohttp import web

from poller.sim.aksk import AkSkVerifier
from poller.sim.auth import RequestVerifier
from poller.sim.config import SimConfig
from poller.sim.faults import FaultConfig, FaultKind, FaultTable, fault_table
from poller.sim.hostile import Quirk, hostile_count, hostile_task, parse_quirks
from poller.sim.model import EmulatedJobState, change_points, state_at, state_version
from poller.sim.render import JsonObject, details_body, job_object, task_object, upper_keys
from poller.sim.requestlog import RequestLog, ThrottleBurst
from poller.sim.scenario import JobSpec, resolve_job
from poller.sim.tokens import IssuedTokens, IssuedTokenVerifier

_MAX_CACHED_PAGES: Final = 256
PageKey = tuple[int, int, bool, bool]  # offset, limit, descending, upper-case keys


class DuplicateJobError(Exception):
    """A job with this ID exists already."""


class SimClock:
    """Emulated epoch time: a manual clock, or real time sped up by ``scale``.

    Both kinds can be moved forward with :meth:`advance`; the manual one moves only that way.
    """

    __slots__ = ("_base", "_manual", "_offset", "_origin", "_scale")

    def __init__(self, base: Callable[[], float], *, manual: bool, scale: float) -> None:
        self._base = base
        self._manual = manual
        self._scale = scale
        self._origin = base()
        self._offset = 0.0

    @property
    def manual(self) -> bool:
        """True when time moves only through :meth:`advance`."""
        return self._manual

    def now(self) -> float:
        """The emulated current time, in epoch seconds."""
        if self._manual:
            return self._origin + self._offset
        return self._origin + (self._base() - self._origin) * self._scale + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` (not negative) forward."""
        if seconds < 0:
            raise ValueError("the clock cannot go back")
        self._offset += seconds


AKSK_OUTCOMES: Final = ("accepted", "rejected", "signature_failure", "locked", "locked_rejection")


@dataclass(slots=True)
class SimStats:
    """Counters of API requests (the admin API is not counted; IAM has counters of its own).

    ``by_aksk`` counts AK/SK verdicts: ``accepted``, ``rejected`` (unknown AK, stale date,
    malformed), ``signature_failure``, ``locked`` (an AK got locked) and ``locked_rejection``.
    """

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    by_job: Counter[str] = field(default_factory=Counter)
    iam_requests: int = 0
    iam_tokens_issued: int = 0
    iam_failures: int = 0
    by_aksk: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready counters; a ``reset`` fault has no status, only its fault count."""
        return {
            "requests": self.requests,
            "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "by_fault": {
                kind: self.by_fault[kind] for kind in (*(k.value for k in FaultKind), "latency")
            },
            "by_job": dict(self.by_job),
            "iam_requests": self.iam_requests,
            "iam_tokens_issued": self.iam_tokens_issued,
            "iam_failures": self.iam_failures,
            "by_aksk": {outcome: self.by_aksk[outcome] for outcome in AKSK_OUTCOMES},
        }


class SimJob:
    """A created job: its resolved spec, creation time and cached answers for its current state."""

    __slots__ = (
        "_bodies", "_job", "_points", "_quirks", "_state", "_tasks", "_version", "created_at",
        "spec",
    )  # fmt: skip

    def __init__(self, spec: JobSpec, created_at: float) -> None:
        self.spec = spec
        self.created_at = created_at
        self._quirks = frozenset(spec.hostile)
        self._points = change_points(spec)
        self._version = -1
        self._state: EmulatedJobState | None = None
        self._job: dict[bool, JsonObject] = {}
        self._tasks: dict[bool, list[JsonObject]] = {}
        self._bodies: dict[PageKey, bytes] = {}

    @property
    def job_id(self) -> str:
        """The job's ID."""
        return self.spec.job_id or ""

    @property
    def project_id(self) -> str:
        """The job's project."""
        return self.spec.project_id or ""

    def state(self, elapsed: float) -> EmulatedJobState:
        """The true state ``elapsed`` seconds after creation (cached per state version)."""
        version = state_version(self._points, elapsed)
        if version != self._version or self._state is None:
            self._version = version
            self._state = state_at(self.spec, elapsed)
            self._job.clear()
            self._tasks.clear()
            self._bodies.clear()
        return self._state

    def details(self, elapsed: float, page: PageKey) -> bytes:
        """The 200 body for one page, built once per state version and page."""
        state = self.state(elapsed)
        cached = self._bodies.get(page)
        if cached is not None:
            return cached
        offset, limit, descending, upper = page
        upper = upper or Quirk.UPPER_CASE_KEYS in self._quirks
        tasks = self._task_objects(state, upper)
        ordered = tasks[::-1] if descending else tasks
        job = self._job_object(state, upper)
        count = hostile_count(len(tasks), self._quirks)
        body = details_body(job, ordered[offset : offset + limit], count)
        if len(self._bodies) >= _MAX_CACHED_PAGES:
            self._bodies.clear()
        self._bodies[page] = body
        return body

    def _job_object(self, state: EmulatedJobState, upper: bool) -> JsonObject:
        job = self._job.get(upper)
        if job is None:
            job = job_object(self.spec, state.execution_status)
            job = self._job[upper] = upper_keys(job) if upper else job
        return job

    def _task_objects(self, state: EmulatedJobState, upper: bool) -> list[JsonObject]:
        tasks = self._tasks.get(upper)
        if tasks is None:
            tasks = [
                hostile_task(task_object(task, self.created_at), self._quirks)
                for task in state.tasks
            ]
            if upper:
                tasks = [upper_keys(task) for task in tasks]
            self._tasks[upper] = tasks
        return tasks


class SimState:
    """One emulator's world; the HTTP handlers and :class:`~poller.sim.server.SimHandle` use it.

    ``clock`` drives job timelines; ``wall_clock`` (default :func:`time.time`) everything about
    credentials: signature dates, AK locks, IAM token lifetimes.
    """

    def __init__(
        self,
        config: SimConfig,
        clock: Callable[[], float],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = SimClock(clock, manual=config.manual_clock, scale=config.time_scale)
        self.wall_clock = wall_clock
        self.jobs: dict[str, SimJob] = {}
        self.stats = SimStats()
        self.requests = RequestLog()
        self.throttle: ThrottleBurst | None = None
        self.iam_tokens = IssuedTokens(config.iam_token_lifetime, wall_clock=wall_clock)
        self.aksk: AkSkVerifier | None = None
        if config.access_keys:
            self.aksk = AkSkVerifier(
                config.access_keys,
                lock_seconds=config.aksk_lock_seconds,
                max_failures=config.aksk_max_failures,
                wall_clock=wall_clock,
                observe=self._count_aksk,
            )
        # Issued tokens first: an expired one is then rejected as "token expires" rather than
        # by a static token authenticator as unknown.
        self.authenticators: tuple[RequestVerifier, ...] = (
            *((IssuedTokenVerifier(self.iam_tokens),) if config.iam_users else ()),
            *config.authenticators,
            *((self.aksk,) if self.aksk is not None else ()),
        )
        self.rng = random.Random(config.faults.seed)
        self.faults = config.faults
        self.fault_table: FaultTable = fault_table(config.faults)
        for spec in config.jobs:
            self.add_job(spec)

    def add_job(self, spec: JobSpec) -> SimJob:
        """Create a job now; raises :class:`DuplicateJobError` when its ID is taken."""
        resolved = resolve_job(spec, self.config.project_id)
        if self.config.hostile:
            quirks = parse_quirks((*resolved.hostile, *self.config.hostile))
            resolved = replace(resolved, hostile=quirks)
        if resolved.job_id in self.jobs:
            raise DuplicateJobError(f"job {resolved.job_id} exists already")
        job = SimJob(resolved, self.clock.now())
        self.jobs[job.job_id] = job
        return job

    def elapsed(self, job: SimJob) -> float:
        """Seconds since ``job`` was created, on the emulated clock."""
        return self.clock.now() - job.created_at

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault settings; a ``seed`` in them reseeds the draws."""
        self.faults = faults
        self.fault_table = fault_table(faults)
        if faults.seed is not None:
            self.rng.seed(faults.seed)

    def reset_stats(self) -> None:
        """Zero the request counters and forget the request log."""
        self.stats = SimStats()
        self.requests = RequestLog(self.requests.capacity)

    def throttle_for(self, seconds: float, retry_after: int) -> None:
        """Answer every API request with 429 for ``seconds`` from the next one on."""
        self.throttle = ThrottleBurst(seconds, retry_after)

    def throttled(self, now: float) -> int | None:
        """The ``Retry-After`` of the burst the request arriving ``now`` is in, if any."""
        burst = self.throttle
        if burst is None:
            return None
        if burst.applies(now):
            return burst.retry_after
        self.throttle = None
        return None

    def _count_aksk(self, outcome: str) -> None:
        self.stats.by_aksk[outcome] += 1


STATE: Final = web.AppKey("poller_sim_state", SimState)
