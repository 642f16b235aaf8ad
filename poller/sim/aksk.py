"""AK/SK (``SDK-HMAC-SHA256``) request verification with the provider's lockout.

Clocks: both the ``X-Sdk-Date`` skew check and the lockout run on *wall* time
(``wall_clock``, default :func:`time.time`), never on the emulator's job clock.  Clients sign
with their own wall clock, and the emulator's clock may be manual (frozen at some epoch) or sped
up, so checking the date against it would reject every honest request; and a lock measured on a
manual clock would never lift unless a test moved the clock.  The daemon's global back-off after
a 401 is wall time too, so a short ``lock_seconds`` in a test behaves as it would in production.

Temporary credentials (issued by the emulated metadata service, :mod:`poller.sim.metadata`) are
judged here too: such an AK is accepted only with its own ``X-Security-Token``, signed (as the
official SDK signs it), and only before the credential expires (wall time).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from aiohttp import web

from poller.servicestage.signing import (
    ALGORITHM,
    DEFAULT_MAX_SKEW_SECONDS,
    SECURITY_TOKEN_HEADER,
    VerifyReason,
    VerifyResult,
    authorization_access_key,
    verify_request,
)
from poller.sim.auth import ACCEPTED, Verdict
from poller.sim.credentials import (
    DEFAULT_AKSK_LOCK_SECONDS,
    DEFAULT_AKSK_MAX_FAILURES,
    check_access_keys,
    check_seconds,
)

#: The request body, when the handler has read it (aiohttp reads bodies asynchronously and
#: :meth:`AkSkVerifier.verify` is synchronous).  Absent means an empty body.
REQUEST_BODY: Final = web.RequestKey("poller_sim_request_body", bytes)

SIGNATURE_FAIL: Final = "verify aksk signature fail"
AK_NOT_FOUND: Final = "ak not found"
DATE_EXPIRED: Final = "X-Sdk-Date expired"
LOCKED: Final = "ak locked after too many signature failures"
TOKEN_MISSING: Final = "security token missing for a temporary access key"  # noqa: S105
TOKEN_MISMATCH: Final = "security token does not match the access key"  # noqa: S105
TOKEN_EXPIRED: Final = "security token expired"  # noqa: S105

#: Failures that count towards the lockout: the key is known and the date fresh, but the
#: signature (or the body hash it covers) is wrong -- a wrong secret or a tampered request.
_COUNTED: Final = frozenset({VerifyReason.SIGNATURE_MISMATCH, VerifyReason.PAYLOAD_HASH_MISMATCH})
_DATE_REASONS: Final = frozenset({VerifyReason.DATE_TOO_OLD, VerifyReason.DATE_IN_FUTURE})


def _ignore(_: str) -> None:
    return None


async def read_body(request: web.Request) -> None:
    """Read the request body (if any) into ``request[REQUEST_BODY]`` for the verifier."""
    if request.body_exists:
        request[REQUEST_BODY] = await request.read()


@dataclass(frozen=True, slots=True)
class TemporaryKey:
    """What the verifier needs of a temporary credential."""

    secret_key: str
    security_token: str
    expires_at: float


class TemporaryKeys(Protocol):
    """Where temporary AKs are looked up (the emulated metadata service's credentials)."""

    def lookup(self, access_key: str) -> TemporaryKey | None:
        """The temporary credential issued with ``access_key``, expired or not; ``None`` if
        this AK was never issued (or is long forgotten)."""
        ...


@dataclass(slots=True)
class _KeyState:
    failures: int = 0
    locked_until: float | None = None


class AkSkVerifier:
    """Verifies ``Authorization: SDK-HMAC-SHA256 ...`` against ``access_keys`` (AK -> SK).

    Abstains without an ``Authorization`` header.  Rejections are 401 ``APIGW.0301`` with the
    gateway's wording: ``verify aksk signature fail`` (wrong signature, tampered request,
    malformed header), ``ak not found``, ``X-Sdk-Date expired`` and, once more than
    ``max_failures`` signature failures in a row have been seen for an AK, ``ak locked ...`` for
    every request with that AK -- good signatures included -- until ``lock_seconds`` have
    passed.  A good signature while not locked resets the AK's count.

    ``observe`` is told each outcome: ``"accepted"``, ``"rejected"`` (any other rejection),
    ``"signature_failure"``, ``"locked"`` (an AK has just been locked) and
    ``"locked_rejection"``.  No secret ever reaches a verdict or ``observe``.

    ``temporary`` adds temporary AKs: one is accepted only with its ``X-Security-Token`` (a
    signed header) and before it expires; otherwise ``security token missing``, ``... does not
    match`` or ``... expired`` (not counted towards the lockout: the signature was not judged).
    With ``abstain_unknown`` an AK that is neither configured nor temporary is left to other
    authenticators instead of rejected as ``ak not found``.
    """

    __slots__ = (
        "_abstain_unknown",
        "_keys",
        "_lock_seconds",
        "_max_failures",
        "_max_skew",
        "_observe",
        "_state",
        "_temporary",
        "_wall_clock",
    )

    def __init__(
        self,
        access_keys: Mapping[str, str],
        *,
        lock_seconds: float = DEFAULT_AKSK_LOCK_SECONDS,
        max_failures: int = DEFAULT_AKSK_MAX_FAILURES,
        max_skew: float = DEFAULT_MAX_SKEW_SECONDS,
        wall_clock: Callable[[], float] = time.time,
        observe: Callable[[str], None] = _ignore,
        temporary: TemporaryKeys | None = None,
        abstain_unknown: bool = False,
    ) -> None:
        if max_failures < 0:
            raise ValueError(f"max_failures must be 0 or more, got {max_failures}")
        self._keys = check_access_keys(access_keys)
        self._lock_seconds = check_seconds(lock_seconds, "lock_seconds", positive=False)
        self._max_failures = max_failures
        self._max_skew = check_seconds(max_skew, "max_skew", positive=False)
        self._wall_clock = wall_clock
        self._observe = observe
        self._state: dict[str, _KeyState] = {}
        self._temporary = temporary
        self._abstain_unknown = abstain_unknown

    def __repr__(self) -> str:
        return f"AkSkVerifier(access_keys={sorted(self._keys)!r})"

    @property
    def access_key_ids(self) -> tuple[str, ...]:
        """The known AKs, sorted (no secrets)."""
        return tuple(sorted(self._keys))

    def verify(self, request: web.BaseRequest) -> Verdict | None:
        """Check the signature; abstain when the request has no ``Authorization`` header."""
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return None
        now = self._wall_clock()
        access_key = authorization_access_key(authorization)
        temporary = (
            self._temporary.lookup(access_key)
            if self._temporary is not None and access_key is not None
            else None
        )
        lookup_secret: Callable[[str], str | None] = self._keys.get
        if temporary is not None:
            rejection = self._check_token(
                temporary, request.headers.get(SECURITY_TOKEN_HEADER), now
            )
            if rejection is not None:
                self._observe("rejected")
                return rejection
            lookup_secret = {access_key: temporary.secret_key}.get
        elif self._abstain_unknown and access_key not in self._keys:
            return None
        result = verify_request(
            method=request.method,
            url=request.raw_path,
            headers=request.headers,
            body=request.get(REQUEST_BODY, b""),
            lookup_secret=lookup_secret,
            now=datetime.fromtimestamp(now, UTC),
            max_skew=self._max_skew,
            required_signed=(SECURITY_TOKEN_HEADER.lower(),) if temporary is not None else (),
        )
        return self._judge(result, now)

    @staticmethod
    def _check_token(key: TemporaryKey, sent: str | None, now: float) -> Verdict | None:
        """The rejection of a temporary AK's security token, or ``None`` when it is good."""
        if sent is None:
            return Verdict(accepted=False, detail=TOKEN_MISSING)
        if not hmac.compare_digest(_bytes(sent.strip()), _bytes(key.security_token)):
            return Verdict(accepted=False, detail=TOKEN_MISMATCH)
        if now >= key.expires_at:
            return Verdict(accepted=False, detail=TOKEN_EXPIRED)
        return None

    def _judge(self, result: VerifyResult, now: float) -> Verdict:
        access_key = result.access_key
        state = self._state.get(access_key) if access_key is not None else None
        if state is not None and state.locked_until is not None:
            if now < state.locked_until:
                self._observe("locked_rejection")
                retry = max(1, round(state.locked_until - now))
                return Verdict(accepted=False, detail=f"{LOCKED}, retry in {retry}s")
            state.locked_until = None
            state.failures = 0
        if result.ok:
            if state is not None:
                state.failures = 0
            self._observe("accepted")
            return ACCEPTED
        if result.reason in _COUNTED and access_key is not None:
            state = self._state.setdefault(access_key, _KeyState())
            state.failures += 1
            self._observe("signature_failure")
            if state.failures > self._max_failures:
                state.locked_until = now + self._lock_seconds
                self._observe("locked")
            return Verdict(accepted=False, detail=SIGNATURE_FAIL)
        self._observe("rejected")
        return Verdict(accepted=False, detail=_detail(result))

    def replace_secret(self, access_key: str, secret_key: str) -> None:
        """Accept ``secret_key`` for ``access_key`` from now on (as if the clients' wrong secret
        had been the right one all along: tests of recovering from a wrong secret)."""
        self._keys = check_access_keys({**self._keys, access_key: secret_key})

    def failures(self, access_key: str) -> int:
        """Signature failures in a row for ``access_key`` (0 when unknown)."""
        state = self._state.get(access_key)
        return state.failures if state is not None else 0

    def locked(self, access_key: str) -> bool:
        """True while ``access_key`` is locked."""
        state = self._state.get(access_key)
        return (
            state is not None
            and state.locked_until is not None
            and self._wall_clock() < state.locked_until
        )

    def status(self) -> dict[str, dict[str, object]]:
        """Per AK with a history: failures in a row and seconds left locked (no secrets)."""
        now = self._wall_clock()
        return {
            access_key: {
                "failures": state.failures,
                "locked_for": (
                    round(state.locked_until - now, 3)
                    if state.locked_until is not None and now < state.locked_until
                    else 0
                ),
            }
            for access_key, state in sorted(self._state.items())
        }

    def unlock(self) -> list[str]:
        """Lift every lock and forget every failure count; the AKs that were locked."""
        now = self._wall_clock()
        was_locked = sorted(
            access_key
            for access_key, state in self._state.items()
            if state.locked_until is not None and now < state.locked_until
        )
        self._state.clear()
        return was_locked


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _detail(result: VerifyResult) -> str:
    """The gateway-style detail of a rejection that does not count towards the lockout."""
    if result.reason is VerifyReason.UNKNOWN_ACCESS_KEY:
        return AK_NOT_FOUND
    if result.reason in _DATE_REASONS:
        return f"{DATE_EXPIRED} ({result.detail})"
    if result.reason is VerifyReason.UNSUPPORTED_ALGORITHM:
        return f"{SIGNATURE_FAIL} (the Authorization scheme must be {ALGORITHM})"
    return f"{SIGNATURE_FAIL} ({result.detail})"
