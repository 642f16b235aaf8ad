"""Every Redis key name and every Lua script of the poller, in one place.

Data model.  ``P`` is the key prefix (``POLLER_KEY_PREFIX``), ``S`` the prefix of the shard a
job belongs to, ``M`` a job's member name ``{project_id}:{job_id}``.  With one shard
(``POLLER_SHARDS=1``, the default) ``S`` is ``P``.

Intake side, under ``P``:

=============================  =======  ===============================================
key                            type     what
=============================  =======  ===============================================
``P:jobs``                     LIST     intake queue; producers LPUSH, replicas take from the right
``P:jobs:dead``                LIST     rejected intake messages, JSON ``{raw, reason, at}``
``P:jobs:inflight:{replica}``  LIST     messages a replica has taken but not yet admitted, each
                                        as ``{ticket}:{raw}``
``P:jobs:retry``               LIST     in-flight messages handed back (dead replicas), taken first
``P:jobs:ticket``              STRING   the last delivery ticket handed out
``P:replicas``                 ZSET     replica -> heartbeat deadline (epoch s)
``P:ratelimit``                STRING   GCRA theoretical arrival time for the global rate limit
``P:limits``                   HASH     pauses every replica keeps to (after a 401, a 429)
``P:layout``                   STRING   the shard count these keys were laid out for
``P:forward:dead``             LIST     webhook deliveries ``poller forward`` gave up on (JSON)
=============================  =======  ===============================================

Each shard, under ``S`` (see :func:`shard_prefixes` and :func:`shard_of`):

=============================  =======  ===============================================
``S:schedule``                 ZSET     M -> when the next poll is due, or the lease deadline
``S:job:M``                    HASH     one job's state (fields below)
``S:events``                   STREAM   every event of the shard's jobs, ``MAXLEN ~``
``S:events:{job_id}``          STREAM   one job's events; expires ``retention`` after it ends
``S:jobid:{job_id}``           HASH     ``project`` tracking this job ID, ``seq`` its next
                                        number; kept ``seq_memory`` after the job ends
``S:claim:{replica}``          STRING   the replica's last claim (ID and leases), for retries
=============================  =======  ===============================================

In Redis Cluster ``P`` is hash-tagged (``{poller}``), so the intake side is one slot and each
shard's keys another (``{poller:x}``): every script touches the keys of one slot only, and
the commit of a poll stays one atomic script on one primary.

Job hash fields: ``project job instance meta`` (identity), ``state`` (``tracking``,
``finished``, or ``quarantined`` when it could not be decoded),
``snap`` (last complete snapshot, compact JSON), ``interval attempts nf_since
taken_at last_poll_at last_error`` (policy), ``seq`` (next event number), ``epoch token owner
lease_until`` (lease, ``token`` empty when nobody holds it), ``due`` (when the
poll was due, for lag), ``commit_id`` (the last applied
commit, for idempotent retries), ``crashes`` (polls in a row that ended in an error, not an
outcome), ``finished_at``, ``outcome`` and ``ticket`` (the delivery that admitted it).

Every script checks the type of each key it touches before its first write and answers
``corrupt`` (or skips the key) instead of failing half-way: Lua does not roll back, so a
script that raised after an ``XADD`` and was retried would publish that event twice.

The scripts build job-hash names from the shard prefix they are given, in the same slot.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from string import Template
from typing import Final, Protocol, overload

from redis.crc import key_slot

from poller.ids import is_valid_id

STATE_TRACKING: Final = "tracking"
STATE_FINISHED: Final = "finished"
STATE_QUARANTINED: Final = "quarantined"


@dataclass(frozen=True, slots=True)
class JobFields:
    """The names of a job hash's fields: the one table both Python and the scripts read."""

    project: str = "project"
    job: str = "job"
    instance: str = "instance"
    meta: str = "meta"
    state: str = "state"
    snap: str = "snap"
    interval: str = "interval"
    attempts: str = "attempts"
    nf_since: str = "nf_since"
    taken_at: str = "taken_at"
    seq: str = "seq"
    epoch: str = "epoch"
    token: str = "token"  # noqa: S105 - a field's name, not a secret
    owner: str = "owner"
    lease_until: str = "lease_until"
    last_error: str = "last_error"
    last_poll_at: str = "last_poll_at"
    commit_id: str = "commit_id"
    due: str = "due"
    crashes: str = "crashes"
    finished_at: str = "finished_at"
    outcome: str = "outcome"
    ticket: str = "ticket"


F: Final = JobFields()


def _lua(source: str) -> str:
    """A script with ``${f_<field>}`` and ``${s_<state>}`` filled in from :data:`F` and the
    state names, so a field is named in one place only."""
    names = {f"f_{name}": getattr(F, name) for name in F.__slots__}
    states = {"s_tracking": STATE_TRACKING, "s_finished": STATE_FINISHED,
              "s_quarantined": STATE_QUARANTINED}  # fmt: skip
    return Template(source).substitute(names, **states)


