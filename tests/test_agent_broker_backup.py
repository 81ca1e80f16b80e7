"""Backups on the broker that a thief of the broker cannot attack, with the real agent CLI,
a real broker process on a real Redis: the backup code (the second secret), old copies
deleted after `passwd`, after a "not me" and by `backup retire`, `backup delete`; and the
agent's other refusals of issue 10: weak passphrases, backups over files that must stay, and
re-activation with another user's or another service's enrollment link."""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from e2e_helpers import AGENT_ENV, agent, agent_env, enroll, on_a_terminal  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from shared_broker import broker, new_rp, rp  # noqa: F401  (fixtures)
from support import BrokerProcess, RedisServer, assert_cli_error, serving
from test_agent_e2e import Listen, listener  # noqa: F401  (listener: fixture)
from test_agent_recovery import REPLACED, code_in, enroll_recoverable, refused_line, restore

from broker import keys as broker_keys
from device_agent import backup_keys, broker_http
from device_agent.backup import load_backup
from device_agent.backup_actions import AUTO_BACKUP
from device_agent.backup_keys import BackupCode
from device_agent.passphrase import (
    BACKUP_CODE_ENV,
    NEW_PASSPHRASE_ENV,
    PASSPHRASE_ENV,
    Passphrases,
    kdf_from_env,
)
from device_agent.store import AccountStore
from device_agent.vault import SealedFileError, Vault, unseal
from relying_party.sdk import PushAuthClient

BLOB_PREFIX = broker_keys.backup_blob("")  # the blobs' key names, less their ids

TOTP_URI = "otpauth://totp/ACME:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME"
TOTP_URIS_MORE = "otpauth://totp/Big:bob?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Big"
PASSPHRASE = AGENT_ENV[PASSPHRASE_ENV]
NEW_PASSPHRASE = "violet kettle marches upstream"
CODE_RE = re.compile(r"PAB1(?:-[0-9A-Z]{4}){8}")


