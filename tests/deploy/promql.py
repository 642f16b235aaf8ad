"""Just enough PromQL and Prometheus text format to check alert and dashboard queries offline.

``metric_names`` finds the metric names an expression selects (not functions, aggregations,
keywords, label names, durations or Grafana variables); ``exported_names`` the series names a
``/metrics`` answer can carry, from its ``# TYPE`` lines (a labelled counter with no child yet
has no sample, only its type) and its samples.
"""

from __future__ import annotations

import re

# Aggregation operators and keywords: identifiers that are not metric names.
_NOT_METRICS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
        "by", "without", "on", "ignoring", "group_left", "group_right",
        "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_PAIRS = {")": "(", "]": "[", "}": "{"}


class PromQLError(ValueError):
    """The expression is not well formed (as far as this checker can tell)."""


def _check_brackets(expr: str) -> None:
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
            raise PromQLError(f"unbalanced {char!r} in {expr!r}")
    if stack:
        raise PromQLError(f"unclosed {stack[-1]!r} in {expr!r}")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    _check_brackets(expr)
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # range and subquery durations
    text = _LABEL_LIST.sub(r"\1", text)  # by (le), on (job), group_left (x)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _NOT_METRICS:
            continue
        names.add(name)
    # A matcher-only selector names its metric in __name__.
    names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return names


_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("",),
    "stateset": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
}


def exported_names(text: str) -> set[str]:
    """The series names a Prometheus text-format answer carries or can carry."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update(name + suffix for suffix in _SUFFIXES[kind.strip()])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