def unwrap_entry(entry: bytes) -> tuple[str, bytes]:
    """The ticket and the raw message of an in-flight entry ``{ticket}:{raw}``.

    An entry without a ticket (left in flight by a version before tickets) is all raw, with
    the empty ticket."""
    head, sep, raw = entry.partition(b":")
    if sep and head.isdigit():
        return head.decode(), raw
    return "", entry


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry ID (``ms-seq``) as a sortable pair: the order to merge shards' streams
    in (the best there is: shards have no common order)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def job_member(project_id: str, job_id: str) -> str:
    """The schedule member naming one job; ``:`` cannot occur in either ID."""
    if not (is_valid_id(project_id) and is_valid_id(job_id)):
        raise ValueError("invalid project or job ID")
    return f"{project_id}:{job_id}"


#: Redis Cluster's hash slots.
SLOTS: Final = 16384
#: The most shards ``POLLER_SHARDS`` may ask for.
MAX_SHARDS: Final = 1024


def hash_tag(prefix: str) -> str | None:
    """The hash tag of ``prefix`` as Redis Cluster reads it (the text between the first ``{``
    and the first ``}`` after it, when not empty), or ``None``: then keys hash whole."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start + 1 : end] if start >= 0 and end > start + 1 else None


def tag_slot(tag: str) -> int:
    """The hash slot of every key tagged ``{tag}`` (CRC16 mod 16384, as Redis computes it)."""
    return int(key_slot(tag.encode()))


def shard_of(job_id: str, shards: int) -> int:
    """The shard a job belongs to: CRC32 (zlib, IEEE) of its UTF-8 job ID, mod ``shards``.

    By job ID, not project: the per-job stream and the job ID record are keyed by job ID, so
    everything about one job ID lives in one shard and its events keep their order.
    """
    return zlib.crc32(job_id.encode()) % shards if shards > 1 else 0


def slot_range(k: int, shards: int) -> tuple[int, int]:
    """The ``k``-th of ``shards`` equal ranges of slots, ``[low, high)``, rounded to the
    nearest slot (half up) as ``redis-cli --cluster create`` splits them over primaries."""
    return (2 * k * SLOTS + shards) // (2 * shards), (2 * (k + 1) * SLOTS + shards) // (2 * shards)


@functools.lru_cache(maxsize=64)
def shard_prefixes(prefix: str, shards: int) -> tuple[str, ...]:
    """Each shard's key prefix.  One shard: ``prefix`` itself (the layout does not change).

    Otherwise shard ``k``'s prefix is ``prefix`` with ``:x`` appended to its hash tag ``T``
    (``{poller}`` -> ``{poller:x}``; a prefix without a tag is its own ``T`` and gets
    ``P:x``), where ``x`` is the smallest whole number whose tag's slot
    (``CRC16("T:x") mod 16384``) lies in the ``k``-th of ``shards`` equal ranges of the
    16,384 slots, ``[round(k * 16384 / shards), round((k + 1) * 16384 / shards))`` (the
    boundaries ``redis-cli --cluster create`` splits slots at).  So the shards' slots
    spread evenly: with the usual even split of slots over the primaries, a shard count
    that is a multiple of the primaries gives each primary an equal share.
    """
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be between 1 and {MAX_SHARDS}")
    if shards == 1:
        return (prefix,)
    tag = hash_tag(prefix)
    out = []
    for k in range(shards):
        low, high = slot_range(k, shards)
        x = 0
        while not low <= tag_slot(f"{tag if tag is not None else prefix}:{x}") < high:
            x += 1
        if tag is None:
            out.append(f"{prefix}:{x}")
        else:
            at = prefix.index("{") + 1 + len(tag)
            out.append(f"{prefix[:at]}:{x}{prefix[at:]}")
    return tuple(out)


class _Name:
    """A key name under its owner's prefix: ``name = _Name("jobs")`` reads as ``P:jobs``;
    ``_Name("events:")`` with a call, ``keys.job_events(job_id)``, as ``P:events:{job_id}``."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    @overload
    def __get__(self, owner: None, kind: type) -> _Name: ...

    @overload
    def __get__(self, owner: _Prefixed, kind: type) -> str: ...

    def __get__(self, owner: _Prefixed | None, kind: type) -> _Name | str:
        return self if owner is None else f"{owner.prefix}:{self.suffix}"


class _Prefixed(Protocol):
    @property
    def prefix(self) -> str: ...


def _under(suffix: str) -> Callable[[_Prefixed, str], str]:
    """A key name made of the prefix, ``suffix`` and one argument (``P:events:{job_id}``)."""

    def name(self: _Prefixed, arg: str) -> str:
        return f"{self.prefix}:{suffix}{arg}"

    return name


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """The key names of one shard: its schedule, job state and event streams."""

    prefix: str

    schedule = _Name("schedule")
    job_prefix = _Name("job:")
    events = _Name("events")
    job = _under("job:")  # by member ``{project_id}:{job_id}``
    job_events = _under("events:")
    jobref = _under("jobid:")
    claim = _under("claim:")  # by replica


