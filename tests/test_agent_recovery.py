"""The broker's encrypted-backup store and recoverable accounts, end to end: the real
agent CLI, a real broker on a real Redis, the RP SDK verifying every answer; and the
device HTTP routes refusing forged, stale, replayed and oversized requests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import AGENT_ENV, TEST_PASSPHRASE, agent, agent_env, enroll  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from shared_broker import broker, rp  # noqa: F401  (fixtures)
from support import BrokerProcess, assert_cli_error

from device_agent import broker_http
from device_agent.backup_keys import BackupCode
from device_agent.passphrase import BACKUP_CODE_ENV, PASSPHRASE_ENV
from device_agent.store import AccountStore
from protocol import b64, signing
from protocol.challenge import Status
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

CONTEXT = {"app": "Webmail", "ip": "203.0.113.5"}
TOTP_URI = "otpauth://totp/ACME:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME"


def code_in(out: str) -> str:
    """The backup code that the first `backup --to broker` shows."""
    (code,) = re.findall(r"PAB1(?:-[0-9A-Z]{4}){8}", out)
    return code


async def enroll_recoverable(client: PushAuthClient, home: Path, name: str) -> Any:
    started = await client.create_enrollment("alice", "alice@example.com", totp=new_totp(), recoverable=True)
    assert started.uri is not None
    await asyncio.to_thread(ok, home, "enroll", started.uri, "--name", name)
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None
    await client.confirm_credential(done.credential.id)
    return done.credential


async def approve(client: PushAuthClient, home: Path, keys: dict[str, bytes]) -> Any:
    ch = await client.create_challenge("alice", CONTEXT)
    await asyncio.to_thread(ok, home, "approve", ch.id, "--number", ch.number)
    result = await client.wait_result(ch, keys, timeout=10)
    assert result.status is Status.APPROVED and result.answer is not None
    return result.answer.credential_id


async def test_a_recoverable_account_recovers_by_itself_via_the_broker_backup(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    ok(old, "add", TOTP_URI)
    old_cred = await enroll_recoverable(client, old, "old phone")
    plain = await enroll(client, old, account="alice@plain.example", name="old phone")  # not recoverable
    listed = {a.name: a for a in AccountStore(old).load()}
    assert listed["alice@example.com"].recoverable and not listed["alice@plain.example"].recoverable

    out = ok(old, "backup", "--to", "broker", "--backup-name", "phones")
    assert f"the broker {broker.ws_url}" in out
    code = {BACKUP_CODE_ENV: code_in(out)}
    # A new phone knows only the broker, the name, the passphrase and the backup code.
    out = ok(
        new, "restore", "--from", "broker", "--broker", broker.ws_url, "--backup-name", "phones",
        "--device-name", "new phone", **code,
    )  # fmt: skip
    assert "recovered: alice@example.com" in out
    assert "action required: alice@plain.example" in out
    assert out.splitlines()[-1] == "3 restored, 1 need action"

    creds = {c.id: c for c in await client.list_credentials("alice")}
    (new_cred,) = [c for c in creds.values() if c.recovered_from == old_cred.id]
    assert new_cred.name == "new phone" and new_cred.account == "alice@example.com"
    assert creds[old_cred.id].recovered_from is None
    account = AccountStore(new).find("alice@example.com")
    assert account.active and account.cid == new_cred.id and account.recoverable
    assert signing.public_key(AccountStore(new).seed(new_cred.id)) == new_cred.public_key

    # Old and new device can both approve until the old one is removed.
    keys = {c.id: c.public_key for c in creds.values()}
    assert await approve(client, new, keys) == new_cred.id
    assert await approve(client, old, keys) in {old_cred.id, plain.id}  # both are the old phone's

    # Once the RP removed the old device, its recovery key is worthless: a restore of
    # the same backup then says "action required" for that account.
    await client.revoke_credential(old_cred.id)
    again = tmp_path / "again"
    out = ok(
        again, "restore", "--from", "broker", "--broker", broker.ws_url, "--backup-name", "phones", **code
    )
    assert "action required: alice@example.com: it could not recover by itself" in out
    assert "removed" in out


async def test_backup_auto_to_the_broker_and_bad_restores(broker: BrokerProcess, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", TOTP_URI)
    where = ["--broker", broker.ws_url, "--backup-name", "auto"]
    code = {BACKUP_CODE_ENV: code_in(ok(home, "backup", "auto", "on", "--to", "broker", *where))}
    ok(home, "rename", "ACME: alice", "acme")  # rewrites the blob
    fresh = tmp_path / "fresh"
    ok(fresh, "restore", "--from", "broker", *where, **code)
    assert [e.name for e in AccountStore(fresh).entries()] == ["acme"]

    # Wrong passphrase, name or code: the blob is not even found, and nothing is made.
    for args, env in (
        (["--backup-name", "auto"], {**code, PASSPHRASE_ENV: "wrong"}),
        (["--backup-name", "other"], code),
        (["--backup-name", "auto"], {BACKUP_CODE_ENV: BackupCode.new().text}),
    ):
        empty = tmp_path / f"empty-{args[1]}-{len(env)}"
        result = agent(empty, "restore", "--from", "broker", "--broker", broker.ws_url, *args, **env)
        assert_cli_error(result, contains="no backup at")
        assert not (empty / "vault.pav").exists()
    result = agent(tmp_path / "x", "restore", "--from", "broker")
    assert_cli_error(result, contains="--broker URL")
    result = agent(tmp_path / "x", "restore", "--from", "broker", "--broker", "ftp://nope")
    assert_cli_error(result, contains="not a broker URL")


# -- the device HTTP routes, by hand ----------------------------------------------------------


def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def signed_blob(broker: BrokerProcess, seed: bytes, op: str, body: bytes, ts: int, **over: str) -> Any:
    blob_id = over.pop("blob_id", b64.encode(signing.public_key(seed)))
    sig = signing.sign(seed, signing.backup_bytes(op, blob_id, ts, hashlib.sha256(body).digest()))
    headers = {"X-Pushauth-Time": str(ts), "X-Pushauth-Signature": b64.encode(sig), **over}
    return call(op.upper(), f"{broker.http_url}/v1/backups/{blob_id}", body if op == "put" else None, headers)


def code_of(reply: Any) -> str:
    return json.loads(reply[1])["code"]


def test_the_blob_store_refuses_forged_stale_replayed_and_oversized_requests(
    broker: BrokerProcess,
) -> None:
    seed, other = signing.new_seed(), signing.new_seed()
    now = broker_http.now_ms()
    assert signed_blob(broker, seed, "put", b"ciphertext-1", now)[0] == 204
    assert signed_blob(broker, seed, "get", b"", now + 1) == (200, b"ciphertext-1")
    # Replayed: the same signed request twice.
    assert code_of(signed_blob(broker, seed, "get", b"", now + 1)) == "replayed"
    # Stale or from the future.
    assert code_of(signed_blob(broker, seed, "get", b"", now - 10 * 60_000)) == "stale_request"
    assert code_of(signed_blob(broker, seed, "put", b"x", now + 10 * 60_000)) == "stale_request"
    # Another key cannot read or overwrite it.
    blob_id = b64.encode(signing.public_key(seed))
    assert code_of(signed_blob(broker, other, "get", b"", now + 2, blob_id=blob_id)) == "bad_signature"
    assert code_of(signed_blob(broker, other, "put", b"evil", now + 3, blob_id=blob_id)) == "bad_signature"
    assert signed_blob(broker, seed, "get", b"", now + 4) == (200, b"ciphertext-1")
    # A signature over another body does not write this one.
    sig = signing.sign(seed, signing.backup_bytes("put", blob_id, now + 5, hashlib.sha256(b"a").digest()))
    headers = {"X-Pushauth-Time": str(now + 5), "X-Pushauth-Signature": b64.encode(sig)}
    assert code_of(call("PUT", f"{broker.http_url}/v1/backups/{blob_id}", b"b", headers)) == "bad_signature"
    # Size limit, malformed ids, headers and bodies: 4xx problems, nothing stored.
    big = b"x" * (256 * 1024 + 1)
    assert signed_blob(broker, seed, "put", big, now + 6)[0] == 413
    assert call("GET", f"{broker.http_url}/v1/backups/short")[0] == 400
    assert signed_blob(broker, seed, "get", b"", now + 7, **{"X-Pushauth-Time": "soon"})[0] == 400
    assert signed_blob(broker, seed, "get", b"", now + 8, **{"X-Pushauth-Signature": "AAAA"})[0] == 400
    assert signed_blob(broker, seed, "put", b"", now + 9)[0] == 400
    assert signed_blob(broker, other, "get", b"", now + 10)[0] == 404
    assert signed_blob(broker, seed, "get", b"", now + 11) == (200, b"ciphertext-1")
    # Delete: only its own key, with a signature for "delete" (not one for a read).
    assert code_of(signed_blob(broker, other, "delete", b"", now + 12, blob_id=blob_id)) == "bad_signature"
    read_sig = signing.sign(seed, signing.backup_bytes("get", blob_id, now + 13, hashlib.sha256().digest()))
    headers = {"X-Pushauth-Time": str(now + 13), "X-Pushauth-Signature": b64.encode(read_sig)}
    assert (
        code_of(call("DELETE", f"{broker.http_url}/v1/backups/{blob_id}", None, headers)) == "bad_signature"
    )
    assert signed_blob(broker, seed, "delete", b"", now + 14) == (204, b"")
    gone = signed_blob(broker, seed, "get", b"", now + 15)
    assert gone[0] == 404 and blob_id not in json.loads(gone[1])["detail"]
    assert code_of(signed_blob(broker, seed, "delete", b"", now + 16)) == "not_found"


async def test_recovery_routes_refuse_bad_requests(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    cred = await enroll_recoverable(client, home, "phone")
    store = AccountStore(home)
    seed, recovery_seed = store.seed(cred.id), store.recovery_seed("alice@example.com")
    assert recovery_seed is not None
    url = broker.http_url
    # A second recovery key is refused, even signed by the credential key.
    with pytest.raises(broker_http.Refused, match="recovery key already"):
        broker_http.set_recovery_key(broker.ws_url, cred.id, seed, signing.new_seed())
    # A non-recoverable credential takes none.
    plain = await enroll(client, tmp_path / "plain", account="plain", name="p")
    plain_seed = AccountStore(tmp_path / "plain").seed(plain.id)
    assert broker_http.set_recovery_key(broker.ws_url, plain.id, plain_seed, signing.new_seed()) is False

    def recover(**over: Any) -> tuple[int, Any]:
        new_seed, new_recovery = signing.new_seed(), signing.new_seed()
        ts = over.pop("ts", broker_http.now_ms())
        pk = signing.public_key(new_seed)
        message = signing.recover_bytes(cred.id, pk, "thief", signing.public_key(new_recovery), ts)
        body = {
            "cid": cred.id,
            "pk": b64.encode(pk),
            "name": "thief",
            "recovery_pk": b64.encode(signing.public_key(new_recovery)),
            "ts": ts,
            "recovery_sig": b64.encode(signing.sign(over.pop("recovery_key", recovery_seed), message)),
            "sig": b64.encode(signing.sign(over.pop("new_key", new_seed), message)),
        }
        body.update(over)
        status, data = call(
            "POST", f"{url}/v1/recoveries", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        return status, json.loads(data)

    assert recover(recovery_key=signing.new_seed())[1]["code"] == "bad_signature"  # not the recovery key
    assert recover(new_key=signing.new_seed())[1]["code"] == "bad_signature"  # no proof of possession
    assert recover(ts=broker_http.now_ms() - 3_600_000)[1]["code"] == "stale_request"
    assert recover(cid="nope")[1]["code"] in ("bad_signature", "not_found")
    assert recover(name="x" * 65)[0] == 400
    assert recover(pk="AAAA")[0] == 400
    assert recover(extra=1)[0] == 400
    assert recover(cid=plain.id)[1]["code"] in ("not_recoverable", "bad_signature")
    # None of these made a credential.
    assert {c.id for c in await client.list_credentials("alice")} == {cred.id, plain.id}
    await client.revoke_credential(cred.id)
    assert recover()[1]["code"] == "credential_revoked"
