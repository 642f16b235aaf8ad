"""The contract's invariants over what a run left in Redis: one pure checker for tests and chaos.

Give it what a run left behind -- the global stream's entries, each per-job stream's entries,
the dead-letter list -- and what was put in: the job IDs enqueued with a valid message and the
poison (invalid) messages.  :func:`check_run` returns one line per violation, empty when all is
well; :func:`check_job_events` checks one job's events alone (what a test that followed one job
holds).  Entries are ``(entry_id, fields)`` pairs as ``XRANGE`` returns them, as bytes (the
checker then also proves they are valid UTF-8) or as text.

The invariants:

- every entry has the fields every event carries (``event``, ``job_id``, ``seq``, ...), a known
  ``event`` and an integer ``seq``; no key or value is text that is not valid UTF-8;
- per job, ``seq`` is exactly 1..n -- no gap, no repeat -- in the per-job stream and in the
  global stream (filtered by job), and the two hold the same events (same fields, same order);
- a ``task.status_changed`` event's ``from_status`` is the previous ``to_status`` of that task
  (empty on first sight), a ``job.status_changed`` event's likewise for the job, and a
  status-changed event changes the status;
- a ``job.status_changed`` event's ``terminal`` says whether ``to_status`` is terminal;
- exactly one final event (a terminal ``job.status_changed`` or a ``job.abandoned``), the last;
- every validly enqueued job has its final event; no other job has events;
- every poison message is in the dead-letter list, with a non-empty ``reason``, and nothing
  else is.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Final

from poller.statuses import is_terminal

Text = bytes | str
Entry = tuple[Text, Mapping[Text, Text]]
"""One stream entry: its ID and its field map (as ``XRANGE`` returns it)."""

# The contract's event kinds, spelled out here rather than taken from poller.snapshot.EventKind:
# the checker is an oracle for what the daemon publishes, so a renamed kind there is caught.
TASK_EVENT: Final = "task.status_changed"
JOB_EVENT: Final = "job.status_changed"
ABANDONED: Final = "job.abandoned"
EVENT_KINDS: Final = frozenset({TASK_EVENT, JOB_EVENT, ABANDONED})
REQUIRED_FIELDS: Final = (
    "event", "job_id", "project_id", "seq", "observed_at", "from_status", "to_status",
    "job_status",
)  # fmt: skip
_SHOWN: Final = 80  # characters of a raw message quoted in a violation
_MIN_TRUNCATED: Final = 24  # a dead-letter raw this long may be a truncated poison message


def check_run(
    *,
    global_entries: Iterable[Entry],
    job_entries: Mapping[str, Sequence[Entry]],
    dead_letters: Iterable[Text],
    enqueued: Collection[str],
    poison: Sequence[Text],
) -> list[str]:
    """Every violation of the contract's invariants in what a run left in Redis.

    ``job_entries`` maps job IDs to their per-job stream's entries; a job missing from it has
    an empty per-job stream.  ``enqueued`` are the job IDs sent with a valid message; ``poison``
    the invalid messages sent, each of which must be dead-lettered once.
    """
    violations: list[str] = []
    global_by_job: dict[str, list[Entry]] = {}
    for entry in global_entries:
        violations.extend(_utf8_violations("global stream", entry))
        job_id = _field(entry[1], "job_id")
        global_by_job.setdefault(job_id, []).append(entry)
    for job_id, entries in job_entries.items():
        for entry in entries:
            violations.extend(_utf8_violations(f"{job_id}: per-job stream", entry))
    wanted = set(enqueued)
    for job_id in sorted(wanted | set(global_by_job) | set(job_entries)):
        per_job = list(job_entries.get(job_id, ()))
        in_global = global_by_job.get(job_id, [])
        label = job_id or "(no job_id)"
        if job_id not in wanted:
            count = max(len(per_job), len(in_global))
            violations.append(f"{label}: {count} event(s) of a job that was not validly enqueued")
            continue
        if not per_job and not in_global:
            violations.append(f"{label}: no events at all (never finished)")
            continue
        violations.extend(_job_violations(job_id, per_job, "per-job stream", utf8=False))
        violations.extend(_job_violations(job_id, in_global, "global stream", utf8=False))
        mismatch = _first_difference(per_job, in_global)
        if mismatch is not None:
            violations.append(f"{label}: per-job and global streams differ: {mismatch}")
    violations.extend(_dead_letter_violations(list(dead_letters), poison))
    return violations


def check_job_events(job_id: str, entries: Sequence[Entry], where: str = "events") -> list[str]:
    """The violations in one job's events, in stream order (one stream, or the global one
    filtered by job): fields, UTF-8, ``seq``, status chains, the one final event."""
    return _job_violations(job_id, list(entries), where, utf8=True)


def _job_violations(job_id: str, entries: list[Entry], where: str, *, utf8: bool) -> list[str]:
    label = f"{job_id or '(no job_id)'}: {where}"
    out: list[str] = []
    if not entries:
        return [f"{label}: no events at all (never finished)"]
    events: list[dict[str, str]] = []
    for entry in entries:
        if utf8:
            out.extend(_utf8_violations(label, entry))
        fields = _decoded(entry[1])
        entry_id = _text(entry[0])
        missing = [name for name in REQUIRED_FIELDS if name not in fields]
        if missing:
            out.append(f"{label}: entry {entry_id} lacks {', '.join(missing)}")
        if fields.get("event", "") not in EVENT_KINDS:
            out.append(f"{label}: entry {entry_id} has unknown event {fields.get('event')!r}")
        if "job_id" in fields and fields["job_id"] != job_id:
            out.append(f"{label}: entry {entry_id} is of job {fields['job_id']!r}")
        events.append(fields)
    seqs = [_seq(fields) for fields in events]
    if seqs != list(range(1, len(events) + 1)):
        out.append(f"{label}: seq {_short(seqs)} is not 1..{len(events)}")
    out.extend(_chain_violations(label, events))
    finals = [i for i, fields in enumerate(events) if _is_final(fields)]
    if finals != [len(events) - 1]:
        if not finals:
            out.append(f"{label}: no final event (last is seq {seqs[-1]})")
        else:
            at = [seqs[i] for i in finals]
            out.append(
                f"{label}: final events at seq {_short(at)}; want exactly one, the last "
                f"(seq {seqs[-1]})"
            )
    return out


def _chain_violations(label: str, events: list[dict[str, str]]) -> list[str]:
    """Each task's and the job's status moves chain up: each starts where the last one of the
    same task (or of the job) ended, and changes something."""
    out: list[str] = []
    last: dict[str, str] = {}  # "task <id>" or "job": the last to_status
    for fields in events:
        kind = fields.get("event")
        where = f"{label}: seq {fields.get('seq', '?')}:"
        if kind == TASK_EVENT:
            task = fields.get("task_id", "")
            if not task:
                out.append(f"{where} task event without task_id")
            subject = f"task {task}"
        elif kind == JOB_EVENT:
            subject = "job"
        else:
            continue
        before, after = fields.get("from_status", ""), fields.get("to_status", "")
        expected = last.get(subject, "")
        if before != expected:
            out.append(
                f"{where} {subject} from_status {before!r}, but its last to_status was {expected!r}"
            )
        if before == after:
            out.append(f"{where} {subject} 'changed' {before!r} to itself")
        terminal = fields.get("terminal")
        if kind == JOB_EVENT and terminal != ("true" if is_terminal(after) else "false"):
            out.append(f"{where} terminal={terminal!r} with to_status {after!r}")
        last[subject] = after
    return out


def is_final(fields: Mapping[Text, Text]) -> bool:
    """A job's final event: a terminal ``job.status_changed`` or a ``job.abandoned``."""
    return _is_final(_decoded(fields))


