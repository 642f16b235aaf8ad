"""Every Redis key name and every Lua script of the poller, in one place.

Data model (``P`` is the key prefix, ``M`` a job's member name ``{project_id}:{job_id}``):

=============================  =======  ===============================================
key                            type     what
=============================  =======  ===============================================
``P:jobs``                     LIST     intake queue; producers LPUSH, replicas take from the right
``P:jobs:dead``                LIST     rejected intake messages, JSON ``{raw, reason, at}``
``P:jobs:inflight:{replica}``  LIST     messages a replica has taken but not yet admitted
``P:replicas``                 ZSET     replica -> heartbeat deadline (epoch s)
``P:schedule``                 ZSET     M -> when the next poll is due, or the lease deadline
``P:job:M``                    HASH     one job's state (fields below)
``P:events``                   STREAM   every event, ``MAXLEN ~``
``P:events:{job_id}``          STREAM   one job's events; expires ``retention`` after it ends
``P:ratelimit``                STRING   GCRA theoretical arrival time for the global rate limit
=============================  =======  ===============================================

Job hash fields: ``project job instance meta`` (identity), ``state`` (``tracking``,
``finished``, or ``quarantined`` when it could not be decoded),
``snap`` (last complete snapshot, compact JSON), ``interval attempts nf_since
taken_at last_poll_at last_error`` (policy), ``seq`` (next event number), ``epoch token owner
lease_until`` (lease, ``token`` empty when nobody holds it), ``due`` (when the
poll was due, for lag), ``commit_id`` (the last applied
commit, for idempotent retries), ``finished_at`` and ``outcome``.

The scripts build job-hash names from the prefix they are given; in Redis Cluster use a
hash-tagged prefix such as ``{poller}`` so every key lives in one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from poller.ids import is_valid_id

STATE_TRACKING: Final = "tracking"
STATE_FINISHED: Final = "finished"


def job_member(project_id: str, job_id: str) -> str:
    """The schedule member naming one job; ``:`` cannot occur in either ID."""
    if not (is_valid_id(project_id) and is_valid_id(job_id)):
        raise ValueError("invalid project or job ID")
    return f"{project_id}:{job_id}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "poller"

    @property
    def intake(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:jobs:dead"

    def inflight(self, replica: str) -> str:
        return f"{self.prefix}:jobs:inflight:{replica}"

    @property
    def inflight_prefix(self) -> str:
        return f"{self.prefix}:jobs:inflight:"

    @property
    def replicas(self) -> str:
        return f"{self.prefix}:replicas"

    @property
    def schedule(self) -> str:
        return f"{self.prefix}:schedule"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    def job(self, member: str) -> str:
        return f"{self.prefix}:job:{member}"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def job_events(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    @property
    def ratelimit(self) -> str:
        return f"{self.prefix}:ratelimit"


# Move up to ARGV[1] messages from the intake queue to this replica's in-flight list.
# KEYS: intake, inflight.  Returns how many moved.
MOVE_TO_INFLIGHT: Final = """
local moved = 0
for _ = 1, tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') then break end
  moved = moved + 1
end
return moved
"""

# Admit one valid message: start tracking unless already tracked or recently finished.
# KEYS: schedule, job hash, job stream, inflight.
# ARGV: raw, member, project, job, instance, meta, force ('1'/'0'), now.
# Returns 'admitted', 'tracked' or 'finished'; the message leaves the in-flight list either way.
ADMIT: Final = """
local state = redis.call('HGET', KEYS[2], 'state')
local result
if state == 'tracking' then
  result = 'tracked'
elseif state == 'finished' and ARGV[7] ~= '1' then
  result = 'finished'
else
  local seq = tostring(tonumber(redis.call('HGET', KEYS[2], 'seq') or '1') or 1)
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'project', ARGV[3], 'job', ARGV[4], 'instance', ARGV[5],
    'meta', ARGV[6], 'state', 'tracking', 'snap', '', 'interval', '0', 'attempts', '0',
    'nf_since', '', 'taken_at', ARGV[8], 'seq', seq, 'epoch', '0', 'token', '', 'owner', '',
    'lease_until', '', 'last_error', '', 'last_poll_at', '', 'commit_id', '', 'due', ARGV[8])
  redis.call('PERSIST', KEYS[3])
  redis.call('ZADD', KEYS[1], ARGV[8], ARGV[2])
  result = 'admitted'
