"""Lua scripts: the state transitions that must be atomic across broker nodes.

Each script checks and writes in one step, so two nodes (or two devices) racing
on the same challenge, token or credential cannot both win. Every script touches the
keys of one user (one hash slot, broker/keys.py) and publishes with SPUBLISH on that
user's shard channel, in the same slot: one Redis Cluster shard runs each of them
(tests/test_broker_key_slots.py runs them on a cluster node, which refuses anything
else). Times come from the
calling node (ARGV), so all nodes must keep their clocks in sync (NTP).
"""

from __future__ import annotations

# Ends every pending challenge of one user at one RP (its pending zset) but `keep`,
# with final status `st`, and publishes one ChallengesEnded event naming them
# (events.py, kind "x", packed here: only this script knows which ones ended).
# Returns their ids. The challenge hashes are named by the zset, not by KEYS: they
# carry the user's hash tag (`prefix`, keys.challenge_prefix), so they are in the
# slot of the zset, which Redis Cluster requires of every key a script touches.
_END_PENDING = """
local function end_pending(pend, now, st, keep, prefix, channel, node, rp, user)
  local ids = redis.call('ZRANGEBYSCORE', pend, '(' .. now, '+inf')
  local ended = {}
  for _, id in ipairs(ids) do
    if id ~= keep then
      local k = prefix .. id
      if redis.call('HGET', k, 'status') == 'pending' then
        redis.call('HSET', k, 'status', st, 'ended', now)
        ended[#ended + 1] = id
      end
      redis.call('ZREM', pend, id)
    end
  end
  if #ended > 0 then
    redis.call('SPUBLISH', channel, cmsgpack.pack({node, 'x', rp, user, st, ended}))
  end
  return ended
end
"""

# Adds keys of one user to that user's index (keys.user_index), with `untl` (ms), the
# time they expire by, as score; drops the members whose keys expired more than a
# minute ago, and keeps the index a minute longer than its last member (the margin:
# the node's clock that says `now` against Redis's, which expires the keys). Each write
# that makes such a key calls it in the same step, so the index never misses a key
# (broker/user_data.py erases from it).
_INDEX = """
local function index_keys(own, now, untl, ...)
  redis.call('ZREMRANGEBYSCORE', own, '-inf', '(' .. (now - 60000))
  for _, k in ipairs({...}) do redis.call('ZADD', own, untl, k) end
  if redis.call('PTTL', own) < untl + 60000 - now then redis.call('PEXPIREAT', own, untl + 60000) end
end
"""

# KEYS: the user's index; ARGV: now ms, the time the keys expire by (ms), the keys
# (the enrollment and its token: Store.create_enrollment's MULTI)
INDEX_KEYS = (
    _INDEX
    + """
index_keys(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), unpack(ARGV, 3))
return 1
"""
)

