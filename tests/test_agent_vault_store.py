"""The agent's store is the encrypted vault: migration of the old plain file, the
passphrase (environment, prompt, wrong, missing, changed), nothing readable on disk.

The CLI runs as a real subprocess; in-process checks open the vault independently.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import AGENT_ENV, TEST_PASSPHRASE, agent_env, on_a_terminal  # noqa: F401  (autouse)
from support import AGENT, assert_cli_error, run_cli

from device_agent.passphrase import (
    KDF_ENV,
    NEW_PASSPHRASE_ENV,
    PASSPHRASE_ENV,
    PassphraseError,
    Passphrases,
    kdf_from_env,
)
from device_agent.store import AccountStore, StoreError
from device_agent.vault import KdfParams, Vault
from protocol import signing

TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DP"
URI = "otpauth://totp/ACME:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME"


def agent(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**AGENT_ENV, **env}
    return run_cli([AGENT, "--home", home, *args], env=full)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def write_legacy(home: Path, seed: bytes) -> None:
    """An accounts.json exactly as the agent before the vault wrote it."""
    home.mkdir(mode=0o700)
    entry = {
        "name": "alice@example.com",
        "rp": "rp1",
        "rp_name": "Example",
        "user": "alice",
        "label": "alice@example.com",
        "broker": "ws://127.0.0.1:1/v1/device",
        "cid": "cid-alice",
        "device_name": "laptop",
        "added": 1700000000000,
        "status": "active",
        "status_reason": None,
        "seed": b64(seed),
        "totp": {"secret": TOTP_SECRET, "algorithm": "SHA1", "digits": 6, "period": 30},
    }
    (home / "accounts.json").write_text(json.dumps({"version": 1, "accounts": [entry]}))
    os.chmod(home / "accounts.json", 0o600)


def test_an_old_plain_store_moves_into_the_vault_and_is_deleted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    seed = signing.new_seed()
    write_legacy(home, seed)
    result = agent(home, "accounts", "--json")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert (entry["name"], entry["credential_id"], entry["totp"]) == ("alice@example.com", "cid-alice", True)
    assert not (home / "accounts.json").exists()
    raw = (home / "vault.pav").read_bytes()
    for secret in (b64(seed).encode(), seed, TOTP_SECRET.encode(), b"cid-alice", b"alice"):
        assert secret not in raw
    assert stat.S_IMODE((home / "vault.pav").stat().st_mode) == 0o600
    store = AccountStore(home)
    assert store.seed("cid-alice") == seed
    otp = store.totp("alice@example.com")
    assert otp is not None and otp.secret == base64.b32decode(TOTP_SECRET)
    # The code the old store's TOTP parameters give is the one the vault gives.
    codes = agent(home, "code", "--json")
    oath = run_cli(["oathtool", "--totp", "-b", TOTP_SECRET])
    assert json.loads(codes.stdout)[0]["code"] in oath.stdout  # same 30 s step, barring a boundary
    assert (
        Vault.open(home / "vault.pav", TEST_PASSPHRASE).records["entries"][0]["name"] == "alice@example.com"
    )


def test_wrong_passphrase_is_one_line_and_leaves_the_vault_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert agent(home, "add", URI).returncode == 0
    before = (home / "vault.pav").read_bytes()
    for args in (
        ["accounts"],
        ["code"],
        ["add", URI.replace("alice", "bob")],
        ["rename", "ACME: alice", "x"],
    ):
        result = agent(home, *args, **{PASSPHRASE_ENV: "not the passphrase"})
        assert_cli_error(result, contains="wrong passphrase")
        assert result.returncode == 2
    assert (home / "vault.pav").read_bytes() == before


def typing_env() -> dict[str, str]:
    """A person at a terminal: no passphrase in the environment (the cheap KDF stays)."""
    return {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}


def test_a_passphrase_typed_on_a_terminal_is_asked_again_up_to_three_times(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert agent(home, "add", URI).returncode == 0
    before = (home / "vault.pav").read_bytes()
    ask = "Passphrase of the pushauth vault"

    # Wrong, then nothing, then right: asked three times, and the command runs.
    code, said = on_a_terminal(
        home, ["accounts"], [(ask, "not it"), (ask, ""), (ask, TEST_PASSPHRASE)], env=typing_env()
    )
    assert code == 0, said
    assert "Wrong passphrase, try again (2 left)" in said
    assert "No passphrase typed, try again (1 left)" in said
    assert "ACME: alice" in said
    assert said.count(ask) == 3

    # Three wrong ones: the last says why, once, and the command ends (exit 2).
    code, said = on_a_terminal(home, ["accounts"], [(ask, "not it")] * 3, env=typing_env())
    assert code == 2, said
    assert said.count(ask) == 3 and "(1 left)" in said and "(0 left)" not in said
    assert said.count("wrong passphrase for this") == 1
    assert "ACME: alice" not in said

    # An empty one last: "no passphrase typed", never "wrong passphrase".
    code, said = on_a_terminal(home, ["accounts"], [(ask, "")] * 3, env=typing_env())
    assert code == 2, said
    assert said.count("No passphrase typed, try again") == 2
    assert "pushauth-agent: no passphrase typed" in said and "wrong" not in said.lower()
    assert (home / "vault.pav").read_bytes() == before

    # From the environment (scripts): one try, no prompt.
    result = agent(home, "accounts", **{PASSPHRASE_ENV: "not it"})
    assert_cli_error(result, contains="wrong passphrase")
    assert "try again" not in result.stderr


def test_the_passphrase_of_a_backup_file_is_asked_again_on_a_terminal(tmp_path: Path) -> None:
    home, new, backup = tmp_path / "home", tmp_path / "new", tmp_path / "b.backup"
    assert agent(home, "add", URI).returncode == 0
    assert agent(home, "backup", "--to", str(backup)).returncode == 0
    ask = "Passphrase of the backup"
    code, said = on_a_terminal(
        new, ["restore", "--from", str(backup)], [(ask, "not it"), (ask, TEST_PASSPHRASE)], env=typing_env()
    )
    assert code == 0, said
    assert "Wrong passphrase, try again (2 left)" in said
    assert "1 restored" in said
    assert Vault.open(new / "vault.pav", TEST_PASSPHRASE).records["entries"]


def test_without_a_passphrase_or_a_terminal_it_says_how_and_makes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    result = subprocess.run(
        [AGENT, "--home", home, "add", URI],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_cli_error(result, contains=PASSPHRASE_ENV)
    assert not (home / "vault.pav").exists()
    # Reading an empty home needs no passphrase at all.
    result = subprocess.run(
        [AGENT, "--home", home, "accounts"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "No accounts yet" in result.stdout


def test_passwd_changes_the_passphrase_and_a_wrong_current_one_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert agent(home, "add", URI).returncode == 0
    before = (home / "vault.pav").read_bytes()
    result = agent(
        home, "passwd", **{PASSPHRASE_ENV: "wrong", NEW_PASSPHRASE_ENV: "amber trumpet sleeps nightly"}
    )
    assert_cli_error(result, contains="wrong passphrase")
    assert (home / "vault.pav").read_bytes() == before

    result = agent(home, "passwd", **{NEW_PASSPHRASE_ENV: "amber trumpet sleeps nightly"})
    assert result.returncode == 0, result.stderr
    assert "changed" in result.stdout
    assert_cli_error(agent(home, "accounts"), contains="wrong passphrase")
    listed = agent(home, "accounts", **{PASSPHRASE_ENV: "amber trumpet sleeps nightly"})
    assert listed.returncode == 0 and "ACME: alice" in listed.stdout
    assert (
        Vault.open(home / "vault.pav", "amber trumpet sleeps nightly").kdf == KdfParams.cheapest()
    )  # cost kept


def test_a_weak_typed_passphrase_is_refused_before_it_is_asked_again() -> None:
    asked: list[str] = []
    passphrases = Passphrases(env={}, ask=lambda p: asked.append(p) or "letmein", interactive=True)
    with pytest.raises(PassphraseError, match="too short"):
        passphrases.new("the vault")
    # Never "Type it again" for a weak one; a new one is asked for, three times in all.
    assert asked == ["New passphrase for the vault: "] * 3


def test_an_empty_weak_or_mistyped_new_passphrase_is_asked_again_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = "amber trumpet sleeps nightly"
    # Weak, then a mistyped copy, then right: three tries.
    answers = iter(["letmein", good, good + "!", good, good])
    passphrases = Passphrases(env={}, ask=lambda _p: next(answers), interactive=True)
    assert passphrases.new("the vault") == good
    said = capsys.readouterr().err
    assert "too short" in said and "(2 left)" in said
    assert "The two passphrases differ, try again (1 left)" in said
    # Enter alone is asked again too.
    answers = iter(["", good, good])
    assert Passphrases(env={}, ask=lambda _p: next(answers), interactive=True).new("the vault") == good
    assert "The passphrase cannot be empty, try again (2 left)" in capsys.readouterr().err


def test_passwd_without_a_vault_is_a_clear_error(tmp_path: Path) -> None:
    result = agent(tmp_path / "home", "passwd", **{NEW_PASSPHRASE_ENV: "x"})
    assert_cli_error(result, contains="no vault yet")


def test_a_damaged_vault_is_reported_and_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert agent(home, "add", URI).returncode == 0
    path = home / "vault.pav"
    damaged = bytearray(path.read_bytes())
    damaged[-5] ^= 1
    path.write_bytes(bytes(damaged))
    for args in (["accounts"], ["add", URI.replace("alice", "bob")]):
        result = agent(home, *args)
        line = assert_cli_error(result, contains="fails authentication")
        # ... and says what to do next: a backup restored into a new home.
        assert "left as it is" in line and "pushauth-agent --home NEW_FOLDER restore --from" in line
    assert path.read_bytes() == bytes(damaged)
    path.write_bytes(b"")  # a file cut to nothing says the same
    line = assert_cli_error(agent(home, "accounts"), contains="not a pushauth vault file")
    assert "restore --from FILE|broker" in line


def test_the_passphrase_is_asked_once_per_process_and_twice_when_new(tmp_path: Path) -> None:
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "typed passphrase"

    store = AccountStore(tmp_path / "home", Passphrases(env={}, ask=ask, interactive=True))
    store.add_many_otp([])  # creates the vault
    assert [p.split()[0] for p in asked] == ["New", "Type"]
    store.entries()
    store.entries()
    assert len(asked) == 2  # remembered within the process
    again = AccountStore(tmp_path / "home", Passphrases(env={}, ask=ask, interactive=True))
    again.entries()
    assert asked[-1].startswith("Passphrase of")
    assert Vault.open(store.path, "typed passphrase").records["entries"] == []


def test_two_different_new_passphrases_are_refused() -> None:
    answers = iter(["amber trumpet sleeps nightly", "amber trumpet sleeps nightly!"] * 3)
    passphrases = Passphrases(env={}, ask=lambda _p: next(answers), interactive=True)
    with pytest.raises(PassphraseError, match="differ; nothing was changed"):
        passphrases.new("the vault")


def test_a_wrong_typed_passphrase_can_be_retried_in_the_same_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    AccountStore(home).add_many_otp([])
    # Three tries per read (see the terminal test above), then a later read asks anew.
    answers = iter(["wrong", "wrong", "wrong", TEST_PASSPHRASE])
    store = AccountStore(home, Passphrases(env={}, ask=lambda _p: next(answers), interactive=True))
    with pytest.raises(StoreError, match="wrong passphrase"):
        store.entries()
    assert store.entries() == []


def test_the_kdf_variable_is_for_tests_only_and_strict(tmp_path: Path) -> None:
    assert kdf_from_env({}) == KdfParams()
    assert kdf_from_env({KDF_ENV: "test-insecure"}) == KdfParams.cheapest()
    with pytest.raises(PassphraseError, match="for tests only"):
        kdf_from_env({KDF_ENV: "fast"})
    result = agent(tmp_path / "home", "add", URI, **{KDF_ENV: "fast"})
    assert_cli_error(result, contains=KDF_ENV)
    assert not (tmp_path / "home" / "vault.pav").exists()


def test_without_the_test_variable_a_new_vault_gets_the_real_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KDF_ENV)
    store = AccountStore(tmp_path / "home")
    store.add_many_otp([])
    assert Vault.open(store.path, TEST_PASSPHRASE).kdf == KdfParams()


def test_passwd_to_the_same_passphrase_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    # After a "not me" the agent says "change it now (pushauth-agent passwd)": typing the
    # old one again said "The vault passphrase was changed." and changed nothing.
    home = tmp_path / "home"
    assert agent(home, "add", URI).returncode == 0
    before = (home / "vault.pav").read_bytes()
    result = agent(home, "passwd", **{NEW_PASSPHRASE_ENV: TEST_PASSPHRASE})
    assert_cli_error(result, contains="the new passphrase is the same as the current one")
    assert result.returncode == 2 and "changed" not in result.stdout
    assert (home / "vault.pav").read_bytes() == before

    # Typed: asked again, as for a weak one.
    new = "amber trumpet sleeps nightly"
    code, said = on_a_terminal(
        home,
        ["passwd"],
        [("Passphrase of", TEST_PASSPHRASE), ("New passphrase", TEST_PASSPHRASE), ("New passphrase", new),
         ("Type it again", new)],
        env=typing_env(),
    )  # fmt: skip
    assert code == 0, said
    assert "The new passphrase is the same as the current one, try again (2 left)" in said
    assert agent(home, "accounts", **{PASSPHRASE_ENV: new}).returncode == 0


def test_ctrl_c_at_the_passphrase_prompt_ends_the_prompt_line_first(tmp_path: Path) -> None:
    # "Passphrase of the pushauth vault ...: pushauth-agent: interrupted" on one line:
    # a hidden prompt echoes nothing, not even the Enter that would end its line.
    home = tmp_path / "home"
    assert agent(home, "add", URI).returncode == 0
    code, said = on_a_terminal(home, ["accounts"], [("Passphrase of", signal.SIGINT)], env=typing_env())
    assert code == 130
    assert said.rstrip().endswith(": \npushauth-agent: interrupted"), said
