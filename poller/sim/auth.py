"""Who may call the emulated API: a small seam for token, AK/SK or IAM-issued credentials.

Each :class:`RequestVerifier` looks at the credentials of its own kind.  A request is accepted when
any authenticator accepts it; otherwise the first rejection is answered with 401 ``APIGW.0301``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import web

DEFAULT_TOKEN: Final = "sim-token"  # noqa: S105  (the documented test token, not a secret)
UNAUTHORIZED_CODE: Final = "APIGW.0301"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking a request's credentials.

    ``detail`` follows ``"Incorrect IAM authentication information: "`` in a 401 ``error_msg``;
    ``error_code`` is the gateway's code for it.
    """

    accepted: bool
    detail: str = ""
    error_code: str = UNAUTHORIZED_CODE


ACCEPTED: Final = Verdict(accepted=True)
NO_CREDENTIALS: Final = Verdict(accepted=False, detail="x-auth-token not found")


class RequestVerifier(Protocol):
    """Checks one kind of credentials."""

    def verify(self, request: web.BaseRequest) -> Verdict | None:
        """The verdict on the request's credentials, or ``None`` if it carries none of this kind."""


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Accepts an ``X-Auth-Token`` header equal to one of ``tokens``."""

    tokens: frozenset[str]

    def verify(self, request: web.BaseRequest) -> Verdict | None:
        """Accept a known token, reject an unknown one, abstain without the header."""
        token = request.headers.get("X-Auth-Token")
        if token is None:
            return None
        if token in self.tokens:
            return ACCEPTED
        return Verdict(accepted=False, detail="decrypt token fail")


def token_auth(tokens: Iterable[str]) -> TokenVerifier:
    """A :class:`TokenVerifier` for ``tokens``."""
    return TokenVerifier(frozenset(tokens))


def authenticate(authenticators: tuple[RequestVerifier, ...], request: web.BaseRequest) -> Verdict:
    """Accept when any authenticator accepts (or there are none); else the first rejection."""
    if not authenticators:
        return ACCEPTED
    rejection: Verdict | None = None
    for authenticator in authenticators:
        verdict = authenticator.verify(request)
        if verdict is None:
            continue
        if verdict.accepted:
            return verdict
        rejection = rejection or verdict
    return rejection or NO_CREDENTIALS
