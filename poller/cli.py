"""``poller``: the command line.  Argument parsing only; the work is in ``commands``/``daemon``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
from redis.exceptions import RedisError

from poller import __version__, commands
from poller.argtypes import count, positive_seconds
from poller.config import ConfigError, Settings, load_settings
from poller.consumer import stream_id_since
from poller.daemon import name_replica, open_store, run_daemon
from poller.errors import PollerError
from poller.forward.cli import register as register_forward
from poller.intake import JobRequest
from poller.store import Store
from poller.telemetry import configure_logging
from poller.web import register as register_web

EXIT_USAGE = commands.EXIT_USAGE

#: Ships `poller sim` and `poller demo` (poller/sim/, poller/demo.py, poller/localredis.py);
#: the production package, and so the image, does not have them.
DEVKIT = "servicestage-job-poller-devkit"
_DEVKIT_MODULES = frozenset({"poller.sim", "poller.demo", "poller.localredis"})


class NotInstalled(PollerError):
    """A devkit subcommand where only the production package is installed."""

    exit_code = EXIT_USAGE


def _register_devkit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sim`` and ``demo`` when the devkit is importable; otherwise hidden stand-ins that say
    what to install (unlisted in ``poller --help``, they accept any arguments, --help too)."""
    try:
        from poller.demo import register as register_demo
        from poller.sim.cli import register as register_sim
    except ModuleNotFoundError as exc:
        if exc.name not in _DEVKIT_MODULES:
            raise  # the devkit is there but something it imports is not: not ours to hide
    else:
        register_sim(sub)
        register_demo(sub)
        return
    pin = "" if __version__.startswith("0+") else f"=={__version__}"
    for name, what in (("sim", "the ServiceStage emulator"), ("demo", "the demo")):

        def missing(_: argparse.Namespace, name: str = name, what: str = what) -> int:
            raise NotInstalled(
                f"{name}: {what} is not part of this installation (the production package "
                f"carries the daemon and its CLI only); it ships in {DEVKIT}: "
                f"pip install {DEVKIT}{pin}"
            )

        # no option prefix anyone types: every argument, --help included, lands in `ignored`
        p = sub.add_parser(name, add_help=False, prefix_chars="\0")
        p.add_argument("ignored", nargs="*")
        p.set_defaults(func=missing)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(config_file=getattr(args, "config", None))


def _with_store(args: argparse.Namespace, body: Callable[[Store, Settings], Awaitable[int]]) -> int:
    settings = _settings(args)
    configure_logging(settings)

    try:
        store = open_store(settings)
    except ValueError as exc:  # a URL that parses but names no usable address (a bad port)
        raise ConfigError(f"POLLER_REDIS_URL: {exc}") from None

    async def main() -> int:
        try:
            return await body(store, settings)
        finally:
            await store.redis.aclose()

    return anyio.run(main)


def _project(args: argparse.Namespace, settings: Settings) -> str:
    project = args.project_id or settings.project_id
    if not project:
        raise ConfigError("POLLER_PROJECT_ID: not set; pass --project-id or set POLLER_PROJECT_ID")
    commands.admission_for(args.job_id, project)  # validates both IDs
    return str(project)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.require_polling()
    configure_logging(settings)
    # Named before the event loop exists: asyncio logs as it starts, with the replica too.
    return anyio.run(run_daemon, name_replica(settings))


