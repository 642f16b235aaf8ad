"""The emulated ECS/CCE metadata service: temporary AK/SK with a security token.

Served when the configuration sets ``temporary_credentials_ttl`` (``poller sim
--temporary-credentials-ttl SECONDS``), on the emulator's own address (point
``POLLER_METADATA_ENDPOINT`` at it):

* ``GET /openstack/latest/securitykey`` answers, like the provider's metadata service,
  ``{"credential": {"access": ..., "secret": ..., "securitytoken": ..., "expires_at":
  "2024-06-07T15:55:31.115000Z"}}``.  Every caller gets the *current* credential; once it has
  used half of its lifetime a new one replaces it (both stay valid until their own expiry), so a
  client that renews ahead of ``expires_at`` never holds an expired one.
* ``PUT /meta-data/latest/api/token`` with ``X-Metadata-Token-Ttl-Seconds`` (1 to 21600) hands
  out a session token, as ``huaweicloudsdkcore``'s ``MetadataAccessor`` expects; a request that
  sends a bad or expired ``X-Metadata-Token`` gets 401, and so does one without a token when
  ``metadata_token_required`` is set.

The job API accepts a temporary AK only with its ``X-Security-Token`` (signed) and before it
expires; otherwise 401 ``APIGW.0301`` (see :mod:`poller.sim.aksk`).  Lifetimes are wall time,
like IAM tokens (see :mod:`poller.sim.tokens`).

Admin (no auth, never faulted): ``GET /_sim/metadata`` (counters, the live AKs, no secrets) and
``POST /_sim/metadata`` with any of ``{"rotate": true}`` (issue a new credential now),
``{"available": false}`` (answer 503 until set back), ``{"agency": false}`` (answer 401 "Please
configure Cloud Service Agency first", as a server without an agency does) and
``{"token_required": true}``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from poller.servicestage.auth import (
    AGENCY_ERROR,
    METADATA_TOKEN_HEADER,
    METADATA_TOKEN_PATH,
    METADATA_TOKEN_TTL_HEADER,
    SECURITY_KEY_PATH,
)
from poller.sim.aksk import AkSkVerifier, TemporaryKey
from poller.sim.credentials import check_seconds
from poller.sim.iam import rfc3339
from poller.sim.state import STATE, SimState

__all__ = [
    "AGENCY_ERROR",
    "METADATA",
    "SECURITY_KEY_PATH",
    "MetadataService",
    "TemporaryCredential",
    "TemporaryCredentials",
    "add_metadata",
]

MAX_METADATA_TOKEN_TTL: Final = 21600
#: A credential is replaced once it has used this share of its lifetime.
ROTATE_AFTER: Final = 0.5
_MAX_REMEMBERED: Final = 10_000  # beyond this the oldest credentials and tokens are forgotten


@dataclass(frozen=True, slots=True)
class TemporaryCredential:
    """One issued credential: its AK, what the verifier needs of it (``key``, left out of
    ``repr`` for its secrets) and when it was issued."""

    access_key: str
    key: TemporaryKey = field(repr=False)
    issued_at: float

    def as_document(self) -> dict[str, object]:
        """The metadata service's answer for this credential."""
        return {
            "credential": {
                "access": self.access_key,
                "secret": self.key.secret_key,
                "securitytoken": self.key.security_token,
                "expires_at": rfc3339(self.key.expires_at),
            }
        }


