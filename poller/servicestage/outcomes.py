"""What one poll of a job can come to; the client returns these instead of raising."""

from __future__ import annotations

from dataclasses import dataclass, field

from poller.servicestage.models import JobSnapshot


@dataclass(frozen=True, slots=True)
class Fetched:
    """A complete snapshot (every page in hand)."""

    snapshot: JobSnapshot
    requests: int = 1


@dataclass(frozen=True, slots=True)
class _Failure:
    """A poll that did not bring a snapshot.  ``request_id`` is the one the API gave its answer
    (``""`` when none came): keyword-only in every failure's constructor, so it comes after
    the failure's own fields there (it is the first field in ``repr`` and ``fields()``)."""

    request_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class Transient(_Failure):
    """A failure worth retrying: timeout, reset, 5xx, 429, bad body, incomplete pages."""

    reason: str
    status: int | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class NotFound(_Failure):
    """404: the job is not (yet) visible."""

    detail: str


@dataclass(frozen=True, slots=True)
class Rejected(_Failure):
    """400/403: the API refuses this job for good."""

    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class AuthFailed(_Failure):
    """401 even after refreshing credentials once."""

    detail: str


PollOutcome = Fetched | Transient | NotFound | Rejected | AuthFailed
