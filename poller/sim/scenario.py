"""Scenario documents: job timelines for the emulator, parsed into frozen dataclasses.

A scenario is JSON (or TOML, chosen by the ``.toml`` file extension)::

    {"project_id": "sim-project", "page_cap": 50,
     "jobs": [{"job_type": "PROVISION",
               "job_status": [[0, "RUNNING"], [12, "SUCCEEDED"]],
               "tasks": [{"task_name": "PREPARE", "task_index": 1,
                          "steps": [[0, "RUNNING"], [3.5, "SUCCEEDED"]]}]}],
     "faults": {"throttled_429": 0.05},
     "auth": {"access_keys": {"AK1": "SK1"}, "iam_users": [{"name": "u", "password": "p"}]}}

Times are seconds since the job's creation.  ``schema.json`` documents every field; this module
also checks what a schema cannot (non-decreasing times, unique task indexes).
"""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Final, TypeVar

from poller.ids import is_valid_id
from poller.sim._fields import (
    ScenarioError,
    as_list,
    as_mapping,
    boolean,
    check_keys,
    integer,
    join,
    number,
    require,
    string,
)
from poller.sim.credentials import AuthSpec, auth_to_dict, parse_auth
from poller.sim.faults import FaultConfig, faults_to_dict, parse_faults
from poller.sim.hostile import parse_quirks
from poller.statuses import JOB_STATUSES, TASK_STATUSES

__all__ = [
    "JOB_TYPES",
    "JobSpec",
    "Scenario",
    "ScenarioError",
    "Step",
    "TaskSpec",
    "example_scenario_path",
    "job_to_dict",
    "load_scenario",
    "parse_job",
    "parse_scenario",
    "resolve_job",
    "scenario_to_dict",
]

JOB_TYPES: Final = frozenset(
    {"PROVISION", "DEPROVISION", "DAILY_OPERATION", "SYSTEM_INNER", "UNKNOWN"}
)
_T = TypeVar("_T")
_TASK_ID_NAMESPACE: Final = uuid.UUID("6f1c1d4e-8a43-4c55-9a57-2d0c3f1c5b11")
_SCENARIO_FIELDS: Final = frozenset(
    {"$schema", "description", "project_id", "page_cap", "upper_case_keys", "jobs", "faults",
     "auth"}
)  # fmt: skip
_JOB_FIELDS: Final = frozenset(
    {
        "job_id", "project_id", "job_type", "job_status", "tasks", "visible_after", "missing",
        "forbidden", "rollback_enabled", "order_id", "instance_id", "description", "hostile",
    }
)  # fmt: skip
_TASK_FIELDS: Final = frozenset(
    {"task_id", "task_index", "task_name", "task_type", "steps", "messages"}
)


