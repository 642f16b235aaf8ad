"""ServiceStage job and task statuses, and which of them end a job."""

from __future__ import annotations

from typing import Final

JOB_STATUSES: Final = frozenset(
    {
        "SUBMITTED", "SCHEDULED", "RUNNING", "FAILED", "SUCCEEDED", "CANCELLED",
        "PARTIALLY_FAILED", "ROLLBACKING", "ROLLBACKED", "UNKNOWN",
    }
)  # fmt: skip
TASK_STATUSES: Final = JOB_STATUSES | {"SKIPPED"}
TERMINAL_JOB_STATUSES: Final = frozenset(
    {"SUCCEEDED", "FAILED", "CANCELLED", "PARTIALLY_FAILED", "ROLLBACKED"}
)


def is_terminal(job_status: str) -> bool:
    """True when a job in ``job_status`` will not change any more."""
    return job_status in TERMINAL_JOB_STATUSES
