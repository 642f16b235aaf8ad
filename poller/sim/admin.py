"""The ``/_sim`` admin API: create and inspect jobs, move the clock, set faults, read counters
and request arrival times, start a 429 burst, inspect credentials, revoke IAM tokens and lift
AK locks.

It needs no credentials and is never faulted.  Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import math

from aiohttp import web

from poller.sim._fields import ScenarioError
from poller.sim.faults import faults_to_dict, parse_faults
from poller.sim.model import state_at, timeline, visibility
from poller.sim.render import iso_ms, job_object, task_object
from poller.sim.scenario import job_to_dict, parse_job
from poller.sim.state import STATE, DuplicateJobError, SimJob, SimState
from poller.statuses import is_terminal


def add_admin_routes(router: web.UrlDispatcher) -> None:
    """Register the admin endpoints under ``/_sim``."""
    router.add_post("/_sim/jobs", create_job)
    router.add_get("/_sim/jobs", list_jobs)
    router.add_get("/_sim/jobs/{job_id}", describe_job)
    router.add_get("/_sim/clock", read_clock)
    router.add_post("/_sim/clock", advance_clock)
    router.add_get("/_sim/faults", read_faults)
    router.add_post("/_sim/faults", replace_faults)
    router.add_get("/_sim/stats", read_stats)
    router.add_delete("/_sim/stats", reset_stats)
    router.add_get("/_sim/requests", read_requests)
    router.add_post("/_sim/throttle", start_throttle)
    router.add_get("/_sim/auth", read_auth)
    router.add_post("/_sim/iam/revoke", revoke_iam_tokens)
    router.add_post("/_sim/aksk/unlock", unlock_access_keys)
    router.add_post("/_sim/aksk/secret", replace_secret)


async def create_job(request: web.Request) -> web.Response:
    """``POST /_sim/jobs`` with one job spec: 201, 400 (invalid spec) or 409 (ID taken)."""
    state = request.app[STATE]
    try:
        job = state.add_job(parse_job(await _json_body(request), "job"))
    except ScenarioError as exc:
        return _error(400, str(exc))
    except DuplicateJobError as exc:
        return _error(409, str(exc))
    return web.json_response({"job_id": job.job_id, "project_id": job.project_id}, status=201)


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /_sim/jobs``: every job with its current status, in creation order."""
    state = request.app[STATE]
    return web.json_response({"jobs": [_summary(state, job) for job in state.jobs.values()]})


async def describe_job(request: web.Request) -> web.Response:
    """``GET /_sim/jobs/{job_id}``: spec, creation time, full timeline and current true state."""
    state = request.app[STATE]
    job = state.jobs.get(request.match_info["job_id"])
    if job is None:
        return _error(404, f"no job {request.match_info['job_id']}")
    current = state_at(job.spec, state.elapsed(job))
    document = _summary(state, job)
    document["state"] = {
        "job": job_object(job.spec, current.execution_status),
        "tasks": [task_object(task, job.created_at) for task in current.tasks],
        "task_count": len(current.tasks),
    }
    document["timeline"] = [
        {"at": item.at, "task_index": item.task_index, "status": item.status}
        for item in timeline(job.spec)
    ]
    document["spec"] = job_to_dict(job.spec)
    return web.json_response(document)


async def read_clock(request: web.Request) -> web.Response:
    """``GET /_sim/clock``: the emulated time."""
    return web.json_response(_clock(request.app[STATE]))


async def advance_clock(request: web.Request) -> web.Response:
    """``POST /_sim/clock {"advance": seconds}``: move the emulated time forward."""
    state = request.app[STATE]
    body = await _json_body(request)
    seconds = body.get("advance") if isinstance(body, dict) else None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        return _error(400, 'expected {"advance": seconds} with a non-negative number')
    state.clock.advance(float(seconds))
    return web.json_response(_clock(state))


async def read_faults(request: web.Request) -> web.Response:
    """``GET /_sim/faults``: the active fault settings (fields at their defaults left out)."""
    return web.json_response({"faults": faults_to_dict(request.app[STATE].faults)})


async def replace_faults(request: web.Request) -> web.Response:
    """``POST /_sim/faults``: replace the fault settings (an empty object clears them)."""
    state = request.app[STATE]
    try:
        faults = parse_faults(await _json_body(request))
    except ScenarioError as exc:
        return _error(400, str(exc))
    state.set_faults(faults)
    return web.json_response({"faults": faults_to_dict(faults)})


async def read_stats(request: web.Request) -> web.Response:
    """``GET /_sim/stats``: API requests in total, by status code, by fault kind and by job."""
    return web.json_response(request.app[STATE].stats.as_dict())


