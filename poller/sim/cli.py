"""``poller sim``: run the ServiceStage emulator from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from typing import Final

from poller.sim._fields import ScenarioError
from poller.sim.auth import DEFAULT_TOKEN, token_auth
from poller.sim.config import DEFAULT_PAGE_CAP, DEFAULT_PROJECT_ID, SimConfig
from poller.sim.credentials import (
    DEFAULT_AKSK_LOCK_SECONDS,
    DEFAULT_IAM_TOKEN_LIFETIME,
    IamUser,
    parse_access_key_option,
    parse_iam_user_option,
)
from poller.sim.faults import FAULT_KINDS, FaultConfig, faults_to_dict, parse_faults
from poller.sim.generator import generate
from poller.sim.hostile import QUIRKS, parse_quirks
from poller.sim.metadata import SECURITY_KEY_PATH
from poller.sim.scenario import Scenario, example_scenario_path, load_scenario, scenario_to_dict
from poller.sim.server import SimHandle, serve_forever

DESCRIPTION: Final = """\
Serve GET /v3/{project_id}/cas/jobs/{job_id} like Huawei Cloud ServiceStage ("Obtaining Job
Details"), driven by scenarios: job timelines saying which tasks appear when and which statuses
they pass through.  Each job's clock starts when the emulator starts (or when the job is posted
to the admin API)."""

EPILOG: Final = """\
examples:
  poller sim --generate 20 --duration 15          20 random jobs, each done within 15 s
  poller sim --scenario jobs.json --token secret  jobs from a file (JSON, or TOML by extension)
  poller sim --example --time-scale 2             the shipped example jobs, twice as fast
  poller sim --generate 5 --print-scenario        print the generated scenario and exit
  poller sim --generate 50 --error-rate 0.1 --latency 0.05
  poller sim --example --access-key AK1:SK1       also accept AK/SK-signed requests
  poller sim --generate 20 --hostile surrogate_messages,string_numbers --deep-json 0.05
                                                  awkward data in every answer, and now
                                                  and then a body nested 5000 levels deep
  poller sim --example --iam-user bot:pw@acme --iam-token-lifetime 60
                                                  IAM tokens from POST /v3/auth/tokens
  poller sim --example --temporary-credentials-ttl 600
                                                  a metadata service handing out temporary
                                                  AK/SK + security token, each living 10 min

auth: X-Auth-Token (--token, or a token issued by POST /v3/auth/tokens for an --iam-user),
or SDK-HMAC-SHA256 signing with an --access-key, or with the temporary AK/SK that
GET /openstack/latest/securitykey hands out (--temporary-credentials-ttl; the request must carry
its X-Security-Token, signed, before it expires; a new credential is handed out once the
current one has used half its lifetime).  Signature dates, AK locks (after more than 5 bad
signatures in a row) and token and credential expiry follow the wall clock, not
--manual-clock or --time-scale.  Secrets given here are never printed (but are visible to ps:
local use only).

admin API (no auth, never faulted):
  POST /_sim/jobs            create a job from a job spec (201; 409 if the ID exists)
  GET  /_sim/jobs[/{id}]     list jobs / one job's spec, timeline and current state
  POST /_sim/clock           {"advance": seconds} move the clock forward
  POST /_sim/faults          replace the fault settings, e.g. {"throttled_429": 0.2}
  GET  /_sim/stats           request counts by status code, fault kind and job; IAM and AK/SK
  GET  /_sim/requests        API request arrival times and statuses ([?since=epoch])
  POST /_sim/throttle        {"seconds": 0.5, "retry_after": 3}: a burst of 429s from the next
                             request on
  GET  /_sim/auth            access key IDs, lock state, IAM users, live tokens (no secrets)
  POST /_sim/iam/revoke      refuse every IAM token issued so far (as after a password change)
  POST /_sim/aksk/unlock     lift AK locks and reset failure counts
  POST /_sim/aksk/secret     {"access_key": AK, "secret_key": SK}: accept SK for AK from now on
  GET  /_sim/metadata        metadata service counters and live temporary AKs (no secrets)
  POST /_sim/metadata        {"rotate": true}, {"available": false}, {"agency": false},
                             {"token_required": true}
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sim`` subcommand; its parsed arguments carry ``func`` returning an exit code."""
    parser = subparsers.add_parser(
        "sim",
        help="run the local ServiceStage API emulator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser`` and set ``func`` to :func:`run_sim`."""
    _add_serving_options(parser.add_argument_group("serving"))
    _add_credential_options(parser.add_argument_group("AK/SK and IAM credentials"))
    _add_job_options(parser.add_argument_group("jobs"))
    _add_fault_options(parser.add_argument_group("fault injection (per-request probabilities)"))
    parser.set_defaults(func=run_sim)


