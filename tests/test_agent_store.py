"""The device agent's account store: round trip, file modes, locking, damage."""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from e2e_helpers import TEST_PASSPHRASE, agent_env  # noqa: F401  (autouse: the vault passphrase for every agent run)
from support import wait_until

from device_agent.store import REVOKED, AccountStore, Registration, StoreError, unique_name
from device_agent.vault import Vault
from protocol import signing
from protocol.uri import TotpParams


def add(store: AccountStore, name: str = "alice@example.com", cid: str = "cid-1", **kw: object) -> bytes:
    seed = signing.new_seed()
    fields: dict[str, object] = {
        "wanted_name": name,
        "rp": "rp1",
        "rp_name": "Example",
        "user": "alice",
        "label": name,
        "broker": "ws://127.0.0.1:1/v1/device",
        "cid": cid,
        "device_name": "laptop",
        "seed": seed,
    }
    fields.update(kw)
    wanted = str(fields.pop("wanted_name"))
    store.add(wanted, Registration(**fields))  # type: ignore[arg-type]
    return seed


def raw_entries(store: AccountStore) -> list[dict[str, object]]:
    """The entries as the vault holds them, decrypted independently of the store."""
    return Vault.open(store.path, TEST_PASSPHRASE).records["entries"]


def rewrite_raw(store: AccountStore, change: object) -> None:
    vault = Vault.open(store.path, TEST_PASSPHRASE)
    change(vault.records)  # type: ignore[operator]
    vault.save()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip_keeps_every_field_and_the_order(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "home")
    totp = TotpParams("JBSWY3DPEHPK3PXPJBSWY3DP", "SHA256", 8, 60)
    seed1 = add(store, "b-account", "cid-b", totp=totp)
    seed2 = add(store, "a-account", "cid-a", broker="wss://other.example/v1/device")

    again = AccountStore(tmp_path / "home")  # a fresh object reads only the file
    accounts = again.load()
    assert [a.name for a in accounts] == ["b-account", "a-account"]  # insertion order, not sorted
    first = accounts[0]
    assert (first.rp, first.rp_name, first.user, first.label) == ("rp1", "Example", "alice", "b-account")
    assert (first.cid, first.device_name, first.status, first.has_totp) == ("cid-b", "laptop", "active", True)
    assert first.added > 0
    assert again.seed("cid-b") == seed1
    assert again.seeds(accounts) == {"cid-b": seed1, "cid-a": seed2}
    otp = again.totp("b-account")
    assert otp is not None
    assert (otp.algorithm, otp.digits, otp.period) == ("SHA256", 8, 60)
    assert otp.secret == base64.b32decode(totp.secret)
    assert again.totp("a-account") is None
    assert set(again.by_broker()) == {"ws://127.0.0.1:1/v1/device", "wss://other.example/v1/device"}