def _is_final(fields: Mapping[str, str]) -> bool:
    kind = fields.get("event")
    return kind == ABANDONED or (kind == JOB_EVENT and fields.get("terminal") == "true")


def _first_difference(per_job: list[Entry], in_global: list[Entry]) -> str | None:
    """Where the per-job stream stops matching the global one (fields only), or ``None``."""
    a = [_decoded(fields) for _, fields in per_job]
    b = [_decoded(fields) for _, fields in in_global]
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"event #{i + 1}: seq {x.get('seq')!r} vs {y.get('seq')!r}" + (
                "" if x.get("seq") != y.get("seq") else f" (fields {_diff_keys(x, y)})"
            )
    if len(a) != len(b):
        return f"{len(a)} events in the per-job stream, {len(b)} in the global stream"
    return None


def _diff_keys(x: Mapping[str, str], y: Mapping[str, str]) -> str:
    keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
    return ", ".join(keys)


def _dead_letter_violations(dead_letters: list[Text], poison: Sequence[Text]) -> list[str]:
    out: list[str] = []
    records: list[tuple[str, str] | None] = []
    for raw_record in dead_letters:
        record = _dead_record(raw_record)
        if record is None:
            out.append(f"dead letters: a record is not JSON {{raw, reason}}: {_show(raw_record)}")
        records.append(record)
    used = [record is None for record in records]
    for message in poison:
        match = next(
            (
                i
                for i, record in enumerate(records)
                if not used[i] and record is not None and _raw_matches(record[0], message)
            ),
            None,
        )
        if match is None:
            out.append(f"dead letters: poison message {_show(message)} is not in the list")
            continue
        used[match] = True
        matched = records[match]
        if matched is not None and not matched[1].strip():
            out.append(f"dead letters: poison message {_show(message)} has an empty reason")
    for i, record in enumerate(records):
        if not used[i] and record is not None:
            out.append(
                f"dead letters: record matching no poison message (or a second one): "
                f"raw {_show(record[0])}, reason {record[1]!r}"
            )
    return out