def _flag(
    group: argparse._ActionsContainer, name: str, help: str, *, default: bool | None = False
) -> None:
    """An option that is given or not: ``True`` if it is, else ``default``."""
    group.add_argument(name, action="store_true", default=default, help=help)


def _add_serving_options(serve: argparse._ArgumentGroup) -> None:
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port, 0 for any (%(default)s)")
    serve.add_argument(
        "--token",
        action="append",
        metavar="TOKEN",
        help=f"accepted X-Auth-Token, repeatable (default: {DEFAULT_TOKEN})",
    )
    serve.add_argument(
        "--project-id", help=f"project of jobs that name none (default: {DEFAULT_PROJECT_ID})"
    )
    serve.add_argument(
        "--page-cap",
        type=_positive_int,
        metavar="N",
        help=f"most tasks per response whatever limit asks (default: {DEFAULT_PAGE_CAP})",
    )
    _flag(
        serve,
        "--upper-case-keys",
        "answer EXECUTION_STATUS, TASK_ID ... as printed on the API page",
        default=None,  # not given: as the scenario says
    )
    serve.add_argument(
        "--hostile",
        type=_quirks,
        metavar="KIND[,KIND...]",
        help=f"awkward data in every job's answers: {', '.join(sorted(QUIRKS))}",
    )
    serve.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        metavar="X",
        help="run job timelines X times faster than real time (%(default)s)",
    )
    _flag(serve, "--manual-clock", "time moves only through POST /_sim/clock")


def _add_credential_options(creds: argparse._ArgumentGroup) -> None:
    creds.add_argument(
        "--access-key",
        action="append",
        type=_access_key,
        metavar="AK:SK",
        help="accept requests signed with this key pair (SDK-HMAC-SHA256), repeatable",
    )
    creds.add_argument(
        "--iam-user",
        action="append",
        type=_iam_user,
        metavar="NAME:PASSWORD[@DOMAIN]",
        help="serve POST /v3/auth/tokens for this user (any domain unless given), repeatable",
    )
    creds.add_argument(
        "--iam-token-lifetime",
        type=_positive_float,
        metavar="SECONDS",
        help=f"lifetime of issued IAM tokens (default: {DEFAULT_IAM_TOKEN_LIFETIME:g})",
    )
    creds.add_argument(
        "--aksk-lock-seconds",
        type=_non_negative_float,
        metavar="SECONDS",
        help=f"how long an AK stays locked after too many bad signatures "
        f"(default: {DEFAULT_AKSK_LOCK_SECONDS:g})",
    )
    creds.add_argument(
        "--temporary-credentials-ttl",
        type=_positive_float,
        metavar="SECONDS",
        help="serve GET /openstack/latest/securitykey (the ECS metadata service) with temporary "
        "AK/SK and security token living SECONDS each (default: no metadata service)",
    )
    _flag(
        creds,
        "--metadata-token-required",
        "the metadata service answers only with a session token "
        "(PUT /meta-data/latest/api/token, then X-Metadata-Token)",
    )


def _add_job_options(jobs: argparse._ArgumentGroup) -> None:
    source = jobs.add_mutually_exclusive_group()
    source.add_argument("--scenario", metavar="FILE", help="scenario file (JSON, or .toml)")
    _flag(source, "--example", "the shipped example: six jobs, six fates")
    jobs.add_argument("--generate", type=_non_negative_int, metavar="N", help="N random jobs")
    jobs.add_argument("--seed", type=int, default=0, help="seed for --generate and faults (0)")
    jobs.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="generated jobs finish within SECONDS (default: 20-60 s each)",
    )
    _flag(jobs, "--print-scenario", "print the scenario (generated and/or loaded) as JSON and exit")


def _add_fault_options(faults: argparse._ArgumentGroup) -> None:
    faults.add_argument(
        "--error-rate", type=_rate, metavar="P", help="spread evenly over the six classic kinds"
    )
    for kind in FAULT_KINDS:
        faults.add_argument(
            f"--{kind.value.replace('_', '-')}",
            dest=kind.value,
            type=_rate,
            metavar="P",
            help=_FAULT_HELP[kind.value],
        )
    faults.add_argument("--latency", type=_seconds, metavar="S", help="seconds added to answers")
    faults.add_argument(
        "--latency-jitter", type=_seconds, metavar="S", help="plus uniform 0..S seconds"
    )
    faults.add_argument(
        "--retry-after", type=_non_negative_int, metavar="S", help="Retry-After on 429/503 (2)"
    )


_FAULT_HELP: Final = {
    "html_500": "500 with an HTML body",
    "empty_502": "502 with an empty body",
    "unavailable_503": "503 JSON with Retry-After",
    "throttled_429": "429 APIG.0308 with Retry-After",
    "truncated": "200 whose JSON body is cut in half",
    "reset": "connection aborted without an answer",
    "deep_json": "200 whose body is JSON nested 5000 levels deep (not spread by --error-rate)",
}


