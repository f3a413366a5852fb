"""What the Redis store writes: key names, message encoding and the Lua scripts.

Every key of a conversation carries the hash tag `{<conversation_id>}`, so in
Redis Cluster they all live in one slot: the scripts below touch several of
them atomically, and a conversation never spans nodes.

    <prefix>:{<cid>}:conv                 hash    created_at, owner (absent: "")
    <prefix>:{<cid>}:msgs                 list    messages, JSON arrays, oldest first
    <prefix>:{<cid>}:ids                  set     message ids (duplicates are refused)
    <prefix>:{<cid>}:latest               string  id of the reply appended to first most recently
    <prefix>:{<cid>}:reply:<rid>:events   stream  entry `0-<seq+1>` holds frame `f`;
                                                  entry `1-0` marks the end
    <prefix>:{<cid>}:reply:<rid>:ctl      hash    last (seq), finished, cancel, reader

Stream ids are the seqs themselves, so `XREAD`/`XRANGE` from `0-<after_seq+1>`
returns exactly the events after `after_seq`, and the end marker, whose id is
above every event's, wakes a blocked `XREAD` when a reply finishes without a
final event. The `ctl` hash exists exactly as long as the reply is kept: it is
what `exists` means. Both reply keys get the same expiry at every append: the
abandonment timeout while the reply runs, `event_retention` once it finished.
With a conversation TTL, every write to the conversation refreshes the expiry
of its conversation keys (`conv`, `msgs`, `ids`, `latest`).

Duplicate message ids are detected per conversation: a global index would
be a key outside the conversation's slot.

The guards (rate limits, stream slots, idempotency keys) are one key each, in
the slot of the client they count (`guard_key`):

    <prefix>:rate:{<key>}                 string  requests in the window (expires with it)
    <prefix>:slots:{<key>}                zset    holder -> lease end (ms since the epoch)
    <prefix>:idem:{<key>}                 string  "<fingerprint> <ref>" (expires with the TTL)
"""

from __future__ import annotations

from typing import Any

import orjson

from chatbot_sse.domain import Message, MessageStatus, Role

__all__ = [
    "ACQUIRE_SLOT",
    "APPEND_EVENTS",
    "APPEND_MESSAGE",
    "BEGIN_TURN",
    "CREATE_CONVERSATION",
    "DELETE_CONVERSATION",
    "FINISH_TURN",
    "HISTORY_PAGE",
    "HIT",
    "REMEMBER",
    "SET_CONTROL",
    "Keys",
    "decode_message",
    "encode_message",
    "guard_key",
    "parse_entries",
    "stream_id",
]

END_ID = b"1-0"


class Keys:
    """The key names of one conversation."""

    __slots__ = ("base", "conv", "ids", "latest", "msgs")

    def __init__(self, prefix: str, conversation_id: str) -> None:
        self.base = f"{prefix}:{{{conversation_id}}}"
        self.conv = f"{self.base}:conv"
        self.msgs = f"{self.base}:msgs"
        self.ids = f"{self.base}:ids"
        self.latest = f"{self.base}:latest"

    def turn(self) -> list[str]:
        """The keys of `APPEND_MESSAGE`, which every turn script starts with."""
        return [self.conv, self.msgs, self.ids, self.latest]

    def events(self, reply_id: str) -> str:
        return f"{self.base}:reply:{reply_id}:events"

    def control(self, reply_id: str) -> str:
        return f"{self.base}:reply:{reply_id}:ctl"


def guard_key(prefix: str, kind: str, key: str) -> str:
    """The key of one guard (`rate`, `slots`, `idem`) of one client."""
    return f"{prefix}:{kind}:{{{key}}}"


def stream_id(seq: int) -> str:
    """The stream id of event `seq`; `stream_id(-1)` is `0-0`, below every event."""
    return f"0-{max(seq, -1) + 1}"


