"""Pure validation of intake messages: a bare job ID or a JSON object, per the contract."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from poller.ids import is_valid_id

MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_META_BYTES: Final = 4 * 1024
_KNOWN_FIELDS: Final = frozenset({"job_id", "project_id", "instance_id", "meta", "force"})


@dataclass(frozen=True, slots=True)
class Admission:
    """A valid message: the job to track and how."""

    job_id: str
    project_id: str
    instance_id: str = ""
    meta: str = ""  # compact JSON object, or empty
    force: bool = False


@dataclass(frozen=True, slots=True)
class Invalid:
    """A message that goes to the dead-letter list, and why."""

    reason: str


def _describe(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return json.dumps(shown, ensure_ascii=True)


def parse_message(raw: bytes, default_project: str) -> Admission | Invalid:
    """Validate one raw queue message.

    A message whose first non-blank character is ``{`` is a JSON object with a string
    ``job_id`` (and optional ``project_id``, ``instance_id``, ``meta`` object, ``force``
    boolean; ``null`` counts as absent, other fields are ignored so producers may add their
    own); anything else is a bare job ID with surrounding whitespace stripped.
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        return Invalid(f"message too long ({len(raw)} bytes, limit {MAX_MESSAGE_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Invalid("message is not valid UTF-8")
    text = text.strip()
    if not text:
        return Invalid("empty message")
    if not text.startswith("{"):
        if not is_valid_id(text):
            return Invalid(f"invalid job_id {_describe(text)}")
        return _with_project(Admission(job_id=text, project_id=default_project))
    try:
        doc: Any = json.loads(text)
    except ValueError as exc:
        return Invalid(f"bad JSON: {exc}")
    if not isinstance(doc, dict):
        return Invalid("JSON message is not an object")
    doc = {k: v for k, v in doc.items() if k in _KNOWN_FIELDS and v is not None}
    job_id = doc.get("job_id")
    if not isinstance(job_id, str):
        return Invalid("job_id missing or not a string")
    if not is_valid_id(job_id):
        return Invalid(f"invalid job_id {_describe(job_id)}")
    project = doc.get("project_id") or default_project
    if not isinstance(project, str) or (project and not is_valid_id(project)):
        return Invalid(f"invalid project_id {_describe(str(project))}")
    instance = doc.get("instance_id", "")
    if not isinstance(instance, str) or (instance and not is_valid_id(instance)):
        return Invalid(f"invalid instance_id {_describe(str(instance))}")
    meta = doc.get("meta")
    meta_text = ""
    if meta is not None:
        if not isinstance(meta, dict):
            return Invalid("meta is not a JSON object")
        meta_text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        if len(meta_text.encode()) > MAX_META_BYTES:
            return Invalid(f"meta too large (limit {MAX_META_BYTES} bytes)")
    force = doc.get("force", False)
    if not isinstance(force, bool):
        return Invalid("force is not a boolean")
    return _with_project(
        Admission(
            job_id=job_id, project_id=project, instance_id=instance, meta=meta_text, force=force
        )
    )


def _with_project(admission: Admission) -> Admission | Invalid:
    if not admission.project_id:
        return Invalid("no project_id in the message and no default POLLER_PROJECT_ID")
    return admission


def build_message(
    job_id: str,
    *,
    project_id: str = "",
    instance_id: str = "",
    meta: dict[str, Any] | None = None,
    force: bool = False,
) -> str:
    """The intake message for a job: a bare ID when nothing else is needed, else JSON."""
    if not (project_id or instance_id or meta or force):
        return job_id
    doc: dict[str, Any] = {"job_id": job_id}
    if project_id:
        doc["project_id"] = project_id
    if instance_id:
        doc["instance_id"] = instance_id
    if meta:
        doc["meta"] = meta
    if force:
        doc["force"] = True
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
