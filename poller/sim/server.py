"""Running the emulator: in-process for tests and the demo, or until a signal for the CLI."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from poller.servicestage.signing import SignedRequest, sign_request
from poller.sim.admin import auth_overview
from poller.sim.app import JOB_DETAILS_PATH, create_app
from poller.sim.config import SimConfig
from poller.sim.faults import parse_faults
from poller.sim.requestlog import Arrival
from poller.sim.scenario import JobSpec, parse_job
from poller.sim.state import STATE, SimState

_SHUTDOWN_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class SimHandle:
    """A running emulator: its base URL and direct access to its state.

    The helper methods act on the emulator's state directly, exactly as the matching
    ``/_sim`` admin endpoints do.
    """

    url: str
    app: web.Application

    @property
    def state(self) -> SimState:
        """The emulator's state (jobs, clock, faults, counters)."""
        return self.app[STATE]

    @property
    def config(self) -> SimConfig:
        """The configuration it was started with."""
        return self.state.config

    @property
    def project_id(self) -> str:
        """The default project."""
        return self.config.project_id

    @property
    def token(self) -> str | None:
        """An accepted ``X-Auth-Token`` (the first configured), if any."""
        tokens = self.config.tokens
        return tokens[0] if tokens else None

    @property
    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request with :attr:`token`."""
        return {"X-Auth-Token": self.token} if self.token else {}

    @property
    def iam_url(self) -> str:
        """The IAM endpoint (``POLLER_IAM_ENDPOINT``): this emulator, ``/v3/auth/tokens``."""
        return self.url

    @property
    def access_key(self) -> str | None:
        """The first configured AK (sorted), if any."""
        keys = self.config.access_key_ids
        return keys[0] if keys else None

    def sign(
        self,
        method: str,
        url: str,
        *,
        access_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        now: datetime | None = None,
    ) -> SignedRequest:
        """Sign a request with a configured key pair (default :attr:`access_key`) like a client.

        Send ``signed.url`` (the query in canonical form; with aiohttp pass
        ``yarl.URL(signed.url, encoded=True)``) with ``headers`` plus ``signed.headers``.
        ``now`` defaults to the wall clock the emulator judges dates by.
        """
        key = access_key or self.access_key
        if key is None or key not in self.config.access_keys:
            raise KeyError(f"no such access key configured: {key!r}")
        return sign_request(
            method=method,
            url=url,
            headers=dict(headers or {}),
            body=body,
            access_key=key,
            secret_key=self.config.access_keys[key],
            now=now or datetime.fromtimestamp(self.state.wall_clock(), UTC),
        )

    def job_url(self, job_id: str, project_id: str | None = None) -> str:
        """The job-details URL of ``job_id`` (in the default project unless given), IDs quoted."""
        project = quote(project_id or self.project_id, safe="")
        return self.url + JOB_DETAILS_PATH.format(project_id=project, job_id=quote(job_id, safe=""))

    async def create_job(self, spec: Mapping[str, object] | JobSpec) -> str:
        """Create a job now (like ``POST /_sim/jobs``) and return its ID.

        Raises :class:`~poller.sim.scenario.ScenarioError` for an invalid spec and
        :class:`~poller.sim.state.DuplicateJobError` when the ID is taken.
        """
        job_spec = spec if isinstance(spec, JobSpec) else parse_job(spec, "job")
        return self.state.add_job(job_spec).job_id

    async def advance(self, seconds: float) -> None:
        """Move the emulated clock ``seconds`` forward (like ``POST /_sim/clock``)."""
        self.state.clock.advance(seconds)

    async def set_faults(self, **settings: object) -> None:
        """Replace the fault settings (like ``POST /_sim/faults``); no argument clears them."""
        self.state.set_faults(parse_faults(settings))

    async def stats(self) -> dict[str, Any]:
        """The request counters (like ``GET /_sim/stats``)."""
        return self.state.stats.as_dict()

    async def reset_stats(self) -> None:
        """Zero the request counters (like ``DELETE /_sim/stats``)."""
        self.state.reset_stats()

    async def requests(self, since: float = float("-inf")) -> list[Arrival]:
        """API requests' arrival times and statuses, oldest first (like ``GET /_sim/requests``)."""
        return self.state.requests.since(since)

    async def throttle(self, seconds: float, retry_after: int = 2) -> None:
        """Answer every API request with 429 for ``seconds`` from the next one on (like
        ``POST /_sim/throttle``)."""
        self.state.throttle_for(seconds, retry_after)

    async def revoke_iam_tokens(self) -> int:
        """Refuse every IAM token issued so far (like ``POST /_sim/iam/revoke``); how many
        were live.  New tokens can still be obtained, as after a password change."""
        return self.state.iam_tokens.revoke_all()

    async def unlock_access_keys(self) -> list[str]:
        """Lift every AK lock and reset failure counts (like ``POST /_sim/aksk/unlock``);
        the AKs that were locked."""
        return self.state.aksk.unlock() if self.state.aksk is not None else []

    async def replace_secret(self, access_key: str, secret_key: str) -> None:
        """Accept ``secret_key`` for ``access_key`` from now on (no admin endpoint: tests)."""
        if self.state.aksk is None:
            raise KeyError("no access keys configured")
        self.state.aksk.replace_secret(access_key, secret_key)

    async def auth_status(self) -> dict[str, Any]:
        """Credentials without secrets, AK lock state, live IAM tokens (like ``GET /_sim/auth``)."""
        return auth_overview(self.state)


@asynccontextmanager
async def running_sim(
    config: SimConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] | None = None,
    wall_clock: Callable[[], float] | None = None,
) -> AsyncIterator[SimHandle]:
    """Serve an emulator on ``host:port`` (port 0: a free one) for the duration of the block.

    ``clock`` drives job timelines, ``wall_clock`` credentials (see :func:`create_app`).
    """
    app = create_app(config or SimConfig(), clock=clock, wall_clock=wall_clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield SimHandle(url=f"http://{url_host}:{bound_port}", app=app)
    finally:
        await runner.cleanup()


async def serve_forever(
    config: SimConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_started: Callable[[SimHandle], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (or cancellation), then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_sim(config, host=host, port=port) as handle:
            if on_started is not None:
                on_started(handle)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
