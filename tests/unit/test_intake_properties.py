"""Intake messages, for any bytes a producer may push: properties of ``parse_message``.

The contract ("Intake queue"): a message is a bare job ID (whitespace stripped) or a JSON object
with a string ``job_id`` and optional ``project_id``, ``instance_id``, ``meta`` object and
``force``; anything else is dead-lettered with a reason. Nothing crashes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from poller.intake import Admission, Invalid, parse_message
from tests.strategies import (
    BLANKS,
    INJECTION_IDS,
    INTAKE_FIELDS,
    MAX_META_BYTES,
    Expected,
    Pairs,
    any_text,
    grammar_ids,
    is_grammar_id,
    json_values,
    message_object,
    non_ids,
    render,
    rendered_values,
    strict_json_loads,
    to_bytes,
    valid_messages,
)

DEFAULT_PROJECT = "proj-default"
PURE = settings(max_examples=200, deadline=None)

# --- what producers may push -------------------------------------------------------------


#: JSON objects whose known fields hold anything (right or wrong type, odd tokens).
json_messages = st.builds(
    message_object,
    st.fixed_dictionaries(
        {},
        optional={
            "job_id": st.one_of(grammar_ids, non_ids, rendered_values),
            "project_id": st.one_of(grammar_ids, non_ids, rendered_values),
            "instance_id": st.one_of(grammar_ids, non_ids, rendered_values),
            "meta": st.one_of(rendered_values, st.dictionaries(any_text, rendered_values)),
            "force": st.one_of(st.booleans(), rendered_values),
        },
    ),
    st.lists(st.tuples(st.one_of(any_text, st.sampled_from(INTAKE_FIELDS)), rendered_values),
             max_size=3),
    st.integers(min_value=0, max_value=10),
)  # fmt: skip


@st.composite
def rendered_messages(draw: st.DrawFn) -> bytes:
    doc = draw(st.one_of(json_messages, rendered_values))
    text = render(doc, ascii_only=draw(st.booleans()))
    blanks = st.text(BLANKS, max_size=3)
    return to_bytes(draw(blanks) + text + draw(blanks))


def _nested(depth: int, opener: str, leaf: str, closer: str) -> str:
    return opener * depth + leaf + closer * depth


@st.composite
def deeply_nested_messages(draw: st.DrawFn) -> bytes:
    """Nesting near and far beyond the recursion limit, built as text, under the size limit."""
    opener, leaf, closer = draw(
        st.sampled_from([("[", "", "]"), ('{"a":', "1", "}"), ('[{"":', "null", "}]")])
    )
    most = (16 * 1024 - 64) // (len(opener) + len(closer))
    nested = _nested(draw(st.integers(min_value=900, max_value=most)), opener, leaf, closer)
    field = draw(st.sampled_from([*INTAKE_FIELDS, "extra"]))
    closed = draw(st.booleans())
    text = f'{{"job_id":"JOB-1","{field}":{nested}' + ("}" if closed else "")
    return text.encode()


messages = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64).map(lambda b: b"{" + b),
    any_text.map(to_bytes),
    st.tuples(st.text(BLANKS, max_size=2), st.one_of(grammar_ids, non_ids)).map(
        lambda t: to_bytes("".join(t))
    ),
    rendered_messages(),
    deeply_nested_messages(),
)

DEEP_MESSAGES = [
    pytest.param(b"[" * 5000, id="bare-array-5000"),
    pytest.param(b'{"a":' * 5000, id="object-5000-over-size-limit"),
    pytest.param(b'{"a":' * 3000, id="object-3000-unclosed"),
    pytest.param(_nested(3000, '{"a":', "1", "}").encode(), id="object-3000-too-long"),
    pytest.param(b'{"job_id":"JOB-1","x":' + b"[" * 5000 + b"]" * 5000 + b"}", id="extra-5000"),
    pytest.param(b'{"job_id":"JOB-1","meta":' + _nested(2500, '{"a":', "1", "}").encode() + b"}",
                 id="meta-2500"),
    pytest.param(b'{"job_id":"JOB-1","meta":{"k":' + b"[" * 5000 + b"]" * 5000 + b"}}",
                 id="meta-value-5000"),
    pytest.param(b'{"job_id":' + b"[" * 5000 + b"]" * 5000 + b"}", id="job_id-5000"),
    pytest.param(b'{"job_id":"JOB-1","project_id":' + b"[" * 5000, id="project_id-5000-unclosed"),
    pytest.param(b'{"job_id":"JOB-1","force":' + b"[" * 5000 + b"]" * 5000 + b"}", id="force-5000"),
]  # fmt: skip

#: Where a lone surrogate (or another oddity) can sit in a message: ``%s`` is the JSON token.
FIELD_SLOTS = [
    pytest.param('{"job_id":%s}', id="job_id"),
    pytest.param('{"job_id":"JOB-1","project_id":%s}', id="project_id"),
    pytest.param('{"job_id":"JOB-1","instance_id":%s}', id="instance_id"),
    pytest.param('{"job_id":"JOB-1","force":%s}', id="force"),
    pytest.param('{"job_id":"JOB-1","meta":%s}', id="meta"),
    pytest.param('{"job_id":"JOB-1","meta":{"k":%s}}', id="meta-value"),
    pytest.param('{"job_id":"JOB-1","meta":{"a":{"b":[1,%s]}}}', id="meta-nested"),
    pytest.param('{"job_id":"JOB-1","meta":{%s:1}}', id="meta-key"),
    pytest.param('{"job_id":"JOB-1","extra":%s}', id="unknown-field"),
    pytest.param('{"job_id":"JOB-1",%s:1}', id="unknown-key"),
]

SURROGATE_TOKENS = ['"\\ud83d"', '"a\\udc00b"', '"\\ude00\\ud83d"', '"JOB-\\udbff"']
NUMBER_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "9" * 4000]


def _parse(raw: bytes, default_project: str = DEFAULT_PROJECT) -> Admission | Invalid:
    return parse_message(raw, default_project)


def _assert_well_formed(result: Admission | Invalid) -> None:
    """Every invariant of a parse result, for tests over inputs with no known answer."""
    assert isinstance(result, Admission | Invalid), result
    if isinstance(result, Invalid):
        assert result.reason.strip()
        result.reason.encode("utf-8")
        return
    assert is_grammar_id(result.job_id), result
    assert is_grammar_id(result.project_id), result
    assert result.instance_id == "" or is_grammar_id(result.instance_id), result
    _assert_meta_is_strict_compact_json(result.meta)


def _assert_meta_is_strict_compact_json(meta: str) -> None:
    if meta == "":
        return
    encoded = meta.encode("utf-8")  # raises on a lone surrogate
    assert len(encoded) <= MAX_META_BYTES
    doc = strict_json_loads(meta)
    assert isinstance(doc, dict)
    compact = {json.dumps(doc, separators=(",", ":"), ensure_ascii=a) for a in (True, False)}
    assert meta in compact, meta


# --- never a crash, always a well-formed result ------------------------------------------


@PURE
@given(messages)
def test_any_message_gives_an_admission_or_an_invalid(raw: bytes) -> None:
    assert isinstance(_parse(raw), Admission | Invalid)


@PURE
@given(messages)
def test_an_admission_has_job_project_and_instance_ids_in_the_grammar(raw: bytes) -> None:
    result = _parse(raw)
    if isinstance(result, Admission):
        assert is_grammar_id(result.job_id)
        assert is_grammar_id(result.project_id)
        assert result.instance_id == "" or is_grammar_id(result.instance_id)


@PURE
@given(messages)
def test_an_admission_meta_is_empty_or_a_compact_strict_json_object_within_4_kib(
    raw: bytes,
) -> None:
    result = _parse(raw)
    if isinstance(result, Admission):
        _assert_meta_is_strict_compact_json(result.meta)


@PURE
@given(messages)
def test_an_invalid_has_a_non_empty_reason_that_encodes_to_utf8(raw: bytes) -> None:
    result = _parse(raw)
    if isinstance(result, Invalid):
        assert result.reason.strip()
        result.reason.encode("utf-8")


@pytest.mark.parametrize("raw", DEEP_MESSAGES)
def test_deeply_nested_json_gives_a_well_formed_result(raw: bytes) -> None:
    _assert_well_formed(_parse(raw))


@pytest.mark.parametrize("slot", FIELD_SLOTS)
@pytest.mark.parametrize("token", SURROGATE_TOKENS)
def test_a_lone_surrogate_escape_in_any_field_gives_a_well_formed_result(
    slot: str, token: str
) -> None:
    _assert_well_formed(_parse((slot % token).encode()))


@pytest.mark.parametrize("slot", [s for s in FIELD_SLOTS if "key" not in (s.id or "")])
@pytest.mark.parametrize("token", NUMBER_TOKENS)
def test_nan_infinity_and_huge_numbers_in_any_field_give_a_well_formed_result(
    slot: str, token: str
) -> None:
    _assert_well_formed(_parse((slot % token).encode()))


# --- invalid fields are refused, not defaulted -------------------------------------------

not_a_valid_id_value = st.one_of(json_values.filter(lambda v: v is not None), non_ids).filter(
    lambda v: not is_grammar_id(v)
)


@PURE
@given(project=not_a_valid_id_value)
@example(project=0)
@example(project=False)
@example(project="")
@example(project=[])
@example(project={})
@example(project=0.0)
def test_a_present_project_id_that_is_not_a_valid_id_string_is_invalid(project: Any) -> None:
    raw = render(Pairs((("job_id", "JOB-1"), ("project_id", project)))).encode()
    assert isinstance(_parse(raw), Invalid)


@PURE
@given(job=not_a_valid_id_value)
@example(job="")
@example(job=0)
@example(job=[])
def test_a_job_id_that_is_not_a_valid_id_string_is_invalid(job: Any) -> None:
    raw = render(Pairs((("job_id", job),))).encode()
    assert isinstance(_parse(raw), Invalid)


@PURE
@given(instance=not_a_valid_id_value.filter(lambda v: v != ""))
@example(instance=0)
@example(instance=False)
def test_a_present_instance_id_that_is_not_an_id_string_is_invalid(instance: Any) -> None:
    raw = render(Pairs((("job_id", "JOB-1"), ("instance_id", instance)))).encode()
    assert isinstance(_parse(raw), Invalid)


@PURE
@given(meta=json_values.filter(lambda v: v is not None and not isinstance(v, dict)))
def test_a_meta_that_is_not_an_object_is_invalid(meta: Any) -> None:
    raw = render(Pairs((("job_id", "JOB-1"), ("meta", meta)))).encode()
    assert isinstance(_parse(raw), Invalid)


@PURE
@given(force=json_values.filter(lambda v: v is not None and not isinstance(v, bool)))
@example(force=0)
@example(force=1)
@example(force="true")
def test_a_force_that_is_not_a_boolean_is_invalid(force: Any) -> None:
    raw = render(Pairs((("job_id", "JOB-1"), ("force", force)))).encode()
    assert isinstance(_parse(raw), Invalid)


@pytest.mark.parametrize("bad", [b for b in INJECTION_IDS if b.strip() == b])
def test_path_and_query_injection_as_a_bare_id_is_invalid(bad: str) -> None:
    assert isinstance(_parse(bad.encode()), Invalid)


@pytest.mark.parametrize("bad", INJECTION_IDS)
@pytest.mark.parametrize(
    "template",
    [
        pytest.param('{{"job_id":{}}}', id="job_id"),
        pytest.param('{{"job_id":"JOB-1","project_id":{}}}', id="project_id"),
        pytest.param('{{"job_id":"JOB-1","instance_id":{}}}', id="instance_id"),
    ],
)
def test_path_and_query_injection_in_a_json_id_field_is_invalid(template: str, bad: str) -> None:
    raw = template.format(json.dumps(bad, ensure_ascii=False)).encode()
    assert isinstance(_parse(raw), Invalid)


@PURE
@given(job=st.tuples(grammar_ids, st.characters(exclude_categories=()), grammar_ids).map("".join))
def test_an_id_with_any_character_outside_the_grammar_is_invalid(job: str) -> None:
    assume(not is_grammar_id(job))
    raw = render(Pairs((("job_id", job),))).encode()
    assert isinstance(_parse(raw), Invalid)


# --- the oracle: valid messages give what the contract says ------------------------------


def _admitted_as(result: Admission | Invalid, expected: Expected) -> None:
    assert isinstance(result, Admission), result
    got = (result.job_id, result.project_id, result.instance_id, result.force)
    assert got == (expected.job_id, expected.project_id, expected.instance_id, expected.force)
    assert (strict_json_loads(result.meta) if result.meta else {}) == expected.meta


@PURE
@given(case=valid_messages(DEFAULT_PROJECT))
@example(
    case=(
        b"  JOB17cb1778-07b1-4c8f-a183-c86cffbe8f9e\n",
        Expected("JOB17cb1778-07b1-4c8f-a183-c86cffbe8f9e", DEFAULT_PROJECT, "", {}, False),
    )
)
@example(
    case=(
        '{"meta":{"note":"d\u00e9ploiement \u2713 \U0001f680"},"job_id":"J"}'.encode(),
        Expected("J", DEFAULT_PROJECT, "", {"note": "d\u00e9ploiement \u2713 \U0001f680"}, False),
    )
)
def test_a_valid_message_is_admitted_as_the_contract_says(case: tuple[bytes, Expected]) -> None:
    raw, expected = case
    _admitted_as(_parse(raw), expected)


@PURE
@given(data=st.data(), default_project=grammar_ids)
def test_a_message_without_project_id_gets_the_configured_default(
    data: st.DataObject, default_project: str
) -> None:
    raw, expected = data.draw(valid_messages(default_project))
    _admitted_as(_parse(raw, default_project), expected)


@PURE
@given(case=valid_messages(DEFAULT_PROJECT), token=st.sampled_from(["NaN", "1e999", '"\\ud83d"']))
def test_non_standard_json_in_an_unknown_field_does_not_change_the_admission(
    case: tuple[bytes, Expected], token: str
) -> None:
    raw, expected = case
    text = raw.decode().strip()
    assume(text.startswith("{") and text != "{}")
    with_extra = text[:-1].rstrip() + f',"producer_extra":{token}}}'
    result = _parse(with_extra.encode())
    # Unknown fields are ignored; a parser may also refuse non-standard JSON as a whole.
    if isinstance(result, Admission):
        _admitted_as(result, expected)
