"""What the worker needs of the outside world, and nothing more: the seams its tests fill.

:class:`poller.store.Store` and :class:`poller.servicestage.client.ServiceStageClient` are
the real implementations; the worker's unit tests pass small fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from redis.exceptions import RedisError

from poller.intake import Admission, Invalid
from poller.servicestage.outcomes import PollOutcome
from poller.store.store import AdmitResult, Claim, CommitResult, Delivery
from poller.tracking import JobState, Plan


class JobStore(Protocol):
    """The Redis operations of one replica (see :class:`poller.store.Store` for each promise)."""

    async def take_messages(self, replica: str, limit: int, block: float) -> list[Delivery]: ...

    async def admit_batch(
        self, replica: str, messages: Sequence[tuple[Delivery, Admission | Invalid]], now: float
    ) -> list[AdmitResult | Literal["dead_letter"] | RedisError]: ...

    async def dead_letter(
        self, replica: str, delivery: Delivery, reason: str, now: float
    ) -> None: ...

    async def check_layout(self) -> int: ...

    async def heartbeat(self, replica: str, until: float) -> None: ...

    async def recover_orphans(self, now: float) -> int: ...

    async def recover_unregistered(self) -> int: ...

    async def deregister(self, replica: str) -> int: ...

    async def claim_due(
        self, owner: str, now: float, lease: float, limit: int, claim_id: str | None = None
    ) -> Claim: ...

    async def quarantine(self, member: str, token: str, reason: str, now: float) -> bool: ...

    async def renew(self, leases: Sequence[tuple[str, str]], until: float) -> list[bool]: ...

    async def release(self, state: JobState, due: float, crash: str = "") -> bool: ...

    async def commit(
        self, state: JobState, plan: Plan, now: float, commit_id: str | None = None
    ) -> CommitResult: ...

    async def server_time(self) -> float: ...

    async def counts(self, now: float) -> dict[str, int]: ...


class JobFetcher(Protocol):
    """The ServiceStage API as the worker sees it: one job's complete snapshot, or why not."""

    async def fetch_job(
        self, project_id: str, job_id: str, instance_id: str = ""
    ) -> PollOutcome: ...