# KEYS: user-credentials hash, challenge hash, user-pending zset, push guard hash,
#       recent-pushes zset, the user's unconfirmed-credentials set, the user's index,
#       and with an Idempotency-Key its key (the challenge it made, "id n", until that
#       expires)
# ARGV: challenge id, now ms, expires ms, retention ms, channel, event, max pushes
#       since the last sign-in, max pushes per window, window ms, the target cids
#       joined by a space ('': every confirmed credential), supersede ('1': end the user's other pending
#       challenges at this RP), node, rp, user, challenge key prefix, consecutive
#       wrong numbers that lock push (0: no such limit), then the challenge hash as
#       field/value pairs
# -> {n, 0, superseded ids...}: sent to n credentials (the targets, or the confirmed
#    ones); {0, unconfirmed}: none to send to; {-4, 0, cids...}: these targets are not
#    active credentials of the user (nothing done); refused (the new one not written): {-1, muted until ms
#    (-1: until lifted), withdrawn ids...} after a fraud report, {-2, pushes,
#    withdrawn ids...} at the cap since the last sign-in (a block: the user's pending
#    challenges are withdrawn), {-5, failures, withdrawn ids...} at the limit of
#    consecutive wrong numbers (a block too), {-3, retry after ms} over the rate;
#    {-6, "id n"}: the Idempotency-Key made challenge id already (sent to n), nothing done
CREATE_CHALLENGE = (
    _END_PENDING
    + _INDEX
    + """
local idem = KEYS[8]
if idem then
  local prior = redis.call('GET', idem)
  if prior then return {-6, prior} end
end
local now = tonumber(ARGV[2])
local channel, node, rp, user, prefix = ARGV[5], ARGV[12], ARGV[13], ARGV[14], ARGV[15]
local n
if ARGV[10] ~= '' then
  local unknown = {}
  n = 0
  for cid in string.gmatch(ARGV[10], '%S+') do
    n = n + 1
    if redis.call('HEXISTS', KEYS[1], cid) == 0 then unknown[#unknown + 1] = cid end
  end
  if #unknown > 0 then return {-4, 0, unpack(unknown)} end
else
  local unconfirmed = redis.call('SCARD', KEYS[6])
  n = redis.call('HLEN', KEYS[1]) - unconfirmed
  if n <= 0 then return {0, unconfirmed} end
end
local guard = redis.call('HMGET', KEYS[4], 'since', 'muted_until', 'failures')
local muted = tonumber(guard[2] or '0')
local since = tonumber(guard[1] or '0')
local failures, failure_limit = tonumber(guard[3] or '0'), tonumber(ARGV[16])
local block, value = 0, 0
if muted < 0 or muted > now then block, value = -1, muted
elseif failure_limit > 0 and failures >= failure_limit then block, value = -5, failures
elseif since >= tonumber(ARGV[7]) then block, value = -2, since end
if block ~= 0 then
  local ended = end_pending(KEYS[3], ARGV[2], 'withdrawn', '', prefix, channel, node, rp, user)
  return {block, value, unpack(ended)}
end
local window = tonumber(ARGV[9])
local recent = '(' .. (now - window)
if redis.call('ZCOUNT', KEYS[5], recent, '+inf') >= tonumber(ARGV[8]) then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[5], recent, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return {-3, tonumber(oldest[2]) + window - now}
end
-- The first write must be one that Redis refuses when it is out of memory (HINCRBY,
-- not ZREMRANGEBYSCORE): Redis checks maxmemory only at a script's first write, and a
-- script that began with a removal would create, past maxmemory, a sign-in that no
-- device could then answer (docs/operations.md, "Redis full or not persisting").
redis.call('HINCRBY', KEYS[4], 'since', 1)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - window)
redis.call('ZADD', KEYS[5], now, ARGV[1])
redis.call('PEXPIRE', KEYS[5], window)
local superseded = {}
if ARGV[11] == '1' then
  superseded = end_pending(KEYS[3], ARGV[2], 'superseded', '', prefix, channel, node, rp, user)
end
local fields = {}
for i = 17, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
local keep_until = tonumber(ARGV[3]) + tonumber(ARGV[4])
redis.call('PEXPIREAT', KEYS[2], keep_until)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if redis.call('PTTL', KEYS[3]) < keep_until - now then
  redis.call('PEXPIREAT', KEYS[3], keep_until)
end
if idem then
  redis.call('SET', idem, ARGV[1] .. ' ' .. n, 'PXAT', ARGV[3])
  index_keys(KEYS[7], now, keep_until, KEYS[2], idem)
else
  index_keys(KEYS[7], now, keep_until, KEYS[2])
end
redis.call('SPUBLISH', ARGV[5], ARGV[6])
return {n, 0, unpack(superseded)}
"""
)