def member_job_id(member: str) -> str:
    """The job ID of a schedule member ``{project_id}:{job_id}``."""
    return member.partition(":")[2]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix, spread over ``shards`` shards.

    The intake side (queue, dead letters, in-flight lists, replica registry, rate limit and
    shared pauses) lives under ``prefix``; each job lives in one shard (:func:`shard_of`),
    whose keys live under that shard's prefix (:func:`shard_prefixes`).  With one shard the
    two are the same prefix, and :attr:`schedule` and :attr:`events` name its keys.
    """

    prefix: str = "poller"
    shards: int = 1

    def __post_init__(self) -> None:
        shard_prefixes(self.prefix, self.shards)  # checks the count

    # --- intake side ------------------------------------------------------------------

    intake = _Name("jobs")
    dead = _Name("jobs:dead")
    inflight_prefix = _Name("jobs:inflight:")
    inflight = _under("jobs:inflight:")  # by replica
    retry = _Name("jobs:retry")
    tickets = _Name("jobs:ticket")
    replicas = _Name("replicas")
    ratelimit = _Name("ratelimit")
    limits = _Name("limits")
    layout = _Name("layout")
    one_shard_schedule = _Name("schedule")  # where one shard's schedule is (the layout check)
    forward_dead = _Name("forward:dead")

    # --- shards -----------------------------------------------------------------------

    @property
    def all_shards(self) -> tuple[ShardKeys, ...]:
        return tuple(ShardKeys(p) for p in shard_prefixes(self.prefix, self.shards))

    def shard(self, index: int) -> ShardKeys:
        return ShardKeys(shard_prefixes(self.prefix, self.shards)[index])

    def shard_index(self, job_id: str) -> int:
        return shard_of(job_id, self.shards)

    def for_job(self, job_id: str) -> ShardKeys:
        """The keys of the shard ``job_id`` belongs to."""
        return self.shard(shard_of(job_id, self.shards))

    @property
    def event_streams(self) -> tuple[str, ...]:
        """Every shard's global stream (one: ``P:events``)."""
        return tuple(s.events for s in self.all_shards)

    def job(self, member: str) -> str:
        return self.for_job(member_job_id(member)).job(member)

    def job_events(self, job_id: str) -> str:
        return self.for_job(job_id).job_events(job_id)

    def jobref(self, job_id: str) -> str:
        return self.for_job(job_id).jobref(job_id)

    def _only(self, what: str) -> ShardKeys:
        if self.shards != 1:
            raise ValueError(f"{what}: one per shard with {self.shards} shards; use all_shards")
        return self.shard(0)

    @property
    def schedule(self) -> str:
        """The schedule (one shard only)."""
        return self._only("schedule").schedule

    @property
    def events(self) -> str:
        """The global stream (one shard only; see :attr:`event_streams`)."""
        return self._only("events").events

    @property
    def job_prefix(self) -> str:
        return self._only("job_prefix").job_prefix

    def claim(self, replica: str) -> str:
        return self._only("claim").claim(replica)


# Shared by the scripts: a key's type, and whether it is absent or of the wanted type.
_PRELUDE: Final = """
local function kind(key) return redis.call('TYPE', key)['ok'] end
local function usable(key, want) local t = kind(key); return t == 'none' or t == want end
"""

# Move messages to this replica's in-flight list until it holds ARGV[1] (a replica whose
# in-flight list is full takes nothing more): first those handed back (the retry list, still
# wrapped), then new ones from the intake queue, each wrapped as ``{ticket}:{raw}`` with a
# ticket from the counter.  The ticket names one delivery of one message wherever it goes
# next, so an admission into a shard of another slot, sent again after a crash, is known.
# KEYS: intake, inflight, retry, ticket counter.  Returns how many moved.
MOVE_TO_INFLIGHT: Final = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[2])
local moved = 0
while moved < room and redis.call('LMOVE', KEYS[3], KEYS[2], 'RIGHT', 'LEFT') do
  moved = moved + 1
end
if moved < room then
  local t = redis.call('TYPE', KEYS[4])['ok']
  if t ~= 'none' and t ~= 'string' then return redis.error_reply('WRONGTYPE ticket counter') end
  local ticket = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
  local wrapped = 0
  while moved < room do
    local raw = redis.call('RPOP', KEYS[1])
    if not raw then break end
    ticket = ticket + 1
    redis.call('LPUSH', KEYS[2], string.format('%d', ticket) .. ':' .. raw)
    moved = moved + 1
    wrapped = wrapped + 1
  end
  if wrapped > 0 then redis.call('SET', KEYS[4], string.format('%d', ticket)) end