def parse_entries(entries: Any) -> tuple[list[tuple[int, bytes]], bool]:
    """`XRANGE`/`XREAD` entries as (seq, frame) pairs, and whether the end marker was among them."""
    events: list[tuple[int, bytes]] = []
    finished = False
    for entry_id, fields in entries:
        if entry_id == END_ID:
            finished = True
        else:
            events.append((int(entry_id[2:]) - 1, fields[b"f"]))
    return events, finished


def encode_message(message: Message) -> bytes:
    """A compact JSON array; the conversation id is in the key. ValueError/TypeError as SQLite."""
    message.content.encode()  # UnicodeEncodeError (a ValueError) on lone surrogates
    return orjson.dumps(
        [
            message.id,
            message.role.value,
            message.content,
            message.created_at,
            message.status.value,
            message.meta,
        ]
    )


def decode_message(conversation_id: str, raw: bytes | str) -> Message:
    id_, role, content, created_at, status, meta = orjson.loads(raw)
    return Message(
        id_, conversation_id, Role(role), content, created_at, MessageStatus(status), meta
    )


CREATE_CONVERSATION = """
-- KEYS: conv. ARGV: created_at, conversation ttl in ms (0: none), owner.
-- 1 if created, 0 if it existed.
if redis.call('HSETNX', KEYS[1], 'created_at', ARGV[1]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[3]) end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

APPEND_MESSAGE = """
-- KEYS: conv, msgs, ids, latest. ARGV: message id, encoded message, conversation ttl in ms.
-- 0: appended; 1: no such conversation; 2: duplicate message id.
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 2 end
redis.call('RPUSH', KEYS[2], ARGV[2])
if tonumber(ARGV[3]) > 0 then
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return 0
"""

APPEND_EVENTS = """
-- KEYS: events, ctl, latest. ARGV: reply id, finished (0|1), in-flight ttl ms, retention ms,
-- conversation ttl ms (0: none), then seq, frame, seq, frame...
local last = redis.call('HGET', KEYS[2], 'last')
if not last then
  last = -1
  redis.call('SET', KEYS[3], ARGV[1])
  if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
elseif redis.call('HEXISTS', KEYS[2], 'finished') == 1 then
  return 0
else
  last = tonumber(last)
end
for i = 6, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], string.format('0-%d', seq + 1), 'f', ARGV[i + 1])
    last = seq
  end
end
local now = redis.call('TIME')  -- an append is the writer's sign of life too
redis.call('HSET', KEYS[2], 'last', string.format('%d', last),
  'writer', string.format('%d.%06d', now[1], now[2]))
local ttl = ARGV[3]
if ARGV[2] == '1' then
  redis.call('XADD', KEYS[1], '1-0', 'end', '1')
  redis.call('HSET', KEYS[2], 'finished', '1')
  ttl = ARGV[4]
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""

# A turn's two writes, each one script (one round trip, atomic on the server) made of the
# scripts above as local functions: KEYS and ARGV are their parameters.
_TURN_FUNCTIONS = f"""
local function create(KEYS, ARGV) {CREATE_CONVERSATION} end
local function append_message(KEYS, ARGV) {APPEND_MESSAGE} end
local function append_events(KEYS, ARGV) {APPEND_EVENTS} end
"""

