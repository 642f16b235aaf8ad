"""Hypothesis strategies for what producers and the API may send: JSON text, odd values, IDs.

Values are the ones ``json.loads`` can produce (lone surrogates from ``\\ud83d`` escapes,
NaN/Infinity, integers up to 4,300 digits); :class:`Raw` injects literal tokens that no encoder
writes (``1e999``, a 5,000-digit integer, surrogate escapes) into rendered JSON text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import strategies as st

#: The contract's ID grammar, written out here so the tests do not trust the code under test.
ID_GRAMMAR: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

INTAKE_FIELDS: Final = ("job_id", "project_id", "instance_id", "meta", "force")

#: Whitespace around a message (the contract strips it); ASCII only, as producers send it.
BLANKS: Final = " \t\r\n"

#: The contract's "small JSON object": at most 4 KiB as compact UTF-8 JSON.
MAX_META_BYTES: Final = 4 * 1024


def is_grammar_id(value: object) -> bool:
    return isinstance(value, str) and ID_GRAMMAR.fullmatch(value) is not None


def reject_constant(token: str) -> Any:
    """``parse_constant`` for strict JSON: NaN, Infinity and -Infinity are not JSON."""
    raise ValueError(f"non-standard JSON constant {token}")


def strict_json_loads(text: str) -> Any:
    return json.loads(text, parse_constant=reject_constant)


@dataclass(frozen=True, slots=True)
class Raw:
    """A literal JSON token, written into the text as is."""

    text: str


@dataclass(frozen=True, slots=True)
class Pairs:
    """A JSON object with its members in this order (and possibly repeated keys)."""

    items: tuple[tuple[str, Any], ...]


RAW_TOKENS: Final = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1E400",
    "0.1e-99999",
    "9" * 5000,  # beyond int_max_str_digits: json.loads refuses it
    "-" + "9" * 400,
    '"\\ud83d"',  # a lone high surrogate
    '"x\\udc00y"',  # a lone low surrogate inside text
    '"\\ude00\\ud83d"',  # the halves of a pair, in the wrong order
    '"\\ud83d\\ude00"',  # a valid pair
    '"\\u0000"',
)

#: Any code point, with ASCII and lone surrogates (rare among all code points) drawn often.
any_char = st.one_of(
    st.characters(max_codepoint=0x7F),
    st.characters(exclude_categories=()),
    st.integers(min_value=0xD800, max_value=0xDFFF).map(chr),
)
any_text = st.text(any_char, max_size=30)

huge_integers = st.integers(min_value=-(10**4200), max_value=10**4200)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_integers,
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
)

#: Values ``json.loads`` can return (surrogates, NaN, Infinity and huge integers included).
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)

#: Like :data:`json_values`, plus literal tokens no encoder writes (for rendered text only).
rendered_values = st.recursive(
    json_scalars | st.sampled_from(RAW_TOKENS).map(Raw),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(any_text, children, max_size=4)
        | st.lists(st.tuples(any_text, children), max_size=4).map(lambda kv: Pairs(tuple(kv)))
    ),
    max_leaves=12,
)

#: Strict JSON an honest producer sends: no NaN/Infinity, no lone surrogates, sane integers.
strict_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
strict_values = st.recursive(
    strict_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
strict_objects = st.dictionaries(st.text(max_size=10), strict_values, max_size=4)

grammar_ids = st.from_regex(ID_GRAMMAR, fullmatch=True)

#: IDs that try to leave their path segment, add a query, or pass for valid ones.
INJECTION_IDS: Final = (
    "../x",
    "..",
    ".",
    "a/b",
    "/x",
    "x?y",
    "x#y",
    "%2e%2e",
    "a%2Fb",
    "JOB\x00",
    "JOB\x001",
    "JOB 1",
    "JOB1\n",
    "a\\b",
    "a:b",
    "@evil.example",
    "//evil.example",
    "http://evil.example",
    "JOB\u20241",  # one dot leader
    "JOB\u22151",  # division slash
    "JOB\uff0f1",  # fullwidth solidus
    "\uff2a\uff2f\uff22\uff11",  # fullwidth JOB1
    "J\u041e\u0412-1",  # Cyrillic O and VE
    "JOB\u0661",  # Arabic-Indic digit one
    "JOB\u200b1",  # zero-width space
    "\u212aelvin",  # Kelvin sign
)

#: Strings that are not IDs: arbitrary text, the injection list, and near misses.
non_ids = st.one_of(
    any_text,
    st.sampled_from(INJECTION_IDS),
    st.tuples(grammar_ids, any_char, grammar_ids).map("".join),
).filter(lambda s: not is_grammar_id(s))


def render(value: Any, *, ascii_only: bool = True) -> str:
    """JSON text for ``value``: lone surrogates become ``\\udXXX`` escapes when ``ascii_only``,
    NaN and infinities their non-standard literals, :class:`Raw` tokens themselves."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        members = (f"{render(k, ascii_only=ascii_only)}:{render(v, ascii_only=ascii_only)}"
                   for k, v in value.items)  # fmt: skip
        return "{" + ",".join(members) + "}"
    if isinstance(value, dict):
        return render(Pairs(tuple(value.items())), ascii_only=ascii_only)
    if isinstance(value, list):
        return "[" + ",".join(render(v, ascii_only=ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def to_bytes(text: str) -> bytes:
    """UTF-8, except that lone surrogates are written as their (invalid) 3-byte forms."""
    return text.encode("utf-8", "surrogatepass")


# --- intake messages ----------------------------------------------------------------------


def message_object(fields: dict[str, Any], extras: list[tuple[str, Any]], order: int) -> Pairs:
    """The members of a message object, rotated by ``order`` (key order is free in JSON)."""
    items = list(fields.items()) + extras
    if items:
        order %= len(items)
        items = items[order:] + items[:order]
    return Pairs(tuple(items))


@dataclass(frozen=True, slots=True)
class Expected:
    """The admission the contract promises, with ``meta`` as the object it stands for."""

    job_id: str
    project_id: str
    instance_id: str
    meta: dict[str, Any]  # {} when absent
    force: bool


unknown_keys = st.text(max_size=12).filter(lambda k: k.lower() not in INTAKE_FIELDS)


def compact_size(meta: dict[str, Any]) -> int:
    return len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())


@st.composite
def valid_messages(draw: st.DrawFn, default_project: str) -> tuple[bytes, Expected]:
    """A message an honest producer sends, and the admission the contract promises for it."""
    job = draw(grammar_ids)
    blanks = st.text(BLANKS, max_size=3)
    if draw(st.booleans()):
        raw = draw(blanks) + job + draw(blanks)
        return raw.encode(), Expected(job, default_project, "", {}, False)
    fields: dict[str, Any] = {"job_id": job}
    optional = draw(st.fixed_dictionaries({}, optional={
        "project_id": grammar_ids, "instance_id": grammar_ids,
        "meta": strict_objects.filter(lambda m: compact_size(m) <= MAX_META_BYTES),
        "force": st.booleans(),
    }))  # fmt: skip
    fields.update(optional)
    extras = draw(st.lists(st.tuples(unknown_keys, strict_values), max_size=3,
                           unique_by=lambda kv: kv[0]))  # fmt: skip
    doc = message_object(fields, extras, draw(st.integers(min_value=0, max_value=10)))
    if draw(st.booleans()):
        text = render(doc, ascii_only=draw(st.booleans()))
    else:  # a producer's own encoder, with its own spacing
        text = json.dumps(dict(doc.items), ensure_ascii=draw(st.booleans()), indent=2)
    expected = Expected(
        job_id=job,
        project_id=optional.get("project_id", default_project),
        instance_id=optional.get("instance_id", ""),
        meta=optional.get("meta", {}),
        force=optional.get("force", False),
    )
    return (draw(blanks) + text + draw(blanks)).encode(), expected
