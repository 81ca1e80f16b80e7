"""TOTP/HOTP codes: the RFC test vectors, and equality with oathtool (an independent
C implementation, OATH Toolkit) for every algorithm, digit count and several periods."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from device_agent.accounts_model import OtpAccount
from device_agent.totp import code, hotp, seconds_left, time_step, totp

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
