"""The pure diff: which events a new snapshot produces, in which order, with which fields."""

from __future__ import annotations

from poller import snapshot
from poller.servicestage.models import JobSnapshot, Task
from poller.snapshot import Event, JobIdentity, StoredSnapshot

IDENTITY = JobIdentity(job_id="JOB-1", project_id="proj", meta="")
AT = "2026-11-27T00:00:00.000Z"


def task(index: int, status: str, tid: str | None = None) -> Task:
    return Task(
        task_id=tid or f"T{index}",
        task_index=index,
        task_name=f"STEP_{index}",
        status=status,
        created_at="2024-06-06T15:55:31.115Z",
        updated_at="2024-06-06T15:55:31.136Z",
        messages="{}",
    )


def snap(status: str, *tasks: Task) -> JobSnapshot:
    return JobSnapshot(job_id="JOB-1", status=status, job_type="PROVISION", tasks=tasks)


def diff(
    previous: StoredSnapshot | None,
    current: JobSnapshot,
    first_seq: int = 1,
    identity: JobIdentity = IDENTITY,
) -> list[Event]:
    return snapshot.diff_snapshots(
        previous, current, identity=identity, observed_at=AT, first_seq=first_seq
    )


def merged(status: str, *tasks: Task) -> StoredSnapshot:
    """What is stored after a first sight of the job with ``tasks``."""
    return snapshot.merge_snapshot(None, snap(status, *tasks))


def test_first_sight_announces_every_task_then_the_job() -> None:
    events = diff(None, snap("RUNNING", task(1, "SUCCEEDED"), task(2, "RUNNING")))
    kinds = [(e.as_dict()["event"], e.as_dict().get("task_index")) for e in events]
    assert kinds == [
        ("task.status_changed", "1"),
        ("task.status_changed", "2"),
        ("job.status_changed", None),
    ]
    assert [e.as_dict()["seq"] for e in events] == ["1", "2", "3"]
    assert all(e.as_dict()["from_status"] == "" for e in events)
    assert events[2].as_dict()["terminal"] == "false"


def test_task_event_copies_the_task_fields() -> None:
    (event, _) = diff(None, snap("RUNNING", task(4, "RUNNING")), first_seq=7)
    assert event.as_dict() == {
        "event": "task.status_changed",
        "job_id": "JOB-1",
        "project_id": "proj",
        "seq": "7",
        "observed_at": AT,
        "from_status": "",
        "to_status": "RUNNING",
        "job_status": "RUNNING",
        "task_id": "T4",
        "task_index": "4",
        "task_name": "STEP_4",
        "task_created_at": "2024-06-06T15:55:31.115Z",
        "task_updated_at": "2024-06-06T15:55:31.136Z",
        "messages": "{}",
    }


def test_no_change_gives_no_events() -> None:
    current = snap("RUNNING", task(1, "RUNNING"))
    previous = snapshot.merge_snapshot(None, current)
    assert diff(previous, current, first_seq=5) == []


def test_only_changed_tasks_and_terminal_job_event_last() -> None:
    previous = merged("RUNNING", task(1, "RUNNING"), task(2, "RUNNING"))
    events = diff(
        previous, snap("SUCCEEDED", task(1, "RUNNING"), task(2, "SUCCEEDED")), first_seq=4
    )
    assert [e.as_dict()["event"] for e in events] == ["task.status_changed", "job.status_changed"]
    task_event, job_event = (e.as_dict() for e in events)
    assert (task_event["from_status"], task_event["to_status"]) == ("RUNNING", "SUCCEEDED")
    assert (job_event["from_status"], job_event["to_status"]) == ("RUNNING", "SUCCEEDED")
    assert job_event["terminal"] == "true"
    assert job_event["job_type"] == "PROVISION"
    assert [e.as_dict()["seq"] for e in events] == ["4", "5"]


def test_task_appearing_later_gets_first_sight_event() -> None:
    previous = merged("RUNNING", task(1, "SUCCEEDED"))
    events = diff(previous, snap("RUNNING", task(1, "SUCCEEDED"), task(2, "RUNNING")), first_seq=3)
    assert len(events) == 1
    assert events[0].as_dict()["task_id"] == "T2"
    assert events[0].as_dict()["from_status"] == ""


def test_tasks_are_ordered_by_index_not_arrival() -> None:
    current = JobSnapshot("JOB-1", "RUNNING", "PROVISION", (task(1, "RUNNING"), task(3, "RUNNING")))
    events = diff(None, current)
    assert [e.as_dict().get("task_index") for e in events[:2]] == ["1", "3"]


def test_meta_is_copied_into_every_event() -> None:
    identity = JobIdentity("JOB-1", "proj", meta='{"ticket":"CHG-1"}')
    events = diff(None, snap("RUNNING", task(1, "RUNNING")), identity=identity)
    assert all(e.as_dict()["meta"] == '{"ticket":"CHG-1"}' for e in events)


def test_vanished_task_is_remembered_and_not_announced_again() -> None:
    first = merged("RUNNING", task(1, "RUNNING"), task(2, "RUNNING"))
    second_view = snap("RUNNING", task(1, "RUNNING"))
    stored = snapshot.merge_snapshot(first, second_view)
    assert [t.task_id for t in stored.tasks] == ["T1", "T2"]
    back = snap("RUNNING", task(1, "RUNNING"), task(2, "RUNNING"))
    assert diff(stored, back, first_seq=9) == []


def test_stored_snapshot_round_trips_through_json() -> None:
    stored = merged("RUNNING", task(2, "RUNNING"), task(1, "SKIPPED"))
    assert StoredSnapshot.from_json(stored.to_json()) == stored
    assert StoredSnapshot.from_json("") is None


def test_abandoned_event_carries_last_status_reason_and_detail() -> None:
    stored = merged("RUNNING", task(1, "RUNNING"))
    fields = snapshot.abandoned_event(
        stored, identity=IDENTITY, observed_at=AT, seq=3, reason="timeout", detail="6h"
    ).as_dict()
    assert fields["event"] == "job.abandoned"
    assert (fields["from_status"], fields["to_status"], fields["job_status"]) == ("RUNNING",) * 3
    assert (fields["reason"], fields["detail"], fields["seq"]) == ("timeout", "6h", "3")


def test_abandoned_before_any_sight_has_empty_statuses() -> None:
    fields = snapshot.abandoned_event(
        None, identity=IDENTITY, observed_at=AT, seq=1, reason="not_found", detail="x"
    ).as_dict()
    assert fields["to_status"] == ""
    assert fields["job_status"] == ""


def test_timestamps_are_rfc3339_utc_with_milliseconds() -> None:
    assert snapshot.format_timestamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert snapshot.format_timestamp(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"
