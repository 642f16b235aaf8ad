"""Serialization of API answers: the JSON bodies and timestamps ServiceStage sends."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from poller.sim.model import TaskState
from poller.sim.scenario import JobSpec

JsonObject = dict[str, object]


def iso_ms(epoch: float) -> str:
    """``epoch`` seconds as UTC ISO 8601 with milliseconds: ``2024-06-06T15:55:31.115Z``."""
    seconds, millis = divmod(round(epoch * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def encode(document: object) -> bytes:
    """Compact UTF-8 JSON; text that is not valid Unicode (a lone surrogate) makes the whole
    document ASCII with ``\\u`` escapes, which is how such text reaches a client as JSON."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(document, separators=(",", ":")).encode()


def error_body(code: str, message: str, request_id: str | None = None) -> bytes:
    """``{"error_code": ..., "error_msg": ...}``, plus ``request_id`` for gateway errors."""
    document: JsonObject = {"error_code": code, "error_msg": message}
    if request_id is not None:
        document["request_id"] = request_id
    return encode(document)


def job_object(spec: JobSpec, execution_status: str) -> JsonObject:
    """The ``job`` object of a job-details answer (``spec`` must be resolved)."""
    job: JsonObject = {
        "execution_status": execution_status,
        "job_id": spec.job_id,
        "job_type": spec.job_type,
        "project_id": spec.project_id,
    }
    if spec.order_id is not None:
        job["order_id"] = spec.order_id
    if spec.instance_id is not None:
        job["service_instance_id"] = spec.instance_id
    if spec.rollback_enabled is not None:
        job["rollback_enabled"] = spec.rollback_enabled
    return job


def task_object(task: TaskState, job_created_at: float) -> JsonObject:
    """One item of ``tasks``; times are made absolute from the job's creation epoch."""
    item: JsonObject = {
        "task_id": task.task_id,
        "task_index": task.task_index,
        "task_name": task.task_name,
        "task_status": task.task_status,
        "created_at": iso_ms(job_created_at + task.created_at),
        "update_at": iso_ms(job_created_at + task.updated_at),
        "messages": task.messages,
    }
    if task.task_type is not None:
        item["task_type"] = task.task_type
    return item


def upper_keys(obj: Mapping[str, object]) -> JsonObject:
    """``obj`` with every key upper-cased (how the API page prints them)."""
    return {key.upper(): value for key, value in obj.items()}


def details_body(job: JsonObject, tasks: Sequence[JsonObject], task_count: int | str) -> bytes:
    """The body of a 200 answer: one page of ``tasks`` and the total ``task_count``."""
    return encode({"job": job, "tasks": list(tasks), "task_count": task_count})
