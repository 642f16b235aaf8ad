"""What one poll of a job can come to; the client returns these instead of raising."""

from __future__ import annotations

from dataclasses import dataclass

from poller.servicestage.models import JobSnapshot


@dataclass(frozen=True, slots=True)
class Fetched:
    """A complete snapshot (every page in hand)."""

    snapshot: JobSnapshot
    requests: int = 1


@dataclass(frozen=True, slots=True)
class Transient:
    """A failure worth retrying: timeout, reset, 5xx, 429, bad body, incomplete pages."""

    reason: str
    status: int | None = None
    retry_after: float | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class NotFound:
    """404: the job is not (yet) visible."""

    detail: str
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Rejected:
    """400/403: the API refuses this job for good."""

    status: int
    detail: str
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """401 even after refreshing credentials once."""

    detail: str
    request_id: str = ""


PollOutcome = Fetched | Transient | NotFound | Rejected | AuthFailed