def test_find_by_name_then_by_credential_id(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    add(store, "work", "cid-work")
    assert store.find("work").cid == "cid-work"
    assert store.find("cid-work").name == "work"
    with pytest.raises(StoreError, match="no account named"):
        store.find("nobody")


def test_duplicate_labels_get_unique_names(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    for i in range(3):
        add(store, "alice@example.com", f"cid-{i}")
    assert [a.name for a in store.load()] == [
        "alice@example.com",
        "alice@example.com (2)",
        "alice@example.com (3)",
    ]
    assert unique_name("x", {"x", "x (2)"}) == "x (3)"


def test_file_is_0600_and_home_0700_even_if_home_was_looser(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)  # umask may have narrowed mkdir's mode
    store = AccountStore(home)
    add(store)
    assert mode(home) == 0o700
    assert mode(store.path) == 0o600
    fresh = AccountStore(tmp_path / "new" / "home")
    add(fresh)
    assert mode(fresh.home) == 0o700


def test_seed_is_not_in_account_objects(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    add(store)
    account = store.load()[0]
    assert not any(isinstance(getattr(account, f), bytes) for f in account.__dataclass_fields__)


def test_remove_forgets_the_account_and_its_key(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    add(store, "one", "cid-1")
    add(store, "two", "cid-2")
    removed = store.remove("one")
    assert removed.cid == "cid-1"
    assert [a.name for a in store.load()] == ["two"]
    with pytest.raises(StoreError):
        store.seed("cid-1")
    assert [e["name"] for e in raw_entries(store)] == ["two"]


def test_removing_an_unknown_account_changes_nothing(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    add(store)
    before = (store.path.read_bytes(), store.version())
    with pytest.raises(StoreError, match="no account named"):
        store.remove("nobody")
    assert (store.path.read_bytes(), store.version()) == before


def test_mark_revoked_keeps_the_entry_but_deletes_the_key(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    add(store, "one", "cid-1")
    account = store.mark_revoked("cid-1", "removed by the service")
    assert account is not None
    assert account.status == REVOKED
    (loaded,) = store.load()
    assert (loaded.status, loaded.status_reason, loaded.active) == (REVOKED, "removed by the service", False)
    assert store.active() == []
    assert store.by_broker() == {}
    with pytest.raises(StoreError):
        store.seed("cid-1")
    assert store.seeds([loaded]) == {}
    assert raw_entries(store)[0]["push"]["seed"] is None  # type: ignore[index]
    assert store.mark_revoked("unknown", "x") is None


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"version": 99, "accounts": []}',
        b'{"version": 1, "accounts": {}}',
        b'{"version": 1, "accounts": [{"name": "x"}]}',
        b'{"version": 1, "accounts": [42]}',
    ],
)
def test_damaged_old_plain_file_is_reported_and_never_overwritten(tmp_path: Path, content: bytes) -> None:
    store = AccountStore(tmp_path)
    store.legacy_path.write_bytes(content)
    with pytest.raises(StoreError, match=r"accounts\.json is damaged \("):
        store.load()
    with pytest.raises(StoreError, match=r"accounts\.json is damaged \("):
        add(store)
    assert store.legacy_path.read_bytes() == content
    assert not store.path.exists()


def test_a_key_of_the_wrong_size_is_damage(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    add(store)
    rewrite_raw(store, lambda doc: doc["entries"][0]["push"].update(seed="AAAA"))
    with pytest.raises(StoreError, match="wrong size"):
        store.load()


def test_unknown_keys_in_entries_survive_a_rewrite(tmp_path: Path) -> None:
    # A newer agent may add fields; an older one rewriting the file must keep them.
    store = AccountStore(tmp_path)
    add(store, "one", "cid-1")
    rewrite_raw(store, lambda doc: doc["entries"][0].update(future_field={"x": 1}))
    add(store, "two", "cid-2")
    assert raw_entries(store)[0]["future_field"] == {"x": 1}


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "home")
    for i in range(5):
        add(store, f"a{i}", f"cid-{i}")
    store.remove("a0")
    assert sorted(p.name for p in store.home.iterdir()) == [".accounts.lock", ".vault.pav.lock", "vault.pav"]


def _add_many(home: str, worker: int, count: int) -> None:
    store = AccountStore(Path(home))
    for i in range(count):
        add(store, f"w{worker}-{i}", f"cid-{worker}-{i}")


def _read_many(home: str, rounds: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = AccountStore(Path(home))
    seen = 0
    for _ in range(rounds):
        seen = max(seen, len(store.load()))  # raises on a torn or half-written file
    queue.put(seen)


def test_concurrent_processes_lose_no_account_and_never_see_a_torn_file(tmp_path: Path) -> None:
    # `listen` marks accounts revoked while `enroll` adds one: every change must land.
    home = tmp_path / "home"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    reader = ctx.Process(target=_read_many, args=(str(home), 300, queue))
    writers = [ctx.Process(target=_add_many, args=(str(home), w, 10)) for w in range(3)]
    for proc in (reader, *writers):
        proc.start()
    for proc in (reader, *writers):
        proc.join(60)
        assert proc.exitcode == 0
    assert queue.get(timeout=5) >= 0
    names = {a.name for a in AccountStore(home).load()}
    assert names == {f"w{w}-{i}" for w in range(3) for i in range(10)}


def test_a_change_waiting_on_a_failed_first_change_locks_the_home_made_anew(tmp_path: Path) -> None:
    # The failed first change removes the lock file (and the home it made) while another
    # writer waits on it: that writer must lock the file at the path, not the removed one.
    import threading

    home = tmp_path / "home"
    first, second = AccountStore(home), AccountStore(home)
    locked, waiting = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def fail_first() -> None:
        try:
            with first.change():
                locked.set()
                assert waiting.wait(30)
                raise StoreError("refused")
        except StoreError as exc:
            errors.append(exc)

    thread = threading.Thread(target=fail_first)
    thread.start()
    assert locked.wait(30)
    waiter = threading.Thread(target=lambda: add(second, "late", "cid-late"))
    waiter.start()
    # flock conflicts between two open files, in one process too: the waiter blocks
    # (Linux lists a blocked lock with "->" in /proc/locks).
    inode = f":{(home / '.accounts.lock').stat().st_ino} "
    wait_until(
        lambda: any("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines())
    )
    waiting.set()
    thread.join(30)
    waiter.join(30)
    assert [str(e) for e in errors] == ["refused"]
    assert [a.name for a in AccountStore(home).load()] == ["late"]
    assert (home / ".accounts.lock").exists()
