"""Where the vault passphrase comes from: the environment (scripts) or a prompt (people).

Also the Argon2id cost for new vaults and backups, which tests lower through an
environment variable that says what it is for.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

from . import messages
from .errors import UsageError
from .vault import KdfParams

PASSPHRASE_ENV = "PUSHAUTH_AGENT_PASSPHRASE"
# `passwd` in scripts: the new passphrase (the current one is PUSHAUTH_AGENT_PASSPHRASE).
NEW_PASSPHRASE_ENV = "PUSHAUTH_AGENT_NEW_PASSPHRASE"
# FOR TESTS ONLY: "test-insecure" makes new vaults and backups with the cheapest
# Argon2id cost libsodium allows, which a stolen file would not survive. Files keep
# their cost in their header, so a real vault opened with it set stays as strong.
KDF_ENV = "PUSHAUTH_AGENT_KDF"
# `import` of a password-protected export (an encrypted Aegis vault) in scripts.
IMPORT_PASSWORD_ENV = "PUSHAUTH_AGENT_IMPORT_PASSWORD"
KDF_TEST_INSECURE = "test-insecure"
# `restore --from broker` (and `backup delete` on a device without one) in scripts: the
# backup code. Never a command-line option: others can read a process's arguments.
BACKUP_CODE_ENV = "PUSHAUTH_AGENT_BACKUP_CODE"

# A new passphrase must hold up to guessing: zxcvbn's score (0-4, an estimate of the
# guesses an attacker with dictionaries and common patterns needs) of at least 3
# ("safely unguessable": about 10^10 guesses, each an Argon2id run), and a length that
# leaves room for words rather than symbols.
MIN_PASSPHRASE_LENGTH = 12
MIN_PASSPHRASE_SCORE = 3

# Tries at a typed passphrase of an existing vault or backup, as sudo gives: each one
# costs an Argon2id run, which is what slows guessing anyway. A passphrase from the
# environment gets one try: a script would only repeat the same wrong one.
PASSPHRASE_TRIES = 3

T = TypeVar("T")


class PassphraseError(UsageError):
    """No passphrase could be had, or the two typed ones differ."""


class WrongPassphrase(Exception):
    """Mixed into what `opens` (Passphrases.opened) raises when the passphrase does not
    open the vault or backup: the caller's own error type, with its own message.
    `retry_words`: what is said before the passphrase is asked again."""

    retry_words = "wrong passphrase"


def kdf_from_env(env: Mapping[str, str] | None = None) -> KdfParams:
    value = (os.environ if env is None else env).get(KDF_ENV, "")
    if value == "":
        return KdfParams()
    if value == KDF_TEST_INSECURE:
        return KdfParams.cheapest()
    raise PassphraseError(f"{KDF_ENV} must be unset or {KDF_TEST_INSECURE!r} (for tests only), not {value!r}")


def check_strength(passphrase: str, what: str = "the passphrase") -> None:
    """Refuse a passphrase that is easy to guess, saying why and what would do."""
    advice = "use four or more random words, e.g. as a diceware list makes them"
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise PassphraseError(
            f"{what} is too short ({len(passphrase)} characters, at least {MIN_PASSPHRASE_LENGTH}): {advice}"
        )
    import zxcvbn  # its word lists load in milliseconds, and only when a passphrase is set

    result = zxcvbn.zxcvbn(passphrase[:100], user_inputs=["pushauth", "push", "auth", "passphrase"])
    if result["score"] < MIN_PASSPHRASE_SCORE:
        feedback = result.get("feedback") or {}
        why = feedback.get("warning") or "it follows a pattern that guessing programs try early"
        raise PassphraseError(f"{what} is too easy to guess ({why.rstrip('.')}): {advice}")


SAME_AS_CURRENT = "the new passphrase is the same as the current one"


def _weakness(typed: str, current: str | None = None) -> str | None:
    """Why a typed new passphrase will not do, or None."""
    if not typed:
        return "the passphrase cannot be empty"
    if current is not None and typed == current:
        # `passwd` is what a person is told to run when the passphrase may be known
        # (after a "not me"): "changed" to itself would say done and change nothing.
        return SAME_AS_CURRENT
    try:
        check_strength(typed, "the new passphrase")
    except PassphraseError as exc:
        return str(exc)
    return None


class Passphrases:
    """Asks once per process and remembers; never writes a passphrase anywhere."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        ask: Callable[[str], str] | None = None,
        interactive: bool | None = None,
    ) -> None:
        self._env = os.environ if env is None else env
        self._ask = ask or getpass.getpass
        self._interactive = sys.stdin.isatty() if interactive is None else interactive

    def _prompt(self, prompt: str, env_var: str, thing: str = "passphrase") -> str:
        if not self._interactive:
            raise PassphraseError(f"a {thing} is needed: run this on a terminal, or set {env_var}")
        try:
            return self._ask(prompt)
        except EOFError:
            raise PassphraseError(f"no {thing} was typed") from None

    def current(self, what: str) -> str:
        """The passphrase of an existing vault or backup (`what` names it in the prompt),
        unchecked: `opened` checks it, and asks again on a terminal."""
        value = self._env.get(PASSPHRASE_ENV)
        if value:
            return value
        return self._prompt(f"Passphrase of {what}: ", PASSPHRASE_ENV)

    def opened(self, what: str, opens: Callable[[str], T]) -> tuple[str, T]:
        """The passphrase of an existing vault or backup and what `opens` made of it.

        `opens` raises WrongPassphrase for a passphrase that does not open it. Typed on
        a terminal, a wrong or empty one is asked again, PASSPHRASE_TRIES times in all;
        from PUSHAUTH_AGENT_PASSPHRASE it is tried once."""
        value = self._env.get(PASSPHRASE_ENV)
        if value:
            return value, opens(value)
        for left in reversed(range(PASSPHRASE_TRIES)):
            typed = self._prompt(f"Passphrase of {what}: ", PASSPHRASE_ENV)
            if typed:
                try:
                    return typed, opens(typed)
                except WrongPassphrase as exc:
                    if not left:
                        raise
                    why = exc.retry_words
            elif not left:  # Enter alone: not "wrong", and no Argon2id run for it
                raise PassphraseError(messages.NO_PASSPHRASE_TYPED)
            else:
                why = messages.NO_PASSPHRASE_TYPED
            print(messages.try_passphrase_again(why, left=left), file=sys.stderr, flush=True)
        raise AssertionError("unreachable: the last try returns or raises")

    def other(self, prompt: str, env_var: str) -> str:
        """A password of something else (an export to import): from `env_var`, else typed."""
        return self._env.get(env_var) or self._prompt(prompt, env_var)

    def new(self, what: str, *, env_var: str = PASSPHRASE_ENV, current: str | None = None) -> str:
        """A passphrase for something new: from `env_var`, else typed twice; a weak one
        is refused (check_strength), and so is `current` (the one it replaces)."""
        value = self._env.get(env_var)
        if value:
            if current is not None and value == current:
                raise PassphraseError(f"{SAME_AS_CURRENT} ({env_var}); nothing was changed")
            check_strength(value, f"the new passphrase ({env_var})")
            return value
        # Typed: an empty, weak or mistyped one is asked again, PASSPHRASE_TRIES times in
        # all (ending the command made a person start over, and a first `add` in a new
        # home lost the URI they had pasted).
        for left in reversed(range(PASSPHRASE_TRIES)):
            first = self._prompt(f"New passphrase for {what}: ", env_var)
            why = _weakness(first, current)
            if why is None:  # a weak one is refused before it is typed twice
                if self._prompt("Type it again: ", env_var) == first:
                    return first
                why = "the two passphrases differ"
            if not left:
                raise PassphraseError(f"{why}; nothing was changed")
            print(messages.try_passphrase_again(why, left=left), file=sys.stderr, flush=True)
        raise AssertionError("unreachable: the last try returns or raises")

    def backup_code(self) -> str:
        """The backup code of a broker backup, as typed (backup_keys.BackupCode.parse)."""
        value = self._env.get(BACKUP_CODE_ENV)
        if value:
            return value
        return self._prompt("Backup code (PAB1-...): ", BACKUP_CODE_ENV, "backup code")

    def parsed_backup_code(self, parse: Callable[[str], T], mistyped: type[Exception]) -> T:
        """The backup code as `parse` reads it. Typed on a terminal, one that `parse` finds
        mistyped (`mistyped`: a missing group, a wrong check letter) is asked again,
        PASSPHRASE_TRIES times in all, as a passphrase is: 32 characters copied from paper
        are easy to slip on, and a restore that ended there was started over from scratch.
        From PUSHAUTH_AGENT_BACKUP_CODE it is tried once."""
        if self._env.get(BACKUP_CODE_ENV):
            return parse(self.backup_code())
        for left in reversed(range(PASSPHRASE_TRIES)):
            try:
                return parse(self.backup_code())
            except mistyped as exc:
                if not left:
                    raise
                print(messages.try_passphrase_again(str(exc), left=left), file=sys.stderr, flush=True)
        raise AssertionError("unreachable: the last try returns or raises")
