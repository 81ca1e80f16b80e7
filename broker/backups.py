"""The encrypted-backup store: devices keep their sealed backup here, ciphertext only.

A blob is named by an Ed25519 public key that the device derives from the user's
passphrase and backup code (device_agent/backup_keys.py); every read, write and
delete is signed by that key over the time and the body's hash (signed_requests.py),
so only holders of both secrets can read, overwrite or delete it. The broker never
sees either secret or any key that decrypts the blob. No RP API key is involved: the
blob belongs to a person. Ids are kept out of logs and error messages (BlobIdFilter):
they name a person's backup.

    PUT    /v1/backups/{id}   body: the wrapped backup (application/octet-stream); 204
    GET    /v1/backups/{id}   200 with the blob, or 404
    DELETE /v1/backups/{id}   204, or 404
    headers: X-Pushauth-Time (Unix ms), X-Pushauth-Signature (base64url Ed25519)
"""

from __future__ import annotations

import hashlib
import logging
import re

from aiohttp import web

from protocol import b64, signing

from . import keys
from .context import node_of
from .problems import ApiError
from .signed_requests import check_signed, parse_ts

MAX_BLOB = 256 * 1024  # a backup of hundreds of accounts is a few dozen KiB
BLOB_TTL_S = 400 * 24 * 3600  # refreshed by every write: a forgotten backup goes away
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
    # The app-wide JSON body limit is far smaller; blobs are read here with their own.
    if request.content_length is not None and request.content_length > MAX_BLOB:
        raise ApiError(413, "payload_too_large", f"a backup is at most {MAX_BLOB} bytes")
    body = await request.content.read(MAX_BLOB + 1)
    while len(body) <= MAX_BLOB and not request.content.at_eof():
        body += await request.content.read(MAX_BLOB + 1 - len(body))
    if len(body) > MAX_BLOB:
        raise ApiError(413, "payload_too_large", f"a backup is at most {MAX_BLOB} bytes")
    if not body:
        raise ApiError(400, "invalid_request", "the backup is empty")
    return body


async def put_backup(request: web.Request) -> web.Response:
    body = await _read_body(request)
    blob_id = await _authorized(request, "put", body)
    await node_of(request).store.redis.set(keys.backup_blob(blob_id), body, ex=BLOB_TTL_S)
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
    if not await node_of(request).store.redis.delete(keys.backup_blob(blob_id)):
        raise ApiError(404, "not_found", "no backup under this id")
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_put("/v1/backups/{id}", put_backup)
    app.router.add_get("/v1/backups/{id}", get_backup)
    app.router.add_delete("/v1/backups/{id}", delete_backup)


_BLOB_PATH = re.compile(r"(/v1/backups/)([A-Za-z0-9_-]{4})[A-Za-z0-9_%=-]*")


class BlobIdFilter(logging.Filter):
    """Shortens backup ids in log lines (access log, errors) to their first 4 characters:
    enough to tell requests apart, not to name a person's blob in the store."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/v1/backups/" in message:
            record.msg, record.args = _BLOB_PATH.sub(r"\1\2…", message), None
        return True
