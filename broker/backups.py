"""The encrypted-backup store: devices keep their sealed backup here, ciphertext only.

A blob is named by an Ed25519 public key that the device derives from the user's
passphrase and backup code (device_agent/backup_keys.py); every read, write and
delete is signed by that key over the time and the body's hash (signed_requests.py),
so only holders of both secrets can read, overwrite or delete it. The broker never
sees either secret or any key that decrypts the blob. No RP API key is involved: the
blob belongs to a person. Ids are kept out of logs and error messages (logs.PathFilter):
they name a person's backup.

    PUT    /v1/backups/{id}   body: the wrapped backup (application/octet-stream); 204
    GET    /v1/backups/{id}   200 with the blob, or 404
    DELETE /v1/backups/{id}   204, or 404
    headers: X-Pushauth-Time (Unix ms), X-Pushauth-Signature (base64url Ed25519)
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from protocol import b64, signing

from . import keys
from .bounds import BackupQuota
from .context import node_of
from .http_guard import read_body
from .limits import LIMITER, address_key
from .problems import ApiError
from .signed_requests import check_signed, parse_ts
from .store import now_ms

MAX_BLOB = 256 * 1024  # a backup of hundreds of accounts is a few dozen KiB


QUOTA = web.AppKey("backup_quota", BackupQuota)

# KEYS: blob, index zset, sizes hash, total bytes, this address's count for today
# ARGV: id, body, ttl ms, now ms, max bytes, max blobs, new per address per day (0: no
#       limits), seconds to the end of the day
# -> {'ok'} | {'quota', seconds} | {'full', what}
_PUT = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  local size = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('DECRBY', KEYS[4], size)
end
local old = redis.call('HGET', KEYS[3], ARGV[1])
local size = string.len(ARGV[2])
if not old then
  local per_day = tonumber(ARGV[7])
  if per_day > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= per_day then
    return {'quota', ARGV[8]}
  end
  if tonumber(ARGV[6]) > 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then
    return {'full', 'blobs'}
  end
end
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
if tonumber(ARGV[5]) > 0 and total - tonumber(old or '0') + size > tonumber(ARGV[5]) then
  return {'full', 'bytes'}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], size)
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[1])
redis.call('INCRBY', KEYS[4], size - tonumber(old or '0'))
if not old then
  redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], 86400)
end
return {'ok'}
"""
# KEYS: blob, index zset, sizes hash, total bytes; ARGV: id -> 1 if it existed
_DELETE = """
local size = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DECRBY', KEYS[4], size)
return redis.call('DEL', KEYS[1])
"""
TIME_HEADER = "X-Pushauth-Time"
SIGNATURE_HEADER = "X-Pushauth-Signature"


def _blob_key(request: web.Request) -> tuple[str, bytes]:
    blob_id = request.match_info["id"]
    try:
        pk = b64.decode(blob_id)
    except ValueError:
        pk = b""
    if len(pk) != 32:
        raise ApiError(400, "invalid_request", "a backup id is a 32-byte public key in base64url")
    return blob_id, pk


async def _authorized(request: web.Request, op: str, body: bytes) -> str:
    blob_id, pk = _blob_key(request)
    ts = parse_ts(request.headers.get(TIME_HEADER))
    try:
        sig = b64.decode(request.headers.get(SIGNATURE_HEADER, ""))
    except ValueError:
        sig = b""
    if len(sig) != 64:
        raise ApiError(400, "invalid_request", f"{SIGNATURE_HEADER} must be a 64-byte signature in base64url")
    message = signing.backup_bytes(op, blob_id, ts, hashlib.sha256(body).digest())
    await check_signed(node_of(request).store, pk, message, sig, ts)
    return blob_id


async def _read_body(request: web.Request) -> bytes:
    if request.content_type != "application/octet-stream":  # aiohttp: also when the header is absent
        raise ApiError(
            415, "unsupported_media_type", "send the backup as Content-Type: application/octet-stream"
        )
    # The app-wide JSON body limit is far smaller; blobs are read here with their own.
    body = await read_body(request, MAX_BLOB)
    if not body:
        raise ApiError(400, "invalid_request", "the backup is empty")
    return body


async def put_backup(request: web.Request) -> web.Response:
    body = await _read_body(request)
    blob_id = await _authorized(request, "put", body)
    quota = request.app.get(QUOTA) or BackupQuota()
    limiter = request.app.get(LIMITER)
    address = limiter.client_address(request) if limiter else (request.remote or "")
    now = now_ms()
    day, into_day = divmod(now, 86_400_000)
    result = await node_of(request).store.redis.eval(
        _PUT,
        5,
        keys.backup_blob(blob_id),
        keys.BACKUP_INDEX,
        keys.BACKUP_SIZES,
        keys.BACKUP_BYTES,
        keys.backup_quota(address_key(address), day),  # an IPv6 client's /64, as the limits count it
        blob_id,
        body,
        quota.ttl_s * 1000,
        now,
        quota.max_bytes,
        quota.max_blobs,
        quota.new_per_ip_day,
        (86_400_000 - into_day) // 1000 + 1,
    )
    outcome = result[0].decode()
    if outcome == "quota":
        raise ApiError(
            429,
            "quota_exceeded",
            f"at most {quota.new_per_ip_day} new backups a day from one address; overwriting yours is free",
            {"Retry-After": result[1].decode()},
        )
    if outcome == "full":
        raise ApiError(507, "backup_store_full", "the broker's backup store is full; keep a file backup")
    return web.Response(status=204)


async def get_backup(request: web.Request) -> web.Response:
    blob_id = await _authorized(request, "get", b"")
    blob = await node_of(request).store.redis.get(keys.backup_blob(blob_id))
    if blob is None:
        raise ApiError(404, "not_found", "no backup under this id")
    return web.Response(body=blob, content_type="application/octet-stream")


async def delete_backup(request: web.Request) -> web.Response:
    """Gone at once, for good: after a passphrase change or a "not me", the old copy
    must not open with what someone else may know."""
    blob_id = await _authorized(request, "delete", b"")
    existed = await node_of(request).store.redis.eval(
        _DELETE,
        4,
        keys.backup_blob(blob_id),
        keys.BACKUP_INDEX,
        keys.BACKUP_SIZES,
        keys.BACKUP_BYTES,
        blob_id,
    )
    if not existed:
        raise ApiError(404, "not_found", "no backup under this id")
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_put("/v1/backups/{id}", put_backup)
    app.router.add_get("/v1/backups/{id}", get_backup)
    app.router.add_delete("/v1/backups/{id}", delete_backup)
