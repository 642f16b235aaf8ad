"""The shared invariant checker: a clean run passes, and each invariant has a run that breaks it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from poller.sim.invariants import Entry, Text, check_job_events, check_run

JOB = "JOB-1"
OTHER = "JOB-2"


def task(seq: int, task_id: str, before: str, after: str, job: str = JOB) -> dict[Text, Text]:
    return {
        "event": "task.status_changed",
        "job_id": job,
        "project_id": "p",
        "seq": str(seq),
        "observed_at": "2024-06-06T15:55:31.115Z",
        "from_status": before,
        "to_status": after,
        "job_status": "RUNNING",
        "task_id": task_id,
        "task_index": "1",
        "task_name": task_id,
        "messages": "{}",
    }


def job(seq: int, before: str, after: str, job: str = JOB) -> dict[Text, Text]:
    terminal = after in ("SUCCEEDED", "FAILED", "CANCELLED", "PARTIALLY_FAILED", "ROLLBACKED")
    return {
        "event": "job.status_changed",
        "job_id": job,
        "project_id": "p",
        "seq": str(seq),
        "observed_at": "2024-06-06T15:55:32.115Z",
        "from_status": before,
        "to_status": after,
        "job_status": after,
        "job_type": "PROVISION",
        "terminal": "true" if terminal else "false",
    }


def abandoned(seq: int, job_id: str = JOB) -> dict[Text, Text]:
    return {
        "event": "job.abandoned",
        "job_id": job_id,
        "project_id": "p",
        "seq": str(seq),
        "observed_at": "2024-06-06T15:55:33.115Z",
        "from_status": "RUNNING",
        "to_status": "RUNNING",
        "job_status": "RUNNING",
        "reason": "timeout",
        "detail": "job_timeout 1s",
    }


def good_events(job_id: str = JOB) -> list[dict[Text, Text]]:
    return [
        task(1, "t1", "", "RUNNING", job_id),
        job(2, "", "RUNNING", job_id),
        task(3, "t1", "RUNNING", "SUCCEEDED", job_id),
        task(4, "t2", "", "RUNNING", job_id),
        task(5, "t2", "RUNNING", "SUCCEEDED", job_id),
        job(6, "RUNNING", "SUCCEEDED", job_id),
    ]


def entries(events: Sequence[Mapping[Text, Text]], start: int = 1) -> list[Entry]:
    return [(f"{start + i}-0", fields) for i, fields in enumerate(events)]


POISON: list[Text] = [b"../x", b"\xff\xfeJOB\x80", '{"job_id":"a","project_id":0}']


def dead(raw: Text, reason: str = "invalid") -> str:
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    return json.dumps({"raw": text, "reason": reason, "at": "2024-06-06T15:55:31.115Z"})


def run(**overrides: Any) -> list[str]:
    """check_run over a clean two-job run, with some inputs replaced."""
    one, two = good_events(JOB), good_events(OTHER)
    inputs: dict[str, Any] = {
        "global_entries": entries([e for pair in zip(one, two, strict=True) for e in pair]),
        "job_entries": {JOB: entries(one), OTHER: entries(two)},
        "dead_letters": [dead(p) for p in reversed(POISON)],
        "enqueued": {JOB, OTHER},
        "poison": POISON,
    }
    inputs.update(overrides)
    return check_run(**inputs)


def only(violations: list[str], *needles: str) -> None:
    """Exactly one violation, mentioning each needle."""
    assert len(violations) == 1, violations
    for needle in needles:
        assert needle in violations[0], violations


def test_a_clean_run_has_no_violations() -> None:
    assert run() == []


def test_a_clean_run_read_as_bytes_has_no_violations() -> None:
    def as_bytes(events: list[dict[Text, Text]]) -> list[Entry]:
        return entries([{str(k).encode(): str(v).encode() for k, v in e.items()} for e in events])

    one, two = good_events(JOB), good_events(OTHER)
    assert (
        run(
            global_entries=as_bytes(one + two),
            job_entries={JOB: as_bytes(one), OTHER: as_bytes(two)},
            dead_letters=[dead(p).encode() for p in POISON],
        )
        == []
    )


def test_abandoned_is_a_final_event() -> None:
    events = [*good_events()[:2], abandoned(3)]

    assert check_job_events(JOB, entries(events)) == []


@pytest.mark.parametrize(
    "seqs", [[1, 2, 4, 5, 6, 7], [1, 2, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7], [1, 3, 2, 4, 5, 6]]
)
def test_seq_with_a_gap_or_a_repeat_in_the_per_job_stream_fails(seqs: list[int]) -> None:
    events = good_events()
    for fields, seq in zip(events, seqs, strict=True):
        fields["seq"] = str(seq)

    violations = run(job_entries={JOB: entries(events), OTHER: entries(good_events(OTHER))})

    shown = ", ".join(map(str, seqs))
    assert f"{JOB}: per-job stream: seq [{shown}] is not 1..6" in violations, violations


def test_seq_repeated_in_the_global_stream_only_fails() -> None:
    one = good_events()
    duplicated = [*one[:3], one[2], *one[3:]]

    violations = run(global_entries=entries(duplicated + good_events(OTHER)))

    assert any(f"{JOB}: global stream: seq [1, 2, 3, 3, 4" in v for v in violations), violations
    assert any("per-job and global streams differ" in v for v in violations), violations


def test_per_job_stream_differing_from_the_global_one_fails() -> None:
    changed = good_events()
    changed[2]["messages"] = "something else"

    only(
        run(job_entries={JOB: entries(changed), OTHER: entries(good_events(OTHER))}),
        "differ",
        "messages",
    )


def test_per_job_stream_in_another_order_than_the_global_one_fails() -> None:
    one = good_events()
    swapped = [one[0], one[1], one[3], one[2], one[4], one[5]]
    for i, fields in enumerate(swapped, 1):
        fields["seq"] = str(i)  # consistent numbering, but not the global stream's order
    violations = run(job_entries={JOB: entries(swapped), OTHER: entries(good_events(OTHER))})

    assert any("differ" in v for v in violations), violations


def test_task_from_status_not_chaining_fails() -> None:
    events = good_events()
    events[2]["from_status"] = "SUBMITTED"

    only(check_job_events(JOB, entries(events)), "task t1 from_status 'SUBMITTED'", "'RUNNING'")


def test_task_event_that_changes_nothing_fails() -> None:
    events = good_events()
    events[2]["to_status"] = "RUNNING"
    events[2]["from_status"] = "RUNNING"

    only(check_job_events(JOB, entries(events)), "to itself")


def test_job_from_status_not_chaining_fails() -> None:
    events = good_events()
    events[5]["from_status"] = "SUBMITTED"

    only(check_job_events(JOB, entries(events)), "job from_status 'SUBMITTED'")


def test_terminal_flag_disagreeing_with_the_status_fails() -> None:
    events = good_events()
    events[1]["terminal"] = "true"

    violations = check_job_events(JOB, entries(events))

    assert any("terminal='true' with to_status 'RUNNING'" in v for v in violations), violations


def test_no_final_event_fails() -> None:
    only(check_job_events(JOB, entries(good_events()[:5])), "no final event")


def test_two_final_events_fail() -> None:
    events = [*good_events(), abandoned(7)]

    only(check_job_events(JOB, entries(events)), "final events at seq [6, 7]")


def test_final_event_that_is_not_the_last_fails() -> None:
    events = good_events()
    late = task(7, "t3", "", "RUNNING")

    only(check_job_events(JOB, entries([*events, late])), "final events at seq [6]", "seq 7")


def test_enqueued_job_without_its_final_event_fails() -> None:
    one = good_events()[:4]

    violations = run(
        global_entries=entries(one + good_events(OTHER)),
        job_entries={JOB: entries(one), OTHER: entries(good_events(OTHER))},
    )

    assert violations == [
        f"{JOB}: per-job stream: no final event (last is seq 4)",
        f"{JOB}: global stream: no final event (last is seq 4)",
    ]


def test_enqueued_job_without_any_event_fails() -> None:
    only(run(enqueued={JOB, OTHER, "JOB-3"}), "JOB-3", "no events at all")


def test_events_of_a_job_never_validly_enqueued_fail() -> None:
    only(run(enqueued={JOB}), OTHER, "not validly enqueued")


def test_poison_message_missing_from_the_dead_letters_fails() -> None:
    only(run(dead_letters=[dead(p) for p in POISON[1:]]), "'../x'", "not in the list")


def test_poison_message_dead_lettered_without_a_reason_fails() -> None:
    records = [dead(POISON[0], reason=""), *(dead(p) for p in POISON[1:])]

    only(run(dead_letters=records), "empty reason")


def test_dead_letter_matching_no_poison_message_fails() -> None:
    records = [*(dead(p) for p in POISON), dead("JOB-1"), dead(POISON[0])]

    violations = run(dead_letters=records)

    assert len(violations) == 2, violations
    assert all("matching no poison message" in v for v in violations)


def test_truncated_or_differently_decoded_dead_letter_raw_still_matches() -> None:
    deep = '{"job_id":"JOBdeep","meta":{"x":' + "[" * 5000 + "]" * 5000 + "}}"
    bad = b"\xff\xfeJOB\x80"
    records = [
        json.dumps({"raw": deep[:64] + "...", "reason": "too deep"}),
        json.dumps({"raw": bad.decode("utf-8", "replace"), "reason": "not UTF-8"}),
    ]

    assert run(dead_letters=records, poison=[deep, bad]) == []


def test_dead_letter_record_that_is_not_json_fails() -> None:
    records = [*(dead(p) for p in POISON), "garbage"]

    only(run(dead_letters=records), "not JSON")


def test_event_text_that_is_not_utf8_fails() -> None:
    events: list[dict[Text, Text]] = [dict(e) for e in good_events()]
    events[2] = {str(k).encode(): str(v).encode() for k, v in events[2].items()}
    events[2][b"messages"] = b'{"log":"\xed\xa0\xbd"}'  # a lone surrogate, CESU-8 style

    only(check_job_events(JOB, entries(events)), "'messages' value is not valid UTF-8")


def test_event_text_with_a_lone_surrogate_fails_in_a_whole_run() -> None:
    events = good_events()
    events[0]["task_name"] = "bad \ud83d"

    violations = run(
        global_entries=entries(events + good_events(OTHER)),
        job_entries={JOB: entries(events), OTHER: entries(good_events(OTHER))},
    )

    assert len(violations) == 2, violations  # once per stream
    assert all("'task_name' value is not valid UTF-8" in v for v in violations)


def test_entry_lacking_required_fields_or_with_an_unknown_event_fails() -> None:
    events = good_events()
    del events[0]["observed_at"]
    events[1]["event"] = "job.exploded"

    violations = check_job_events(JOB, entries(events))

    assert any("lacks observed_at" in v for v in violations), violations
    assert any("unknown event 'job.exploded'" in v for v in violations), violations


def test_entry_of_another_job_in_a_per_job_stream_fails() -> None:
    events = good_events()
    events[3]["job_id"] = OTHER

    violations = check_job_events(JOB, entries(events))

    assert any(f"is of job '{OTHER}'" in v for v in violations), violations