def _dead_record(raw: Text) -> tuple[str, str] | None:
    """``(raw, reason)`` of a dead-letter record, ``None`` when it is not one."""
    try:
        doc: object = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    message, reason = doc.get("raw"), doc.get("reason")
    if not isinstance(message, str):
        return None
    return message, reason if isinstance(reason, str) else ""


def _raw_matches(recorded: str, message: Text) -> bool:
    """Whether a dead-letter record's ``raw`` is ``message``: as decoded by any usual error
    handler, stripped or not, possibly cut short (with or without an ellipsis)."""
    candidates = _renderings(message)
    if recorded in candidates:
        return True
    cut = recorded.removesuffix("...").removesuffix("\u2026")
    return len(cut) >= _MIN_TRUNCATED and any(c.startswith(cut) for c in candidates)


def _renderings(message: Text) -> set[str]:
    if isinstance(message, str):
        texts = {message}
    else:
        texts = {message.decode("utf-8", h) for h in ("replace", "backslashreplace")}
        texts.add(message.decode("latin-1"))  # valid UTF-8 decodes as "replace" does
    return texts | {t.strip() for t in texts}


def _utf8_violations(label: str, entry: Entry) -> list[str]:
    out: list[str] = []
    for key, value in entry[1].items():
        for part, what in ((key, "key"), (value, "value")):
            if not _valid_utf8(part):
                name = _text(key)
                out.append(
                    f"{label}: entry {_text(entry[0])} field {name!r} {what} is not valid UTF-8"
                )
    return out


def _valid_utf8(value: Text) -> bool:
    try:
        if isinstance(value, bytes):
            value.decode("utf-8")
        else:
            value.encode("utf-8")
    except UnicodeError:
        return False
    return True


def _text(value: Text) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.encode("utf-8", "replace").decode("utf-8")


def _decoded(fields: Mapping[Text, Text]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


def _field(fields: Mapping[Text, Text], name: str) -> str:
    value = fields.get(name)
    if value is None:
        value = fields.get(name.encode())
    return "" if value is None else _text(value)


def _seq(fields: Mapping[str, str]) -> int | str:
    raw = fields.get("seq", "")
    return int(raw) if raw.isascii() and raw.isdigit() else repr(raw)


def _short(values: Sequence[object], limit: int = 12) -> str:
    if len(values) <= limit:
        return "[" + ", ".join(str(v) for v in values) + "]"
    head = ", ".join(str(v) for v in values[: limit - 2])
    return f"[{head}, ..., {values[-1]}] ({len(values)} in all)"


def _show(value: Text) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}... ({len(value)} long)"
