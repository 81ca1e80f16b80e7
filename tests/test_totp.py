"""TOTP/HOTP codes: the RFC test vectors, and equality with oathtool (an independent
C implementation, OATH Toolkit) for every algorithm, digit count and several periods;
and the RP's check of a code (relying_party.totp) against the same vectors and the
device agent's codes."""

from __future__ import annotations

import base64
import random
import shutil
import subprocess

import pytest

from device_agent.accounts_model import OtpAccount
from device_agent.totp import code, hotp, seconds_left, time_step, totp
from protocol.uri import TotpParams
from relying_party import totp as rp_totp
from relying_party.totp import TotpCheck, new_totp

OATHTOOL = shutil.which("oathtool")
needs_oathtool = pytest.mark.skipif(
    OATHTOOL is None, reason="oathtool missing: run scripts/ensure-tools test"
)

# RFC 6238 Appendix B: the seed is the ASCII digits repeated to the hash's block size.
RFC6238_SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
# RFC 4226 Appendix D: HOTP-SHA1, 6 digits, counters 0..9.
RFC4226 = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), RFC6238)
def test_rfc6238_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    for algorithm, expected in (("SHA1", sha1), ("SHA256", sha256), ("SHA512", sha512)):
        assert totp(RFC6238_SEEDS[algorithm], at, algorithm=algorithm, digits=8) == expected  # type: ignore[arg-type]


def test_rfc4226_vectors() -> None:
    assert [hotp(b"12345678901234567890", c) for c in range(10)] == RFC4226


def test_code_of_accounts_follows_kind_and_parameters() -> None:
    seed = RFC6238_SEEDS["SHA256"]
    account = OtpAccount(secret=seed, name="a", algorithm="SHA256", digits=8, period=30)
    assert code(account, at=1111111109) == "68084774"
    counter_account = OtpAccount(secret=b"12345678901234567890", name="h", kind="hotp", counter=3)
    assert code(counter_account) == RFC4226[3]
    assert code(counter_account.advanced()) == RFC4226[4]
    # TOTP with another period: the step is floor(t / period).
    slow = OtpAccount(secret=RFC6238_SEEDS["SHA1"], name="slow", digits=8, period=60)
    assert code(slow, at=119) == totp(RFC6238_SEEDS["SHA1"], 59, digits=8)  # both step 1 of their period


def test_time_step_and_seconds_left() -> None:
    assert time_step(0) == 0
    assert time_step(29.999) == 0
    assert time_step(30) == 1
    assert time_step(89, 45) == 1
    assert seconds_left(0) == 30
    assert seconds_left(29.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="1970"):
        time_step(-1)
    with pytest.raises(ValueError, match="negative"):
        hotp(b"x" * 20, -1)


def _oathtool(*args: str) -> list[str]:
    assert OATHTOOL is not None
    out = subprocess.run([OATHTOOL, *args], capture_output=True, text=True, check=True).stdout
    return out.split()


SECRET_SIZES = (10, 16, 20, 32, 64, 100)  # includes keys longer than a SHA1/SHA256 block
TIMES = (0, 59, 1111111109, 1234567890, 2000000000, 4102444800)


@needs_oathtool
@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
@pytest.mark.parametrize("digits", [6, 7, 8])
@pytest.mark.parametrize("period", [1, 15, 30, 45, 60, 3600])
def test_totp_equals_oathtool(algorithm: str, digits: int, period: int) -> None:
    rng = random.Random(f"{algorithm}{digits}{period}")
    for at in (*TIMES, rng.randrange(0, 2**32)):
        secret = rng.randbytes(rng.choice(SECRET_SIZES))
        # -w 3: oathtool prints the code at `at` and the next three steps.
        expected = _oathtool(
            f"--totp={algorithm}",
            "-d",
            str(digits),
            "-s",
            f"{period}s",
            "-N",
            f"@{at}",
            "-w",
            "3",
            secret.hex(),
        )
        ours = [
            totp(secret, at + i * period, algorithm=algorithm, digits=digits, period=period)  # type: ignore[arg-type]
            for i in range(4)
        ]
        assert ours == expected, (algorithm, digits, period, at, secret.hex())