end
return moved
"""

# Record the shard count the keys under the prefix are laid out for, once, and return it.
# KEYS: layout, the one-shard schedule ``P:schedule`` (same slot).  ARGV: this shard count.
# Keys laid out before the count was recorded are one shard's: a schedule under the prefix
# itself says so, whatever count is asked for now.
RECORD_LAYOUT: Final = """
local recorded = redis.call('GET', KEYS[1])
if recorded then return recorded end
local count = ARGV[1]
if redis.call('EXISTS', KEYS[2]) == 1 then count = '1' end
redis.call('SET', KEYS[1], count)
return count
"""

# Admit one valid message: start tracking unless already tracked or recently finished.
# KEYS: schedule, job hash, job stream, job ID record (the job's shard), and the in-flight
# list when it shares their slot (one shard): then the message leaves it in the same step;
# otherwise the caller removes it after this answered (and a retry is known by its ticket).
# ARGV: in-flight entry, member, project, job, instance, meta, force ('1'/'0'), now, job key
# prefix, ticket ('' for none).
# Returns 'admitted', 'tracked' (also: this ticket was admitted before) or '${s_finished}'
# (the message leaves the in-flight list), or 'conflict' (the job ID is tracked under another
# project) or 'corrupt' (a key of another type is in the way): those two leave the message in
# flight for the caller to dead-letter.
# ``seq`` continues from the job's hash or, once that expired, from the job ID record.
ADMIT: Final = _lua(
    _PRELUDE
    + """
if not (usable(KEYS[1], 'zset') and usable(KEYS[2], 'hash') and usable(KEYS[3], 'stream')
        and usable(KEYS[4], 'hash')) then
  return 'corrupt'
end
local state = redis.call('HGET', KEYS[2], '${f_state}')
local result
local owner = redis.call('HGET', KEYS[4], '${f_project}')
if ARGV[10] ~= '' and redis.call('HGET', KEYS[2], '${f_ticket}') == ARGV[10] then
  -- this delivery was admitted before (a retry after a crash): whatever happened since
  result = 'tracked'
elseif owner and owner ~= ARGV[3]
    and kind(ARGV[9] .. owner .. ':' .. ARGV[4]) == 'hash'
    and redis.call('HGET', ARGV[9] .. owner .. ':' .. ARGV[4], '${f_state}') == '${s_tracking}' then
  return 'conflict'
elseif state == '${s_tracking}' then
  result = 'tracked'
elseif state == '${s_finished}' and ARGV[7] ~= '1' then
  result = '${s_finished}'
else
  local seq = math.max(tonumber(redis.call('HGET', KEYS[2], '${f_seq}') or '1') or 1,
                       tonumber(redis.call('HGET', KEYS[4], '${f_seq}') or '1') or 1)
  seq = string.format('%d', seq)
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], '${f_project}', ARGV[3], '${f_job}', ARGV[4],
    '${f_instance}', ARGV[5], '${f_meta}', ARGV[6], '${f_state}', '${s_tracking}',
    '${f_snap}', '', '${f_interval}', '0', '${f_attempts}', '0', '${f_nf_since}', '',
    '${f_taken_at}', ARGV[8], '${f_seq}', seq, '${f_epoch}', '0', '${f_token}', '',
    '${f_owner}', '', '${f_lease_until}', '', '${f_last_error}', '', '${f_last_poll_at}', '',
    '${f_commit_id}', '', '${f_due}', ARGV[8], '${f_ticket}', ARGV[10])
  redis.call('HSET', KEYS[4], '${f_project}', ARGV[3], '${f_seq}', seq)
  redis.call('PERSIST', KEYS[4])
  redis.call('PERSIST', KEYS[3])
  redis.call('ZADD', KEYS[1], ARGV[8], ARGV[2])
  result = 'admitted'
end
if KEYS[5] then redis.call('LREM', KEYS[5], 1, ARGV[1]) end
return result
"""
)

# Park an invalid message in the dead-letter list.  KEYS: dead, inflight.
# ARGV: in-flight entry, record.
# Only a message still in flight is parked, so a retry after a lost reply adds no second record.
DEAD_LETTER: Final = """
if redis.call('LREM', KEYS[2], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[2])
return 1
"""

# End tracking of a job and tell its consumers: a final ``job.abandoned`` on every stream that
# can take it, whatever the job's state (it may be unreadable: undecodable, keys of another
# type, polls that keep crashing).  Used for ``corrupt_state`` (by the lease holder) and for an
# operator's cancel (``*`` as the token: any lease, which the cancel takes over).
# KEYS: schedule, job hash, global stream, job stream, job ID record (the job's shard), and
# the dead-letter list when it shares their slot (one shard; otherwise the caller parks the
# record).
# ARGV: member, token ('*': the operator), dead-letter record ('' for none), retention,
#       job id, project id, observed_at, detail, maxlen, seq memory, reason, final state,
#       outcome, now (epoch seconds).
# Returns 1, or 0 when the lease is no longer the caller's (or, for the operator, when the job
# is not being tracked).  A hash is kept for the retention period; a key of another type is
# left alone.
ABANDON: Final = _lua(
    _PRELUDE
    + """
local is_hash = kind(KEYS[2]) == 'hash'
if ARGV[2] == '*' then
  if not is_hash or redis.call('HGET', KEYS[2], '${f_state}') ~= '${s_tracking}' then return 0 end
elseif is_hash and redis.call('HGET', KEYS[2], '${f_token}') ~= ARGV[2] then
  return 0
elseif not is_hash and ARGV[2] ~= '' then
  return 0
