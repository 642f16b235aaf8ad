"""The emulator's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from poller.sim.auth import DEFAULT_TOKEN, Authenticator, TokenAuthenticator
from poller.sim.faults import FaultConfig
from poller.sim.scenario import JobSpec, Scenario

DEFAULT_PROJECT_ID: Final = "sim-project"
DEFAULT_PAGE_CAP: Final = 50
DEFAULT_AUTHENTICATORS: Final[tuple[Authenticator, ...]] = (
    TokenAuthenticator(frozenset({DEFAULT_TOKEN})),
)
NO_FAULTS: Final = FaultConfig()


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything an emulator instance needs.

    - ``project_id``: the project of jobs that do not name one.
    - ``jobs``: created when the app is created; each job's clock starts then.
    - ``page_cap``: the most tasks one response carries, whatever ``limit`` asks.
    - ``upper_case_keys``: answer ``EXECUTION_STATUS``, ``TASK_ID``... instead of snake case.
    - ``authenticators``: who may call the API; empty means anyone.  Default: token ``sim-token``.
    - ``faults``: fault injection at start (the admin API can replace it).
    - ``manual_clock``: time moves only through ``POST /_sim/clock``; otherwise real time
      multiplied by ``time_scale``.
    """

    project_id: str = DEFAULT_PROJECT_ID
    jobs: tuple[JobSpec, ...] = ()
    page_cap: int = DEFAULT_PAGE_CAP
    upper_case_keys: bool = False
    authenticators: tuple[Authenticator, ...] = DEFAULT_AUTHENTICATORS
    faults: FaultConfig = NO_FAULTS
    manual_clock: bool = False
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.page_cap < 1:
            raise ValueError(f"page_cap must be at least 1, got {self.page_cap}")
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale}")

    @property
    def tokens(self) -> tuple[str, ...]:
        """The tokens accepted by the token authenticators, sorted."""
        found: set[str] = set()
        for authenticator in self.authenticators:
            if isinstance(authenticator, TokenAuthenticator):
                found.update(authenticator.tokens)
        return tuple(sorted(found))


def config_from_scenario(scenario: Scenario, base: SimConfig | None = None) -> SimConfig:
    """``base`` (default settings if ``None``) with the scenario's jobs appended and the
    settings the scenario sets (project, page cap, key case, faults) taking their place."""
    start = base or SimConfig()
    return SimConfig(
        project_id=scenario.project_id or start.project_id,
        jobs=start.jobs + scenario.jobs,
        page_cap=scenario.page_cap or start.page_cap,
        upper_case_keys=(
            start.upper_case_keys if scenario.upper_case_keys is None else scenario.upper_case_keys
        ),
        authenticators=start.authenticators,
        faults=scenario.faults or start.faults,
        manual_clock=start.manual_clock,
        time_scale=start.time_scale,
    )
