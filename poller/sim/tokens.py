"""IAM tokens the emulator has issued, and the authenticator that honours them on the job API.

Clock: a token's ``issued_at``/``expires_at`` and its expiry are *wall* time (``wall_clock``,
default :func:`time.time`), never the emulator's job clock.  The daemon schedules its refresh
from ``expires_at`` against its own wall clock; had the emulator computed ``expires_at`` from a
manual clock frozen in 2024, every token would look long dead to the client, and one measured on
a sped-up clock would die before the client expected.  One clock for issuing and for checking
keeps ``expires_at`` truthful.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from poller.sim.auth import ACCEPTED, Verdict
from poller.sim.credentials import DEFAULT_IAM_TOKEN_LIFETIME, check_seconds

TOKEN_EXPIRED: Final = "token expires"  # noqa: S105  (gateway wording, not a secret)
TOKEN_REVOKED: Final = "token revoked"  # noqa: S105
_MAX_TOKENS: Final = 100_000  # beyond this the oldest issued tokens are forgotten


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What the emulator remembers about one token (the token string itself is the key)."""

    user: str
    domain: str
    project_id: str
    issued_at: float
    expires_at: float


class IssuedTokens:
    """The tokens issued by ``POST /v3/auth/tokens``: issue, check, revoke."""

    __slots__ = ("_lifetime", "_revoked", "_tokens", "_wall_clock")

    def __init__(
        self,
        lifetime: float = DEFAULT_IAM_TOKEN_LIFETIME,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifetime = check_seconds(lifetime, "iam_token_lifetime", positive=True)
        self._wall_clock = wall_clock
        self._tokens: dict[str, IssuedToken] = {}
        self._revoked: set[str] = set()

    def __repr__(self) -> str:
        return f"IssuedTokens(issued={len(self._tokens)}, revoked={len(self._revoked)})"

    @property
    def lifetime(self) -> float:
        """Seconds a new token lives."""
        return self._lifetime

    def issued(self) -> list[str]:
        """Every token value issued and still remembered (for tests that grep logs for them)."""
        return list(self._tokens)

    def issue(self, *, user: str, domain: str, project_id: str) -> tuple[str, IssuedToken]:
        """A fresh random token valid for :attr:`lifetime` seconds from now (wall time)."""
        now = self._wall_clock()
        token = "MIIsim" + secrets.token_urlsafe(48)
        record = IssuedToken(user, domain, project_id, now, now + self._lifetime)
        if len(self._tokens) >= _MAX_TOKENS:
            oldest = next(iter(self._tokens))
            del self._tokens[oldest]
            self._revoked.discard(oldest)
        self._tokens[token] = record
        return token, record

    def check(self, token: str) -> Verdict | None:
        """Accept a live token, reject an expired or revoked one, ``None`` for a stranger."""
        record = self._tokens.get(token)
        if record is None:
            return None
        if token in self._revoked:
            return Verdict(accepted=False, detail=TOKEN_REVOKED)
        if self._wall_clock() >= record.expires_at:
            return Verdict(accepted=False, detail=TOKEN_EXPIRED)
        return ACCEPTED

    def revoke_all(self) -> int:
        """Revoke every token issued so far (new ones can still be obtained); how many were live."""
        now = self._wall_clock()
        live = [
            token
            for token, record in self._tokens.items()
            if token not in self._revoked and now < record.expires_at
        ]
        self._revoked.update(self._tokens)
        return len(live)

    def live(self) -> int:
        """How many issued tokens are neither expired nor revoked."""
        now = self._wall_clock()
        return sum(
            1
            for token, record in self._tokens.items()
            if token not in self._revoked and now < record.expires_at
        )


@dataclass(frozen=True, slots=True)
class IssuedTokenVerifier:
    """Accepts an ``X-Auth-Token`` that :class:`IssuedTokens` issued and that is still live.

    Abstains for a token it never issued, so a static :class:`~poller.sim.auth.TokenVerifier`
    can still judge it; rejects an expired one with ``token expires`` and a revoked one with
    ``token revoked``.
    """

    tokens: IssuedTokens

    def verify(self, request: web.BaseRequest) -> Verdict | None:
        """The verdict on an issued token; ``None`` without one."""
        token = request.headers.get("X-Auth-Token")
        return None if token is None else self.tokens.check(token)
