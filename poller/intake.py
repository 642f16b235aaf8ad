"""Pure validation of intake messages: a bare job ID or a JSON object, per the contract."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from poller.ids import is_valid_id

MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_META_BYTES: Final = 4 * 1024
MAX_JSON_DEPTH: Final = 32  # a message is one object with a small meta: far below recursion
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


def _describe(value: object) -> str:
    """A short, ASCII-safe rendering of a bad value for a dead-letter reason."""
    shown = value if isinstance(value, str) else repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return json.dumps(shown, ensure_ascii=True)


def parse_message(raw: bytes, default_project: str) -> Admission | Invalid:
    """Validate one raw queue message; total: any bytes give an Admission or an Invalid.

    A message whose first non-blank character is ``{`` is a JSON object with a string
    ``job_id`` (and optional ``project_id``, ``instance_id``, ``meta`` object, ``force``
    boolean; ``null`` counts as absent, other fields are ignored so producers may add their
    own); anything else is a bare job ID with surrounding whitespace stripped.  JSON that is
    not strict (``NaN``, ``Infinity``, numbers out of range), nested too deeply, or holding
    text that is not valid Unicode (a lone surrogate) is invalid.
    """
    try:
        return _parse(raw, default_project)
    except Exception as exc:  # a last line of defence: one bad message must not stop intake
        return Invalid(f"unparseable message ({type(exc).__name__})")


def _parse(raw: bytes, default_project: str) -> Admission | Invalid:
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
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        return Invalid(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc: Any = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        return Invalid(f"bad JSON: {_short(exc)}")
    if not isinstance(doc, dict):
        return Invalid("JSON message is not an object")
    doc = {k: v for k, v in doc.items() if k in _KNOWN_FIELDS and v is not None}
    job_id = doc.get("job_id")
    if not isinstance(job_id, str):
        return Invalid("job_id missing or not a string")
    if not is_valid_id(job_id):
        return Invalid(f"invalid job_id {_describe(job_id)}")
    project = doc.get("project_id", default_project)
    if "project_id" in doc and not (isinstance(project, str) and is_valid_id(project)):
        return Invalid(f"invalid project_id {_describe(project)}")
    instance = doc.get("instance_id", "")
    if not isinstance(instance, str) or (instance and not is_valid_id(instance)):
        return Invalid(f"invalid instance_id {_describe(instance)}")
    meta = doc.get("meta")
    meta_text = ""
    if meta is not None:
        if not isinstance(meta, dict):
            return Invalid("meta is not a JSON object")
        meta_text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        try:
            size = len(meta_text.encode("utf-8"))
        except UnicodeEncodeError:
            return Invalid("meta holds text that is not valid Unicode (a lone surrogate)")
        if size > MAX_META_BYTES:
            return Invalid(f"meta too large (limit {MAX_META_BYTES} bytes)")
    force = doc.get("force", False)
    if not isinstance(force, bool):
        return Invalid("force is not a boolean")
    return _with_project(
        Admission(
            job_id=job_id, project_id=project, instance_id=instance, meta=meta_text, force=force
        )
    )


def _nesting_depth(text: str) -> int:
    """The deepest bracket nesting in ``text`` (brackets inside strings count too: an upper
    bound is all we need to refuse what ``json`` would recurse into too deeply)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def _with_project(admission: Admission) -> Admission | Invalid:
    if not admission.project_id:
        return Invalid("no project_id in the message and no default POLLER_PROJECT_ID")
    return admission


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a producer asks to track: the job and, optionally, how (the message's fields)."""

    job_id: str
    project_id: str = ""  # empty: the daemon's POLLER_PROJECT_ID
    instance_id: str = ""
    meta: Mapping[str, Any] | None = None
    force: bool = False


def build_message(request: JobRequest) -> str:
    """The intake message for a request: a bare ID when nothing else is needed, else JSON.

    Not validated: :func:`parse_message` is the one check (callers run it on the result)."""
    optional = {
        "project_id": request.project_id,
        "instance_id": request.instance_id,
        "meta": dict(request.meta) if request.meta else None,
        "force": request.force or None,
    }
    doc = {name: value for name, value in optional.items() if value}
    if not doc:
        return request.job_id
    return json.dumps({"job_id": request.job_id, **doc}, separators=(",", ":"), ensure_ascii=False)