class TemporaryCredentials:
    """Issues temporary credentials, rotates them, and looks them up for the verifier."""

    __slots__ = ("_by_access_key", "_current", "_ttl", "_wall_clock")

    def __init__(self, ttl: float, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._ttl = check_seconds(ttl, "temporary_credentials_ttl", positive=True)
        self._wall_clock = wall_clock
        self._by_access_key: OrderedDict[str, TemporaryCredential] = OrderedDict()
        self._current: TemporaryCredential | None = None

    def __repr__(self) -> str:
        return f"TemporaryCredentials(ttl={self._ttl}, issued={len(self._by_access_key)})"

    @property
    def ttl(self) -> float:
        """Seconds a new credential lives."""
        return self._ttl

    def current(self) -> TemporaryCredential:
        """The credential to hand out now: a new one once the current has used
        :data:`ROTATE_AFTER` of its lifetime."""
        current = self._current
        now = self._wall_clock()
        if current is None or now >= current.issued_at + self._ttl * ROTATE_AFTER:
            current = self.rotate()
        return current

    def rotate(self) -> TemporaryCredential:
        """Issue a new credential now (the previous ones stay valid until they expire)."""
        now = self._wall_clock()
        key = TemporaryKey(
            secret_key=secrets.token_urlsafe(30),
            security_token="gQpjbi1zaW0" + secrets.token_urlsafe(96),
            expires_at=now + self._ttl,
        )
        credential = TemporaryCredential(
            access_key="TMP" + secrets.token_hex(10).upper(), key=key, issued_at=now
        )
        if len(self._by_access_key) >= _MAX_REMEMBERED:
            self._by_access_key.popitem(last=False)
        self._by_access_key[credential.access_key] = credential
        self._current = credential
        return credential

    def lookup(self, access_key: str) -> TemporaryKey | None:
        """What the AK/SK verifier needs of ``access_key``, or ``None`` if never issued."""
        credential = self._by_access_key.get(access_key)
        return credential.key if credential is not None else None

    def issued(self) -> list[TemporaryCredential]:
        """Every credential issued and still remembered, oldest first (for tests)."""
        return list(self._by_access_key.values())

    def live(self) -> list[str]:
        """The AKs of credentials that have not expired."""
        now = self._wall_clock()
        return [c.access_key for c in self._by_access_key.values() if now < c.key.expires_at]


@dataclass(slots=True)
class MetadataService:
    """The emulated metadata service's state, settings and counters."""

    credentials: TemporaryCredentials
    wall_clock: Callable[[], float]
    token_required: bool = False
    available: bool = True
    agency: bool = True
    session_tokens: OrderedDict[str, float] = field(default_factory=OrderedDict)
    #: (wall time, AK) of every credential handed out, newest last (for tests)
    served: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=_MAX_REMEMBERED))
    requests: int = 0
    credentials_served: int = 0
    session_tokens_issued: int = 0
    failures: int = 0

    def status(self) -> dict[str, object]:
        """Counters and settings, the current and live AKs; no secret."""
        issued = self.credentials.issued()
        return {
            "ttl": self.credentials.ttl,
            "available": self.available,
            "agency": self.agency,
            "token_required": self.token_required,
            "requests": self.requests,
            "credentials_served": self.credentials_served,
            "credentials_issued": len(issued),
            "session_tokens_issued": self.session_tokens_issued,
            "failures": self.failures,
            "current_access_key": issued[-1].access_key if issued else None,
            "live_access_keys": self.credentials.live(),
        }

    def issue_session_token(self, ttl: int) -> str:
        """A session token valid for ``ttl`` seconds (wall time)."""
        token = secrets.token_urlsafe(32)
        if len(self.session_tokens) >= _MAX_REMEMBERED:
            self.session_tokens.popitem(last=False)
        self.session_tokens[token] = self.wall_clock() + ttl
        self.session_tokens_issued += 1
        return token

    def session_token_ok(self, token: str | None) -> bool:
        """Whether a request with this ``X-Metadata-Token`` (``None``: none) may proceed."""
        if token is None:
            return not self.token_required
        expires_at = self.session_tokens.get(token)
        return expires_at is not None and self.wall_clock() < expires_at


METADATA: Final = web.AppKey("poller_sim_metadata", MetadataService)


