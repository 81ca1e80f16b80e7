"""The broker's device HTTP requests: the encrypted-backup store and recovery.

The backup blobs' keys come from backup_keys.py. Each request is signed by a
device-held key over its time (protocol/signing.py:
backup_bytes, recovery_key_bytes, recover_bytes); the broker accepts it once and
within minutes of its clock (broker/signed_requests.py). Blocking urllib calls:
these are one-shot commands (and automatic backups after a change), not the
listening loop.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import quote, urlunsplit

from protocol import b64, signing
from protocol.uri import insecure_transport, split_url

from . import broker_clock
from .errors import InsecureBroker, Refused, RotationTooEarly, Unreachable, UsageError, WrongClock
from .messages import cannot_reach, silent
from .timeouts import connect_timeout


def http_base(broker: str) -> str:
    """The broker's HTTP origin from its device WebSocket URL (same host and port)."""
    parts = split_url(broker)
    scheme = (
        None
        if parts is None
        else {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    )
    if parts is None or scheme is None or not parts.hostname:
        raise UsageError(f"not a broker URL: {broker!r} (ws://, wss://, http:// or https:// with a host)")
    if (insecure := insecure_transport(broker)) is not None:  # backups and recovery keys too
        raise InsecureBroker(insecure)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def now_ms() -> int:
    return int(time.time() * 1000)


def _call(
    broker: str, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """`method` `path` at the broker's HTTP origin; `broker` (its device WebSocket URL,
    or the --broker given) names it when it cannot be reached."""
    # Imported here: urllib.request (with http.client, email and ssl) is a fifth of the
    # agent's start-up, and most runs of the agent never call a broker over HTTP.
    import urllib.error
    import urllib.request

    url = http_base(broker) + path
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    timeout = connect_timeout()  # for each step: connecting, then each read
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        data = exc.read()
        if exc.code == 403 and _problem(exc.code, data)[0] == "stale_request":
            raise _wrong_clock(broker, exc.headers.get("Date")) from None
        return exc.code, data
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):  # a hung broker, or a black-holed port
            reason = silent(timeout)
        # Named as over WebSocket, never by `url`: its path may hold a blob id, which
        # need not be shown.
        raise Unreachable(cannot_reach(broker, reason)) from None


def _wrong_clock(broker: str, date: str | None) -> WrongClock:
    """A signed request refused as stale, saying which clock is off and by how much (the
    broker's Date header: its clock, to the second; never used to sign, see broker_clock)."""
    import email.utils

    try:
        # Date is whole seconds, cut down: its middle is the better guess.
        offset_ms = int(email.utils.parsedate_to_datetime(date or "").timestamp() * 1000) + 500 - now_ms()
    except (TypeError, ValueError):
        offset_ms = None
    if offset_ms is None or abs(offset_ms) < 60_000:  # no Date, or one that explains nothing
        why = f"this device's clock is more than 5 minutes off the broker's at {broker}: set it right"
    else:
        why = broker_clock.wrong_clock(offset_ms, broker)
    return WrongClock(
        f"the broker refused the request as made at the wrong time: {why} (the broker allows 5 minutes),"
        " then try again",
        code="stale_request",
    )


def _problem(status: int, data: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(data)
        return str(doc.get("code", status)), str(doc.get("detail", ""))
    # RecursionError: a body nested past the parser's limit (a few KB of "[[[["), which
    # ended restore, reactivate or backup with a traceback.
    except (ValueError, AttributeError, RecursionError):
        return str(status), ""


def _json_call(broker: str, path: str, payload: dict[str, Any]) -> tuple[int, Any, str]:
    status, data = _call(
        broker, "POST", path, body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    if status >= 400:
        code, detail = _problem(status, data)
        return status, code, detail
    try:
        body = json.loads(data) if data else None
    except (ValueError, RecursionError):
        body = None  # not JSON: the caller refuses it as a malformed answer
    return status, body, ""


# -- the encrypted-backup store ---------------------------------------------------------


def _blob_request(broker: str, seed: bytes, op: str, body: bytes) -> tuple[int, bytes]:
    blob_id = b64.encode(signing.public_key(seed))
    ts = now_ms()
    sig = signing.sign(seed, signing.backup_bytes(op, blob_id, ts, hashlib.sha256(body).digest()))
    headers = {"X-Pushauth-Time": str(ts), "X-Pushauth-Signature": b64.encode(sig)}
    if op == "put":
        headers["Content-Type"] = "application/octet-stream"
    path = f"/v1/backups/{quote(blob_id)}"
    return _call(broker, op.upper(), path, body=body if op == "put" else None, headers=headers)


def put_backup(broker: str, seed: bytes, blob: bytes) -> None:
    status, data = _blob_request(broker, seed, "put", blob)
    if status != 204:
        code, detail = _problem(status, data)
        raise Refused(f"the broker did not store the backup: {detail or code}", code=code)


def get_backup(broker: str, seed: bytes) -> bytes:
    status, data = _blob_request(broker, seed, "get", b"")
    if status == 404:  # the broker was asked and has none: exit 1, as `backup delete` of none
        raise Refused(
            f"no backup at {http_base(broker)} under this name for this passphrase and backup code"
            " (check all three, and the broker)",
            code="not_found",
        )
    if status != 200:
        code, detail = _problem(status, data)
        raise Refused(f"the broker refused to give the backup: {detail or code}", code=code)
    return data


def delete_backup(broker: str, seed: bytes) -> bool:
    """Delete the blob of `seed`: True if it was there, False if there was none."""
    status, data = _blob_request(broker, seed, "delete", b"")
    if status == 404:
        return False
    if status != 204:
        code, detail = _problem(status, data)
        raise Refused(f"the broker did not delete the backup: {detail or code}", code=code)
    return True


# -- recovery ---------------------------------------------------------------------------


def set_recovery_key(
    broker: str, cid: str, seed: bytes, recovery_seed: bytes, *, ts: int | None = None
) -> bool:
    """Name a new recovery key for credential `cid` (signed by its key `seed`), replacing
    the one named before (or used by a recovery): True when the broker took it, False
    if the RP did not enroll the credential as recoverable. Raises Refused when the
    credential was removed or a newer key is named already, Unreachable when the
    broker cannot be reached (then the old key stays the valid one)."""
    ts = now_ms() if ts is None else ts
    recovery_pk = signing.public_key(recovery_seed)
    sig = signing.sign(seed, signing.recovery_key_bytes(cid, recovery_pk, ts))
    path = f"/v1/credentials/{quote(cid)}/recovery-key"
    body = json.dumps({"recovery_pk": b64.encode(recovery_pk), "ts": ts, "sig": b64.encode(sig)}).encode()
    status, data = _call(broker, "POST", path, body=body, headers={"Content-Type": "application/json"})
    if status == 204:
        return True
    code, detail = _problem(status, data)
    if code == "not_recoverable":
        return False
    if code == "conflict" and (newer_than := _newer_than(data)) is not None:
        why = f"the broker did not take the new recovery key: {detail}"
        raise RotationTooEarly(why, newer_than=newer_than)
    why = {
        "credential_revoked": "the account was removed at the service",
        "not_found": "the service does not know this device's key (removed?)",
        # a newer key is named already, or a recovery from this credential is not older
        "conflict": f"{detail or code} (is this device's clock behind?)",
    }.get(code, detail or code)
    raise Refused(f"the broker did not take the new recovery key: {why}", code=code)


def _newer_than(data: bytes) -> int | None:
    """The `newer_than` of a 409 conflict to a recovery-key rotation: the ts the broker
    holds (docs/http-api.md); None from a broker that does not say it."""
    try:
        value = json.loads(data).get("newer_than")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if type(value) is int and value >= 0 else None


def recover(
    broker: str,
    rp: str,
    old_cid: str,
    recovery_seed: bytes,
    seed: bytes,
    new_recovery_seed: bytes,
    name: str,
) -> dict[str, Any]:
    """Register credential `seed` for the account of `old_cid` at `rp`; returns the broker's answer."""
    ts = now_ms()
    pk, new_recovery_pk = signing.public_key(seed), signing.public_key(new_recovery_seed)
    message = signing.recover_bytes(rp, old_cid, pk, name, new_recovery_pk, ts)
    payload = {
        "cid": old_cid,
        "pk": b64.encode(pk),
        "name": name,
        "recovery_pk": b64.encode(new_recovery_pk),
        "ts": ts,
        "recovery_sig": b64.encode(signing.sign(recovery_seed, message)),
        "sig": b64.encode(signing.sign(seed, message)),
    }
    status, body, detail = _json_call(broker, "/v1/recoveries", payload)
    if status != 201:
        raise Refused(f"the broker refused the recovery: {detail or body}", code=str(body))
    fields = ("id", "rp", "rp_name", "user", "account")
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) and body[k] for k in fields):
        raise Refused("the broker's answer to the recovery is malformed")
    return body