# KEYS: challenge hash, user-pending zset, credential hash, push guard hash,
#       recent-pushes zset
# ARGV: challenge id, now ms, final status, cid, decision, number, ts, ctx_hash, sig,
#       channel, event, muted-until ms for a fraud report (-1: until lifted), node,
#       rp, user, challenge key prefix, consecutive wrong numbers that lock push (0:
#       no such limit)
# -> {'ok', withdrawn ids...} if this answer was recorded (a fraud report, or the
#    wrong number that reaches the limit, withdraws the user's other pending
#    challenges at this RP in the same step); else {why}:
#    'unknown', 'expired', 'revoked', 'not_sent' (a targeted challenge answered by
#    a credential it was not aimed at, or an untargeted one by a credential the RP
#    has not confirmed) or the challenge's final status (it ended already)
RECORD_ANSWER = (
    _END_PENDING
    + """
local st = redis.call('HMGET', KEYS[1], 'status', 'expires', 'target')
if not st[1] then return {'unknown'} end
if st[1] ~= 'pending' then return {st[1]} end
if tonumber(ARGV[2]) >= tonumber(st[2]) then return {'expired'} end
local cred = redis.call('HMGET', KEYS[3], 'status', 'unconfirmed')
if cred[1] ~= 'active' then return {'revoked'} end
if st[3] then
  -- the targets, joined by a space: the answering cid must be one of them, whole
  if not string.find(' ' .. st[3] .. ' ', ' ' .. ARGV[4] .. ' ', 1, true) then return {'not_sent'} end
elseif cred[2] == '1' then
  return {'not_sent'}
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'a_cid', ARGV[4], 'a_decision', ARGV[5],
  'a_number', ARGV[6], 'a_ts', ARGV[7], 'a_ctx_hash', ARGV[8], 'a_sig', ARGV[9], 'answered', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'last_used', ARGV[2])
local locked = false
if ARGV[3] == 'approved' then
  -- a successful sign-in resets the fatigue counts (but never lifts a fraud mute).
  -- Absent reads as 0: fields are removed, not zeroed, so that the guard, which has
  -- no TTL, is gone once it holds nothing (else one key per user ever signed in)
  redis.call('HDEL', KEYS[4], 'since', 'failures')
  local muted = tonumber(redis.call('HGET', KEYS[4], 'muted_until') or '0')
  if muted > 0 and muted <= tonumber(ARGV[2]) then redis.call('HDEL', KEYS[4], 'muted_until') end
  redis.call('DEL', KEYS[5])
elseif ARGV[3] == 'number_mismatch' then
  -- a failed attempt (NIST SP 800-63B-4): counted across challenges
  local failures = redis.call('HINCRBY', KEYS[4], 'failures', 1)
  local limit = tonumber(ARGV[17] or '0')
  locked = limit > 0 and failures >= limit
end
redis.call('SPUBLISH', ARGV[10], ARGV[11])
if ARGV[3] == 'reported' then
  -- "this wasn't me": push is muted, and no other prompt of the attacker's stays live
  redis.call('HSET', KEYS[4], 'muted_until', ARGV[12])
  local channel, node, rp, user, prefix = ARGV[10], ARGV[13], ARGV[14], ARGV[15], ARGV[16]
  return {'ok', unpack(end_pending(KEYS[2], ARGV[2], 'withdrawn', ARGV[1], prefix, channel, node, rp, user))}
end
if locked then
  -- the limit reached: no other prompt may take another attempt
  return {'ok', unpack(end_pending(KEYS[2], ARGV[2], 'withdrawn', ARGV[1], ARGV[16], ARGV[10], ARGV[13],
    ARGV[14], ARGV[15]))}
end
return {'ok'}
"""
)

# KEYS: push guard hash, recent-pushes zset
# ARGV: consecutive wrong numbers that lock push (0: no such limit)
# -> the consecutive wrong numbers kept. The RP lifts what blocks push: a fraud mute,
#    the cap since the last sign-in and the lock after too many wrong numbers. A count
#    of wrong numbers below the limit is no block, and lifting the cap does not make
#    the failures less consecutive (NIST SP 800-63B-4): it stays.
LIFT_PUSH_BLOCK = """
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local limit = tonumber(ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2])
if limit > 0 and failures > 0 and failures < limit then
  redis.call('HSET', KEYS[1], 'failures', failures)
  return failures
end
return 0
"""