elseif not is_hash and usable(KEYS[1], 'zset') and redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  -- no state to fence on: the claim left the member in the schedule, so a member already
  -- gone says this abandon ran before (a retry after a lost reply) and publishes nothing
  return 0
end
local seq = 1
local last, meta = '', ''
if is_hash then
  seq = math.max(seq, tonumber(redis.call('HGET', KEYS[2], '${f_seq}') or '') or 1)
  local ok, snap = pcall(cjson.decode, redis.call('HGET', KEYS[2], '${f_snap}') or '')
  if ok and type(snap) == 'table' and type(snap['s']) == 'string' then last = snap['s'] end
  local m = redis.call('HGET', KEYS[2], '${f_meta}') or ''
  local ok2, doc = pcall(cjson.decode, m)
  if m ~= '' and ok2 and type(doc) == 'table' then meta = m end
end
local ref_ok = usable(KEYS[5], 'hash')
if ref_ok then seq = math.max(seq, tonumber(redis.call('HGET', KEYS[5], '${f_seq}') or '') or 1) end
local job_stream_ok = usable(KEYS[4], 'stream')
if job_stream_ok then
  local tail = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
  if tail[1] then
    local f = tail[1][2]
    for i = 1, #f, 2 do
      if f[i] == 'seq' then seq = math.max(seq, (tonumber(f[i + 1]) or 0) + 1) end
    end
  end
end
local fields = {'event', 'job.abandoned', 'job_id', ARGV[5], 'project_id', ARGV[6],
  'seq', string.format('%d', seq), 'observed_at', ARGV[7], 'from_status', last,
  'to_status', last, 'job_status', last, 'reason', ARGV[11], 'detail', ARGV[8]}
if meta ~= '' then table.insert(fields, '${f_meta}'); table.insert(fields, meta) end
if usable(KEYS[3], 'stream') then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', unpack(fields))
end
if job_stream_ok then
  redis.call('XADD', KEYS[4], '*', unpack(fields))
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
if ref_ok then
  redis.call('HSET', KEYS[5], '${f_project}', ARGV[6], '${f_seq}', string.format('%d', seq + 1))
  redis.call('EXPIRE', KEYS[5], ARGV[10])
end
if usable(KEYS[1], 'zset') then redis.call('ZREM', KEYS[1], ARGV[1]) end
if is_hash then
  redis.call('HSET', KEYS[2], '${f_state}', ARGV[12], '${f_token}', '', '${f_owner}', '',
             '${f_lease_until}', '', '${f_seq}', string.format('%d', seq + 1),
             '${f_finished_at}', ARGV[14], '${f_outcome}', ARGV[13], '${f_last_error}',
             ARGV[11] .. ': ' .. ARGV[8])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if ARGV[3] ~= '' and KEYS[6] and usable(KEYS[6], 'list') then
  redis.call('LPUSH', KEYS[6], ARGV[3])
end
return 1
"""
)

# Hand back the in-flight lists of replicas whose heartbeat lapsed, onto the retry list
# (tickets kept, taken before new messages).
# KEYS: replicas, retry.  ARGV: now, inflight key prefix.  Returns messages handed back.
RECOVER_ORPHANS: Final = """
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local moved = 0
for _, replica in ipairs(dead) do
  local list = ARGV[2] .. replica
  while redis.call('LMOVE', list, KEYS[2], 'RIGHT', 'RIGHT') do moved = moved + 1 end
  redis.call('ZREM', KEYS[1], replica)
end
return moved
"""

# Claim up to ARGV[3] due jobs.  KEYS: schedule, the owner's claim record.
# ARGV: now, lease deadline, limit, owner, job key prefix, claim id, lease (ms).
# Each claim bumps the job's epoch (the fencing token) and pushes its schedule score to the
# lease deadline, so a crashed owner's jobs fall due again by themselves.  The claim is
# recorded under its ID: the same claim sent again (a retry after a lost reply) returns the
# same leases instead of leaving them to lapse.
# Returns a flat list: the earliest score left in the schedule ('' if none), then member,
# token, field count, HGETALL fields… per claimed job; a job whose key is not a hash comes
# with an empty token and count -1 (the caller quarantines it).
CLAIM_DUE: Final = _lua(
    _PRELUDE
    + """