def add_metadata(app: web.Application) -> MetadataService:
    """Serve the metadata service on ``app`` (whose :data:`~poller.sim.state.STATE` is set) and
    make its job API accept the temporary credentials it hands out."""
    state = app[STATE]
    config = state.config
    assert config.temporary_credentials_ttl is not None
    credentials = TemporaryCredentials(
        config.temporary_credentials_ttl, wall_clock=state.wall_clock
    )
    service = MetadataService(
        credentials, state.wall_clock, token_required=config.metadata_token_required
    )
    app[METADATA] = service
    app.router.add_get(SECURITY_KEY_PATH, get_security_key)
    app.router.add_put(METADATA_TOKEN_PATH, put_session_token)
    app.router.add_get("/_sim/metadata", read_metadata)
    app.router.add_post("/_sim/metadata", control_metadata)
    verifier = AkSkVerifier(
        {},
        lock_seconds=config.aksk_lock_seconds,
        max_failures=config.aksk_max_failures,
        wall_clock=state.wall_clock,
        observe=_counter(state),
        temporary=credentials,
        # Other AKs are judged by the configured key pairs' verifier, when there is one.
        abstain_unknown=state.aksk is not None,
    )
    # First: its rejections (expired, wrong token) are more telling than "ak not found".
    state.authenticators = (verifier, *state.authenticators)
    return service


def _counter(state: SimState) -> Callable[[str], None]:
    def count(outcome: str) -> None:
        state.stats.by_aksk[outcome] += 1

    return count


def _text(status: int, text: str, service: MetadataService) -> web.Response:
    if status >= 400:
        service.failures += 1
    return web.Response(status=status, text=text)


def _refusal(service: MetadataService) -> web.Response | None:
    if not service.available:
        return _text(503, "Service Unavailable", service)
    if not service.agency:
        return _text(401, AGENCY_ERROR, service)
    return None


async def get_security_key(request: web.Request) -> web.Response:
    """``GET /openstack/latest/securitykey``: the current temporary credential."""
    service = request.app[METADATA]
    service.requests += 1
    refusal = _refusal(service)
    if refusal is not None:
        return refusal
    if not service.session_token_ok(request.headers.get(METADATA_TOKEN_HEADER)):
        return _text(401, "Unauthorized", service)
    service.credentials_served += 1
    credential = service.credentials.current()
    service.served.append((service.wall_clock(), credential.access_key))
    return web.json_response(credential.as_document())


async def put_session_token(request: web.Request) -> web.Response:
    """``PUT /meta-data/latest/api/token``: a session token for ``X-Metadata-Token``."""
    service = request.app[METADATA]
    service.requests += 1
    if not service.available:
        return _text(503, "Service Unavailable", service)
    raw = request.headers.get(METADATA_TOKEN_TTL_HEADER, "")
    ttl = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0
    if not 1 <= ttl <= MAX_METADATA_TOKEN_TTL:
        message = f"{METADATA_TOKEN_TTL_HEADER} must be 1 to {MAX_METADATA_TOKEN_TTL}"
        return _text(400, message, service)
    return web.Response(text=service.issue_session_token(ttl))


async def read_metadata(request: web.Request) -> web.Response:
    """``GET /_sim/metadata``: settings, counters and AKs (no secrets)."""
    return web.json_response(request.app[METADATA].status())


async def control_metadata(request: web.Request) -> web.Response:
    """``POST /_sim/metadata``: ``rotate``, ``available``, ``agency``, ``token_required``."""
    service = request.app[METADATA]
    try:
        doc = json.loads(await request.read() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response({"error": "expected a JSON object"}, status=400)
    allowed = {"rotate", "available", "agency", "token_required"}
    if not isinstance(doc, dict) or not set(doc) <= allowed:
        return web.json_response(
            {"error": f"expected a JSON object with some of {sorted(allowed)}"}, status=400
        )
    if any(not isinstance(value, bool) for value in doc.values()):
        return web.json_response({"error": "every value must be true or false"}, status=400)
    if doc.get("rotate"):
        service.credentials.rotate()
    for name in ("available", "agency", "token_required"):
        if name in doc:
            setattr(service, name, doc[name])
    return web.json_response(service.status())
