"""Lua scripts: the state transitions that must be atomic across broker nodes.

Each script checks and writes in one step, so two nodes (or two devices) racing
on the same challenge, token or credential cannot both win. Times come from the
calling node (ARGV), so all nodes must keep their clocks in sync (NTP).
"""

from __future__ import annotations

# KEYS: user-credentials hash, challenge hash, user-pending zset
# ARGV: challenge id, now ms, expires ms, retention ms, channel, event, then the
#       challenge hash as field/value pairs
# -> number of active credentials (0: nothing was written)
CREATE_CHALLENGE = """
local n = redis.call('HLEN', KEYS[1])
if n == 0 then return 0 end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
local keep_until = tonumber(ARGV[3]) + tonumber(ARGV[4])
redis.call('PEXPIREAT', KEYS[2], keep_until)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if redis.call('PTTL', KEYS[3]) < keep_until - tonumber(ARGV[2]) then
  redis.call('PEXPIREAT', KEYS[3], keep_until)
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return n
"""

# KEYS: challenge hash, user-pending zset, credential hash
# ARGV: challenge id, now ms, final status, cid, decision, number, ts, ctx_hash, sig,
#       channel, event
# -> 'ok' if this answer was recorded; else why not: 'unknown', 'expired',
#    'revoked' or the challenge's final status (it was answered already)
RECORD_ANSWER = """
local st = redis.call('HMGET', KEYS[1], 'status', 'expires')
if not st[1] then return 'unknown' end
if st[1] ~= 'pending' then return st[1] end
if tonumber(ARGV[2]) >= tonumber(st[2]) then return 'expired' end
if redis.call('HGET', KEYS[3], 'status') ~= 'active' then return 'revoked' end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'a_cid', ARGV[4], 'a_decision', ARGV[5],
  'a_number', ARGV[6], 'a_ts', ARGV[7], 'a_ctx_hash', ARGV[8], 'a_sig', ARGV[9], 'answered', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'last_used', ARGV[2])
redis.call('PUBLISH', ARGV[10], ARGV[11])
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
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

# KEYS: token key, enrollment hash, credential hash, user-credentials hash
# ARGV: enrollment id, now ms, cid, account, channel, event, then the credential
#       hash as field/value pairs
# -> 'ok', or 'bad_token' (unknown, used, expired or bound to another enrollment)
COMPLETE_ENROLLMENT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'bad_token' end
local st = redis.call('HMGET', KEYS[2], 'status', 'expires')
if st[1] ~= 'pending' or tonumber(ARGV[2]) >= tonumber(st[2]) then return 'bad_token' end
redis.call('DEL', KEYS[1])
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], 'status', 'completed', 'cid', ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 'ok'
"""

# KEYS: credential hash, user-credentials hash
# ARGV: rp id, cid, now ms, channel, event
# -> 1 if revoked now, 0 if unknown, another RP's, or revoked already
REVOKE_CREDENTIAL = """
local c = redis.call('HMGET', KEYS[1], 'rp', 'status')
if c[1] ~= ARGV[1] or c[2] ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'revoked', 'revoked', ARGV[3])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS: credential hash
# ARGV: recovery public key
# -> 'ok'; else 'unknown', 'revoked', 'not_recoverable' or 'exists' (a key is named already)
SET_RECOVERY_KEY = """
local c = redis.call('HMGET', KEYS[1], 'status', 'recoverable', 'recovery_pk')
if not c[1] then return 'unknown' end
if c[1] ~= 'active' then return 'revoked' end
if c[2] ~= '1' then return 'not_recoverable' end
if c[3] then return 'exists' end
redis.call('HSET', KEYS[1], 'recovery_pk', ARGV[1])
return 'ok'
"""

# KEYS: old credential hash, new credential hash, user-credentials hash
# ARGV: the recovery public key that signed, new cid, account label, then the new
#       credential hash as field/value pairs
# -> 'ok'; else 'unknown', 'revoked' or 'wrong_key' (the old credential's recovery key changed)
RECOVER_CREDENTIAL = """
local c = redis.call('HMGET', KEYS[1], 'status', 'recovery_pk')
if not c[1] then return 'unknown' end
if c[1] ~= 'active' then return 'revoked' end
if c[2] ~= ARGV[1] then return 'wrong_key' end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 'ok'
"""