# KEYS: challenge hash, user-pending zset
# ARGV: challenge id, now ms, rp id, final status ('cancelled'), channel, node, user
# -> 'ok' if the challenge was pending and now has that status; else 'unknown' (none,
#    or another RP's), 'expired' (past its expiry, not yet marked) or its final status
END_CHALLENGE = """
local st = redis.call('HMGET', KEYS[1], 'status', 'expires', 'rp')
if not st[1] or st[3] ~= ARGV[3] then return 'unknown' end
if st[1] ~= 'pending' then return st[1] end
if tonumber(ARGV[2]) >= tonumber(st[2]) then return 'expired' end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'ended', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SPUBLISH', ARGV[5], cmsgpack.pack({ARGV[6], 'x', ARGV[3], ARGV[7], ARGV[4], {ARGV[1]}}))
return 'ok'
"""

# KEYS: challenge hash, user-pending zset
# ARGV: challenge id, now ms, channel, event
# -> 1 if the challenge was pending and is now expired
EXPIRE_CHALLENGE = """
local st = redis.call('HMGET', KEYS[1], 'status', 'expires')
if st[1] ~= 'pending' or tonumber(ARGV[2]) < tonumber(st[2]) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'expired')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SPUBLISH', ARGV[3], ARGV[4])
return 1
"""

# KEYS: token key, enrollment hash, credential hash, user-credentials hash, the
#       user's unconfirmed-credentials set
# ARGV: enrollment id, now ms, cid, account, channel, event, the RP's max_credentials,
#       the refusal's event, then the credential hash as field/value pairs (with
#       unconfirmed=1: it gets only challenges aimed at it until the RP confirms it)
# -> 'ok', or 'bad_token' (unknown, used, expired, bound to another enrollment), or
#    'too_many_credentials' (the user has max_credentials active ones: no credential,
#    the token still works and the enrollment stays pending; the refusal is written on
#    it, the latest one, and its event wakes the RP's long-polls on any node: RP API
#    1.11, broker/credential_cap.py).
# Whether the RP still exists is asked after (Store.complete_enrollment): the RP's
# hash is in another slot.
# The token works once: the enrollment leaves 'pending' here. Its key stays until the
# enrollment expires, and the enrollment keeps cid and pk, so a retry after a lost
# `enrolled` can be recognised (Store.complete_enrollment).
COMPLETE_ENROLLMENT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'bad_token' end
local st = redis.call('HMGET', KEYS[2], 'status', 'expires')
if st[1] ~= 'pending' or tonumber(ARGV[2]) >= tonumber(st[2]) then return 'bad_token' end
if redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[7]) then
  redis.call('HSET', KEYS[2], 'refused', 'too_many_credentials', 'refused_at', ARGV[2],
    'refused_max', ARGV[7])
  redis.call('SPUBLISH', ARGV[5], ARGV[8])
  return 'too_many_credentials'
end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('HSET', KEYS[2], 'status', 'completed', 'cid', ARGV[3], 'pk', redis.call('HGET', KEYS[3], 'pk'))
redis.call('SPUBLISH', ARGV[5], ARGV[6])
return 'ok'
"""

# The RP's enrollment quota (broker/enrollment_quota.py), in the RP's own slot; the
# enrollment's keys are in its user's slot, so they are written after this, apart.
# KEYS: the RP's pending-enrollments zset, the RP's enrollment-rate bucket (hash)
# ARGV: enrollment id, its expiry ms, now ms, max pending, enrollments per minute
# -> {n, 0}: reserved, n pending now with it; {-1, ms}: at the cap (the earliest
#    pending one expires in ms); {-2, ms}: over the rate (a token comes in ms).
#    Refused: nothing written. Expired ids are pruned first, so an enrollment nobody
#    completed or withdrew frees its place at its expiry. The bucket holds a minute's
#    worth, refilled continuously; a clock that went back refills nothing.
RESERVE_ENROLLMENT = """
local now = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[4]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {-1, math.max(1, tonumber(first[2]) - now)}
end
local rate = tonumber(ARGV[5])
local tokens = rate
local b = redis.call('HMGET', KEYS[2], 'tokens', 'at')
if b[1] then
  tokens = math.min(rate, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate / 60000)