@needs_oathtool
@pytest.mark.parametrize("digits", [6, 7, 8])
def test_hotp_sha1_equals_oathtool(digits: int) -> None:
    rng = random.Random(digits)
    for counter in (0, 1, 9, 10300, 2**31 + 5, rng.randrange(0, 2**40)):
        secret = rng.randbytes(rng.choice(SECRET_SIZES))
        expected = _oathtool("--hotp", "-d", str(digits), "-c", str(counter), "-w", "3", secret.hex())
        assert [hotp(secret, counter + i, digits=digits) for i in range(4)] == expected


@needs_oathtool
@pytest.mark.parametrize("algorithm", ["SHA256", "SHA512"])
@pytest.mark.parametrize("digits", [6, 7, 8])
def test_hotp_sha2_equals_oathtool(algorithm: str, digits: int) -> None:
    # oathtool's --hotp is SHA1 only; TOTP with a 1 s step at time C is HOTP at counter C.
    rng = random.Random(algorithm + str(digits))
    for counter in (0, 50, 10300, rng.randrange(0, 2**32)):
        secret = rng.randbytes(rng.choice(SECRET_SIZES))
        expected = _oathtool(
            f"--totp={algorithm}", "-d", str(digits), "-s", "1s", "-N", f"@{counter}", "-w", "2", secret.hex()
        )
        ours = [hotp(secret, counter + i, algorithm=algorithm, digits=digits) for i in range(3)]  # type: ignore[arg-type]
        assert ours == expected


# -- the RP's check of a code (relying_party.totp: the SDK's, the demo RP's, PAM's, RADIUS's) --

RFC6238_PARAMS = {
    algorithm: TotpParams(base64.b32encode(seed).decode().rstrip("="), algorithm, 8, 30)
    for algorithm, seed in RFC6238_SEEDS.items()
}


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), RFC6238)
def test_rp_check_accepts_the_rfc6238_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    for algorithm, expected in (("SHA1", sha1), ("SHA256", sha256), ("SHA512", sha512)):
        params = RFC6238_PARAMS[algorithm]
        assert rp_totp.code_at(params, at // 30) == expected
        assert rp_totp.check_code(params, expected, last_used_step=None, now=at) == TotpCheck(at // 30)


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
@pytest.mark.parametrize(("digits", "period"), [(6, 30), (8, 60), (6, 1), (8, 3600)])
def test_rp_check_accepts_what_the_device_agent_shows(algorithm: str, digits: int, period: int) -> None:
    """The device's code (device_agent.totp, from the secret in the enrollment link) is
    the one the RP's check accepts, for every algorithm, digit count and period we issue."""
    params = new_totp(algorithm, digits, period)
    secret = base64.b32decode(params.secret + "=" * (-len(params.secret) % 8))
    rng = random.Random(params.secret)
    for at in (period * 3, 1_111_111_109, rng.randrange(period * 3, 2**32)):
        shown = totp(secret, at, algorithm=algorithm, digits=digits, period=period)  # type: ignore[arg-type]
        assert rp_totp.check_code(params, shown, last_used_step=None, now=at).step == at // period


def test_rp_check_allows_one_step_of_skew_and_refuses_a_reused_code() -> None:
    params = new_totp()
    now = 1_800_000_015.0
    step = int(now // 30)
    code = {s: rp_totp.code_at(params, s) for s in range(step - 2, step + 3)}
    assert len(set(code.values())) == 5, "five different codes (a collision would blur this test)"
    check = rp_totp.check_code
    # One step either way counts: a device clock up to a step off, a code typed late.
    for s in (step - 1, step, step + 1):
        assert check(params, code[s], last_used_step=None, now=now) == TotpCheck(s)
    for s in (step - 2, step + 2):
        assert check(params, code[s], last_used_step=None, now=now) == TotpCheck(None, replayed=False)
    # Once a step was used, its code and every earlier one are refused as replayed; a later one counts.
    assert check(params, code[step], last_used_step=step, now=now) == TotpCheck(None, replayed=True)
    assert check(params, code[step - 1], last_used_step=step, now=now) == TotpCheck(None, replayed=True)
    assert check(params, code[step + 1], last_used_step=step, now=now) == TotpCheck(step + 1)
    assert not check(params, code[step], last_used_step=step, now=now).ok
    # Not a code at all (letters, full-width digits), or of another length: refused, no match.
    for bad in (
        "",
        code[step][:-1],
        code[step] + "0",
        "12345a",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        " " + code[step][1:],
    ):
        assert check(params, bad, last_used_step=None, now=now) == TotpCheck(None)
    assert rp_totp.matching_steps(params, code[step], now=now) == [step]