def run_sim(args: argparse.Namespace) -> int:
    """Run the emulator (or print the scenario) as ``args`` say; the process exit code."""
    try:
        scenario = _scenario(args)
        if args.print_scenario:
            if args.scenario is None and args.generate is None and not args.example:
                raise ScenarioError("--print-scenario needs --generate N, --scenario or --example")
            json.dump(scenario_to_dict(scenario), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        config = _config(args, scenario)
    except (ScenarioError, ValueError) as exc:
        print(f"poller sim: error: {exc}", file=sys.stderr)
        return 2
    default_token = not args.token

    def announce(handle: SimHandle) -> None:
        tokens = ", ".join(handle.config.tokens)
        note = " (default; choose with --token)" if default_token else ""
        print(
            f"poller sim: serving {handle.url} project_id={handle.project_id} "
            f"token={tokens}{note}{_credentials_note(handle)} "
            f"jobs={len(handle.state.jobs)} admin={handle.url}/_sim",
            file=sys.stderr,
            flush=True,
        )

    try:
        asyncio.run(serve_forever(config, args.host, args.port, on_started=announce))
    except OSError as exc:
        print(
            f"poller sim: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


def _credentials_note(handle: SimHandle) -> str:
    """AK IDs and IAM user names, never a secret."""
    config = handle.config
    note = ""
    if config.access_keys:
        note += f" access_keys={','.join(config.access_key_ids)}"
    if config.iam_users:
        users = ",".join(user.label for user in config.iam_users)
        note += f" iam_users={users} iam={handle.iam_url}/v3/auth/tokens"
    if config.temporary_credentials_ttl is not None:
        note += (
            f" metadata={handle.url}{SECURITY_KEY_PATH}"
            f" temporary_credentials_ttl={config.temporary_credentials_ttl:g}"
        )
    return note


def _scenario(args: argparse.Namespace) -> Scenario:
    path = example_scenario_path() if args.example else args.scenario
    loaded = load_scenario(path) if path else Scenario()
    if args.generate is None:
        return loaded
    generated = generate(args.generate, args.seed, duration=args.duration)
    if path is None:
        return generated
    return replace(loaded, jobs=loaded.jobs + generated.jobs)


def _config(args: argparse.Namespace, scenario: Scenario) -> SimConfig:
    fault_doc: dict[str, object] = dict(faults_to_dict(scenario.faults or FaultConfig()))
    fault_doc.setdefault("seed", args.seed)
    for key in ("error_rate", *(k.value for k in FAULT_KINDS), "latency", "latency_jitter"):
        if getattr(args, key) is not None:
            fault_doc[key] = getattr(args, key)
    if args.retry_after is not None:
        fault_doc["retry_after"] = args.retry_after
    upper = args.upper_case_keys if args.upper_case_keys is not None else scenario.upper_case_keys
    auth = scenario.auth
    access_keys = {**(auth.access_keys or {}), **dict(args.access_key or [])}
    iam_users: tuple[IamUser, ...] = (auth.iam_users or ()) + tuple(args.iam_user or ())
    lifetime = args.iam_token_lifetime or auth.iam_token_lifetime
    lock = auth.aksk_lock_seconds if args.aksk_lock_seconds is None else args.aksk_lock_seconds
    return SimConfig(
        project_id=args.project_id or scenario.project_id or DEFAULT_PROJECT_ID,
        jobs=scenario.jobs,
        page_cap=args.page_cap or scenario.page_cap or DEFAULT_PAGE_CAP,
        upper_case_keys=bool(upper),
        authenticators=(token_auth(args.token or [DEFAULT_TOKEN]),),
        faults=parse_faults(fault_doc, "faults (from the scenario and the command line)"),
        manual_clock=args.manual_clock,
        time_scale=args.time_scale,
        access_keys=access_keys,
        iam_users=iam_users,
        iam_token_lifetime=lifetime or DEFAULT_IAM_TOKEN_LIFETIME,
        aksk_lock_seconds=DEFAULT_AKSK_LOCK_SECONDS if lock is None else lock,
        hostile=args.hostile or (),
        temporary_credentials_ttl=args.temporary_credentials_ttl,
        metadata_token_required=args.metadata_token_required,
    )


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _rate(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability is between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected 0 to 3600 seconds, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text}")
    return value


def _quirks(text: str) -> tuple[str, ...]:
    try:
        return parse_quirks(part for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _access_key(text: str) -> tuple[str, str]:
    try:
        return parse_access_key_option(text)
    except ValueError as exc:  # the message names the AK at most, never the secret
        raise argparse.ArgumentTypeError(str(exc)) from None


def _iam_user(text: str) -> IamUser:
    try:
        return parse_iam_user_option(text)
    except ValueError as exc:  # the message names the user at most, never the password
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected 1 or more, got 0")
    return value