@dataclass(frozen=True, slots=True)
class Step:
    """From ``at`` seconds after the job's creation on, the status is ``status``.

    ``messages`` (tasks only) replaces the task's ``messages`` from this step on.
    """

    at: float
    status: str
    messages: str | None = None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task's timeline; the task is invisible before its first step."""

    task_index: int
    task_name: str
    steps: tuple[Step, ...]
    task_id: str | None = None
    messages: str = "{}"
    task_type: str | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job's timeline and fate.

    ``job_status`` starts at time 0.  The API answers 404 before ``visible_after`` seconds and
    forever when ``missing``; 403 forever when ``forbidden``.  ``job_id``, ``project_id`` and task
    IDs left out are filled in by :func:`resolve_job` when the job is created.  ``hostile``
    names the kinds of awkward data its answers carry (:mod:`poller.sim.hostile`), sorted.
    """

    job_status: tuple[Step, ...]
    tasks: tuple[TaskSpec, ...] = ()
    job_id: str | None = None
    project_id: str | None = None
    job_type: str = "PROVISION"
    visible_after: float = 0.0
    missing: bool = False
    forbidden: bool = False
    rollback_enabled: bool | None = None
    order_id: str | None = None
    instance_id: str | None = None
    description: str | None = None
    hostile: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    """A set of jobs plus the emulator settings that come with them (``None``: not set)."""

    jobs: tuple[JobSpec, ...] = ()
    project_id: str | None = None
    page_cap: int | None = None
    upper_case_keys: bool | None = None
    faults: FaultConfig | None = None
    description: str | None = None
    auth: AuthSpec = field(default_factory=AuthSpec)  # each of its fields None: not set


def parse_scenario(doc: object) -> Scenario:
    """Validate a scenario document; raises :class:`ScenarioError` naming the bad field."""
    mapping = as_mapping(doc, "")
    check_keys(mapping, "", _SCENARIO_FIELDS)
    jobs = tuple(
        parse_job(item, f"jobs[{i}]")
        for i, item in enumerate(as_list(mapping.get("jobs", []), "jobs"))
    )
    explicit_ids = [job.job_id for job in jobs if job.job_id is not None]
    _check_unique(explicit_ids, "jobs", "job_id")
    return Scenario(
        jobs=jobs,
        project_id=_opt_id(mapping, "project_id", ""),
        page_cap=_opt(mapping, "page_cap", lambda v, at: integer(v, at, minimum=1)),
        upper_case_keys=_opt(mapping, "upper_case_keys", boolean),
        faults=_opt(mapping, "faults", parse_faults),
        description=_opt(mapping, "description", string),
        auth=parse_auth(mapping["auth"], "auth") if "auth" in mapping else AuthSpec(),
    )


def parse_job(doc: object, where: str = "job") -> JobSpec:
    """Validate one job spec (a scenario's ``jobs`` item, or the admin API's request body)."""
    mapping = as_mapping(doc, where)
    check_keys(mapping, where, _JOB_FIELDS)
    statuses = _parse_steps(require(mapping, "job_status", where), join(where, "job_status"), True)
    if statuses[0].at != 0:
        raise ScenarioError(f"{join(where, 'job_status')}[0]: the first job status must be at 0")
    raw_tasks = as_list(mapping.get("tasks", []), join(where, "tasks"))
    tasks = tuple(
        _parse_task(item, join(join(where, "tasks"), i)) for i, item in enumerate(raw_tasks)
    )
    _check_unique([t.task_index for t in tasks], join(where, "tasks"), "task_index")
    _check_unique([t.task_id for t in tasks if t.task_id], join(where, "tasks"), "task_id")
    spec = JobSpec(
        job_status=statuses,
        tasks=tasks,
        job_id=_opt_id(mapping, "job_id", where),
        project_id=_opt_id(mapping, "project_id", where),
        job_type=string(
            mapping.get("job_type", "PROVISION"), join(where, "job_type"), choices=JOB_TYPES
        ),
        visible_after=_opt(mapping, "visible_after", number, where) or 0.0,
        missing=_opt(mapping, "missing", boolean, where) or False,
        forbidden=_opt(mapping, "forbidden", boolean, where) or False,
        rollback_enabled=_opt(mapping, "rollback_enabled", boolean, where),
        order_id=_opt(mapping, "order_id", string, where),
        instance_id=_opt(mapping, "instance_id", string, where),
        description=_opt(mapping, "description", string, where),
        hostile=_opt(mapping, "hostile", _quirks, where) or (),
    )
    if spec.missing and spec.forbidden:
        raise ScenarioError(f"{where}: 'missing' and 'forbidden' cannot both be true")
    return spec


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file: TOML when it ends in ``.toml``, JSON otherwise."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    try:
        doc: object = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if file.suffix == ".toml" else "JSON"
        raise ScenarioError(f"{file}: not valid {kind}: {exc}") from exc
    try:
        return parse_scenario(doc)
    except ScenarioError as exc:
        raise ScenarioError(f"{file}: {exc}") from exc


def example_scenario_path() -> Path:
    """The example scenario shipped with the package (also used by ``poller demo``)."""
    return Path(str(resources.files("poller.sim") / "scenarios" / "example.json"))


def resolve_job(spec: JobSpec, project_id: str, *, job_id: str | None = None) -> JobSpec:
    """``spec`` with every identifier filled in.

    A missing ``job_id`` becomes ``job_id`` or ``"JOB" + uuid4``; a missing project becomes
    ``project_id``; a missing task ID is derived from the job ID and task index, so it is the
    same on every run with the same job ID.
    """
    final_id = spec.job_id or job_id or f"JOB{uuid.uuid4()}"
    tasks = tuple(
        task
        if task.task_id
        else replace(
            task, task_id=f"Task-{uuid.uuid5(_TASK_ID_NAMESPACE, f'{final_id}/{task.task_index}')}"
        )
        for task in spec.tasks
    )
    return replace(spec, job_id=final_id, project_id=spec.project_id or project_id, tasks=tasks)


def _set_fields(spec: object, names: tuple[str, ...]) -> dict[str, object]:
    """The fields ``names`` of ``spec`` that are set (not ``None``), keyed by field name as in
    the JSON document, in the order given."""
    values = ((name, getattr(spec, name)) for name in names)
    return {name: value for name, value in values if value is not None}


def scenario_to_dict(scenario: Scenario) -> dict[str, object]:
    """The JSON document of ``scenario``; :func:`parse_scenario` reads it back unchanged."""
    doc = _set_fields(scenario, ("description", "project_id", "page_cap", "upper_case_keys"))
    if scenario.faults is not None:
        doc["faults"] = faults_to_dict(scenario.faults)
    if scenario.auth != AuthSpec():
        doc["auth"] = auth_to_dict(scenario.auth)
    doc["jobs"] = [job_to_dict(job) for job in scenario.jobs]
    return doc


def job_to_dict(job: JobSpec) -> dict[str, object]:
    """The JSON job spec of ``job``, leaving out fields at their defaults."""
    doc = _set_fields(
        job, ("job_id", "project_id", "description", "order_id", "instance_id", "rollback_enabled")
    )
    doc["job_type"] = job.job_type
    if job.visible_after:
        doc["visible_after"] = _num(job.visible_after)
    if job.missing:
        doc["missing"] = True
    if job.forbidden:
        doc["forbidden"] = True
    if job.hostile:
        doc["hostile"] = list(job.hostile)
    doc["job_status"] = [_step_to_list(step) for step in job.job_status]
    doc["tasks"] = [_task_to_dict(task) for task in job.tasks]
    return doc


def _task_to_dict(task: TaskSpec) -> dict[str, object]:
    doc: dict[str, object] = {
        "task_index": task.task_index,
        "task_name": task.task_name,
        **_set_fields(task, ("task_id", "task_type")),
    }
    if task.messages != "{}":
        doc["messages"] = task.messages
    doc["steps"] = [_step_to_list(step) for step in task.steps]
    return doc


def _step_to_list(step: Step) -> list[object]:
    item: list[object] = [_num(step.at), step.status]
    if step.messages is not None:
        item.append(step.messages)
    return item


def _num(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def _parse_task(doc: object, where: str) -> TaskSpec:
    mapping = as_mapping(doc, where)
    check_keys(mapping, where, _TASK_FIELDS)
    return TaskSpec(
        task_index=integer(require(mapping, "task_index", where), join(where, "task_index")),
        task_name=string(require(mapping, "task_name", where), join(where, "task_name")),
        steps=_parse_steps(require(mapping, "steps", where), join(where, "steps"), False),
        task_id=_opt_id(mapping, "task_id", where),
        messages=_opt(mapping, "messages", string, where) or "{}",
        task_type=_opt(mapping, "task_type", string, where),
    )


def _parse_steps(doc: object, where: str, for_job: bool) -> tuple[Step, ...]:
    items = as_list(doc, where)
    if not items:
        raise ScenarioError(f"{where}: needs at least one [seconds, status] step")
    statuses = JOB_STATUSES if for_job else TASK_STATUSES
    steps: list[Step] = []
    for i, item in enumerate(items):
        at = join(where, i)
        parts = as_list(item, at)
        longest = 2 if for_job else 3
        if not 2 <= len(parts) <= longest:
            shape = (
                "[seconds, status]"
                if for_job
                else "[seconds, status] or [seconds, status, messages]"
            )
            raise ScenarioError(f"{at}: expected {shape}, got {len(parts)} items")
        step = Step(
            at=number(parts[0], join(at, 0)),
            status=string(parts[1], join(at, 1), choices=statuses),
            messages=string(parts[2], join(at, 2)) if len(parts) == 3 else None,
        )
        if steps and step.at < steps[-1].at:
            raise ScenarioError(
                f"{at}: time {step.at:g} is before the previous step's {steps[-1].at:g}"
            )
        steps.append(step)
    return tuple(steps)


def _opt(
    mapping: Mapping[str, object], key: str, parse: Callable[[object, str], _T], where: str = ""
) -> _T | None:
    return parse(mapping[key], join(where, key)) if key in mapping else None


def _quirks(value: object, where: str) -> tuple[str, ...]:
    names = [string(item, join(where, i)) for i, item in enumerate(as_list(value, where))]
    _check_unique(names, where, "kind")
    try:
        return parse_quirks(names)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _opt_id(mapping: Mapping[str, object], key: str, where: str) -> str | None:
    if key not in mapping:
        return None
    text = string(mapping[key], join(where, key))
    if not is_valid_id(text):
        raise ScenarioError(
            f"{join(where, key)}: {text!r} does not match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"
        )
    return text


def _check_unique(values: Sequence[object], where: str, field: str) -> None:
    seen: set[object] = set()
    for value in values:
        if value in seen:
            raise ScenarioError(f"{where}: {field} {value!r} appears more than once")
        seen.add(value)