def _parse_meta(pairs: Sequence[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise commands.UsageError(f"--meta {pair!r}: expected key=value")
        meta[key] = value
    return meta


def cmd_enqueue(args: argparse.Namespace) -> int:
    settings = _settings(args)
    job_ids = commands.read_job_ids(args.job_ids, sys.stdin)
    meta = _parse_meta(args.meta)
    requests = [
        JobRequest(
            job_id,
            project_id=args.project_id or "",
            instance_id=args.instance_id or "",
            meta=meta,
            force=args.force,
        )
        for job_id in job_ids
    ]
    messages = commands.build_messages(requests, default_project=settings.project_id)
    if not messages:
        return 0  # `... | poller enqueue -` with nothing to queue
    return _with_store(
        args,
        lambda store, s: commands.enqueue(
            store, messages, default_project=s.project_id, as_json=args.json
        ),
    )


def cmd_status(args: argparse.Namespace) -> int:
    return _with_store(
        args,
        lambda store, s: commands.status(store, _project(args, s), args.job_id, as_json=args.json),
    )


def cmd_cancel(args: argparse.Namespace) -> int:
    return _with_store(
        args,
        lambda store, s: commands.cancel(
            store, _project(args, s), args.job_id, who=args.who, as_json=args.json
        ),
    )


def cmd_events(args: argparse.Namespace) -> int:
    if args.job is not None:
        commands.admission_for(args.job, "p")
    try:
        since = None if args.since is None else stream_id_since(args.since)
    except ValueError as exc:
        raise commands.UsageError(str(exc)) from None
    if args.consumer and not args.group:
        raise commands.UsageError("--consumer goes with --group")
    if args.tail is not None and (args.since is not None or args.group):
        raise commands.UsageError("--tail goes neither with --since nor with --group")
    return _with_store(
        args,
        lambda store, _: commands.events(
            store,
            job_id=args.job,
            follow=args.follow,
            as_json=args.json,
            since=since,
            tail=args.tail,
            count=args.count,
            group=args.group,
            consumer=args.consumer,
        ),
    )


def cmd_wait(args: argparse.Namespace) -> int:
    settings = _settings(args)
    project = _project(args, settings)
    message = None
    if args.enqueue:
        request = JobRequest(
            args.job_id, project_id=args.project_id or "", meta=_parse_meta(args.meta)
        )
        (message,) = commands.build_messages([request], default_project=settings.project_id)
    return _with_store(
        args,
        lambda store, _: commands.wait(
            store,
            project,
            args.job_id,
            give_up_after=args.timeout,
            enqueue_message=message,
            quiet=args.quiet,
            as_json=args.json,
        ),
    )


def cmd_dead_list(args: argparse.Namespace) -> int:
    return _with_store(args, lambda store, _: commands.dead_list(store, as_json=args.json))


def cmd_dead_requeue(args: argparse.Namespace) -> int:
    if args.all == bool(args.indexes):
        raise commands.UsageError("dead requeue: give either --all or the numbers to requeue")
    indexes = None if args.all else list(args.indexes)
    return _with_store(args, lambda store, _: commands.dead_requeue(store, indexes))


def _common_options() -> argparse.ArgumentParser:
    """The options every Redis-using command shares (a ``parents=`` parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", help="TOML settings file (default: $POLLER_CONFIG)"
    )
    return common


def _no_arguments(_: argparse.ArgumentParser) -> None:
    """For a command that takes only the common options."""


@dataclass(frozen=True)
class Command:
    """A subcommand: ``help`` is its line in ``poller --help``, ``description`` opens its own
    ``--help``, ``arguments`` adds what it takes besides the common options, ``func`` runs it."""

    name: str
    help: str
    description: str
    func: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments

    def add_to(self, sub: Any, common: argparse.ArgumentParser) -> None:
        p = sub.add_parser(
            self.name, parents=[common], help=self.help, description=self.description
        )
        self.arguments(p)
        p.set_defaults(func=self.func)


def _job_arguments(p: argparse.ArgumentParser) -> None:
    """The job a command is about, and its project unless the settings name it."""
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--project-id", help="default: POLLER_PROJECT_ID")


def _meta_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--meta KEY=VALUE``, repeatable, as :func:`_parse_meta` reads it."""
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help=help)


def _json_option(p: argparse._ActionsContainer, help: str) -> None:
    """``--json``: JSON instead of text, in the form ``help`` says."""
    p.add_argument("--json", action="store_true", help=help)


def _enqueue_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID", help="a job ID, or - for stdin")
    p.add_argument("--project-id", help="project of the jobs (default: POLLER_PROJECT_ID)")
    p.add_argument("--instance-id", help="optional instance_id query parameter for the API")
    _meta_option(p, "copied into every event of the job as the JSON object 'meta' (repeatable)")
    p.add_argument(
        "--force", action="store_true",
        help="track again even if the job finished less than the retention period ago",
    )  # fmt: skip
    _json_option(p, "one JSON object per queued job: job_id, project_id, message")


def _status_arguments(p: argparse.ArgumentParser) -> None:
    _job_arguments(p)
    _json_option(p, "print JSON instead of text")


def _events_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", metavar="JOB_ID", help="only this job's events")
    p.add_argument(
        "--follow", "-f", action="store_true",
        help="print events as they are published, from now on (history: --since, --tail)",
    )  # fmt: skip
    _json_option(p, "one JSON object per line")
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument(
        "--since", metavar="ID|TIME",
        help="start after this stream ID, epoch seconds or RFC 3339 time ('0': the "
        "beginning; '$': now); default: the beginning, or now with --follow",
    )  # fmt: skip
    p.add_argument(
        "--tail", type=count, metavar="N",
        help="start with the last N events (then, with --follow, go on with new ones)",
    )  # fmt: skip
    p.add_argument(
        "--group", metavar="G",
        help="read through consumer group G (created at --since, or as above, if missing) and "
        "acknowledge each event after printing it: a durable consumer that resumes where it "
        "stopped",
    )  # fmt: skip
    p.add_argument("--consumer", metavar="C", help="consumer name within --group (default: cli)")


def _wait_arguments(p: argparse.ArgumentParser) -> None:
    _job_arguments(p)
    p.add_argument(
        "--timeout", type=positive_seconds, metavar="S",
        help="give up after S seconds: exit 124, or 4 if Redis was unreachable (default: never)",
    )  # fmt: skip
    p.add_argument("--enqueue", action="store_true", help="queue the job for tracking first")
    _meta_option(p, "with --enqueue: meta copied into the job's events")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--quiet", "-q", action="store_true",
        help="print nothing, only exit (usage and configuration errors are still reported)",
    )  # fmt: skip
    _json_option(shown, "print only the final event, as one JSON object")


