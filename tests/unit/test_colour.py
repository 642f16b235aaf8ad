"""When command output is coloured: a terminal, unless NO_COLOR; FORCE_COLOR anywhere."""

from __future__ import annotations

import io

import pytest

from poller.commands import format_event, use_colour


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "on_terminal", "on_pipe"),
    [
        ({}, True, False),
        ({"NO_COLOR": "1"}, False, False),
        ({"NO_COLOR": "anything"}, False, False),
        ({"NO_COLOR": ""}, True, False),  # empty: as if unset
        ({"FORCE_COLOR": "1"}, True, True),
        ({"FORCE_COLOR": ""}, True, False),
        ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, False, False),  # NO_COLOR wins
        ({"TERM": "dumb"}, False, False),
        ({"TERM": "dumb", "FORCE_COLOR": "1"}, True, True),
    ],
)
def test_colour_follows_the_terminal_and_the_environment(
    env: dict[str, str], on_terminal: bool, on_pipe: bool
) -> None:
    assert use_colour(Terminal(), env) is on_terminal
    assert use_colour(io.StringIO(), env) is on_pipe


def test_a_closed_or_odd_stream_means_no_colour() -> None:
    closed = io.StringIO()
    closed.close()
    assert use_colour(closed, {}) is False
    assert use_colour(object(), {}) is False


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(io.StringIO()) is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(Terminal()) is False


def test_only_the_status_is_coloured() -> None:
    fields = {"event": "job.status_changed", "job_id": "J", "seq": "2", "observed_at": "T",
              "from_status": "RUNNING", "to_status": "FAILED", "terminal": "true"}  # fmt: skip
    assert "\x1b[31mFAILED\x1b[0m" in format_event(fields, colours=True)
    assert "\x1b[" not in format_event(fields, colours=False)


@pytest.mark.parametrize(("env", "coloured"), [({}, True), ({"NO_COLOR": "1"}, False)])
def test_console_logs_on_a_terminal_follow_no_color(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], coloured: bool
) -> None:
    from poller.config import Settings
    from poller.telemetry import configure_logging, get_logger

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    terminal = Terminal()
    configure_logging(Settings(log_format="console"), stream=terminal)
    try:
        get_logger().warning("something happened", job_id="JOB-1")
    finally:
        configure_logging(Settings(log_format="json"), stream=io.StringIO())
    assert "something happened" in terminal.getvalue()
    assert ("\x1b[" in terminal.getvalue()) is coloured
