"""docs/asyncapi.yaml is a valid AsyncAPI 3 document and describes the events we emit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from poller.servicestage.models import JobSnapshot, Task
from poller.snapshot import JobIdentity, abandoned_event, diff_snapshots, merge_snapshot
from tests.event_schema import ASYNCAPI, schema_errors

ROOT = Path(__file__).parents[2]
IDENTITY = JobIdentity("JOB-1", "proj", meta='{"ticket":"CHG-7"}')
AT = "2026-11-27T00:00:00.000Z"


def test_asyncapi_document_validates_against_the_official_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile",
         str(ROOT / "docs" / "schemas" / "asyncapi-3.0.0.json"), str(ASYNCAPI)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_events_from_the_diff_match_their_schemas() -> None:
    snap = JobSnapshot("JOB-1", "RUNNING", "PROVISION",
                       (Task("T1", 1, "A", "RUNNING", "c", "u", "{}"),))  # fmt: skip
    events = diff_snapshots(None, snap, identity=IDENTITY, observed_at=AT, first_seq=1)
    abandoned = abandoned_event(merge_snapshot(None, snap), identity=IDENTITY, observed_at=AT,
                                seq=3, reason="timeout", detail="6h")  # fmt: skip
    for event in [*events, abandoned]:
        assert schema_errors(event.as_dict()) == []


def test_schema_rejects_a_malformed_event() -> None:
    bad = {"event": "job.status_changed", "job_id": "JOB-1", "project_id": "p", "seq": "0",
           "observed_at": "yesterday", "from_status": "", "to_status": "DONE",
           "job_status": "RUNNING", "job_type": "X", "terminal": "maybe", "extra": "x"}  # fmt: skip
    errors = schema_errors(bad)
    assert len(errors) >= 4
