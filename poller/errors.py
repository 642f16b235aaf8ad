"""The root of the poller's own errors: each says what went wrong in one line and carries the
exit code a command ends with, so ``poller``'s entry point handles them all in one place."""

from __future__ import annotations

from typing import ClassVar

EXIT_FAILURE = 1
EXIT_USAGE = 2


class PollerError(Exception):
    """An expected failure of a command or of start-up; ``str(error)`` is one line."""

    exit_code: ClassVar[int] = EXIT_FAILURE
    #: what the entry point prints before the message, e.g. ``configuration error``
    label: ClassVar[str] = ""

    def describe(self) -> str:
        """The line printed on standard error."""
        return f"{self.label}: {self}" if self.label else str(self)
