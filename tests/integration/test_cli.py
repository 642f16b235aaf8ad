"""The ``poller`` command as a user runs it: help, configuration errors, enqueue/status/events,
``wait``'s exit codes, JSON output, stdin, colour."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import redis

from poller.intake import Admission
from poller.localredis import LocalRedis, free_port
from poller.store import Keys, Store, connect
from tests.integration.harness import jobs_in_shards

COMMANDS = ["run", "enqueue", "status", "events", "wait", "cancel", "dead", "sim", "demo"]
ANSI = "\x1b["


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test runner's environment without POLLER_* and colour settings, plus ``env``."""
    skip = ("NO_COLOR", "FORCE_COLOR")
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith("POLLER_") and k not in skip
    }
    full_env.update(env or {})
    return full_env


def poller(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poller", *args], input=stdin,
        capture_output=True, text=True, env=clean_env(env), timeout=timeout, check=False,
    )  # fmt: skip


def redis_env(server: LocalRedis, prefix: str, **extra: str) -> dict[str, str]:
    return {"POLLER_REDIS_URL": server.url, "POLLER_KEY_PREFIX": prefix,
            "POLLER_PROJECT_ID": "proj", **extra}  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command: str) -> None:
    result = poller(command, "--help")
    assert result.returncode == 0
    assert "usage: poller " + command in result.stdout
    assert len(result.stdout.splitlines()) > 4