@pytest.fixture
def logged_broker(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> BrokerProcess:
    """A broker of its own (the test reads its whole Redis) that logs every request."""
    return broker_factory(
        redis_url=redis_server.url, node="b", extra_args=["--access-log", "--log-level", "INFO"]
    )


def where(broker: BrokerProcess, name: str = "phones") -> list[str]:
    return ["--broker", broker.ws_url, "--backup-name", name]


def dump_redis(url: str) -> dict[bytes, Any]:
    """Every key with its value, as a thief of the server would copy it."""
    r = redis.Redis.from_url(url)
    try:
        out: dict[bytes, Any] = {}
        for key in r.scan_iter(count=1000):
            kind = r.type(key)
            value: Any = {
                b"string": r.get,
                b"hash": r.hgetall,
                b"set": r.smembers,
                b"zset": lambda k: r.zrange(k, 0, -1, withscores=True),
                b"list": lambda k: r.lrange(k, 0, -1),
            }.get(kind, r.dump)(key)
            out[key] = value
        return out
    finally:
        r.close()


def blob_keys_in(dump: dict[bytes, Any]) -> list[bytes]:
    return [k for k in dump if k.startswith(BLOB_PREFIX.encode())]


def attack(
    dump: dict[bytes, Any], log: str, guess: str, origin: str, name: str, code: str | None
) -> list[str]:
    """The thief's program: every way it knows to confirm a passphrase guess from the
    stolen Redis and log. Returns the ways that confirmed it (empty: the guess stays a guess)."""
    kdf = kdf_from_env(AGENT_ENV)
    confirmed = []
    stored = {k.decode(): v for k, v in dump.items() if isinstance(v, bytes)}
    values = list(stored.values())
    ids = {k.removeprefix(BLOB_PREFIX) for k in stored if k.startswith(BLOB_PREFIX)}
    # 1. The blob id of the passphrase alone (agents before backup codes).
    legacy_id = backup_keys.BlobKeys(backup_keys.legacy_blob_seed(guess, origin, name, kdf), b"").blob_id
    if legacy_id in ids or legacy_id in log:
        confirmed.append("the passphrase alone names a stored blob")
    # 2. Any stored value as a passphrase-sealed backup (its key check tells a right guess).
    for value in values:
        try:
            unseal(b"PABACKUP", "backup", value, guess)
            confirmed.append("a stored value opens as a sealed backup")
        except SealedFileError:
            pass
    # 3. The two-secret derivation with every code the thief can come up with.
    codes = [BackupCode(bytes(18)), BackupCode(b"\xff" * 18)]
    if code is not None:
        codes.append(BackupCode.parse(code))
    for candidate in codes:
        keys = backup_keys.blob_keys(guess, candidate, origin, name, kdf)
        if keys.blob_id in ids:
            sealed = backup_keys.unwrap(keys, stored[broker_keys.backup_blob(keys.blob_id)])
            load_backup(sealed, guess)  # raises unless it truly opens
            confirmed.append("the derivation names a stored blob, which opens")
        if keys.blob_id in log:
            confirmed.append("the derivation names a blob in the log")
    return confirmed


def test_a_thief_of_redis_and_the_log_cannot_test_a_passphrase(
    logged_broker: BrokerProcess, redis_server: RedisServer, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    ok(home, "add", TOTP_URI)
    out = ok(home, "backup", "--to", "broker", *where(logged_broker))
    code = code_in(out)
    assert "Write it down" in out and "Backup written to the broker" in out
    # A second backup keeps the code (automatic backups never ask for it).
    assert CODE_RE.findall(ok(home, "backup", "--to", "broker", *where(logged_broker))) == []
    assert ok(home, "backup", "code").count(code) == 1

    dump = dump_redis(redis_server.url)
    log = logged_broker.output()
    (blob_key,) = blob_keys_in(dump)
    assert "PUT /v1/backups/" in log  # the access log is on, and logs the requests...
    assert blob_key.decode().removeprefix(BLOB_PREFIX) not in log  # ...without the blob's id
    assert b"PABACKUP" not in dump[blob_key] and b"ACME" not in dump[blob_key]

    origin = logged_broker.http_url
    # The right passphrase as a guess, without the code: nothing confirms it.
    assert attack(dump, log, PASSPHRASE, origin, "phones", None) == []
    # With the code, the same program confirms the right guess (so the test can fail)...
    assert attack(dump, log, PASSPHRASE, origin, "phones", code) == [
        "the derivation names a stored blob, which opens"
    ]
    # ...and a wrong guess still fails with it.
    assert attack(dump, log, "wrong " + PASSPHRASE, origin, "phones", code) == []


def test_restore_needs_the_code_and_a_mistyped_code_is_told(broker: BrokerProcess, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    ok(home, "add", TOTP_URI)
    code = code_in(ok(home, "backup", "--to", "broker", *where(broker)))

    def restore(into: Path, typed: str | None) -> Any:
        env = {} if typed is None else {BACKUP_CODE_ENV: typed}
        return agent(into, "restore", "--from", "broker", *where(broker), **env)

    assert_cli_error(restore(tmp_path / "a", None), contains=BACKUP_CODE_ENV)  # no terminal to ask on
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    assert_cli_error(restore(tmp_path / "b", typo), contains="mistyped")
    assert_cli_error(restore(tmp_path / "c", code[:-10]), contains="32 letters and digits")
    other = BackupCode.new().text  # well-formed, but not this backup's
    assert_cli_error(restore(tmp_path / "d", other), contains="no backup at")
    for name in "abcd":
        assert not (tmp_path / name / "vault.pav").exists()
    # On a terminal a mistyped passphrase reads as no backup (the broker cannot tell), so
    # it is asked again, as for a file; exit 1 and the same line after the last try.
    typing = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    ask = "Passphrase of the backup"
    answers = [("Backup code", code), (ask, "not the passphrase"), (ask, PASSPHRASE)]
    status, said = on_a_terminal(
        tmp_path / "f", ["restore", "--from", "broker", *where(broker)], answers, env=typing
    )
    assert status == 0 and "1 restored" in said, said
    assert "No backup on the broker for this passphrase and backup code, try again (2 left)" in said
    answers = [("Backup code", code)] + [(ask, "not the passphrase")] * 3
    status, said = on_a_terminal(
        tmp_path / "g", ["restore", "--from", "broker", *where(broker)], answers, env=typing
    )
    assert status == 1 and said.count(ask) == 3 and said.count("no backup at") == 1, said
    assert not (tmp_path / "g" / "vault.pav").exists()
    # A code mistyped from paper is asked again on a terminal too (it ended the restore).
    answers = [("Backup code", typo), ("Backup code", code), (ask, PASSPHRASE)]
    status, said = on_a_terminal(
        tmp_path / "h", ["restore", "--from", "broker", *where(broker)], answers, env=typing
    )
    assert status == 0 and "1 restored" in said, said
    assert "This backup code is mistyped (its check letters do not match)" in said and "(2 left)" in said
    # Any case, dashes and spaces as the user likes; the restored device keeps the code.
    typed = code.lower().replace("-", " ")
    assert "1 restored" in ok(tmp_path / "e", "restore", "--from", "broker", *where(broker), **{
        BACKUP_CODE_ENV: typed
    })  # fmt: skip
    assert code in ok(tmp_path / "e", "backup", "code")


async def test_a_broker_answer_nested_past_the_json_parsers_limit_is_one_line(tmp_path: Path) -> None:
    """A broken or hostile broker whose problem document is arrays nested thousands deep:
    json.loads' RecursionError ended restore --from broker with a traceback."""

    async def deep(_request: web.Request) -> web.Response:
        return web.Response(
            status=400, body=b"[" * 5000 + b"]" * 5000, content_type="application/problem+json"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", deep)
    async with serving(app) as url:
        ws = url.replace("http://", "ws://") + "/v1/device"
        result = await asyncio.to_thread(
            agent, tmp_path / "new", "restore", "--from", "broker", "--broker", ws,
            **{BACKUP_CODE_ENV: BackupCode.new().text},
        )  # fmt: skip
    assert_cli_error(result, contains="400")
    assert not (tmp_path / "new" / "vault.pav").exists()


def test_passwd_rewrites_the_broker_backup_and_deletes_the_old_copy(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    ok(home, "add", TOTP_URI)
    code = code_in(ok(home, "backup", "auto", "on", "--to", "broker", *where(broker)))
    old_keys = backup_keys.blob_keys(
        PASSPHRASE, BackupCode.parse(code), broker.http_url, "phones", kdf_from_env(AGENT_ENV)
    )
    assert_cli_error(agent(home, "passwd", **{NEW_PASSPHRASE_ENV: "password123"}), contains="too short")
    assert_cli_error(agent(home, "passwd", **{NEW_PASSPHRASE_ENV: "aaaaaaaaaaaaaaaa"}), contains="too easy")
    out = ok(home, "passwd", **{NEW_PASSPHRASE_ENV: NEW_PASSPHRASE})
    assert "Its old copy was deleted" in out and CODE_RE.findall(out) == []  # the code stays
    assert broker_http.delete_backup(broker.ws_url, old_keys.seed) is False  # gone from the store
    old = agent(tmp_path / "old", "restore", "--from", "broker", *where(broker), **{BACKUP_CODE_ENV: code})
    assert_cli_error(old, contains="no backup at")
    new = tmp_path / "new"
    ok(
        new,
        "restore",
        "--from",
        "broker",
        *where(broker),
        **{BACKUP_CODE_ENV: code, PASSPHRASE_ENV: NEW_PASSPHRASE},
    )
    assert [
        e.name for e in AccountStore(new, Passphrases(env={PASSPHRASE_ENV: NEW_PASSPHRASE})).entries()
    ] == ["ACME: alice"]


def test_backup_delete(broker: BrokerProcess, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    ok(home, "add", TOTP_URI)
    assert_cli_error(agent(home, "backup", "delete"), contains="--from broker")
    code = code_in(ok(home, "backup", "auto", "on", "--to", "broker", *where(broker, "auto")))
    ok(home, "backup", "--to", "broker", *where(broker, "other"))
    out = ok(home, "backup", "delete", "--from", "broker", *where(broker, "other"))
    assert "Deleted the backup" in out
    again = agent(home, "backup", "delete", "--from", "broker", *where(broker, "other"))
    assert again.returncode == 1
    assert_cli_error(again, contains="no backup at")
    gone = agent(
        tmp_path / "x", "restore", "--from", "broker", *where(broker, "other"), **{BACKUP_CODE_ENV: code}
    )
    assert_cli_error(gone, contains="no backup at")
    # Without --from: the automatic backup, which stops, or the next change would write it again.
    assert "automatic backups are off" in ok(home, "backup", "delete")
    ok(home, "rename", "ACME: alice", "acme")  # a change: no automatic backup follows
    gone = agent(
        tmp_path / "y", "restore", "--from", "broker", *where(broker, "auto"), **{BACKUP_CODE_ENV: code}
    )
    assert_cli_error(gone, contains="no backup at")


async def test_disown_renews_the_code_and_deletes_the_copy_the_thief_used(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path, listener: Callable[[Path], Listen]
) -> None:
    old, thief = tmp_path / "old", tmp_path / "thief"
    await enroll_recoverable(client, old, "old phone")
    code = code_in(await asyncio.to_thread(ok, old, "backup", "auto", "on", "--to", "broker", *where(broker)))
    watching = listener(old)
    watching.wait_for("Connected to")
    # Someone with the passphrase and the code restores; the old phone says "no".
    out = await asyncio.to_thread(
        ok, thief, "restore", "--from", "broker", *where(broker), "--device-name", "new phone",
        **{BACKUP_CODE_ENV: code},
    )  # fmt: skip
    assert "recovered: alice@example.com" in out
    watching.wait_for("Was this you? [y/n]")
    watching.type("n")
    watching.wait_for("Your new backup code: PAB1-")
    new_code = code_in(watching.output().split("Your new backup code:")[1])
    assert new_code != code
    assert "change it now (pushauth-agent passwd)" in watching.output()
    assert "Its old copy was deleted" in watching.output()
    # What the thief knows opens nothing any more; the new code does.
    again = await asyncio.to_thread(
        agent, tmp_path / "again", "restore", "--from", "broker", *where(broker), **{BACKUP_CODE_ENV: code}
    )
    assert_cli_error(again, contains="no backup at")
    fresh = tmp_path / "fresh"
    out = await asyncio.to_thread(
        ok, fresh, "restore", "--from", "broker", *where(broker), **{BACKUP_CODE_ENV: new_code}
    )
    assert "alice@example.com" in out
    assert "Traceback" not in watching.errors()


async def test_backup_retire_leaves_no_older_backup_that_recovers(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    """A backup was lost (or its passphrase may be known): `backup retire` renews the
    recovery keys, the code and the broker copy, as a "not me" does, unasked."""
    old = tmp_path / "old"
    cred = await enroll_recoverable(client, old, "old phone")
    before = tmp_path / "before.backup"
    await asyncio.to_thread(ok, old, "backup", "--to", str(before))
    code = code_in(await asyncio.to_thread(ok, old, "backup", "--to", "broker", *where(broker)))

    out = await asyncio.to_thread(ok, old, "backup", "retire")
    assert "New recovery keys for alice@example.com" in out
    assert "Its old copy was deleted: the old backup code opens nothing there." in out
    assert "Verification codes in older backups still work" in out
    assert "change it now" not in out  # the passphrase was not given away
    new_code = code_in(out.split("Your new backup code:")[1])
    assert new_code != code
    # The file made before recovers nothing, the old code finds no copy, the new one does.
    assert REPLACED in refused_line(restore(tmp_path / "file", before, "thief phone"))
    again = await asyncio.to_thread(
        agent, tmp_path / "again", "restore", "--from", "broker", *where(broker), **{BACKUP_CODE_ENV: code}
    )
    assert_cli_error(again, contains="no backup at")
    # The service takes the renewed key by its own check.
    sync = await client.sync_credentials("alice", {cred.id: cred})
    assert [c.id for c in sync.rotated] == [cred.id] and not sync.refused
    fresh = await asyncio.to_thread(
        ok, tmp_path / "fresh", "restore", "--from", "broker", *where(broker), "--device-name", "new phone",
        **{BACKUP_CODE_ENV: new_code},
    )  # fmt: skip
    assert "recovered: alice@example.com" in fresh


def test_backup_retire_with_nothing_to_retire_says_so(tmp_path: Path) -> None:
    result = agent(tmp_path / "empty", "backup", "retire")
    assert_cli_error(result, contains="nothing to retire")
    assert not (tmp_path / "empty" / "vault.pav").exists()


def test_a_backup_file_never_replaces_what_must_stay(tmp_path: Path) -> None:
    home = tmp_path / "phone"
    ok(home, "add", TOTP_URI)
    vault = home / "vault.pav"
    before = vault.read_bytes()
    existing = tmp_path / "notes.txt"
    existing.write_text("my notes")
    assert_cli_error(agent(home, "backup", "--to", str(existing)), contains="exists already")
    assert existing.read_text() == "my notes"
    for path in (vault, home / "other.backup", home / ".accounts.lock"):
        for force in ([], ["--force"]):
            result = agent(home, "backup", "--to", str(path), *force)
            assert_cli_error(result, contains="even with --force")
            assert result.returncode == 2
    link = tmp_path / "link.backup"
    link.symlink_to(vault)
    assert_cli_error(agent(home, "backup", "--to", str(link), "--force"), contains="the agent's vault")
    assert vault.read_bytes() == before
    assert not (home / "other.backup").exists()
    assert "Backup written" in ok(home, "backup", "--to", str(existing), "--force")
    assert existing.read_bytes().startswith(b"PABACKUP")
    assert Vault.open(vault, PASSPHRASE).records  # the vault opens as before


def test_a_backup_file_never_replaces_a_folder_a_device_or_a_pipe(tmp_path: Path) -> None:
    # `backup --to /dev/null --force` used to rename a plain file over the device.
    home = tmp_path / "phone"
    ok(home, "add", TOTP_URI)
    folder = tmp_path / "sync"
    folder.mkdir()
    result = agent(home, "backup", "--to", str(folder))
    assert_cli_error(result, contains=f"{folder} is a folder")
    assert str(folder / "pushauth.backup") in result.stderr and "--force replaces" not in result.stderr
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    link = tmp_path / "to-pipe.backup"
    link.symlink_to(pipe)
    for target in (folder, pipe, link):
        for words in ([], ["auto", "on"]):
            result = agent(home, "backup", *words, "--to", str(target), "--force")
            assert result.returncode == 2, result
            assert "Backup written" not in result.stdout
    assert folder.is_dir() and not any(folder.iterdir())
    assert stat.S_ISFIFO(pipe.lstat().st_mode) and link.is_symlink()
    assert AUTO_BACKUP not in AccountStore(home).settings()
    # An automatic backup whose file was replaced by a pipe since is not written over it.
    auto = folder / "auto.backup"
    ok(home, "backup", "auto", "on", "--to", str(auto))
    auto.unlink()
    os.mkfifo(auto)
    result = agent(home, "add", TOTP_URIS_MORE)
    assert result.returncode == 0, result.stderr  # the change itself is saved
    assert "the automatic backup failed" in result.stderr and "not a regular file" in result.stderr
    assert stat.S_ISFIFO(auto.lstat().st_mode)


def test_weak_passphrases_are_refused_when_set_but_an_old_vault_still_opens(tmp_path: Path) -> None:
    home = tmp_path / "phone"
    for weak, why in (("short", "too short"), ("password12345", "too easy to guess")):
        assert_cli_error(agent(home, "add", TOTP_URI, **{PASSPHRASE_ENV: weak}), contains=why)
        assert not (home / "vault.pav").exists()
    # A vault made before passphrases were checked, with a weak one: it still opens and
    # changes, but a backup under that passphrase is refused until it is changed.
    old = tmp_path / "old"
    old.mkdir(mode=0o700)
    Vault.create(old / "vault.pav", "abc", kdf=kdf_from_env(AGENT_ENV))
    ok(old, "add", TOTP_URI, **{PASSPHRASE_ENV: "abc"})
    result = agent(old, "backup", "--to", str(tmp_path / "b"), **{PASSPHRASE_ENV: "abc"})
    assert_cli_error(result, contains="change it first: pushauth-agent passwd")
    assert not (tmp_path / "b").exists()
    ok(old, "passwd", **{PASSPHRASE_ENV: "abc", NEW_PASSPHRASE_ENV: NEW_PASSPHRASE})
    ok(old, "backup", "--to", str(tmp_path / "b"), **{PASSPHRASE_ENV: NEW_PASSPHRASE})


async def test_reactivate_refuses_a_link_for_another_user_or_service(
    client: PushAuthClient, broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    await enroll(client, old)
    ok(old, "backup", "--to", str(tmp_path / "b"))
    ok(new, "restore", "--from", str(tmp_path / "b"))
    before = (new / "vault.pav").read_bytes()

    # Another user at the same service: the broker registers the key, the agent sees
    # whose it is, revokes it at once, and leaves alice's account as it was.
    started = await client.create_enrollment("mallory", "mallory@example.com")
    assert started.uri is not None
    result = await asyncio.to_thread(agent, new, "reactivate", "alice@example.com", started.uri)
    assert_cli_error(result, contains="for user 'mallory'")
    assert "revoked at once" in result.stderr
    assert (new / "vault.pav").read_bytes() == before
    assert AccountStore(new).find("alice@example.com").status == "action_required"
    assert await client.list_credentials("mallory") == []

    # Another service: refused before anything is sent (its code is not spent).
    other = await new_rp(broker, "Other RP")
    async with PushAuthClient(broker.http_url, other["api_key"]) as other_client:
        started = await other_client.create_enrollment("alice", "alice@example.com")
        assert started.uri is not None
        result = await asyncio.to_thread(agent, new, "reactivate", "alice@example.com", started.uri)
        assert_cli_error(result, contains="nothing was sent")
        assert (await other_client.get_enrollment(started)).status == "pending"
    assert (new / "vault.pav").read_bytes() == before


def test_an_automatic_broker_backup_that_failed_says_how_to_write_it_and_that_command_works(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    # The change is kept but the backup misses it: the warning must say so and give the
    # command that writes it, or a phone lost before the next change loses the account.
    own = broker_factory(redis_url=redis_server.url, node="own")
    home = tmp_path / "phone"
    ok(home, "add", TOTP_URI)
    code = CODE_RE.findall(ok(home, "backup", "auto", "on", "--to", "broker", *where(own)))[0]
    own.stop()
    result = agent(home, "add", TOTP_URIS_MORE)
    assert result.returncode == 0, result.stderr  # the change itself is saved
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(
        f"pushauth-agent: the automatic backup failed: cannot reach the broker at {own.ws_url}"
    )
    assert "The change is saved on this device, but the backup does not have it yet" in warning
    command = warning.split("or write it now with: ", 1)[1]
    assert command == f"pushauth-agent backup --to broker --broker {own.ws_url} --backup-name phones"
    own.restart()
    ok(home, *command.split()[1:])
    new = tmp_path / "new"
    ok(new, "restore", "--from", "broker", *where(own), **{BACKUP_CODE_ENV: code})
    assert [e.name for e in AccountStore(new).entries()] == ["ACME: alice", "Big: bob"]


async def test_listen_writes_a_failed_automatic_backup_again_once_it_reaches_the_broker(
    redis_server: RedisServer,
    broker_factory: Callable[..., BrokerProcess],
    tmp_path: Path,
    listener: Callable[..., Listen],
) -> None:
    # A failed automatic backup used to wait for the next change, however long; `backup
    # auto` now says it is behind, and listen writes it as soon as the broker answers.
    own = broker_factory(redis_url=redis_server.url, node="own")
    info = await new_rp(own)
    home = tmp_path / "phone"
    async with PushAuthClient(own.http_url, info["api_key"]) as client:
        await enroll(client, home)
    code = CODE_RE.findall(ok(home, "backup", "auto", "on", "--to", "broker", *where(own)))[0]
    status = ok(home, "backup", "auto")
    assert f"Automatic backups are on: to the broker {own.ws_url} (backup name 'phones')." in status
    assert "it has every change" in status
    own.stop()
    result = agent(home, "add", TOTP_URI)
    assert result.returncode == 0 and "the automatic backup failed" in result.stderr
    status = ok(home, "backup", "auto")
    assert "The backup does not have the changes made since" in status
    assert f"cannot reach the broker at {own.ws_url}" in status
    own.restart()
    proc = listener(home)
    proc.wait_for("Connected to")
    proc.wait_for("was written again: it has every change now.")
    assert "does not have" not in ok(home, "backup", "auto")
    new = tmp_path / "new"
    ok(new, "restore", "--from", "broker", *where(own), **{BACKUP_CODE_ENV: code})
    assert "ACME: alice" in [e.name for e in AccountStore(new).entries()]
    proc.close()

    # The broker's Redis restored from a copy taken before the next change: the blob is
    # the older one again, and no attempt failed. `backup auto` finds it out and writes it
    # again; so does listen, once per run, when it reaches the broker.
    r = redis_server.client()
    (blob,) = r.keys(broker_keys.backup_blob("*"))
    older = r.dump(blob)
    ok(home, "add", TOTP_URIS_MORE)
    r.restore(blob, 0, older, replace=True)
    status = ok(home, "backup", "auto")
    assert "is not the one this device wrote last" in status and "restored from an older copy" in status, (
        status
    )
    assert "it was written again and has every change now" in status, status
    newer = tmp_path / "newer"
    ok(newer, "restore", "--from", "broker", *where(own), **{BACKUP_CODE_ENV: code})
    assert "Big: bob" in [e.name for e in AccountStore(newer).entries()]
    assert "written again" not in ok(home, "backup", "auto")  # the copy is the last one written
    r.delete(blob)
    proc = listener(home)
    proc.wait_for(
        "is gone (the broker's data may have been restored from an older copy): it was written again"
    )
    proc.close()
    assert r.exists(blob)
