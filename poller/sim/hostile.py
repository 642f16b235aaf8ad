"""Hostile API data: answers that are legal JSON but awkward, per job (``"hostile": [...]`` in a
job spec) or for every job (``poller sim --hostile ...``).

- ``surrogate_messages``: every task's ``messages`` ends in a lone UTF-16 surrogate, sent as the
  JSON escape ``"\\ud83d"`` (valid JSON text, but not valid Unicode once decoded);
- ``long_messages``: every task's ``messages`` is :data:`LONG_MESSAGES_CHARS` characters of
  multi-byte text (so a cut at a byte count may land inside a character);
- ``string_numbers``: ``task_index`` and ``task_count`` are sent as strings (``"3"``);
- ``upper_case_keys``: this job's keys are upper case (``EXECUTION_STATUS``...), as the API
  page prints them.

The deeply nested body is a transient fault instead (``deep_json`` in :mod:`poller.sim.faults`).
These are pure functions over the JSON objects :mod:`poller.sim.render` builds.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final


class Quirk(enum.StrEnum):
    """One kind of hostile data."""

    SURROGATE_MESSAGES = "surrogate_messages"
    LONG_MESSAGES = "long_messages"
    STRING_NUMBERS = "string_numbers"
    UPPER_CASE_KEYS = "upper_case_keys"


QUIRKS: Final = frozenset(q.value for q in Quirk)
LONE_SURROGATE: Final = "\ud83d"  # the high half of 😀 (U+1F600) without its low half
LONG_MESSAGES_CHARS: Final = 40_000
_LONG_LINE: Final = "step ✓ déployé → ok; "  # 1-, 2- and 3-byte UTF-8 characters


def parse_quirks(values: Iterable[str]) -> tuple[str, ...]:
    """Known quirk names, deduplicated and sorted; raises ``ValueError`` naming an unknown one."""
    found: set[str] = set()
    for value in values:
        name = value.strip()
        if name not in QUIRKS:
            known = ", ".join(sorted(QUIRKS))
            raise ValueError(f"unknown hostile data kind {name!r} (known: {known})")
        found.add(name)
    return tuple(sorted(found))


def long_text(chars: int = LONG_MESSAGES_CHARS) -> str:
    """``chars`` characters of multi-byte text."""
    repeats = chars // len(_LONG_LINE) + 1
    return (_LONG_LINE * repeats)[:chars]


def hostile_messages(messages: str, quirks: frozenset[str]) -> str:
    """A task's ``messages`` as the quirks make it."""
    if Quirk.LONG_MESSAGES in quirks:
        messages = long_text()
    if Quirk.SURROGATE_MESSAGES in quirks:
        messages = f"{messages} {LONE_SURROGATE}"
    return messages


def hostile_task(item: dict[str, object], quirks: frozenset[str]) -> dict[str, object]:
    """One task object (lower-case keys) as the quirks make it; the same object when none
    applies."""
    if not quirks:
        return item
    changed = dict(item)
    messages = changed.get("messages")
    if isinstance(messages, str):
        changed["messages"] = hostile_messages(messages, quirks)
    if Quirk.STRING_NUMBERS in quirks and isinstance(changed.get("task_index"), int):
        changed["task_index"] = str(changed["task_index"])
    return changed


def hostile_count(task_count: int, quirks: frozenset[str]) -> int | str:
    """``task_count`` as the quirks send it."""
    return str(task_count) if Quirk.STRING_NUMBERS in quirks else task_count
