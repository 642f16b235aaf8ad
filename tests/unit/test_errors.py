"""One error root: every expected failure carries its exit code and its one line."""

from __future__ import annotations

import pytest

from poller.cli import main
from poller.commands import CommandError, UsageError
from poller.config import ConfigError
from poller.daemon import StartupError
from poller.errors import PollerError
from poller.store import CorruptJobState


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (ConfigError("POLLER_X: bad"), 2, "configuration error: POLLER_X: bad"),
        (UsageError("--timeout must be positive"), 2, "--timeout must be positive"),
        (CommandError("no such job"), 1, "no such job"),
        (StartupError("POLLER_HTTP_PORT: in use"), 1, "cannot start: POLLER_HTTP_PORT: in use"),
        (CorruptJobState("p:j: ValueError"), 1, "unreadable job state in Redis: p:j: ValueError"),
    ],
)
def test_each_error_knows_its_exit_code_and_line(error: PollerError, code: int, line: str) -> None:
    assert isinstance(error, PollerError)
    assert (error.exit_code, error.describe()) == (code, line)


def test_the_entry_point_prints_one_line_and_exits_with_the_errors_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLER_POLL_INTERVAL", "-1")
    code = main(["status", "JOB-1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "poller: configuration error: POLLER_POLL_INTERVAL: expected a non-negative number of "
        "seconds, got '-1'"
    ]
