"""Library loggers (stdlib ``logging``) come out like structlog's own lines: JSON, with the
replica's name, redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from poller import telemetry
from poller.config import Secret, Settings
from poller.telemetry import bind_replica, configure_logging, get_logger

SECRET = "tok-0123456789abcdef"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured into a buffer; the process's logging put back as it was after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    level, previous = root.level, telemetry._ROOT_HANDLER
    fields = dict(telemetry._PROCESS_FIELDS)
    buffer = io.StringIO()
    configure_logging(
        Settings(log_format="json", log_level="info", auth_token=Secret(SECRET)), stream=buffer
    )
    try:
        yield buffer
    finally:
        if telemetry._ROOT_HANDLER is not None:
            root.removeHandler(telemetry._ROOT_HANDLER)
        if previous is not None:
            root.addHandler(previous)
        telemetry._ROOT_HANDLER = previous
        root.setLevel(level)
        structlog.configure(**saved)
        telemetry._PROCESS_FIELDS.clear()
        telemetry._PROCESS_FIELDS.update(fields)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_library_line_is_json_with_the_replica(stream: io.StringIO) -> None:
    bind_replica("replica-7")
    logging.getLogger("aiohttp.client").warning("Unclosed client session %s", "0x7f")
    (record,) = lines(stream)
    assert record["event"] == "Unclosed client session 0x7f"
    assert record["level"] == "warning"
    assert record["logger"] == "aiohttp.client"
    assert record["replica"] == "replica-7"
    assert record["timestamp"].endswith("Z")


def test_library_and_own_lines_share_shape_and_filters(stream: io.StringIO) -> None:
    bind_replica("replica-8")
    get_logger().info("poller starting", api="https://x")
    logging.getLogger("redis").debug("below the configured level: dropped")
    logging.getLogger("redis.asyncio.connection").error("AUTH %s failed", SECRET)
    own, library = lines(stream)
    assert own["replica"] == library["replica"] == "replica-8"
    assert own.keys() - {"api"} == library.keys() - {"logger"}
    assert SECRET not in stream.getvalue(), "library lines are redacted too"
    assert library["event"] == f"AUTH {telemetry.REDACTED} failed"


def test_a_library_exception_is_one_json_line(stream: io.StringIO) -> None:
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    (record,) = lines(stream)
    assert record["level"] == "error"
    assert "ConnectionResetError: peer went away" in record["exception"]


def test_configuring_twice_keeps_one_handler(stream: io.StringIO) -> None:
    configure_logging(Settings(log_format="json"), stream=stream)
    logging.getLogger("aiohttp.server").warning("once")
    assert [r["event"] for r in lines(stream)] == ["once"]


def test_a_line_bound_to_another_replica_keeps_its_own(stream: io.StringIO) -> None:
    bind_replica("process-name")
    get_logger(replica="worker-name").info("worker starting")
    (record,) = lines(stream)
    assert record["replica"] == "worker-name"
