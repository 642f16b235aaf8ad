"""Inputs nobody sends on purpose, for the shard layout and the Redis URLs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from poller.store.connection import BadRedisUrl, parse_redis_url
from poller.store.schema import Keys, shard_of, unwrap_entry


@given(st.text(max_size=200))
def test_any_text_as_a_redis_url_parses_or_says_why(url: str) -> None:
    try:
        target = parse_redis_url(url)
    except BadRedisUrl as exc:
        reason = str(exc)
        target = None
    if target is None:
        assert reason  # a refusal always says why
    else:
        assert target.kind in ("single", "cluster", "sentinel")
        assert all(0 < port < 65536 for _, port in target.hosts)


@given(st.binary(max_size=300))
def test_any_in_flight_entry_unwraps_to_its_raw_message(entry: bytes) -> None:
    ticket, raw = unwrap_entry(entry)
    assert ticket == "" or (ticket.isdigit() and entry == ticket.encode() + b":" + raw)
    assert ticket != "" or raw == entry


@given(st.integers(min_value=0, max_value=2**63), st.binary(max_size=200))
def test_a_wrapped_message_comes_back_whole(ticket: int, raw: bytes) -> None:
    assert unwrap_entry(b"%d:" % ticket + raw) == (str(ticket), raw)


@given(st.text(min_size=1, max_size=128), st.integers(min_value=1, max_value=64))
def test_every_job_id_has_one_shard_in_range(job_id: str, shards: int) -> None:
    k = shard_of(job_id, shards)
    assert 0 <= k < shards
    keys = Keys("{poller}", shards)
    assert keys.job_events(job_id) == keys.shard(k).job_events(job_id)
