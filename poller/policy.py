"""Pure polling policy: adaptive intervals, capped exponential backoff with full jitter.

One formula each, no clock and no global RNG: callers pass ``rng`` (any ``random.Random``)
so tests are exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from poller.backoff import full_jitter
from poller.config import Settings

#: The settings' defaults are the policy's: written once, in :class:`poller.config.Settings`.
_DEFAULTS: Final = Settings().polling
#: The knobs of :class:`Policy` that are settings of the same name in the polling group.
_SETTING_KNOBS: Final = (
    "poll_interval",
    "poll_interval_max",
    "backoff_initial",
    "backoff_max",
    "job_timeout",
    "not_found_grace",
)


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of the polling policy, in seconds."""

    poll_interval: float = _DEFAULTS.poll_interval
    poll_interval_max: float = _DEFAULTS.poll_interval_max
    growth: float = 1.5
    jitter: float = 0.1
    backoff_initial: float = _DEFAULTS.backoff_initial
    backoff_max: float = _DEFAULTS.backoff_max
    job_timeout: float = _DEFAULTS.job_timeout
    not_found_grace: float = _DEFAULTS.not_found_grace

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy that ``settings`` configure (every knob but ``growth`` and ``jitter``)."""
        polling = settings.polling
        return cls(**{name: getattr(polling, name) for name in _SETTING_KNOBS})


def next_interval(policy: Policy, current: float, *, changed: bool) -> float:
    """The interval after a successful poll: reset on change, else 1.5 times longer, capped."""
    if changed or current <= 0:
        return policy.poll_interval
    return min(policy.poll_interval_max, max(current, policy.poll_interval) * policy.growth)


def with_jitter(policy: Policy, interval: float, rng: random.Random) -> float:
    """``interval`` scattered uniformly within ±``policy.jitter`` (10 %) of itself."""
    return interval * rng.uniform(1.0 - policy.jitter, 1.0 + policy.jitter)


def backoff_delay(
    policy: Policy, attempt: int, rng: random.Random, *, retry_after: float | None = None
) -> float:
    """Delay before retry number ``attempt`` (1-based) of a failed poll.

    Full jitter over ``min(backoff_max, backoff_initial * 2**(attempt-1))``; a server's
    ``Retry-After`` is a floor, never shortened (the client caps what it parses at an hour).
    """
    return full_jitter(
        attempt,
        initial=policy.backoff_initial,
        cap=policy.backoff_max,
        rng=rng,
        floor=retry_after,
    )
