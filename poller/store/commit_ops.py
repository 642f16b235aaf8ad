"""The commit of a poll: fenced, idempotent, sent in groups (one pipeline per turn of the
event loop) and, with ``wait_replicas``, followed by ``WAIT`` on the same connections."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    NoScriptError,
)

from poller.store import schema
from poller.store.edge import (
    CommitResult,
    PendingCommit,
    RedisEdge,
    as_text,
    settle,
)
from poller.store.schema import (
    F,
    job_member,
)
from poller.tracking import JobState, Plan


class CommitStore(RedisEdge):
    """Commits (see ``schema.COMMIT``) and their durability."""

    async def commit(
        self, state: JobState, plan: Plan, now: float, commit_id: str | None = None
    ) -> CommitResult:
        """Apply ``plan`` if ``state``'s lease and ``seq`` still hold (see ``schema.COMMIT``).

        With ``wait_replicas``, returns only after ``WAIT`` saw that many replicas take the
        commit (or ``wait_timeout`` passed: then :attr:`on_wait_short` hears of it).
        """
        member = job_member(state.project_id, state.job_id)
        hash_fields = [
            F.interval, repr(plan.interval),
            F.attempts, str(plan.attempts),
            F.nf_since, "" if plan.not_found_since is None else repr(plan.not_found_since),
            F.last_error, plan.last_error,
            F.outcome, plan.outcome,
            F.due, "" if plan.due_at is None else repr(plan.due_at),
        ]  # fmt: skip
        if plan.snapshot != state.snapshot:  # an unchanged poll leaves the stored snapshot be
            hash_fields += [F.snap, plan.snapshot.to_json() if plan.snapshot else ""]
        if state.crashes:
            hash_fields += [F.crashes, "0"]
        payload = {
            "member": member,
            "token": state.token,
            "seq": str(state.seq),
            "commit_id": commit_id or uuid.uuid4().hex,
            "now": repr(now),
            "due": "" if plan.due_at is None else repr(plan.due_at),
            "retention": max(1, int(self.retention)),
            "maxlen": self.maxlen,
            "seq_memory": max(1, int(self.seq_memory)),
            "set": hash_fields,
            "events": [[v for pair in event.fields for v in pair] for event in plan.events],
        }
        args: list[str | int] = [json.dumps(payload, ensure_ascii=False, separators=(",", ":"))]
        shard = self.keys.for_job(state.job_id)
        keys = [
            shard.schedule,
            shard.job(member),
            shard.events,
            shard.job_events(state.job_id),
            shard.jobref(state.job_id),
        ]
        return cast(CommitResult, as_text(await self._group_commit(keys, args)))

    async def _group_commit(self, keys: list[str], args: list[str | int]) -> Any:
        """Send this commit together with every other commit that is ready in the same turn
        of the event loop: one pipeline, one socket write, one round trip for all of them
        (in a cluster, one per primary, sent at once).

        The first commit of a turn schedules the send for the end of the turn; the send runs
        on its own (a drain cancelling one caller cannot strand the others' commits) and
        always ends, bounded by the socket timeout.  Each commit's reply or error goes back
        to its caller; the scripts are fenced and carry commit IDs, so a pipeline resent after
        a dropped connection applies each once.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._pending_commits.append((keys, args, waiter))
        if len(self._pending_commits) == 1:
            loop.call_soon(self._flush_commits)
        return await waiter

    def _flush_commits(self) -> None:
        batch, self._pending_commits = self._pending_commits, []
        task = asyncio.ensure_future(self._send_commits(batch))
        self._sending.add(task)  # held until done, so it is never collected mid-flight
        task.add_done_callback(self._sending.discard)

    async def _send_commits(self, batch: list[PendingCommit]) -> None:
        try:
            pending = batch
            for _ in range(2):
                replies = await self._commit_pipeline(pending)
                forgot = [c for c, reply in zip(pending, replies, strict=True)
                          if isinstance(reply, NoScriptError)]  # fmt: skip
                for (_, _, waiter), reply in zip(pending, replies, strict=True):
                    if not isinstance(reply, NoScriptError):
                        settle(waiter, reply)
                if not forgot:
                    return
                # A restarted or promoted server without the script: nothing of those commits
                # ran.  Load it (on every primary of a cluster) and send them again, WAIT too.
                await self.redis.script_load(schema.COMMIT)
                pending = forgot
            for _, _, waiter in pending:
                settle(waiter, NoScriptError("the commit script could not be loaded"))
        except Exception as exc:  # the whole pipeline failed: every caller hears why
            for _, _, waiter in batch:
                settle(waiter, exc)

    async def _commit_pipeline(self, batch: list[PendingCommit]) -> list[Any]:
        """One pipeline of commits (and their ``WAIT``); each commit's reply, in order."""
        if self.wait_replicas and isinstance(self.redis, RedisCluster):
            await self.redis.initialize()  # WAIT is pinned to nodes: the slot map must be known
        sha = self.script(schema.COMMIT).sha
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            self._queue_waits(pipe, [keys[0] for keys, _, _ in batch])
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        self._check_waits(replies[len(batch) :])
        return replies[: len(batch)]

    # --- durability -----------------------------------------------------------------------

    def _queue_waits(self, pipe: Any, first_keys: list[str]) -> int:
        """Queue ``WAIT`` behind the commits, on each connection that carried some: a
        cluster pipeline gets one per primary (pinned to the node owning those keys)."""
        if not self.wait_replicas:
            return 0
        if not isinstance(self.redis, RedisCluster):
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            return 1
        nodes = {}
        for key in first_keys:
            node = self.redis.get_node_from_key(key)
            if node is not None:
                nodes[node.name] = node
        for node in nodes.values():
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms,
                                 target_nodes=node)  # fmt: skip
        return len(nodes)

    def _check_waits(self, replies: Sequence[Any]) -> None:
        for reply in replies:
            acked = -1 if isinstance(reply, Exception) else int(reply)
            if acked < self.wait_replicas and self.on_wait_short is not None:
                self.on_wait_short(self.wait_replicas, max(0, acked))