end
if tokens < 1 then return {-2, math.ceil((1 - tokens) * 60000 / rate)} end
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'at', now)
redis.call('PEXPIRE', KEYS[2], 60000)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return {n + 1, 0}
"""

# KEYS: enrollment hash
# ARGV: rp id, now ms, channel, event
# -> 'cancelled' (withdrawn now: the event was published), 'ok' (ended before:
#    completed, expired or withdrawn), or 'unknown' (none, or another RP's).
# A pending enrollment becomes 'cancelled' (COMPLETE_ENROLLMENT then refuses its token,
# whatever the clocks of the nodes say) and its expiry is brought forward to now: it
# reads as expired; the event wakes the RP's long-polls on it. A completed one stays as
# it is: its credential is revoked apart.
CANCEL_ENROLLMENT = """
local e = redis.call('HMGET', KEYS[1], 'rp', 'status', 'expires')
if e[1] ~= ARGV[1] then return 'unknown' end
if e[2] == 'pending' then
  local expires = e[3]
  if tonumber(ARGV[2]) < tonumber(expires) then expires = ARGV[2] end
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'expires', expires)
  redis.call('SPUBLISH', ARGV[3], ARGV[4])
  return 'cancelled'
end
return 'ok'
"""

# KEYS: credential hash, user-credentials hash, the user's unconfirmed-credentials
#       set, the user's index (the revoked credential leaves the first hash for it)
# ARGV: rp id, cid, now ms, channel, event, how long the revoked credential is kept (ms)
# -> 1 if revoked now, 0 if unknown, another RP's, or revoked already
REVOKE_CREDENTIAL = (
    _INDEX
    + """
local c = redis.call('HMGET', KEYS[1], 'rp', 'status')
if c[1] ~= ARGV[1] or c[2] ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'revoked', 'revoked', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2])
index_keys(KEYS[4], tonumber(ARGV[3]), tonumber(ARGV[3]) + tonumber(ARGV[6]), KEYS[1])
redis.call('SPUBLISH', ARGV[4], ARGV[5])
return 1
"""
)

# KEYS: credential hash, the user's unconfirmed-credentials set
# ARGV: rp id, cid, channel, event
# -> 'ok' (confirmed now or before), 'unknown' (none, or another RP's) or 'revoked'
CONFIRM_CREDENTIAL = """
local c = redis.call('HMGET', KEYS[1], 'rp', 'status')
if c[1] ~= ARGV[1] then return 'unknown' end
if c[2] ~= 'active' then return 'revoked' end
if redis.call('HDEL', KEYS[1], 'unconfirmed') == 1 then
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('SPUBLISH', ARGV[3], ARGV[4])
end
return 'ok'
"""

# Both keep the last 8 recovery keys that no longer work (used, or replaced) in
# `recovery_prior` (32 bytes each), so that broker/recovery.py can tell a caller who
# proves one of them why it fails, and tell anyone else nothing.
#
# KEYS: credential hash
# ARGV: recovery public key, ts (ms) of the credential key's signature naming it, that
#       signature
# -> 'ok'; else 'unknown', 'revoked', 'not_recoverable', 'stale' (not newer than the
#    key named last: a replayed older naming must not bring back a used key) or
#    'before_recovery' (not newer than a recovery from this credential: the RP would
#    refuse it as bad_rotation, docs/protocol.md section 16, so the device must hear it
#    now rather than believe its backups recover the account)
SET_RECOVERY_KEY = """
local c = redis.call('HMGET', KEYS[1], 'status', 'recoverable', 'recovery_pk_ts', 'recovery_pk',
  'recovery_prior', 'recovered_ts')
if not c[1] then return 'unknown' end
if c[1] ~= 'active' then return 'revoked' end
if c[2] ~= '1' then return 'not_recoverable' end
local ts = tonumber(ARGV[2])
if ts <= tonumber(c[3] or '0') then return 'stale' end
if ts <= tonumber(c[6] or '0') then return 'before_recovery' end
if c[4] then
  redis.call('HSET', KEYS[1], 'recovery_prior', string.sub((c[5] or '') .. c[4], -256))
