"""The HTTP edge: fetch a complete job snapshot and classify every failure.

``fetch_job`` never raises for anything the network or the API can do; it returns a
:data:`~poller.servicestage.outcomes.PollOutcome`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

import aiohttp
from yarl import URL

from poller.clock import SYSTEM_CLOCK, Clock
from poller.ids import is_valid_id
from poller.limits import Cause, scope_of
from poller.servicestage import outcomes
from poller.servicestage.auth import Authenticator, AuthUnavailable
from poller.servicestage.models import (
    MalformedResponse,
    Page,
    assemble,
    clean_text,
    decode_json,
    parse_error,
    parse_page,
)
from poller.servicestage.proxy import DIRECT, Proxy
from poller.shared_limits import Answer, Held, SharedLimits, Trip

MAX_PAGES: Final = 1000
MAX_BODY_BYTES: Final = 32 * 1024 * 1024

Gate = Callable[[], Awaitable[None]]
ResponseHook = Callable[[str], None]


def job_url(base_url: str, project_id: str, job_id: str) -> URL:
    """``{base}/v3/{project_id}/cas/jobs/{job_id}``; raises ``ValueError`` on a bad ID.

    IDs are checked against the grammar and added as single, encoded path segments, so
    nothing in them can change the path or the query.
    """
    if not is_valid_id(project_id):
        raise ValueError("invalid project_id")
    if not is_valid_id(job_id):
        raise ValueError("invalid job_id")
    # The grammar leaves only [A-Za-z0-9_.-]: nothing to encode, so the path is built as text.
    return URL(f"{_root(base_url)}/v3/{project_id}/cas/jobs/{job_id}", encoded=True)


@functools.lru_cache(maxsize=16)
def _root(base_url: str) -> str:
    """``base_url`` normalised and encoded once, without a trailing slash."""
    return str(URL(base_url)).rstrip("/")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if now is None:
            now = time.time()
        seconds = when.timestamp() - now
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0
    return min(seconds, 3600.0)


class ServiceStageClient:
    """Polls job details over one shared :class:`aiohttp.ClientSession`.

    Every request passes ``limits`` first (the global rate limit and the pauses every replica
    keeps to after a 401 under AK/SK or a 429; by default this process's alone) and tells it
    the answer; ``gate`` is one more wait before each request (tests).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        auth: Authenticator,
        *,
        page_size: int = 100,
        request_timeout: float = 10.0,
        gate: Gate | None = None,
        on_response: ResponseHook | None = None,
        on_auth_problem: Callable[[str], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        proxy: Proxy = DIRECT,
        limits: SharedLimits | None = None,
    ) -> None:
        self._session = session
        self._proxy = proxy
        self._base_url = base_url
        self._auth = auth
        self._page_size = page_size
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._gate = gate
        self._on_response = on_response
        self._on_auth_problem = on_auth_problem
        self._clock = clock
        self.limits = limits or SharedLimits(clock=clock)
        self._auth_failing = False  # a 401 reported under a method that does not pause
        self._pause_reported = False  # an auth problem reported for a pause

    async def fetch_job(
        self, project_id: str, job_id: str, instance_id: str = ""
    ) -> outcomes.PollOutcome:
        """Every page of the job, merged into one snapshot, or why not."""
        try:
            base = job_url(self._base_url, project_id, job_id)
            if instance_id and not is_valid_id(instance_id):
                raise ValueError("invalid instance_id")
        except ValueError as exc:
            return outcomes.Rejected(status=400, detail=str(exc))
        pages: list[Page] = []
        offset = 0
        seen: set[str] = set()
        instance = f"&instance_id={instance_id}" if instance_id else ""  # a checked ID
        while True:
            query = f"?limit={self._page_size}&offset={offset}{instance}"
            result = await self._get_page(URL(f"{base}{query}", encoded=True))
            if not isinstance(result, Page):
                return result
            if pages and result.task_count != pages[0].task_count:
                return outcomes.Transient("task_count changed while paging")
            if pages and result.job_status != pages[0].job_status:
                # The pages would describe different moments; compare only a consistent view.
                return outcomes.Transient("job status changed while paging")
            pages.append(result)
            before = len(seen)
            seen.update(t.task_id for t in result.tasks)
            if len(seen) >= result.task_count:
                break
            if len(seen) == before:
                return outcomes.Transient(
                    f"incomplete snapshot: {len(seen)} of {result.task_count} tasks, "
                    "a page brought no new task"
                )
            if len(pages) >= MAX_PAGES:
                return outcomes.Transient("too many pages")
            offset += len(result.tasks)
        return outcomes.Fetched(assemble(pages, job_id), requests=len(pages))

    def _scope(self) -> str:
        """Whose pauses a 401 to the next request counts against (``""``: nobody's)."""
        return scope_of(self._auth.principal) if self._auth.pause_on_unauthorized else ""

    async def _get_page(self, url: URL) -> Page | outcomes.PollOutcome:
        """One page, or why not.  A 401 under a method that can refresh its credentials is
        tried once more with fresh ones; under AK/SK it pauses every replica instead."""
        for attempt in (1, 2):
            reply = await self._request(url)
            if not isinstance(reply, _Reply):
                return reply
            if reply.status == 200:
                try:
                    return parse_page(decode_json(reply.body))
                except MalformedResponse as exc:
                    return outcomes.Transient(f"unexpected body: {_short(exc)}", status=200)
            error = parse_error(reply.body.decode("utf-8", "replace"))
            request_id = error.request_id or reply.request_id
            detail = _detail(reply.status, error.code, error.message)
            if reply.status != 401:
                return _refusal(reply, error.code, detail, request_id)
            if attempt == 1 and not self._auth.pause_on_unauthorized:
                try:
                    await self._auth.refresh(reply.credentials)
                except AuthUnavailable as exc:
                    return outcomes.Transient(f"credentials unavailable: {exc}")
                continue
            self._report_unauthorized(reply.trip, detail, request_id)
            return outcomes.AuthFailed(detail=detail, request_id=request_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(self, url: URL) -> _Reply | outcomes.PollOutcome:
        """Send one GET once the shared limits let it go, and settle what its answer means
        for them; a request held back, without credentials or without an answer is an
        outcome already."""
        scope = self._scope()
        ticket = await self.limits.admit(scope)
        if isinstance(ticket, Held):
            return self._held(ticket)
        if self._gate is not None:
            await self._gate()
            held = self.limits.check(scope)  # a pause may have begun while we waited
            if held is not None:
                await self.limits.settle(ticket, Answer.INCONCLUSIVE)
                return self._held(held)
        headers = {"Content-Type": "application/json;charset=utf8"}
        try:
            credentials = await self._auth.headers("GET", url, headers, b"")
        except AuthUnavailable as exc:
            await self.limits.settle(ticket, Answer.INCONCLUSIVE)
            return outcomes.Transient(f"credentials unavailable: {exc}")
        headers.update(credentials)
        answered = await self._send(url, headers)
        if isinstance(answered, outcomes.Transient):
            await self.limits.settle(ticket, Answer.INCONCLUSIVE)
            return answered
        status, body, retry_after, request_id = answered
        self._note(str(status))
        answer = _answer(status, pausing=self._auth.pause_on_unauthorized)
        trip = await self.limits.settle(ticket, answer, retry_after)
        if (answer is Answer.ACCEPTED and self._pause_reported) or (
            status != 401 and self._auth_failing
        ):
            self._pause_reported = self._auth_failing = False
            self._report_auth("")
        return _Reply(status, body, retry_after, request_id, credentials, trip)

    async def _send(
        self, url: URL, headers: dict[str, str]
    ) -> tuple[int, bytes, float | None, str] | outcomes.Transient:
        """The HTTP exchange: status, whole body, ``Retry-After`` and request ID, or why the
        request got no answer."""
        try:
            async with self._session.get(
                url,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                proxy=self._proxy.url,
                proxy_auth=self._proxy.auth,
            ) as resp:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock.now())
                request_id = clean_text(resp.headers.get("X-Request-Id", ""))[:100]
                return resp.status, await _read_body(resp), retry_after, request_id
        except BodyTooLarge:
            self._note("error")
            return outcomes.Transient(f"response body over {MAX_BODY_BYTES} bytes")
        except TimeoutError:
            self._note("timeout")
            return outcomes.Transient("request timed out")
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            self._note("error")
            return outcomes.Transient(f"connection failed: {type(exc).__name__}")

    def _report_unauthorized(self, trip: Trip | None, detail: str, request_id: str) -> None:
        """Say once per pause window (polls in flight may bring more 401s) why polling stops,
        or that refreshed credentials were refused too."""
        if self._auth.pause_on_unauthorized:
            if trip is not None and trip.began:
                self._pause_reported = True
                self._report_auth(
                    f"401 under {self._auth.name} ({detail}, request_id={request_id or '-'}); "
                    f"all polling paused for {trip.length:.0f}s{self._everywhere()}"
                )
            return
        self._auth_failing = True
        self._report_auth(
            f"401 under {self._auth.name} even after refreshing credentials "
            f"({detail}, request_id={request_id or '-'})"
        )

    def _everywhere(self) -> str:
        return ", on every replica" if self.limits.shared else ""

    def _held(self, held: Held) -> outcomes.Transient:
        """The outcome of a request a pause held back (it sent nothing)."""
        if held.cause is Cause.THROTTLED:
            return outcomes.Transient(
                "throttled: every replica paused after a 429", retry_after=held.remaining
            )
        if not self._pause_reported:
            self._pause_reported = True
            self._report_auth(
                f"polling paused after a 401 under {self._auth.name}{self._everywhere()}: "
                f"{held.remaining:.0f}s left"
            )
        return outcomes.Transient("authentication paused after a 401", retry_after=held.remaining)

    def _report_auth(self, problem: str) -> None:
        if self._on_auth_problem is not None:
            self._on_auth_problem(problem)

    def _note(self, label: str) -> None:
        if self._on_response is not None:
            self._on_response(label)


class BodyTooLarge(Exception):
    """The response body exceeds :data:`MAX_BODY_BYTES`."""


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body (``content.read(n)`` would return only what is buffered), bounded."""
    if resp.content_length is not None and resp.content_length > MAX_BODY_BYTES:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge
    return bytes(body)


@dataclass(frozen=True, slots=True)
class _Reply:
    """An answer to one request, and what the request was sent with."""

    status: int
    body: bytes
    retry_after: float | None
    request_id: str
    credentials: Mapping[str, str]
    trip: Trip | None


def _refusal(reply: _Reply, code: str, detail: str, request_id: str) -> outcomes.PollOutcome:
    """The outcome of an answer other than 200 and 401."""
    if reply.status == 404:
        return outcomes.NotFound(detail=detail, request_id=request_id)
    if reply.status in (400, 403):
        return outcomes.Rejected(status=reply.status, detail=detail, request_id=request_id)
    return outcomes.Transient(
        f"HTTP {reply.status}" + (f" {code}" if code else ""),
        status=reply.status,
        retry_after=reply.retry_after if reply.status in (429, 503) else None,
        request_id=request_id,
    )


def _answer(status: int, *, pausing: bool) -> Answer:
    """What an HTTP status says about the limits.  Only an answer the gateway gives after it
    judged the credentials proves a key works: a 429 or a 5xx may come before that."""
    if status == 401:
        return Answer.UNAUTHORIZED if pausing else Answer.INCONCLUSIVE
    if status == 429:
        return Answer.THROTTLED
    if status >= 500:
        return Answer.INCONCLUSIVE
    return Answer.ACCEPTED


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def _detail(status: int, code: str, message: str) -> str:
    parts = [code or f"HTTP {status}"]
    if message:
        parts.append(message)
    return ": ".join(parts)