local out = {}
local function emit(member, token, fields)
  table.insert(out, member)
  table.insert(out, token)
  table.insert(out, #fields)
  for _, v in ipairs(fields) do table.insert(out, v) end
end
local record = redis.pcall('GET', KEYS[2])
local ok, previous = pcall(cjson.decode, type(record) == 'string' and record or '')
if ok and type(previous) == 'table' and previous['id'] == ARGV[6] then
  for _, lease in ipairs(previous['m'] or {}) do
    local fields = redis.pcall('HGETALL', ARGV[5] .. lease[1])
    if not fields['err'] then
      for i = 1, #fields, 2 do
        if fields[i] == '${f_token}' and fields[i + 1] == lease[2] then
          emit(lease[1], lease[2], fields)
        end
      end
    end
  end
else
  local claimed = {}
  local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,
                             tonumber(ARGV[3]))
  for _, member in ipairs(members) do
    local key = ARGV[5] .. member
    local fields = redis.pcall('HGETALL', key)
    if fields['err'] then
      redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
      table.insert(out, member)
      table.insert(out, '')
      table.insert(out, -1)
    else
      local at = {}
      for i = 1, #fields, 2 do at[fields[i]] = i + 1 end
      if not at['${f_state}'] or fields[at['${f_state}']] ~= '${s_tracking}' then
        redis.call('ZREM', KEYS[1], member)
      else
        -- not HINCRBY: a garbled epoch must not make every claim of every replica fail
        local epoch = at['${f_epoch}'] and tonumber(fields[at['${f_epoch}']]) or 0
        local token = string.format('%d', epoch + 1)
        redis.call('HSET', key, '${f_epoch}', token, '${f_token}', token, '${f_owner}', ARGV[4],
                   '${f_lease_until}', ARGV[2])
        redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
        local lease = {['${f_epoch}'] = token, ['${f_token}'] = token, ['${f_owner}'] = ARGV[4],
                       ['${f_lease_until}'] = ARGV[2]}
        for name, value in pairs(lease) do
          if at[name] then
            fields[at[name]] = value
          else
            table.insert(fields, name)
            table.insert(fields, value)
          end
        end
        table.insert(claimed, {member, token})
        emit(member, token, fields)
      end
    end
  end
  if type(record) ~= 'table' then
    redis.call('SET', KEYS[2], cjson.encode({id = ARGV[6], m = claimed}), 'PX', ARGV[7])
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
table.insert(out, 1, first[2] or '')
return out
"""
)

# Extend leases still held.  KEYS: schedule.  ARGV: deadline, job key prefix, then
# member, token pairs.  Returns 1/0 per pair (0: the lease is lost, stop working on it).
RENEW_LEASES: Final = _lua(
    _PRELUDE
    + """
local out = {}
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. ARGV[i]
  local held = ARGV[i + 1] ~= '' and kind(key) == 'hash'
    and redis.call('HGET', key, '${f_token}') == ARGV[i + 1]
  if held then
    redis.call('HSET', key, '${f_lease_until}', ARGV[1])
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  end
  table.insert(out, held and 1 or 0)
end
return out
"""
)

# Give a lease back unused: the job is due again at ARGV[3].  With ARGV[4] not empty the poll
# crashed: count it (``crashes``) and keep ARGV[4] as the last error.
# KEYS: schedule, job hash.  ARGV: member, token, due, crash error.
RELEASE: Final = _lua(
    _PRELUDE
    + """
if ARGV[2] == '' or kind(KEYS[2]) ~= 'hash'
   or redis.call('HGET', KEYS[2], '${f_token}') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[2], '${f_token}', '', '${f_owner}', '', '${f_lease_until}', '')
if ARGV[4] ~= '' then
  local crashes = (tonumber(redis.call('HGET', KEYS[2], '${f_crashes}') or '0') or 0) + 1
  redis.call('HSET', KEYS[2], '${f_crashes}', string.format('%d', crashes),
             '${f_last_error}', ARGV[4])
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""
)

# The fenced, idempotent commit of one poll.
# KEYS: schedule, job hash, global stream, job stream, job ID record.
# ARGV[1]: the payload, a JSON object by name: ``member``, ``token``, ``seq`` (expected),
#   ``commit_id``, ``now``, ``due`` ('' retires), ``retention``, ``maxlen``, ``seq_memory``,
#   ``set`` (hash field/value pairs, flat) and ``events`` (one flat field/value list each).
# Returns 'ok', 'duplicate' (this commit id was applied already: a retry after a lost reply),
# 'fenced' (the lease or seq moved on: publish nothing), 'gone' (no such tracked job) or
# 'corrupt' (a key it must write holds another type: nothing was written).
COMMIT: Final = _lua(
    _PRELUDE
    + """
local p = cjson.decode(ARGV[1])
local head = redis.pcall('HMGET', KEYS[2], '${f_commit_id}', '${f_state}', '${f_token}',
                         '${f_seq}')
if head['err'] then return 'corrupt' end
if head[1] == p.commit_id then return 'duplicate' end
if head[2] ~= '${s_tracking}' then return 'gone' end
if head[3] ~= p.token or head[4] ~= p.seq then return 'fenced' end
local nevents = #p.events
local retires = p.due == ''
-- An unchanged poll writes only the schedule (first: a wrong type fails before any write)
-- and the hash; a poll that publishes or retires checks every key's type first.
if (nevents > 0 or retires) and not (usable(KEYS[1], 'zset') and usable(KEYS[3], 'stream')
    and usable(KEYS[4], 'stream') and usable(KEYS[5], 'hash')) then
  return 'corrupt'
end
if not retires then redis.call('ZADD', KEYS[1], p.due, p.member) end
for _, fields in ipairs(p.events) do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', p.maxlen, '*', unpack(fields))
  redis.call('XADD', KEYS[4], '*', unpack(fields))
end
local next_seq = string.format('%d', tonumber(p.seq) + nevents)
local update = {'${f_seq}', next_seq, '${f_token}', '', '${f_owner}', '', '${f_lease_until}', '',
  '${f_commit_id}', p.commit_id, '${f_last_poll_at}', p.now}
for _, v in ipairs(p.set) do table.insert(update, v) end
if retires then
  table.insert(update, '${f_state}'); table.insert(update, '${s_finished}')
  table.insert(update, '${f_finished_at}'); table.insert(update, p.now)
end
redis.call('HSET', KEYS[2], unpack(update))
if retires then
  redis.call('ZREM', KEYS[1], p.member)
  redis.call('EXPIRE', KEYS[2], p.retention)
  redis.call('EXPIRE', KEYS[4], p.retention)
  local project = redis.call('HGET', KEYS[2], '${f_project}')
  redis.call('HSET', KEYS[5], '${f_project}', project, '${f_seq}', next_seq)
  redis.call('EXPIRE', KEYS[5], p.seq_memory)
end
return 'ok'
"""
)

