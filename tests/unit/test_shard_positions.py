"""Resume IDs of the all-jobs event stream over shards, and the merge of several streams."""

from __future__ import annotations

from poller.consumer import entry_order, merge_entries
from poller.web.app import resume_id, resume_positions

ONE = ("p:events",)
THREE = ("{p:0}:events", "{p:2}:events", "{p:1}:events")


def test_one_shard_keeps_plain_entry_ids() -> None:
    assert resume_id({"p:events": "1700000000000-3"}, ONE) == "1700000000000-3"
    assert resume_positions("1700000000000-3", ONE) == {"p:events": "1700000000000-3"}
    assert resume_positions("0=1700000000000-3", ONE) == {"p:events": "1700000000000-3"}


def test_several_shards_name_a_position_per_shard_and_read_back() -> None:
    positions = {THREE[0]: "5-0", THREE[1]: "0-0", THREE[2]: "17-2"}
    sent = resume_id(positions, THREE)
    assert sent == "0=5-0,1=0-0,2=17-2"
    assert resume_positions(sent, THREE) == positions
    # a plain ID: after it in every shard; a shard left out: from its beginning
    assert resume_positions("9-0", THREE) == dict.fromkeys(THREE, "9-0")
    assert resume_positions("2=17-2", THREE) == {THREE[0]: "0-0", THREE[1]: "0-0", THREE[2]: "17-2"}


def test_malformed_positions_name_nothing() -> None:
    for bad in ("", "3=1-0", "0=1-0,0=2-0", "0=1-0;1=2-0", "0=1", "=1-0", "a=1-0", "0=1-0,",
                "1-0,2-0", "0=" + "9" * 21 + "-0"):  # fmt: skip
        assert resume_positions(bad, THREE) is None, bad


def test_merge_orders_by_entry_id_keeping_each_streams_order_and_ties_in_page_order() -> None:
    pages = [("a", [("1-0", {}), ("5-0", {})]), ("b", [("1-0", {}), ("2-0", {}), ("9-1", {})])]
    merged = [(e.stream, e.entry_id) for e in merge_entries(pages)]
    assert merged == [("a", "1-0"), ("b", "1-0"), ("b", "2-0"), ("a", "5-0"), ("b", "9-1")]
    assert entry_order("1700000000000-12") == (1700000000000, 12)