end
redis.call('LREM', KEYS[4], 1, ARGV[1])
return result
"""

# Park an invalid message in the dead-letter list.  KEYS: dead, inflight.  ARGV: raw, record.
# Only a message still in flight is parked, so a retry after a lost reply adds no second record.
DEAD_LETTER: Final = """
if redis.call('LREM', KEYS[2], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[2])
return 1
"""

# Take a job whose state cannot be decoded out of the schedule, and say so in the dead-letter
# list (one bad hash must not stop the replicas).  KEYS: schedule, job hash, dead.
# ARGV: member, token, record, retention seconds.  Returns 1, or 0 when the lease is no
# longer the caller's.  The hash is kept for the retention period for inspection.
QUARANTINE: Final = """
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'quarantined', 'token', '', 'owner', '')
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('LPUSH', KEYS[3], ARGV[3])
return 1
"""

# Hand back the in-flight lists of replicas whose heartbeat lapsed.
# KEYS: replicas, intake.  ARGV: now, inflight key prefix.  Returns messages handed back.
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

# Claim up to ARGV[3] due jobs.  KEYS: schedule.  ARGV: now, lease deadline, limit, owner, job
# key prefix.  Each claim bumps the job's epoch (the fencing token) and pushes its schedule
# score to the lease deadline, so a crashed owner's jobs fall due again by themselves.
# Returns a flat list: the earliest score left in the schedule ('' if none), then member,
# token, field count, HGETALL fields… per claimed job.
CLAIM_DUE: Final = """
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, member in ipairs(members) do
  local key = ARGV[5] .. member
  if redis.call('HGET', key, 'state') ~= 'tracking' then
    redis.call('ZREM', KEYS[1], member)
  else
    -- not HINCRBY: a garbled epoch must not make every claim of every replica fail
    local token = tostring((tonumber(redis.call('HGET', key, 'epoch') or '0') or 0) + 1)
    redis.call('HSET', key, 'epoch', token)
    redis.call('HSET', key, 'token', token, 'owner', ARGV[4], 'lease_until', ARGV[2])
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
    local fields = redis.call('HGETALL', key)
    table.insert(out, member)
    table.insert(out, token)
    table.insert(out, #fields)
    for _, v in ipairs(fields) do table.insert(out, v) end
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
table.insert(out, 1, first[2] or '')
return out
"""

# Extend leases still held.  KEYS: schedule.  ARGV: deadline, job key prefix, then
# member, token pairs.  Returns 1/0 per pair (0: the lease is lost, stop working on it).
RENEW_LEASES: Final = """
local out = {}
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. ARGV[i]
  if redis.call('HGET', key, 'token') == ARGV[i + 1] and ARGV[i + 1] ~= '' then
    redis.call('HSET', key, 'lease_until', ARGV[1])
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
    table.insert(out, 1)
  else
    table.insert(out, 0)
  end
end
return out
"""

# Give a lease back unused: the job is due again at ARGV[3].
# KEYS: schedule, job hash.  ARGV: member, token, due.
RELEASE: Final = """
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] or ARGV[2] == '' then return 0 end
redis.call('HSET', KEYS[2], 'token', '', 'owner', '', 'lease_until', '')
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""

# The fenced, idempotent commit of one poll.
# KEYS: schedule, job hash, global stream, job stream.
# ARGV: member, token, expected seq, commit id, now, due ('' retires), retention seconds,
#       maxlen, hash pair count N, N field/value pairs, event count E, then per event:
#       field count F and F field/value pairs.
# Returns 'ok', 'duplicate' (this commit id was applied already: a retry after a lost reply),
# 'fenced' (the lease or seq moved on: publish nothing) or 'gone' (no such tracked job).
COMMIT: Final = """
if redis.call('HGET', KEYS[2], 'commit_id') == ARGV[4] then return 'duplicate' end
if redis.call('HGET', KEYS[2], 'state') ~= 'tracking' then return 'gone' end
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2]
   or redis.call('HGET', KEYS[2], 'seq') ~= ARGV[3] then
  return 'fenced'
end
local i = 9
local npairs = tonumber(ARGV[i])
local pairs_at = i + 1
i = i + 1 + 2 * npairs
local nevents = tonumber(ARGV[i])
i = i + 1
for _ = 1, nevents do
  local nfields = tonumber(ARGV[i])
  local fields = {}
  for j = i + 1, i + 2 * nfields do table.insert(fields, ARGV[j]) end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', unpack(fields))
  redis.call('XADD', KEYS[4], '*', unpack(fields))
  i = i + 1 + 2 * nfields
end
for j = pairs_at, pairs_at + 2 * npairs - 1, 2 do
  redis.call('HSET', KEYS[2], ARGV[j], ARGV[j + 1])
end
redis.call('HSET', KEYS[2], 'seq', tostring(tonumber(ARGV[3]) + nevents), 'token', '',
  'owner', '', 'lease_until', '', 'commit_id', ARGV[4], 'last_poll_at', ARGV[5])
if ARGV[6] == '' then
  redis.call('HSET', KEYS[2], 'state', 'finished', 'finished_at', ARGV[5])
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  redis.call('EXPIRE', KEYS[4], ARGV[7])
else
  redis.call('ZADD', KEYS[1], ARGV[6], ARGV[1])
end
return 'ok'
"""

# Global rate limit (GCRA) on the server's clock, shared by every replica.
# KEYS: ratelimit.  ARGV: emission interval (ms), burst.  Returns ms to wait (0: go).
ACQUIRE_RATE: Final = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval - tonumber(ARGV[2]) * interval
if allow_at > now then return math.ceil(allow_at - now) end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(tat + interval - now) + 1000)
return 0
"""
