"""The pure fault decision: rates, the error_rate shorthand and seeded determinism."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from poller.sim import FaultConfig, FaultKind, ScenarioError, parse_faults
from poller.sim.faults import choose_fault, choose_latency, fault_table, faults_to_dict


def _draw(config: FaultConfig, seed: int, n: int) -> list[FaultKind | None]:
    rng = random.Random(seed)
    table = fault_table(config)
    return [choose_fault(table, rng) for _ in range(n)]


def test_no_faults_configured_never_faults_and_draws_nothing() -> None:
    rng = random.Random(1)
    state = rng.getstate()

    assert choose_fault(fault_table(FaultConfig()), rng) is None
    assert rng.getstate() == state


def test_rate_one_always_faults_with_that_kind() -> None:
    assert set(_draw(FaultConfig({FaultKind.TRUNCATED: 1.0}), 1, 200)) == {FaultKind.TRUNCATED}


def test_the_same_seed_draws_the_same_faults() -> None:
    config = FaultConfig({FaultKind.RESET: 0.2, FaultKind.THROTTLED_429: 0.3})

    assert _draw(config, 42, 500) == _draw(config, 42, 500)


def test_rates_are_respected_roughly() -> None:
    counts = Counter(_draw(FaultConfig({FaultKind.THROTTLED_429: 0.25}), 7, 20_000))

    assert 0.23 < counts[FaultKind.THROTTLED_429] / 20_000 < 0.27


def test_error_rate_is_spread_evenly_over_the_six_kinds() -> None:
    config = FaultConfig({FaultKind.RESET: 0.1}, error_rate=0.6)

    assert config.rate_of(FaultKind.HTML_500) == pytest.approx(0.1)
    assert config.rate_of(FaultKind.RESET) == pytest.approx(0.2)
    assert config.total_rate == pytest.approx(0.7)


def test_latency_adds_a_uniform_jitter_within_bounds() -> None:
    rng = random.Random(3)
    config = FaultConfig(latency=0.5, latency_jitter=0.25)

    delays = [choose_latency(config, rng) for _ in range(1000)]

    assert min(delays) >= 0.5
    assert max(delays) <= 0.75


def test_parse_faults_reads_every_field_and_round_trips() -> None:
    doc = {"html_500": 0.1, "reset": 0.05, "latency": 0.01, "retry_after": 4, "seed": 9}

    config = parse_faults(doc)

    assert (
        config.rates[FaultKind.HTML_500],
        config.rates[FaultKind.RESET],
        config.retry_after,
        config.seed,
    ) == (0.1, 0.05, 4, 9)
    assert faults_to_dict(config) == doc


def test_parse_faults_refuses_rates_adding_up_to_more_than_one() -> None:
    with pytest.raises(ScenarioError, match=r"faults: the fault rates add up to 1\.2"):
        parse_faults({"error_rate": 0.6, "reset": 0.6})


def test_a_rate_for_something_not_a_fault_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="not fault kinds"):
        FaultConfig({"bogus": 1.0})  # type: ignore[dict-item]


def test_equal_configs_are_equal_and_hash_alike_whatever_zero_rates_say() -> None:
    a = FaultConfig({FaultKind.RESET: 0.1, FaultKind.TRUNCATED: 0.0})
    b = FaultConfig({FaultKind.RESET: 0.1})
    assert a == b
    assert hash(a) == hash(b)
    assert a != FaultConfig({FaultKind.RESET: 0.2})