end
redis.call('HSET', KEYS[1], 'recovery_pk', ARGV[1], 'recovery_pk_ts', ARGV[2], 'recovery_pk_sig', ARGV[3])
return 'ok'
"""

# KEYS: old credential hash, new credential hash, user-credentials hash
# ARGV: the recovery public key that signed, new cid, account label, the recovery's ts,
#       the RP's max_credentials, then the new credential hash as field/value pairs
# -> 'ok'; else 'unknown', 'revoked', 'not_recoverable', 'wrong_key' (the old
#    credential's recovery key changed or was used) or 'too_many_credentials' (the
#    user has max_credentials active ones besides OLD; the key is not used up). A
#    recovery key works once: it is taken off the old credential in the same step.
#    OLD does not count: a recovery replaces it (broker/credential_cap.py).
RECOVER_CREDENTIAL = """
local c = redis.call('HMGET', KEYS[1], 'status', 'recovery_pk')
if not c[1] then return 'unknown' end
if c[1] ~= 'active' then return 'revoked' end
if not c[2] then return 'not_recoverable' end
if c[2] ~= ARGV[1] then return 'wrong_key' end
if redis.call('HLEN', KEYS[3]) - 1 >= tonumber(ARGV[5]) then return 'too_many_credentials' end
local prior = redis.call('HGET', KEYS[1], 'recovery_prior') or ''
redis.call('HDEL', KEYS[1], 'recovery_pk', 'recovery_pk_sig')
redis.call('HSET', KEYS[1], 'recovery_used', '1', 'recovery_prior', string.sub(prior .. c[2], -256))
-- the latest recovery ts from OLD: its next rotation must be newer (SET_RECOVERY_KEY)
if tonumber(ARGV[4]) > tonumber(redis.call('HGET', KEYS[1], 'recovered_ts') or '0') then
  redis.call('HSET', KEYS[1], 'recovered_ts', ARGV[4])
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 'ok'
"""

# -- recovery notices ("was this you?", broker/notices.py) ------------------------

# KEYS: new credential hash, notice hash, the old credential's notice zset, old
#       credential hash
# ARGV: notice id, old cid, created ms, ttl ms, channel, event, then the notice hash
#       as field/value pairs
# -> 1 if the notice was made; 0 if NEW is not an active credential recovered from
#    OLD (the recovery in the same transaction was refused)
CREATE_NOTICE = """
local c = redis.call('HMGET', KEYS[1], 'status', 'recovered_from')
if c[1] ~= 'active' or c[2] ~= ARGV[2] then return 0 end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], 'notices', '1')
redis.call('SPUBLISH', ARGV[5], ARGV[6])
return 1
"""

# KEYS: notice hash, the old credential's notice zset, old credential hash, new
#       credential hash, user-credentials hash, push guard hash, user-pending zset,
#       the user's index
# ARGV: notice id, old cid, new cid, decision, now ms, muted-until ms (-1: until
#       lifted), channel, answered event, revoked event, node, rp, user, challenge
#       key prefix, how long a revoked credential is kept (ms)
# -> {'ok', withdrawn ids...} (a disown withdraws the user's pending challenges, as a
#    fraud report does); else (nothing changed but dropping a notice that was moot)
#    'unknown' (no such notice for OLD: never made, answered already, expired),
#    'old_revoked', 'new_revoked' (NEW was removed meanwhile: the notice is dropped)
ANSWER_NOTICE = (
    _END_PENDING
    + _INDEX
    + """
