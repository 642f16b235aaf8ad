"""Validate stream entries against the event schemas of ``docs/asyncapi.yaml``."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

ASYNCAPI = Path(__file__).parents[1] / "docs" / "asyncapi.yaml"
SCHEMA_BY_EVENT = {
    "task.status_changed": "TaskStatusChanged",
    "job.status_changed": "JobStatusChanged",
    "job.abandoned": "JobAbandoned",
}


@cache
def _document() -> dict[str, Any]:
    return dict(yaml.safe_load(ASYNCAPI.read_text()))


@cache
def validator(name: str) -> Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": _document()["components"]}
    return Draft202012Validator(schema)


def schema_errors(fields: dict[str, str]) -> list[str]:
    """Why ``fields`` does not match its event's schema (empty: it matches)."""
    name = SCHEMA_BY_EVENT.get(fields.get("event", ""))
    if name is None:
        return [f"unknown event type {fields.get('event')!r}"]
    return [e.message for e in validator(name).iter_errors(fields)]