# Move dead-letter records back to intake.  KEYS: dead-letter list, intake queue.
# ARGV: record, raw message, record, raw message, ...  A record still in the dead-letter list
# is removed and its raw message pushed onto the intake queue by the same script, so both
# happen or neither (and a record requeued twice at once moves once).  Returns 1/0 per record
# (0: it was no longer there).
REQUEUE_DEAD: Final = """
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'list' then return redis.error_reply('WRONGTYPE intake queue') end
local out = {}
for i = 1, #ARGV, 2 do
  local moved = redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1
  if moved then
    redis.call('LPUSH', KEYS[2], ARGV[i + 1])
  end
  table.insert(out, moved and 1 or 0)
end
return out
"""


# --- shared limits: the global rate limit and the pauses every replica keeps to -------------
#
# ``P:ratelimit`` holds the GCRA's theoretical arrival time (ms, Redis's clock).  ``P:limits``
# is a hash of pauses (deadlines are ms on Redis's clock):
#
#   ``throttle``        the end of the pause after a 429
#   ``auth:{scope}``    one access key's standing (``scope`` is a fingerprint of the AK):
#                       ``ok:{since}`` (a request signed with it was accepted) or
#                       ``n:{failures}:{until}:{since}`` (paused after ``failures`` 401s in a
#                       row; once ``until`` passes, one probe goes first); absent: unknown,
#                       which is probed like the end of a pause
#   ``probe:{scope}``   ``{owner}:{until}``: the one request allowed to test the key, leased
#
# Both scripts answer with the same tail, the state as they leave it (``read_limits``):
#   server time (µs, as text: orders the replies), throttle ms left, auth status
#   (``ok``/``unknown``/``paused``), failures, auth pause ms left, probe lease ms left.
# A ``P:limits`` of another type is read as "no pauses" and never written (fail open).
_LIMITS_PRELUDE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stamp = t[1] .. string.format('%06d', tonumber(t[2]))
local function read_limits(key, scope)
  local s = {throttle = 0, status = 'ok', failures = 0, auth = 0, probe = 0, holder = '',
             writable = true}
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= 'hash' then s.writable = false; return s end
  local f = redis.call('HMGET', key, 'throttle', 'auth:' .. scope, 'probe:' .. scope)
  s.throttle = math.max(0, (tonumber(f[1]) or 0) - now)
  if scope == '' then return s end
  s.status = 'unknown'
  if f[2] then
    if string.sub(f[2], 1, 3) == 'ok:' then
      s.status = 'ok'
    else
      local n, u = string.match(f[2], '^n:(%d+):(%d+)')
      if n then
        s.status = 'paused'
        s.failures = tonumber(n)
        s.auth = math.max(0, tonumber(u) - now)
      end
    end
  end
  if f[3] then
    local owner, u = string.match(f[3], '^(.*):(%d+)$')
    if owner and tonumber(u) > now then s.probe = tonumber(u) - now; s.holder = owner end
  end
  return s
end
local function tail(s)
  return {stamp, math.ceil(s.throttle), s.status, s.failures, math.ceil(s.auth),
          math.ceil(s.probe)}
end
local function ms(x) return string.format('%d', math.ceil(x)) end
"""

# Before one API request: may it go now?
# KEYS: ratelimit, limits.  ARGV: mode (``go``; ``peek`` only reads), emission interval
# (whole µs, rounded up; ``0``: no rate limit), burst, scope (``''``: the request risks no key
# lock), probe owner, probe lease (ms).
# The GCRA counts in whole microseconds of Redis's clock (exact in a double), so grants are
# never closer than the interval by a rounding; the theoretical arrival time is stored as ms
# with three decimals (``P:ratelimit`` has always held ms).
# Returns the verdict, ms to wait for the rate limit, then the tail:
#   ``go``      send it (a rate-limit slot was taken)
#   ``probe``   send it as the key's one probe (the lease is the owner's)
#   ``rate``    wait that many ms and ask again (nothing taken)
#   ``paused``  a pause or another's probe holds it back (the tail says which; nothing taken)
#   ``peek``    nothing decided (mode ``peek``)
GATE_LIMITS: Final = (
    _LIMITS_PRELUDE
    + """