def _cancel_arguments(p: argparse.ArgumentParser) -> None:
    _job_arguments(p)
    p.add_argument("--who", default="operator", help="recorded in the event's detail")
    _json_option(p, "print {job_id, project_id, cancelled, event, seq} as JSON")


def _dead_list_arguments(p: argparse.ArgumentParser) -> None:
    _json_option(p, "one JSON object per line: index, reason, at, age_seconds, raw")


def _dead_requeue_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("indexes", nargs="*", type=count, metavar="N", help="numbers from dead list")
    p.add_argument("--all", action="store_true", help="every dead letter there is now")


#: The commands that work on the poller's Redis state, as ``poller --help`` lists them.
COMMANDS: Final = (
    Command(
        "run",
        "run the daemon",
        "Run a replica: take job IDs from {prefix}:jobs, poll each job until it is terminal, "
        "publish events to {prefix}:events and {prefix}:events:{job_id}.  Any number of "
        "replicas may share one Redis.  SIGTERM/SIGINT drains in-flight polls within "
        "POLLER_SHUTDOWN_GRACE seconds, hands the rest back, and exits 0.",
        cmd_run,
    ),
    Command(
        "enqueue",
        "queue jobs for tracking",
        "Push job IDs onto the intake queue exactly as a deployment system would "
        "(LPUSH {prefix}:jobs).  IDs are validated first (an invalid one queues nothing); a "
        "job already tracked is left alone.  '-' reads job IDs from stdin, one per line.",
        cmd_enqueue,
        _enqueue_arguments,
    ),
    Command(
        "status",
        "show a job's tracking state",
        "Show what the poller knows of a job: last snapshot (job and task statuses), number "
        "of events, next poll, lease holder, last error.",
        cmd_status,
        _status_arguments,
    ),
    Command(
        "events",
        "print events",
        "Print events from {prefix}:events (every shard's with POLLER_SHARDS, merged by entry "
        "ID; or one job's stream with --job), oldest first: every one kept, or with --follow "
        "only those published from now on (like tail -f).  --since or --tail N adds history "
        "first.",
        cmd_events,
        _events_arguments,
    ),
    Command(
        "wait",
        "wait for a job to finish (for CI pipelines)",
        "Follow one job's events from the beginning, print them as they happen, and exit when "
        "the job ends.  Exit codes: 0 SUCCEEDED; 1 the job ended failed (FAILED, "
        "PARTIALLY_FAILED, CANCELLED, ROLLBACKED); 2 usage or configuration error; 3 abandoned "
        "(not found, rejected, timeout, cancelled by an operator, corrupt state); 4 Redis "
        "unreachable until --timeout; 124 --timeout passed first.  Works whether started "
        "before, during or after the job is tracked (within the retention period), and rides "
        "out Redis restarts (retries with backoff).",
        cmd_wait,
        _wait_arguments,
    ),
    Command(
        "cancel",
        "stop tracking a job",
        "Stop tracking a job now.  Publishes job.abandoned with reason cancelled_by_operator "
        "as the job's last event; a replica polling it at that moment publishes nothing "
        "more.  The job itself is not touched on ServiceStage.",
        cmd_cancel,
        _cancel_arguments,
    ),
)

