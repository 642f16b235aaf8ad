"""Admitted jobs read back from Redis exactly as they were admitted (hypothesis, redis-server).

What ``parse_message`` admits is what every event of the job carries (``project_id``,
``job_id``, ``meta``), so the stored job state must give back the same text, non-ASCII included.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, example, given, settings

from poller.intake import Admission, parse_message
from poller.store import Keys, Store
from tests.strategies import Expected, render, valid_messages

DEFAULT_PROJECT = "proj-default"
REDIS = settings(
    max_examples=30,
    deadline=None,
    # each example gets a fresh key prefix, so sharing the store fixture's connection is safe
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

NON_ASCII_META = {"note": "d\u00e9ploiement \u2713 \u90e8\u7f72 \U0001f680", "\u00fc": ["\u05e9"]}


async def _admit_and_read_back(store: Store, raw: bytes, admission: Admission) -> tuple[str, ...]:
    own = Store(store.redis, Keys(f"{store.keys.prefix}-{uuid.uuid4().hex[:8]}"))
    await own.enqueue(raw)
    (delivery,) = await own.take_messages("r1", 10, 0)
    assert delivery.raw == raw
    assert await own.admit("r1", delivery, admission, await own.server_time()) == "admitted"
    view = await own.get_job(admission.project_id, admission.job_id)
    assert view is not None
    state = view.state
    return (state.project_id, state.job_id, state.instance_id, state.meta)


@REDIS
@given(case=valid_messages(DEFAULT_PROJECT))
@example(
    case=(
        render({"job_id": "JOB-1", "meta": NON_ASCII_META}, ascii_only=False).encode(),
        Expected("JOB-1", DEFAULT_PROJECT, "", NON_ASCII_META, False),
    )
)
async def test_an_admitted_job_reads_back_with_the_same_ids_and_meta(
    store: Store, case: tuple[bytes, Expected]
) -> None:
    raw, _ = case
    admission = parse_message(raw, DEFAULT_PROJECT)
    assert isinstance(admission, Admission)
    stored = await _admit_and_read_back(store, raw, admission)
    assert stored == (admission.project_id, admission.job_id, admission.instance_id, admission.meta)
