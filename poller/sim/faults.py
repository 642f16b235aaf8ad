"""Fault injection: what can go wrong with a request, how often, and the pure decision.

Every API request draws from one seeded :class:`random.Random`, so a run with a fixed seed and a
fixed request order injects the same faults.  The admin API is never faulted.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Final

from poller.sim._fields import ScenarioError, as_mapping, check_keys, integer, join, number


class FaultKind(enum.StrEnum):
    """The failures a request may meet instead of the real answer."""

    HTML_500 = "html_500"  # 500 with an HTML body, as from a proxy
    EMPTY_502 = "empty_502"  # 502 with an empty body
    UNAVAILABLE_503 = "unavailable_503"  # 503 JSON with Retry-After
    THROTTLED_429 = "throttled_429"  # 429 APIG.0308 with Retry-After
    TRUNCATED = "truncated"  # the real body cut in half
    RESET = "reset"  # the TCP connection aborted without a response
    DEEP_JSON = "deep_json"  # 200 whose body is JSON nested DEEP_JSON_DEPTH levels deep


FAULT_KINDS: Final = tuple(FaultKind)
# The kinds ``error_rate`` is spread over: the classic transport and gateway failures.
SPREAD_KINDS: Final = tuple(kind for kind in FaultKind if kind is not FaultKind.DEEP_JSON)
DEFAULT_RETRY_AFTER: Final = 2
DEEP_JSON_DEPTH: Final = 5000


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Per-request fault probabilities and latency.

    ``rates`` maps a kind to its probability in [0, 1] (a kind left out: never); ``error_rate``
    is a shorthand spread evenly over the six classic kinds (all but ``deep_json``, which is
    hostile data rather than a failure of the transport) and adds to their own rates.  The rates
    together must not exceed 1.  ``latency`` seconds (plus a uniform draw from
    ``[0, latency_jitter]``) are added to every API response.  ``retry_after`` is the whole
    number of seconds sent in ``Retry-After`` on 429 and 503.  ``seed`` seeds the random
    draws; ``None`` means an unpredictable seed.  In a document (a scenario's ``faults``, the
    admin API) each kind's rate is a field named after the kind.
    """

    # not in the hash (a mapping has none); equal configs still hash alike
    rates: Mapping[FaultKind, float] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    error_rate: float = 0.0
    latency: float = 0.0
    latency_jitter: float = 0.0
    retry_after: int = DEFAULT_RETRY_AFTER
    seed: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise TypeError(f"FaultConfig: not fault kinds: {sorted(map(repr, unknown))}")
        # read-only, in FaultKind's order, zero rates left out: equal configs compare equal
        kept = {kind: self.rates[kind] for kind in FAULT_KINDS if self.rates.get(kind)}
        object.__setattr__(self, "rates", MappingProxyType(kept))

    def rate_of(self, kind: FaultKind) -> float:
        """The probability that a request meets ``kind``."""
        own = self.rates.get(kind, 0.0)
        if kind not in SPREAD_KINDS:
            return own
        return own + self.error_rate / len(SPREAD_KINDS)

    @property
    def total_rate(self) -> float:
        """The probability that a request meets any fault."""
        return sum(self.rate_of(kind) for kind in FAULT_KINDS)


FaultTable = tuple[tuple[float, FaultKind], ...]

_FIELDS: Final = frozenset(FAULT_KINDS) | ({f.name for f in fields(FaultConfig)} - {"rates"})


def fault_table(config: FaultConfig) -> FaultTable:
    """Cumulative upper bounds of each kind with a non-zero rate, for :func:`choose_fault`."""
    table: list[tuple[float, FaultKind]] = []
    bound = 0.0
    for kind in FAULT_KINDS:
        rate = config.rate_of(kind)
        if rate > 0:
            bound += rate
            table.append((bound, kind))
    return tuple(table)


def choose_fault(table: FaultTable, rng: random.Random) -> FaultKind | None:
    """The fault this request meets, or ``None``; draws nothing when no fault is configured."""
    if not table:
        return None
    draw = rng.random()
    for bound, kind in table:
        if draw < bound:
            return kind
    return None


def choose_latency(config: FaultConfig, rng: random.Random) -> float:
    """Seconds to delay this response: ``latency`` plus a uniform draw up to ``latency_jitter``."""
    if config.latency_jitter > 0:
        return config.latency + rng.uniform(0.0, config.latency_jitter)
    return config.latency


def parse_faults(doc: object, where: str = "faults") -> FaultConfig:
    """Validate a fault config object (the ``faults`` field of a scenario, or the admin body)."""
    mapping = as_mapping(doc, where)
    check_keys(mapping, where, _FIELDS)

    def rate(key: str) -> float:
        return number(mapping[key], join(where, key), maximum=1.0) if key in mapping else 0.0

    def seconds(key: str) -> float:
        return number(mapping[key], join(where, key), maximum=3600.0) if key in mapping else 0.0

    retry_after = mapping.get("retry_after", DEFAULT_RETRY_AFTER)
    seed = mapping.get("seed")
    config = FaultConfig(
        {kind: rate(kind) for kind in FAULT_KINDS},
        error_rate=rate("error_rate"),
        latency=seconds("latency"),
        latency_jitter=seconds("latency_jitter"),
        retry_after=integer(retry_after, join(where, "retry_after")),
        seed=None if seed is None else integer(seed, join(where, "seed"), minimum=-(2**63)),
    )
    if config.total_rate > 1.0 + 1e-9:
        raise ScenarioError(
            f"{where}: the fault rates add up to {config.total_rate:g}; they must not exceed 1"
        )
    return config


def faults_to_dict(config: FaultConfig) -> dict[str, float | int | None]:
    """The fields of ``config`` that differ from the defaults, as JSON-ready values (each
    kind's rate as a field named after the kind)."""
    default = FaultConfig()
    doc: dict[str, float | int | None] = {kind.value: rate for kind, rate in config.rates.items()}
    for f in fields(FaultConfig):
        value = getattr(config, f.name)
        if f.name != "rates" and value != getattr(default, f.name):
            doc[f.name] = value
    return doc