local s = read_limits(KEYS[2], ARGV[4])
if ARGV[1] ~= 'go' then
  local out = tail(s); table.insert(out, 1, 0); table.insert(out, 1, 'peek'); return out
end
local verdict, wait = 'go', 0
local probing = ARGV[4] ~= '' and s.status ~= 'ok' and s.writable
if s.throttle > 0 or s.auth > 0 or (probing and s.probe > 0) then
  verdict = 'paused'
else
  local interval = tonumber(ARGV[2])
  if interval > 0 then
    local stored = tonumber(redis.call('GET', KEYS[1]) or '')
    local tat = stored and math.floor(stored * 1000 + 0.5) or now_us
    if tat < now_us then tat = now_us end
    local allow_at = tat + interval - tonumber(ARGV[3]) * interval
    if allow_at > now_us then
      verdict, wait = 'rate', math.ceil((allow_at - now_us) / 1000)
    else
      redis.call('SET', KEYS[1], string.format('%.3f', (tat + interval) / 1000), 'PX',
                 math.ceil((tat + interval - now_us) / 1000) + 1000)
    end
  end
  if verdict == 'go' and probing then
    local lease = tonumber(ARGV[6])
    redis.call('HSET', KEYS[2], 'probe:' .. ARGV[4], ARGV[5] .. ':' .. ms(now + lease))
    s.probe, s.holder, verdict = lease, ARGV[5], 'probe'
  end
end
local out = tail(s)
table.insert(out, 1, wait)
table.insert(out, 1, verdict)
return out
"""
)

# After one API request: what its answer means for everyone.
# KEYS: limits.  ARGV: what, scope, probe owner (``''``: the request was no probe), throttle
# pause (ms), then the auth pause (ms) after 1, 2, 3 ... 401s in a row (the last repeats).
#   ``throttled``     a 429: pause everyone until now + the throttle pause (never shortened)
#   ``unauthorized``  a 401 under AK/SK: unless the key is paused already (the request went out
#                     before the pause began), pause it for the next length and end any probe
#   ``ok``            a request with this key was accepted: it works (pause and count reset)
#   ``release``       a probe that got no conclusive answer gives its lease back
# Returns the result (``tripped``: a pause began; ``extended``: a running throttle pause got
# longer; ``recovered``: the key works again; ``same``: nothing changed; ``corrupt``: the key is
# not a hash), the pause length in ms, then the tail.  Writes that change a key's standing also
# drop standings last written a day ago and not paused now (keys rotated away) and lapsed
# probe leases, so the hash stays as small as the set of keys in use.
REPORT_LIMITS: Final = (
    _LIMITS_PRELUDE
    + """
local what, scope, owner = ARGV[1], ARGV[2], ARGV[3]
local s = read_limits(KEYS[1], scope)
if not s.writable then
  local out = tail(s); table.insert(out, 1, 0); table.insert(out, 1, 'corrupt'); return out
end
local result, length = 'same', 0
if what == 'throttled' then
  length = tonumber(ARGV[4])
  if length > s.throttle then
    redis.call('HSET', KEYS[1], 'throttle', ms(now + length))
    if s.throttle > 0 then result = 'extended' else result = 'tripped' end
  end
elseif what == 'unauthorized' and scope ~= '' then
  if s.auth <= 0 then
    local failures = 1
    if s.status == 'paused' then failures = s.failures + 1 end
    length = tonumber(ARGV[4 + math.min(failures, #ARGV - 4)])
    redis.call('HSET', KEYS[1], 'auth:' .. scope,
               'n:' .. failures .. ':' .. ms(now + length) .. ':' .. ms(now))
    redis.call('HDEL', KEYS[1], 'probe:' .. scope)
    result = 'tripped'
  end
elseif what == 'ok' and scope ~= '' then
  if s.status ~= 'ok' then
    redis.call('HSET', KEYS[1], 'auth:' .. scope, 'ok:' .. ms(now))
    redis.call('HDEL', KEYS[1], 'probe:' .. scope)
    result = 'recovered'
  end
elseif what == 'release' and scope ~= '' then
  if owner ~= '' and s.holder == owner then redis.call('HDEL', KEYS[1], 'probe:' .. scope) end
end
if result == 'tripped' or result == 'recovered' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local field, value = all[i], all[i + 1]
    if string.sub(field, 1, 5) == 'auth:' and field ~= 'auth:' .. scope then
      local until_ms = tonumber(string.match(value, '^n:%d+:(%d+)')) or 0
      local since = tonumber(string.match(value, '(%d+)$')) or 0
      if until_ms < now and since < now - 86400000 then redis.call('HDEL', KEYS[1], field) end
    elseif string.sub(field, 1, 6) == 'probe:' then
      local u = tonumber(string.match(value, ':(%d+)$')) or 0
      if u < now then redis.call('HDEL', KEYS[1], field) end
    end
  end
end
local out = tail(read_limits(KEYS[1], scope))
table.insert(out, 1, math.ceil(length))
table.insert(out, 1, result)
return out
"""
)
