"""Typed readers for scenario documents: each failure names the offending field."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


class ScenarioError(ValueError):
    """A scenario, job spec or fault config does not follow the format.

    The message starts with the path of the offending field, e.g.
    ``jobs[2].tasks[0].steps[1]: time 3 is before the previous step's 5``.
    """


def join(where: str, key: str | int) -> str:
    """The path of ``key`` inside the value at ``where`` (``jobs[0]`` + ``tasks`` ...)."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def as_mapping(value: object, where: str) -> Mapping[str, object]:
    """``value`` as a JSON object with string keys, or a :class:`ScenarioError`."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ScenarioError(f"{where or 'document'}: expected an object, got {_kind(value)}")
    return value


def as_list(value: object, where: str) -> Sequence[object]:
    """``value`` as a JSON array, or a :class:`ScenarioError`."""
    if not isinstance(value, list | tuple):
        raise ScenarioError(f"{where}: expected an array, got {_kind(value)}")
    return value


def check_keys(doc: Mapping[str, object], where: str, allowed: frozenset[str]) -> None:
    """Reject fields outside ``allowed`` so that a typo never passes silently."""
    unknown = sorted(set(doc) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ScenarioError(f"{join(where, unknown[0])}: unknown field (known fields: {known})")


def require(doc: Mapping[str, object], key: str, where: str) -> object:
    """The value of a mandatory field."""
    if key not in doc:
        raise ScenarioError(f"{join(where, key)}: required field is missing")
    return doc[key]


def string(value: object, where: str, *, choices: frozenset[str] | None = None) -> str:
    """``value`` as a string, optionally one of ``choices``."""
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: expected a string, got {_kind(value)}")
    if choices is not None and value not in choices:
        raise ScenarioError(f"{where}: {value!r} is not one of {', '.join(sorted(choices))}")
    return value


def boolean(value: object, where: str) -> bool:
    """``value`` as a JSON boolean."""
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}: expected true or false, got {_kind(value)}")
    return value


def number(value: object, where: str, *, minimum: float = 0.0, maximum: float = math.inf) -> float:
    """``value`` as a finite number within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: expected a number, got {_kind(value)}")
    result = float(value)
    if not math.isfinite(result) or not minimum <= result <= maximum:
        bound = f"at most {maximum:g}" if maximum != math.inf else ""
        span = f"at least {minimum:g}" + (f" and {bound}" if bound else "")
        raise ScenarioError(f"{where}: expected a number {span}, got {value!r}")
    return result


def integer(value: object, where: str, *, minimum: int = 0) -> int:
    """``value`` as an integer no smaller than ``minimum`` (``2.0`` counts, as in JSON Schema)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where}: expected an integer, got {_kind(value)}")
    if value < minimum:
        raise ScenarioError(f"{where}: expected an integer of at least {minimum}, got {value}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