BEGIN_TURN = (
    _TURN_FUNCTIONS
    + """
-- KEYS: conv, msgs, ids, latest, events, ctl. ARGV: create (1|0), created_at, conversation
-- ttl ms, owner, check the owner (1|0), message id, encoded message, reply id, in-flight ttl
-- ms, retention ms, history limit. Returns {0, the newest `limit` messages unless created},
-- or {1}: no such conversation (or another owner's), {2}: duplicate message id, {3}: exists,
-- {4, reply id}: the conversation's latest reply is unfinished (its control record, kept
-- while in flight, has no `finished`; same hash tag as the conversation's keys).
if ARGV[1] == '1' then
  if create({KEYS[1]}, {ARGV[2], ARGV[3], ARGV[4]}) == 0 then return {3} end
else
  local found = redis.call('HMGET', KEYS[1], 'created_at', 'owner')
  if not found[1] or (ARGV[5] == '1' and (found[2] or '') ~= ARGV[4]) then return {1} end
  local latest = redis.call('GET', KEYS[4])
  if latest and latest ~= ARGV[8] then
    local ctl = string.sub(KEYS[1], 1, -5) .. 'reply:' .. latest .. ':ctl'
    if redis.call('EXISTS', ctl) == 1 and redis.call('HEXISTS', ctl, 'finished') == 0 then
      return {4, latest}
    end
  end
end
local appended = append_message({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, {ARGV[6], ARGV[7], ARGV[3]})
if appended ~= 0 then return {appended} end
append_events({KEYS[5], KEYS[6], KEYS[4]}, {ARGV[8], '0', ARGV[9], ARGV[10], ARGV[3]})
local out = {0}
local limit = tonumber(ARGV[11])
if ARGV[1] == '0' and limit > 0 then
  for _, message in ipairs(redis.call('LRANGE', KEYS[2], -limit, -1)) do
    out[#out + 1] = message
  end
end
return out
"""
)

FINISH_TURN = (
    _TURN_FUNCTIONS
    + """
-- KEYS: conv, msgs, ids, latest, events, ctl. ARGV: message id, encoded message, conversation
-- ttl ms, reply id, in-flight ttl ms, retention ms, then seq, frame, seq, frame...
-- The reply, then its last events with the log marked finished: both, or (the message
-- refused: 1 no such conversation, 2 duplicate id) neither. 0 when stored.
local appended = append_message({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, {ARGV[1], ARGV[2], ARGV[3]})
if appended ~= 0 then return appended end
local events = {ARGV[4], '1', ARGV[5], ARGV[6], ARGV[3]}
for i = 7, #ARGV do events[#events + 1] = ARGV[i] end
append_events({KEYS[5], KEYS[6], KEYS[4]}, events)
return 0
"""
)

HISTORY_PAGE = """
-- KEYS: msgs. ARGV: limit (>= 1), before (-1: none). {start, the messages [start, end)}:
-- the count and the range read at one instant.
local total = redis.call('LLEN', KEYS[1])
local stop = tonumber(ARGV[2])
if stop < 0 or stop > total then stop = total end
local start = math.max(0, stop - tonumber(ARGV[1]))
local out = {start}
if stop > start then
  for _, message in ipairs(redis.call('LRANGE', KEYS[1], start, stop - 1)) do
    out[#out + 1] = message
  end
end
return out
"""

DELETE_CONVERSATION = """
-- KEYS: conv, msgs, ids, latest. 1 if deleted, 0 if there was no such conversation.
-- The logs of its replies go too: every message id may name one (a reply's id is its
-- message's), and the latest reply has no message yet while it runs. Their keys share the
-- conversation's hash tag (its slot), so they are named here from the conversation's base.
-- UNLINK, not DEL: a long conversation's lists are freed in Redis's background thread, not
-- while every other client of this Redis waits.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local base = string.sub(KEYS[1], 1, -5) .. 'reply:'
local ids = redis.call('SMEMBERS', KEYS[3])
local latest = redis.call('GET', KEYS[4])
if latest then ids[#ids + 1] = latest end
for _, id in ipairs(ids) do
  redis.call('UNLINK', base .. id .. ':events', base .. id .. ':ctl')
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""

SET_CONTROL = """
-- KEYS: ctl. ARGV: field, value. Only for a reply that is kept: never resurrects one.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

HIT = """
-- KEYS: the window's counter. ARGV: window ms. Returns {count, ms until the window ends}.
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

ACQUIRE_SLOT = """
-- KEYS: slots. ARGV: holder, limit, now ms, lease ms. 1 if the holder has a slot now, else 0.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

REMEMBER = """
-- KEYS: record. ARGV: value, ttl ms. The value kept before, or nil if this call stored it.
local kept = redis.call('GET', KEYS[1])
if kept then return kept end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