def test_bad_setting_stops_start_up_with_one_line_naming_it() -> None:
    result = poller("run", env={"POLLER_POLL_INTERVAL": "fast"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "POLLER_POLL_INTERVAL" in lines[0]
    assert "'fast'" in lines[0]


def test_run_without_credentials_names_the_missing_setting() -> None:
    env = {"POLLER_API_ENDPOINT": "http://127.0.0.1:9", "POLLER_PROJECT_ID": "p"}
    result = poller("run", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("poller: configuration error: POLLER_AUTH_TOKEN:")


def test_secret_values_never_appear_in_configuration_errors() -> None:
    env = {"POLLER_AUTH_TOKEN": "s3cr3t-token-value", "POLLER_ACCESS_KEY": "AKEXAMPLE",
           "POLLER_SECRET_KEY": "sk-very-secret", "POLLER_API_ENDPOINT": "http://127.0.0.1:9",
           "POLLER_PROJECT_ID": "p"}  # fmt: skip
    result = poller("run", env=env)
    assert result.returncode == 2
    assert "more than one authentication method" in result.stderr
    assert "s3cr3t-token-value" not in result.stderr
    assert "sk-very-secret" not in result.stderr


def test_enqueue_refuses_invalid_ids_and_pushes_nothing(
    redis_server: LocalRedis, prefix: str
) -> None:
    env = {"POLLER_REDIS_URL": redis_server.url, "POLLER_KEY_PREFIX": prefix,
           "POLLER_PROJECT_ID": "proj"}  # fmt: skip
    bad = poller("enqueue", "JOB-ok", "../etc", env=env)
    assert bad.returncode == 2  # a usage error, like argparse
    assert "'../etc'" in bad.stderr
    good = poller("enqueue", "JOB-1", "--meta", "change=CHG-1", env=env)
    assert good.returncode == 0, good.stderr
    import redis

    client = redis.Redis.from_url(redis_server.url)
    queued = client.lrange(f"{prefix}:jobs", 0, -1)
    client.close()
    assert [json.loads(q) for q in queued] == [{"job_id": "JOB-1", "meta": {"change": "CHG-1"}}]


def test_status_of_an_unknown_job_fails_clearly(redis_server: LocalRedis, prefix: str) -> None:
    env = {"POLLER_REDIS_URL": redis_server.url, "POLLER_KEY_PREFIX": prefix}
    result = poller("status", "JOB-none", "--project-id", "proj", env=env)
    assert result.returncode == 1
    assert "not tracked" in result.stderr


def test_unreachable_redis_is_a_clear_error_not_a_traceback() -> None:
    env = {"POLLER_REDIS_URL": "redis://127.0.0.1:1/0", "POLLER_PROJECT_ID": "p"}
    result = poller("status", "JOB-1", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("poller: Redis error")
    assert "Traceback" not in result.stderr


def test_a_taken_probe_port_is_one_line_not_a_traceback() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"POLLER_HTTP_PORT": str(port), "POLLER_HTTP_HOST": "127.0.0.1",
               "POLLER_REDIS_URL": "redis://127.0.0.1:1/0", "POLLER_PROJECT_ID": "p",
               "POLLER_API_ENDPOINT": "http://127.0.0.1:9", "POLLER_AUTH_TOKEN": "t"}  # fmt: skip
        result = poller("run", env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("poller: cannot start: POLLER_HTTP_PORT: cannot listen")


@pytest.mark.parametrize(
    "args",
    [["events", "--consumer", "c"], ["events", "--since", "whenever"],
     ["events", "--tail", "3", "--since", "0"], ["enqueue", "JOB-1", "--meta", "novalue"],
     ["enqueue", "-", "-"], ["wait", "a/b", "--project-id", "p"],
     ["dead", "requeue"], ["dead", "requeue", "--all", "1"]],
)  # fmt: skip
def test_usage_mistakes_exit_2_with_one_line(args: list[str]) -> None:
    result = poller(*args, env={"POLLER_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [(["events", "--tail", "-1"], "--tail"),
     (["wait", "J", "--project-id", "p", "--timeout", "-1"], "--timeout"),
     (["wait", "J", "--project-id", "p", "--timeout", "nan"], "--timeout"),
     (["wait", "J", "--project-id", "p", "--timeout", "0"], "--timeout"),
     (["wait", "J", "--project-id", "p", "--quiet", "--json"], "--json"),
     (["dead", "requeue", "x"], "N")],
)  # fmt: skip
def test_malformed_arguments_exit_2_naming_the_argument(args: list[str], named: str) -> None:
    result = poller(*args, env={"POLLER_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert result.stderr.startswith("usage: poller ")
    assert f"argument {named}" in result.stderr.strip().splitlines()[-1]


def test_commands_needing_a_project_say_which_setting_is_missing() -> None:
    result = poller("status", "JOB-1", env={"POLLER_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert result.stderr.startswith("poller: configuration error: POLLER_PROJECT_ID:")


def test_a_closed_pipe_ends_quietly_with_sigpipes_code() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller", "sim", "--generate", "200", "--print-scenario"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.read(10)
    proc.stdout.close()  # like `| head -c 10`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141
    assert b"Traceback" not in err


def test_status_of_a_corrupt_job_is_one_line(redis_server: LocalRedis, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    broken = {"project": "proj", "job": "JOB-x", "state": "tracking", "snap": "{broken"}
    client.hset(f"{prefix}:job:proj:JOB-x", mapping=broken)
    client.close()
    env = {"POLLER_REDIS_URL": redis_server.url, "POLLER_KEY_PREFIX": prefix}
    result = poller("status", "JOB-x", "--project-id", "proj", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("poller: unreadable job state in Redis: proj:JOB-x")
    assert "Traceback" not in result.stderr


# --- poller wait: the exit code is the answer ----------------------------------------------


def test_wait_exits_4_when_redis_is_unreachable_until_its_timeout() -> None:
    env = {"POLLER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "POLLER_PROJECT_ID": "p"}
    started = time.monotonic()
    result = poller("wait", "JOB-1", "--timeout", "1.5", env=env)
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started >= 1.5  # kept retrying until the timeout, no sooner
    assert "Redis unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_wait_quiet_prints_nothing_even_when_redis_is_down() -> None:
    env = {"POLLER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "POLLER_PROJECT_ID": "p"}
    result = poller("wait", "JOB-1", "--timeout", "0.5", "--quiet", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (4, "", "")


@pytest.mark.parametrize(
    "env",
    [{"POLLER_REDIS_URL": "redis://127.0.0.1:notaport/0"},
     {"POLLER_REDIS_URL": "http://127.0.0.1:6379"},
     {"POLLER_CONFIG": "/nonexistent/poller.toml"},
     {"POLLER_KEY_PREFIX": "has space"},
     {"POLLER_POLL_INTERVAL": "fast"}],
)  # fmt: skip
def test_wait_exits_2_on_a_bad_configuration_with_one_line(env: dict[str, str]) -> None:
    result = poller("wait", "JOB-1", "--project-id", "p", "--timeout", "5", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("poller: configuration error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_wait_without_a_project_is_a_configuration_error() -> None:
    result = poller("wait", "JOB-1", "--timeout", "5", env={"POLLER_REDIS_URL": "redis://h:1/0"})
    assert result.returncode == 2
    assert "POLLER_PROJECT_ID" in result.stderr


# --- JSON output and stdin -------------------------------------------------------------------


def test_enqueue_json_prints_one_object_per_queued_job(
    redis_server: LocalRedis, prefix: str
) -> None:
    env = redis_env(redis_server, prefix)
    result = poller("enqueue", "JOB-1", "JOB-2", "--meta", "change=CHG-1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["job_id"], d["project_id"]) for d in docs] == [("JOB-1", "proj"), ("JOB-2", "proj")]
    assert json.loads(docs[0]["message"]) == {"job_id": "JOB-1", "meta": {"change": "CHG-1"}}


def test_enqueue_dash_reads_job_ids_from_stdin(redis_server: LocalRedis, prefix: str) -> None:
    env = redis_env(redis_server, prefix)
    result = poller("enqueue", "-", "JOB-3", env=env, stdin="JOB-1\n\n  JOB-2  \n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["queued JOB-1", "queued JOB-2", "queued JOB-3"]
    client = redis.Redis.from_url(redis_server.url)
    queued = client.lrange(f"{prefix}:jobs", 0, -1)
    client.close()
    assert queued[::-1] == [b"JOB-1", b"JOB-2", b"JOB-3"]  # taken from the right: in order


def test_enqueue_from_stdin_refuses_a_bad_line_and_queues_nothing(
    redis_server: LocalRedis, prefix: str
) -> None:
    env = redis_env(redis_server, prefix)
    result = poller("enqueue", "-", env=env, stdin="JOB-1\n../etc\n")
    assert result.returncode == 2
    assert "'../etc'" in result.stderr
    client = redis.Redis.from_url(redis_server.url)
    assert client.llen(f"{prefix}:jobs") == 0
    client.close()
    assert poller("enqueue", "-", env=env, stdin="").returncode == 0  # nothing to do is fine


async def test_cancel_json_says_what_was_published(store: Store, redis_server: LocalRedis) -> None:
    now = await store.server_time()
    await store.enqueue(b"JOB-c")
    (delivery,) = await store.take_messages("r1", 10, 0)
    assert await store.admit("r1", delivery, Admission("JOB-c", "proj"), now) == "admitted"
    env = redis_env(redis_server, store.keys.prefix)
    result = await _apoller("cancel", "JOB-c", "--who", "alice", "--json", env=env)
    assert result.returncode == 0, result.stderr
    expected = {"job_id": "JOB-c", "project_id": "proj", "cancelled": True,
                "event": "job.abandoned", "seq": 1}  # fmt: skip
    assert json.loads(result.stdout) == expected
    ((_, fields),) = await store.read_events(job_id="JOB-c")
    assert (fields["event"], fields["reason"]) == ("job.abandoned", "cancelled_by_operator")


async def _apoller(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import anyio

    result = await anyio.run_process(
        [sys.executable, "-m", "poller", *args], env=clean_env(env), check=False
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


# --- colour: NO_COLOR, FORCE_COLOR -----------------------------------------------------------


@pytest.fixture
def one_event(redis_server: LocalRedis, prefix: str) -> dict[str, str]:
    """A job stream holding one event whose status is coloured; the env to read it."""
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(f"{prefix}:events:JOB-col", {
        "event": "job.status_changed", "job_id": "JOB-col", "project_id": "proj", "seq": "1",
        "observed_at": "2026-11-27T00:00:00.000Z", "from_status": "RUNNING",
        "to_status": "SUCCEEDED", "job_status": "SUCCEEDED", "job_type": "X", "terminal": "true",
    })  # fmt: skip
    client.close()
    return redis_env(redis_server, prefix)


@pytest.mark.parametrize(
    ("colour_env", "coloured"),
    [({}, False), ({"FORCE_COLOR": "1"}, True), ({"NO_COLOR": "1"}, False),
     ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, False), ({"NO_COLOR": "", "FORCE_COLOR": "1"}, True)],
)  # fmt: skip
@pytest.mark.parametrize("command", [["events", "--job", "JOB-col"], ["wait", "JOB-col"]])
def test_colour_on_a_pipe_only_when_forced_and_never_with_no_color(
    one_event: dict[str, str], colour_env: dict[str, str], coloured: bool, command: list[str]
) -> None:
    result = poller(*command, env={**one_event, **colour_env})
    assert result.returncode == 0, result.stderr
    assert "SUCCEEDED" in result.stdout
    assert (ANSI in result.stdout) is coloured


@pytest.mark.parametrize(("colour_env", "coloured"), [({}, True), ({"NO_COLOR": "1"}, False)])
def test_colour_on_a_terminal_unless_no_color(
    one_event: dict[str, str], colour_env: dict[str, str], coloured: bool
) -> None:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "poller", "events", "--job", "JOB-col"],
            stdout=terminal, stderr=subprocess.PIPE, env=clean_env({**one_event, **colour_env}),
            timeout=60, check=False,
        )  # fmt: skip
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    assert proc.returncode == 0, proc.stderr
    assert b"SUCCEEDED" in shown
    assert (ANSI.encode() in shown) is coloured


# --- several shards (POLLER_SHARDS) ----------------------------------------------------------


def _shard_event(client: redis.Redis, keys: Keys, job_id: str, seq: int, entry_id: str) -> None:
    """A job event where the daemon puts it: the global stream of the job's shard, and its
    own stream."""
    fields = {"event": "job.status_changed", "job_id": job_id, "project_id": "proj",
              "seq": str(seq), "observed_at": "2026-11-27T00:00:00.000Z", "from_status": "",
              "to_status": "RUNNING", "job_status": "RUNNING", "job_type": "X",
              "terminal": "false"}  # fmt: skip
    client.xadd(keys.for_job(job_id).events, fields, id=entry_id)  # type: ignore[arg-type]
    client.xadd(keys.job_events(job_id), fields)  # type: ignore[arg-type]


def _ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["id"] for line in result.stdout.splitlines()]


def test_events_over_shards_merges_tail_and_since_and_follows_every_shard(
    redis_server: LocalRedis, prefix: str
) -> None:
    keys = Keys(prefix, 3)
    a, b, c = jobs_in_shards(3)
    client = redis.Redis.from_url(redis_server.url)
    try:
        for job, ms in [(a, 1), (b, 2), (c, 3), (a, 4), (b, 5), (c, 6)]:
            _shard_event(client, keys, job, ms, f"{ms}-0")
        env = redis_env(redis_server, prefix, POLLER_SHARDS="3")
        assert _ids(poller("events", "--json", "--tail", "4", env=env)) == [
            "3-0", "4-0", "5-0", "6-0"
        ]  # fmt: skip
        assert _ids(poller("events", "--json", env=env)) == [f"{ms}-0" for ms in range(1, 7)]
        assert _ids(poller("events", "--json", "--since", "4-0", env=env)) == ["5-0", "6-0"]
        assert _ids(poller("events", "--json", "--job", b, env=env)) == _job_ids(client, keys, b)
        # --follow from now: one blocking read per shard at once, woken by any of them
        follow_env = {**env, "POLLER_REDIS_URL": f"{redis_server.url}?client_name=cli-follow"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "poller", "events", "--json", "--follow", "--count", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(follow_env),
        )  # fmt: skip
        try:
            _until(lambda: _blocked(client, "cli-follow") >= 3)
            for job in (c, a, b):
                _shard_event(client, keys, job, 2, "*")
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        client.close()
    assert proc.returncode == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert sorted((d["job_id"], d["seq"]) for d in docs) == sorted([(a, "2"), (b, "2"), (c, "2")])


def _job_ids(client: redis.Redis, keys: Keys, job_id: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(keys.job_events(job_id))]


def _blocked(client: redis.Redis, name: str) -> int:
    """How many connections of the client called ``name`` are blocked in a read."""
    return sum(c.get("name") == name and "b" in c.get("flags", "") for c in client.client_list())


def _until(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Wait for state nothing notifies us of (another process's connections)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


async def test_status_cancel_and_events_find_a_job_in_its_shard(
    redis_server: LocalRedis, prefix: str
) -> None:
    store = Store(connect(redis_server.url), Keys(prefix, 3))
    try:
        job = jobs_in_shards(3)[-1]  # the last shard's
        now = await store.server_time()
        await store.enqueue(job.encode())
        (delivery,) = await store.take_messages("r1", 10, 0)
        assert await store.admit("r1", delivery, Admission(job, "proj"), now) == "admitted"
        env = redis_env(redis_server, prefix, POLLER_SHARDS="3")
        status = await _apoller("status", job, "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["tracking"] is True
        cancelled = await _apoller("cancel", job, "--json", env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        assert json.loads(cancelled.stdout)["seq"] == 1
        shown = await _apoller("events", "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        ((kind, job_id, reason),) = [
            (d["event"], d["job_id"], d["reason"])
            for d in map(json.loads, shown.stdout.splitlines())
        ]
        assert (kind, job_id, reason) == ("job.abandoned", job, "cancelled_by_operator")
        waited = await _apoller("wait", job, "--json", "--timeout", "10", env=env)
        assert waited.returncode == 3, waited.stderr
    finally:
        await store.redis.aclose()
