"""The emulator's settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from poller.sim.auth import DEFAULT_TOKEN, RequestVerifier, TokenVerifier
from poller.sim.credentials import (
    DEFAULT_AKSK_LOCK_SECONDS,
    DEFAULT_AKSK_MAX_FAILURES,
    DEFAULT_IAM_TOKEN_LIFETIME,
    IamUser,
    check_access_keys,
    check_seconds,
)
from poller.sim.faults import FaultConfig
from poller.sim.hostile import parse_quirks
from poller.sim.scenario import JobSpec, Scenario

DEFAULT_PROJECT_ID: Final = "sim-project"
DEFAULT_PAGE_CAP: Final = 50
DEFAULT_AUTHENTICATORS: Final[tuple[RequestVerifier, ...]] = (
    TokenVerifier(frozenset({DEFAULT_TOKEN})),
)
NO_FAULTS: Final = FaultConfig()


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything an emulator instance needs.

    - ``project_id``: the project of jobs that do not name one.
    - ``jobs``: created when the app is created; each job's clock starts then.
    - ``page_cap``: the most tasks one response carries, whatever ``limit`` asks.
    - ``upper_case_keys``: answer ``EXECUTION_STATUS``, ``TASK_ID``... instead of snake case.
    - ``authenticators``: who may call the API.  Default: token ``sim-token``.  The API is open
      to anyone only when this is empty *and* no access keys nor IAM users are configured.
    - ``access_keys``: AK -> SK pairs accepted with ``SDK-HMAC-SHA256`` signing (left out of
      ``repr``).  ``aksk_lock_seconds`` / ``aksk_max_failures``: more than that many signature
      failures in a row lock an AK for that long (wall time, see :mod:`poller.sim.aksk`).
    - ``iam_users``: users that may obtain tokens from ``POST /v3/auth/tokens`` (served only
      when there are some); the tokens live ``iam_token_lifetime`` seconds of wall time and are
      accepted as ``X-Auth-Token`` by the job API.
    - ``temporary_credentials_ttl``: serve the metadata service's temporary AK/SK/security
      token (``GET /openstack/latest/securitykey``, see :mod:`poller.sim.metadata`), each
      credential living this many seconds of wall time; ``None``: no metadata service.
      ``metadata_token_required``: it answers only requests with a session token.
    - ``faults``: fault injection at start (the admin API can replace it).
    - ``hostile``: kinds of awkward data (:mod:`poller.sim.hostile`) every job's answers carry,
      on top of those its own spec names.
    - ``manual_clock``: time moves only through ``POST /_sim/clock``; otherwise real time
      multiplied by ``time_scale``.  This clock drives job timelines only; credentials (dates of
      signatures, token expiry, AK locks) always use wall time.
    """

    project_id: str = DEFAULT_PROJECT_ID
    jobs: tuple[JobSpec, ...] = ()
    page_cap: int = DEFAULT_PAGE_CAP
    upper_case_keys: bool = False
    authenticators: tuple[RequestVerifier, ...] = DEFAULT_AUTHENTICATORS
    faults: FaultConfig = NO_FAULTS
    manual_clock: bool = False
    time_scale: float = 1.0
    access_keys: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    iam_users: tuple[IamUser, ...] = ()
    iam_token_lifetime: float = DEFAULT_IAM_TOKEN_LIFETIME
    aksk_lock_seconds: float = DEFAULT_AKSK_LOCK_SECONDS
    aksk_max_failures: int = DEFAULT_AKSK_MAX_FAILURES
    hostile: tuple[str, ...] = ()
    temporary_credentials_ttl: float | None = None
    metadata_token_required: bool = False

    def __post_init__(self) -> None:
        if self.page_cap < 1:
            raise ValueError(f"page_cap must be at least 1, got {self.page_cap}")
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale}")
        object.__setattr__(self, "access_keys", check_access_keys(self.access_keys))
        object.__setattr__(self, "iam_users", tuple(self.iam_users))
        check_seconds(self.iam_token_lifetime, "iam_token_lifetime", positive=True)
        check_seconds(self.aksk_lock_seconds, "aksk_lock_seconds", positive=False)
        if self.aksk_max_failures < 0:
            raise ValueError(f"aksk_max_failures must be 0 or more, got {self.aksk_max_failures}")
        object.__setattr__(self, "hostile", parse_quirks(self.hostile))
        if self.temporary_credentials_ttl is not None:
            check_seconds(
                self.temporary_credentials_ttl, "temporary_credentials_ttl", positive=True
            )

    @property
    def tokens(self) -> tuple[str, ...]:
        """The tokens accepted by the token authenticators, sorted."""
        found: set[str] = set()
        for authenticator in self.authenticators:
            if isinstance(authenticator, TokenVerifier):
                found.update(authenticator.tokens)
        return tuple(sorted(found))

    @property
    def access_key_ids(self) -> tuple[str, ...]:
        """The configured AKs, sorted (no secrets)."""
        return tuple(sorted(self.access_keys))


def config_from_scenario(scenario: Scenario, base: SimConfig | None = None) -> SimConfig:
    """``base`` (default settings if ``None``) with the scenario's jobs appended and the
    settings the scenario sets (project, page cap, key case, faults, auth) taking their place;
    the scenario's access keys and IAM users are added to the base's."""
    start = base or SimConfig()
    auth = scenario.auth
    return replace(
        start,
        project_id=scenario.project_id or start.project_id,
        jobs=start.jobs + scenario.jobs,
        page_cap=scenario.page_cap or start.page_cap,
        upper_case_keys=(
            start.upper_case_keys if scenario.upper_case_keys is None else scenario.upper_case_keys
        ),
        faults=scenario.faults or start.faults,
        access_keys={**start.access_keys, **(auth.access_keys or {})},
        iam_users=start.iam_users + (auth.iam_users or ()),
        iam_token_lifetime=auth.iam_token_lifetime or start.iam_token_lifetime,
        aksk_lock_seconds=(
            start.aksk_lock_seconds if auth.aksk_lock_seconds is None else auth.aksk_lock_seconds
        ),
    )
