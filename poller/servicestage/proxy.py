"""Proxy settings, read once.

aiohttp's ``trust_env=True`` looks up ``HTTP(S)_PROXY``/``NO_PROXY`` and ``~/.netrc`` on every
request, through a hop to a thread: half of a poll's CPU.  The daemon reads them once per
endpoint at start-up instead and passes the answer with each request.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL


@dataclass(frozen=True, slots=True)
class Proxy:
    """Where requests to one endpoint go: ``url`` is ``None`` for a direct connection."""

    url: URL | None = None
    auth: aiohttp.BasicAuth | None = None


DIRECT = Proxy()


def env_proxy(endpoint: str | URL) -> Proxy:
    """The proxy the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``, in either
    case) names for ``endpoint``, as ``trust_env`` would choose it."""
    try:
        url, auth = get_env_proxy_for_url(URL(endpoint))
    except LookupError:
        return DIRECT
    return Proxy(url, auth)
