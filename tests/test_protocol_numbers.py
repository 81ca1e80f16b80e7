"""protocol.numbers: the number shown on the sign-in page, and how a typed one is compared."""

from __future__ import annotations

import collections
import hmac

import pytest

from protocol import numbers


@pytest.mark.parametrize("digits", range(numbers.MIN_DIGITS, numbers.MAX_DIGITS + 1))
def test_generate_has_exactly_the_digits_asked_for(digits: int) -> None:
    for _ in range(300):
        number = numbers.generate(digits)
        assert len(number) == digits
        assert number.isascii()
        assert number.isdigit()
        assert number[0] != "0"  # no leading zero: "07" would be read and typed as "7"
        assert 10 ** (digits - 1) <= int(number) < 10**digits


def test_default_is_two_digits() -> None:
    assert numbers.DEFAULT_DIGITS == 2
    assert len(numbers.generate()) == 2
    assert numbers.STRICT_MIN_DIGITS == 6  # NIST SP 800-63B-4 out-of-band profile
    assert (numbers.MIN_DIGITS, numbers.MAX_DIGITS) == (2, 8)


@pytest.mark.parametrize("digits", [-1, 0, 1, 9, 20])
def test_generate_refuses_digits_out_of_range(digits: int) -> None:
    with pytest.raises(ValueError, match=r"digits must be 2\.\.8"):
        numbers.generate(digits)


def test_every_two_digit_number_can_come_up() -> None:
    # 90 values, 20,000 draws: a value never drawn has probability ~1e-96 if uniform.
    seen = collections.Counter(numbers.generate(2) for _ in range(20_000))
    assert set(seen) == {str(n) for n in range(10, 100)}


def test_every_leading_digit_can_come_up_for_eight_digits() -> None:
    leading = {numbers.generate(8)[0] for _ in range(2_000)}
    assert leading == set("123456789")


@pytest.mark.parametrize(
    ("expected", "typed", "result"),
    [
        ("42", "42", True),
        ("42", "24", False),
        ("42", "4", False),  # a prefix
        ("42", "420", False),  # longer
        ("42", "042", False),  # a leading zero is another number
        ("42", "", False),
        ("42", " 42", False),
        ("42", "42 ", False),
        ("42", "\uff14\uff12", False),  # full-width digits: not the same, and no exception
        ("12345678", "12345678", True),
        ("12345678", "12345679", False),
    ],
)
def test_matches(expected: str, typed: str, result: bool) -> None:
    assert numbers.matches(expected, typed) is result


def test_matches_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The typed number is attacker-chosen: the comparison must not stop at the first
    # differing digit. We cannot time it reliably; we check it is hmac.compare_digest
    # over bytes (str would raise for non-ASCII input).
    calls: list[tuple[object, object]] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(numbers.hmac, "compare_digest", spy)
    assert numbers.matches("42", "4\u00e9") is False
    assert calls == [(b"42", "4\u00e9".encode())]


@pytest.mark.parametrize(
    ("typed", "digits"),
    [
        ("856 825", "856825"),  # grouped as a page shows it
        ("85\u00a068", "8568"),  # a no-break space, from a paste
        ("\u0668\u0665\u0666\u0668", "8568"),  # Arabic-Indic digits
        ("\uff18\uff15", "85"),  # full-width digits
        (" 47\n", "47"),
        ("4x7", "4x7"),  # not a digit: left for the caller to refuse
    ],
)
def test_a_typed_number_is_the_digits_it_means(typed: str, digits: str) -> None:
    assert numbers.as_typed(typed) == digits