#: ``poller dead ACTION``: the intake's dead letters.
DEAD_ACTIONS: Final = (
    Command(
        "list",
        "show dead letters: number, age, reason, raw message",
        "Show the dead-letter list, oldest first: number, age, reason, raw message.",
        cmd_dead_list,
        _dead_list_arguments,
    ),
    Command(
        "requeue",
        "move dead letters back onto the intake queue",
        "Move the raw messages of the chosen dead letters (the numbers 'dead list' shows, or "
        "--all) back onto the intake queue {prefix}:jobs.  Each record leaves the dead-letter "
        "list in the same Redis script that queues its message, so a crash loses nothing.  A "
        "message that is still invalid comes back as a new dead letter.",
        cmd_dead_requeue,
        _dead_requeue_arguments,
    ),
)


def register_dead(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``dead list`` and ``dead requeue``: the intake's dead letters."""
    p = sub.add_parser(
        "dead", help="list or requeue dead letters (rejected messages)",
        description="Messages the daemon could not admit (invalid, or naming a job tracked "
        "under another project) wait in {prefix}:jobs:dead with the reason.  'dead list' "
        "shows them oldest first, numbered from 0 (numbers stay put while more arrive); "
        "'dead requeue' moves chosen ones back onto the intake queue, each atomically.",
    )  # fmt: skip
    actions = p.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    for action in DEAD_ACTIONS:
        action.add_to(actions, common)


def build_parser() -> argparse.ArgumentParser:
    """The ``poller`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="poller",
        description="Watch Huawei Cloud ServiceStage jobs and publish every task and job "
        "state change to Redis streams, exactly once.  Configuration comes from POLLER_* "
        "environment variables and an optional TOML file (environment wins).",
    )
    parser.add_argument("--version", action="version", version=f"poller {__version__}")
    common = _common_options()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # `poller --help` lists the commands in this order.
    for command in COMMANDS:
        command.add_to(sub, common)
    register_dead(sub, common)
    _register_devkit(sub)
    register_web(sub, common)
    register_forward(sub, common)
    return parser


def _first_leaf(group: BaseExceptionGroup[PollerError]) -> PollerError:
    first = group.exceptions[0]
    return first if isinstance(first, PollerError) else _first_leaf(first)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poller`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PollerError as exc:
        print(f"poller: {exc.describe()}", file=sys.stderr)
        return exc.exit_code
    except BaseExceptionGroup as group:  # raised inside a task group (e.g. the worker's)
        expected, other = group.split(PollerError)
        if expected is None or other is not None:
            raise
        first = _first_leaf(expected)
        print(f"poller: {first.describe()}", file=sys.stderr)
        return first.exit_code
    except BrokenPipeError:
        # `poller events | head`: the reader left.  No traceback; point stdout at /dev/null
        # so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as other tools end; never a success `wait` did not see
    except RedisError as exc:
        print(f"poller: Redis error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