local n = redis.call('HMGET', KEYS[1], 'old', 'new')
if n[1] ~= ARGV[2] or n[2] ~= ARGV[3] then return 'unknown' end
if redis.call('HGET', KEYS[3], 'status') ~= 'active' then return 'old_revoked' end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('HDEL', KEYS[3], 'notices') end
if redis.call('HGET', KEYS[4], 'status') ~= 'active' then return 'new_revoked' end
redis.call('SPUBLISH', ARGV[7], ARGV[8])
if ARGV[4] == 'disown' then
  -- as lua.REVOKE_CREDENTIAL does, and the mute as lua.RECORD_ANSWER sets it for a
  -- fraud report
  redis.call('HSET', KEYS[4], 'status', 'revoked', 'revoked', ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[14])
  redis.call('HDEL', KEYS[5], ARGV[3])
  index_keys(KEYS[8], tonumber(ARGV[5]), tonumber(ARGV[5]) + tonumber(ARGV[14]), KEYS[4])
  redis.call('HSET', KEYS[6], 'muted_until', ARGV[6])
  redis.call('SPUBLISH', ARGV[7], ARGV[9])
  local channel, node, rp, user, prefix = ARGV[7], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
  return {'ok', unpack(end_pending(KEYS[7], ARGV[5], 'withdrawn', '', prefix, channel, node, rp, user))}
end
return {'ok'}
"""
)

# KEYS: the old credential's notice zset, old credential hash, then the hashes of
#       the notices to drop
# ARGV: the ids of the notices to drop, oldest-allowed creation ms
# -> the number of notices left
PRUNE_NOTICES = """
for i = 1, #ARGV - 1 do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('DEL', KEYS[i + 2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[#ARGV])
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then redis.call('HDEL', KEYS[2], 'notices') end
return left
"""

# -- erasure (broker/user_data.py) ----------------------------------------------------

# Deletes every key of one user at one RP in one step, found from the user's own
# records, never by looking through other keys: the index (keys.user_index) and what
# it names, the active credentials (the user-credentials hash), the recovery notices
# of every credential (their zsets name them), and the per-user keys. The keys named
# by the records carry the user's tag (`prefix`, "pa:{T}:"), so they are in the slot
# of KEYS, as _END_PENDING's challenges are.
# KEYS: the user's index, user-credentials hash, unconfirmed set, pending zset, push
#       guard hash, recent-pushes zset
# ARGV: now ms, prefix, force ('1': delete even what is still live)
# -> {'live'} (nothing deleted) when something is still live without force: an active
#    credential, a pending challenge or a pending enrollment, made since the caller
#    ended what it found (it ends those, then calls again); else {'ok', keys deleted,
#    the credential ids whose keys went (their Web Push keys are in other slots)...}
ERASE_USER = """
local now, prefix = tonumber(ARGV[1]), ARGV[2]
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local function kind_of(k)
  if string.sub(k, 1, #prefix) ~= prefix then return nil, nil end
  local rest = string.sub(k, #prefix + 1)
  local colon = string.find(rest, ':', 1, true)
  if not colon then return nil, nil end
  return string.sub(rest, 1, colon - 1), string.sub(rest, colon + 1)
end
if ARGV[3] ~= '1' then
  if redis.call('HLEN', KEYS[2]) > 0 then return {'live'} end
  if redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf') > 0 then return {'live'} end
  for _, k in ipairs(members) do
    if kind_of(k) == 'enr' then
      local e = redis.call('HMGET', k, 'status', 'expires')
      if e[1] == 'pending' and tonumber(e[2]) > now then return {'live'} end
    end
  end
end
local victims, seen, cids = {}, {}, {}
local function add(k)
  if not seen[k] then seen[k] = true; victims[#victims + 1] = k end
end
local function add_credential(cid)
  if seen['cid:' .. cid] then return end
  seen['cid:' .. cid] = true
  cids[#cids + 1] = cid
  add(prefix .. 'cred:' .. cid)
  local notices = prefix .. 'rns:' .. cid
  for _, nid in ipairs(redis.call('ZRANGE', notices, 0, -1)) do add(prefix .. 'rn:' .. nid) end
  add(notices)
end
for _, cid in ipairs(redis.call('HKEYS', KEYS[2])) do add_credential(cid) end
for _, k in ipairs(members) do
  local kind, id = kind_of(k)
  if kind == 'cred' then add_credential(id) else add(k) end
end
for i = 1, #KEYS do add(KEYS[i]) end
local deleted = 0
for _, k in ipairs(victims) do deleted = deleted + redis.call('DEL', k) end
return {'ok', deleted, unpack(cids)}
"""