async def reset_stats(request: web.Request) -> web.Response:
    """``DELETE /_sim/stats``: zero the counters."""
    state = request.app[STATE]
    state.reset_stats()
    return web.json_response(state.stats.as_dict())


async def read_requests(request: web.Request) -> web.Response:
    """``GET /_sim/requests[?since=epoch]``: the API requests' arrival times (wall clock, epoch
    seconds) and statuses (0: reset), oldest first; the most recent 200,000 are kept."""
    raw = request.query.get("since")
    since = float("-inf")
    if raw is not None:
        try:
            since = float(raw)
        except ValueError:
            return _error(400, f"since: expected epoch seconds, got {raw!r}")
        if not math.isfinite(since):
            return _error(400, "since: expected a finite number")
    return web.json_response(request.app[STATE].requests.as_dict(since))


async def start_throttle(request: web.Request) -> web.Response:
    """``POST /_sim/throttle {"seconds": s, "retry_after": n}``: from the next API request on,
    answer every one with 429 ``APIG.0308`` and ``Retry-After: n`` for ``s`` seconds."""
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) - {"seconds", "retry_after"}:
        return _error(400, 'expected {"seconds": s, "retry_after": n}')
    seconds = body.get("seconds")
    retry_after = body.get("retry_after", 2)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not 0 < seconds <= 3600
    ):
        return _error(400, "seconds: expected a number in (0, 3600]")
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or not retry_after >= 0:
        return _error(400, "retry_after: expected a whole number of seconds, 0 or more")
    request.app[STATE].throttle_for(float(seconds), retry_after)
    return web.json_response({"seconds": float(seconds), "retry_after": retry_after})


async def read_auth(request: web.Request) -> web.Response:
    """``GET /_sim/auth``: accepted credentials without secrets, AK lock state, live tokens."""
    return web.json_response(auth_overview(request.app[STATE]))


async def revoke_iam_tokens(request: web.Request) -> web.Response:
    """``POST /_sim/iam/revoke``: every IAM token issued so far is refused from now on."""
    return web.json_response({"revoked": request.app[STATE].iam_tokens.revoke_all()})


async def unlock_access_keys(request: web.Request) -> web.Response:
    """``POST /_sim/aksk/unlock``: lift every AK lock and forget the failure counts."""
    aksk = request.app[STATE].aksk
    return web.json_response({"unlocked": aksk.unlock() if aksk is not None else []})


async def replace_secret(request: web.Request) -> web.Response:
    """``POST /_sim/aksk/secret {"access_key": AK, "secret_key": SK}``: accept SK for AK from now
    on (a client's wrong secret becomes the right one: recovery tests).  The answer names the AK
    only."""
    aksk = request.app[STATE].aksk
    body = await _json_body(request)
    if aksk is None:
        return _error(409, "no access keys configured")
    if not isinstance(body, dict) or set(body) != {"access_key", "secret_key"}:
        return _error(400, 'expected {"access_key": ..., "secret_key": ...}')
    try:
        aksk.replace_secret(body["access_key"], body["secret_key"])
    except ValueError as exc:  # names the AK at most, never the secret
        return _error(400, str(exc))
    return web.json_response({"access_key": body["access_key"]})


def auth_overview(state: SimState) -> dict[str, object]:
    """What ``GET /_sim/auth`` shows: AK IDs, user names, token counts -- never a secret."""
    config = state.config
    return {
        "tokens": len(config.tokens),
        "access_keys": list(config.access_key_ids),
        "aksk": state.aksk.status() if state.aksk is not None else {},
        "iam_users": [user.label for user in config.iam_users],
        "iam_token_lifetime": config.iam_token_lifetime,
        "iam_live_tokens": state.iam_tokens.live(),
    }


def _summary(state: SimState, job: SimJob) -> dict[str, object]:
    elapsed = state.elapsed(job)
    current = job.state(elapsed)
    return {
        "job_id": job.job_id,
        "project_id": job.project_id,
        "description": job.spec.description,
        "created_at": iso_ms(job.created_at),
        "elapsed": round(elapsed, 3),
        "visibility": visibility(job.spec, elapsed).value,
        "execution_status": current.execution_status,
        "terminal": is_terminal(current.execution_status),
        "visible_tasks": len(current.tasks),
        "total_tasks": len(job.spec.tasks),
    }


def _clock(state: SimState) -> dict[str, object]:
    now = state.clock.now()
    return {"now": iso_ms(now), "epoch": now, "manual": state.clock.manual}


async def _json_body(request: web.Request) -> object:
    try:
        return json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {exc}"}), content_type="application/json"
        ) from exc


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
