"""The worker on fakes and a manual clock: outages, clock steps, drains, lost leases, crashes.

Everything here runs in virtual time (``ManualClock``), so an hour-long Redis outage takes
milliseconds; the real Redis and emulator are the integration tests' business.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Literal

import anyio
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from poller.clock import ManualClock
from poller.config import Secret, Settings
from poller.intake import Admission, Invalid
from poller.servicestage.models import JobSnapshot, Task
from poller.servicestage.outcomes import Fetched, PollOutcome
from poller.store.store import AdmitResult, Claim, CommitResult, Delivery
from poller.tracking import JobState, Plan
from poller.worker import MAX_POLL_CRASHES, Worker
from tests.scrape import scraped

SERVER_AHEAD = 7.5  # the Redis host's clock runs this far ahead of ours


class FakeStore:
    """An in-memory store with the worker's view of Redis, and switches for failures."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.jobs: dict[str, JobState] = {}
        self.commits: list[tuple[JobState, Plan]] = []
        self.releases: list[tuple[str, float, str]] = []
        self.quarantined: list[tuple[str, str]] = []
        self.dead: list[tuple[bytes, str]] = []
        self.admitted: list[bytes] = []
        self.messages: list[bytes] = []
        self.fail_next = 0  # consecutive calls that fail with a connection error
        self.failed = 0
        self.renew_ok = True
        self.commit_error: Exception | None = None
        self.admit_error: dict[bytes, Exception] = {}
        self.time_rtt = 0.0
        self.heartbeats = 0
        self.deregistered = False

    def _maybe_fail(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed += 1
            raise RedisConnectionError("Connection refused")

    def track(self, job_id: str, **fields: object) -> None:
        state = JobState(job_id=job_id, project_id="proj", taken_at=self.clock.now())
        self.jobs[f"proj:{job_id}"] = dataclasses.replace(state, **fields)  # type: ignore[arg-type]

    async def take_messages(self, replica: str, limit: int, block: float) -> list[Delivery]:
        self._maybe_fail()
        if not self.messages:
            await self.clock.sleep(block)
        return [Delivery.of(raw) for raw in self.messages[:limit]]

    async def admit_batch(
        self, replica: str, messages: Sequence[tuple[Delivery, Admission | Invalid]], now: float
    ) -> list[AdmitResult | Literal["dead_letter"] | RedisError]:
        self._maybe_fail()
        results: list[AdmitResult | Literal["dead_letter"] | RedisError] = []
        for delivery, parsed in messages:
            raw = delivery.raw
            error = self.admit_error.get(raw)
            if isinstance(error, RedisError):
                results.append(error)  # a pipeline reports it per message
                continue
            if error is not None:
                raise error  # the batch could not even be sent
            self.messages.remove(raw)
            if isinstance(parsed, Invalid):
                self.dead.append((raw, parsed.reason))
                results.append("dead_letter")
            else:
                self.admitted.append(raw)
                results.append("admitted")
        return results

    async def dead_letter(self, replica: str, delivery: Delivery, reason: str, now: float) -> None:
        self._maybe_fail()
        self.messages.remove(delivery.raw)
        self.dead.append((delivery.raw, reason))

    async def check_layout(self) -> int:
        return 1

    async def heartbeat(self, replica: str, until: float) -> None:
        self._maybe_fail()
        self.heartbeats += 1

    async def recover_orphans(self, now: float) -> int:
        self._maybe_fail()
        return 0

    async def recover_unregistered(self) -> int:
        return 0

    async def deregister(self, replica: str) -> int:
        self.deregistered = True
        return 0

    async def claim_due(
        self, owner: str, now: float, lease: float, limit: int, claim_id: str | None = None
    ) -> Claim:
        self._maybe_fail()
        due = [m for m, s in self.jobs.items() if not s.token and (s.due_at or 0) <= now]
        claim = Claim()
        for member in due[:limit]:
            state = dataclasses.replace(self.jobs[member], token="t", owner=owner)
            self.jobs[member] = state
            claim.jobs.append(state)
        return claim

    async def quarantine(self, member: str, token: str, reason: str, now: float) -> bool:
        self._maybe_fail()
        self.quarantined.append((member, reason))
        del self.jobs[member]
        return True

    async def renew(self, leases: Sequence[tuple[str, str]], until: float) -> list[bool]:
        self._maybe_fail()
        return [self.renew_ok for _ in leases]

    async def release(self, state: JobState, due: float, crash: str = "") -> bool:
        self._maybe_fail()
        member = f"{state.project_id}:{state.job_id}"
        self.releases.append((member, due, crash))
        self.jobs[member] = dataclasses.replace(state, token="", due_at=due)
        return True

    async def commit(
        self, state: JobState, plan: Plan, now: float, commit_id: str | None = None
    ) -> CommitResult:
        self._maybe_fail()
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append((state, plan))
        member = f"{state.project_id}:{state.job_id}"
        if plan.retires:
            del self.jobs[member]
        else:
            self.jobs[member] = dataclasses.replace(state, token="", due_at=plan.due_at)
        return "ok"

    async def server_time(self) -> float:
        self._maybe_fail()
        read_at = self.clock.monotonic()
        await self.clock.sleep(self.time_rtt)
        # the server read its clock at the start of the round trip: the worst case
        return read_at + (self.clock.now() - self.clock.monotonic()) + SERVER_AHEAD

    async def counts(self, now: float) -> dict[str, int]:
        self._maybe_fail()
        return {"queue": 0, "dead": 0, "tracked": len(self.jobs), "due": 0}


class FakeClient:
    """Answers every poll with a terminal snapshot, or holds polls until ``release``."""

    def __init__(self) -> None:
        self.calls = 0
        self.hold = False
        self.release = anyio.Event()

    async def fetch_job(self, project_id: str, job_id: str, instance_id: str = "") -> PollOutcome:
        self.calls += 1
        if self.hold:
            await self.release.wait()
        return Fetched(JobSnapshot(job_id, "SUCCEEDED", "T", (Task("t1", 1, "A", "SUCCEEDED"),)))


SETTINGS = Settings(
    project_id="proj",
    api_endpoint="http://x",
    auth_token=Secret("t"),
    lease_seconds=30.0,
    shutdown_grace=10.0,
    http_port=0,
)


@asynccontextmanager
async def running(
    store: FakeStore, client: FakeClient, clock: ManualClock, settings: Settings = SETTINGS
) -> AsyncIterator[Worker[FakeStore]]:
    worker = Worker(settings, store, client, clock=clock, replica_id="r1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        try:
            yield worker
        finally:
            worker.stop()
            await clock.run_until(lambda: store.deregistered)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_ten_thousand_redis_failures_in_a_row_are_ridden_out(clock: ManualClock) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.track("JOB-1")
    store.fail_next = 10_000  # at a 5 s cap, hours of outage
    patient = dataclasses.replace(SETTINGS, job_timeout=1e9)
    async with running(store, client, clock, patient):
        await clock.run_until(lambda: len(store.commits) == 1)
    assert store.failed == 10_000
    assert store.commits[0][1].outcome == "terminal"


async def test_backoff_during_an_outage_never_exceeds_its_cap(clock: ManualClock) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.fail_next = 2_000
    start = clock.monotonic()
    async with running(store, client, clock):
        await clock.run_until(lambda: store.heartbeats > 0)
    # the failures are shared by every loop; none waits more than 5 s (the cap) per failure
    assert clock.monotonic() - start <= 2_000 * 5.0


async def test_server_time_stays_right_when_every_round_trip_is_slow_and_the_wall_steps(
    clock: ManualClock,
) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.time_rtt = 0.06  # over the 50 ms the first release trusted
    async with running(store, client, clock) as worker:
        await clock.run_until(lambda: store.heartbeats >= 5)
        clock.step_wall(30.0)  # NTP or an operator sets this host's clock
        await clock.advance(60.0)
        truth = clock.now() - 30.0 + SERVER_AHEAD  # the server's clock did not step
        assert abs(worker.clock() - truth) <= store.time_rtt / 2 + 1e-6


async def test_a_drain_lets_a_poll_in_flight_finish_and_commit(clock: ManualClock) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.track("JOB-1")
    client.hold = True
    async with running(store, client, clock) as worker:
        await clock.run_until(lambda: client.calls == 1)
        worker.stop()
        await clock.advance(1.0)
        client.release.set()
        await clock.run_until(lambda: store.deregistered)
    assert len(store.commits) == 1
    assert store.releases == []


async def test_a_drain_hands_back_a_poll_that_outlives_the_grace_due_at_once(
    clock: ManualClock,
) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.track("JOB-1")
    client.hold = True  # never released
    async with running(store, client, clock) as worker:
        await clock.run_until(lambda: client.calls == 1)
        worker.stop()
        await clock.run_until(lambda: store.deregistered)
        handed_back_at = worker.clock()
    assert store.commits == []
    [(member, due, crash)] = store.releases
    assert (member, crash) == ("proj:JOB-1", "")
    assert due == pytest.approx(handed_back_at, abs=1.0)


async def test_a_lost_lease_cancels_the_poll_and_commits_nothing(clock: ManualClock) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.track("JOB-1")
    client.hold = True
    store.renew_ok = False  # another replica took the job after our lease lapsed
    async with running(store, client, clock) as worker:
        await clock.run_until(lambda: bool(store.releases))
        assert scraped(worker.metrics, "poller_leases_lost_total") == 1
        assert store.commits == []
        assert store.releases[0][2] == ""  # given back, not counted as a crash


async def test_a_deterministic_redis_error_in_the_commit_is_not_retried(
    clock: ManualClock,
) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.track("JOB-1")
    store.commit_error = ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    async with running(store, client, clock):
        await clock.run_until(lambda: len(store.releases) == 1)
    [(_, _, crash)] = store.releases
    assert crash.startswith("ResponseError: WRONGTYPE")
    assert client.calls == 1  # one poll, one failed commit, no loop


async def test_a_job_whose_polls_keep_crashing_is_retired_as_corrupt_state(
    clock: ManualClock,
) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.track("JOB-1", crashes=MAX_POLL_CRASHES, last_error="ResponseError: WRONGTYPE")
    async with running(store, client, clock):
        await clock.run_until(lambda: bool(store.quarantined))
    [(member, reason)] = store.quarantined
    assert member == "proj:JOB-1"
    assert "WRONGTYPE" in reason
    assert client.calls == 0


async def test_a_message_that_breaks_admission_is_dead_lettered_and_the_next_admitted(
    clock: ManualClock,
) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.messages = [b"JOB-BAD", b"JOB-GOOD"]
    store.admit_error[b"JOB-BAD"] = UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogate")
    async with running(store, client, clock):
        await clock.run_until(lambda: store.admitted == [b"JOB-GOOD"])
    [(raw, reason)] = store.dead
    assert raw == b"JOB-BAD"
    assert "UnicodeEncodeError" in reason


async def test_a_deterministic_redis_error_on_admission_dead_letters_the_message(
    clock: ManualClock,
) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.messages = [b"JOB-BAD", b"JOB-GOOD"]
    store.admit_error[b"JOB-BAD"] = ResponseError("ERR Error running script")
    async with running(store, client, clock):
        await clock.run_until(lambda: store.admitted == [b"JOB-GOOD"])
    assert [raw for raw, _ in store.dead] == [b"JOB-BAD"]


async def test_an_outage_longer_than_a_lease_during_a_commit_is_no_crash(
    clock: ManualClock,
) -> None:
    store, client = FakeStore(clock), FakeClient()
    store.track("JOB-1")
    client.hold = True
    async with running(store, client, clock):
        await clock.run_until(lambda: client.calls == 1)
        store.commit_error = RedisConnectionError("Connection refused")
        client.release.set()
        await clock.run_until(lambda: bool(store.releases))
        store.commit_error = None
        [(member, _, crash)] = store.releases
        assert (member, crash) == ("proj:JOB-1", "")  # handed back, not counted as a crash
        await clock.run_until(lambda: bool(store.commits))
