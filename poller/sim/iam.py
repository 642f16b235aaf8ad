"""The emulated IAM token endpoint: ``POST /v3/auth/tokens`` (password method, project scope).

Served only when the configuration names IAM users.  Never faulted.  Counted in ``/_sim/stats``
as ``iam_requests``, ``iam_tokens_issued`` and ``iam_failures``.  Errors use IAM's own shape,
``{"error": {"code": 401, "message": "...", "title": "Unauthorized"}}``; passwords never appear
in an answer.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from poller.sim.credentials import IamUser
from poller.sim.state import STATE, SimState

IAM_TOKENS_PATH: Final = "/v3/auth/tokens"
SUBJECT_TOKEN_HEADER: Final = "X-Subject-Token"  # noqa: S105  (a header name)
WRONG_CREDENTIALS: Final = "The username or password is wrong."
INVALID_BODY: Final = "Request body is invalid."


def add_iam_routes(router: web.UrlDispatcher) -> None:
    """Register ``POST /v3/auth/tokens``."""
    router.add_post(IAM_TOKENS_PATH, issue_token)


def rfc3339(epoch: float) -> str:
    """``epoch`` as IAM prints times: ``2024-06-07T15:55:31.115000Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def issue_token(request: web.Request) -> web.Response:
    """201 with ``X-Subject-Token`` for a known user and password, else IAM's 400/401."""
    state = request.app[STATE]
    state.stats.iam_requests += 1
    try:
        doc = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _failure(state, 400, "Bad Request", INVALID_BODY)
    parsed = _parse(doc)
    if isinstance(parsed, str):
        return _failure(state, 400, "Bad Request", f"{INVALID_BODY} {parsed}")
    name, password, domain, project_id = parsed
    if _find_user(state.config.iam_users, name, password, domain) is None:
        return _failure(state, 401, "Unauthorized", WRONG_CREDENTIALS)
    token, record = state.iam_tokens.issue(user=name, domain=domain, project_id=project_id)
    state.stats.iam_tokens_issued += 1
    body = {
        "token": {
            "expires_at": rfc3339(record.expires_at),
            "issued_at": rfc3339(record.issued_at),
            "methods": ["password"],
            "project": {"id": project_id},
            "user": {"name": name, "domain": {"name": domain}},
        }
    }
    return web.json_response(body, status=201, headers={SUBJECT_TOKEN_HEADER: token})


def _parse(doc: object) -> tuple[str, str, str, str] | str:
    """``(user, password, domain, project_id)`` or what is wrong (never quoting the password)."""
    auth = _object(doc, "auth")
    identity = _object(auth, "identity")
    methods = identity.get("methods") if identity is not None else None
    if not isinstance(methods, list) or "password" not in methods:
        return 'auth.identity.methods must include "password"'
    user = _object(_object(identity, "password"), "user")
    if user is None:
        return "auth.identity.password.user is required"
    name, password = user.get("name"), user.get("password")
    domain = _object(user, "domain")
    domain_name = domain.get("name") if domain is not None else None
    if not isinstance(name, str) or not name:
        return "auth.identity.password.user.name must be a non-empty string"
    if not isinstance(password, str) or not password:
        return "auth.identity.password.user.password must be a non-empty string"
    if not isinstance(domain_name, str) or not domain_name:
        return "auth.identity.password.user.domain.name must be a non-empty string"
    project_id = (_object(_object(auth, "scope"), "project") or {}).get("id")
    if not isinstance(project_id, str) or not project_id:
        return "auth.scope.project.id must be a non-empty string"
    return name, password, domain_name, project_id


def _object(parent: object, key: str) -> dict[str, object] | None:
    if parent is None:
        return None
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else None


def _find_user(users: tuple[IamUser, ...], name: str, password: str, domain: str) -> IamUser | None:
    for user in users:
        if (
            user.name == name
            and (user.domain is None or user.domain == domain)
            and hmac.compare_digest(_bytes(user.password), _bytes(password))
        ):
            return user
    return None


def _failure(state: SimState, code: int, title: str, message: str) -> web.Response:
    state.stats.iam_failures += 1
    return web.json_response(
        {"error": {"code": code, "message": message, "title": title}}, status=code
    )


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
