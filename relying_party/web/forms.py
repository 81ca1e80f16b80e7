"""Form field checks: every field the pages accept, with its limits and its message."""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

from protocol import text as shown_text

from ..totp import normalize_code

if TYPE_CHECKING:
    from multidict import MultiDictProxy

USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
DEVICE_NAME_MAX = 64
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class FormError(Exception):
    """A field the page cannot accept; `message` is shown to the person as is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def text(
    form: MultiDictProxy[str | bytes | object],
    name: str,
    *,
    max_len: int,
    label: str,
    too_long: str | None = None,
) -> str:
    """One plain-text field, present once, not a file, within `max_len` characters.
    `too_long`: the message for a longer one, where `max_len` is only a bound on what is
    read and the field's own limit, checked after (white space collapsed), is smaller."""
    values = form.getall(name, [])
    if len(values) != 1 or not isinstance(values[0], str):
        raise FormError(f"{label} is missing.", name)
    value = values[0]
    if len(value) > max_len:
        raise FormError(too_long or f"{label} is too long (at most {max_len} characters).", name)
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise FormError(f"{label} contains characters that are not allowed.", name)
    return value


def user_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise FormError("Enter your user name.", "username")
    if not USER_NAME_RE.fullmatch(value):
        raise FormError(
            "A user name has 1 to 64 letters, digits, dots, dashes, underscores or @.", "username"
        )
    return value


DEVICE_NAME_TOO_LONG = f"A device name has at most {DEVICE_NAME_MAX} characters."


def device_name(value: str) -> str:
    value = " ".join(value.split())
    if not value:
        raise FormError("Enter a name for the device.", "name")
    if len(value) > DEVICE_NAME_MAX:
        raise FormError(DEVICE_NAME_TOO_LONG, "name")
    # Shown to people on this site and on devices: an invisible or reordering character
    # (zero-width, bidi override) could make one device's name pass for another's.
    if (bad := shown_text.first_unsafe(value)) is not None:
        raise FormError(
            f"A device name cannot contain invisible or control characters ({shown_text.describe(bad)}).",
            "name",
        )
    return value


def totp_code(value: str) -> str:
    # People type codes with the space the app shows ("123 456"), or paste it as another
    # space (no-break, thin), or in their keyboard's digits (Arabic-Indic ١٢٣, Persian ۱۲۳,
    # Devanagari १२३, full-width; the web authenticator reads the number typed on the
    # phone so: asciiDigits in device_agent/webapp/js/app.js): the SDK's reading of a code.
    value = normalize_code(value)
    if not value:
        raise FormError("Enter the code shown in the app.", "code")
    if not (value.isascii() and value.isdigit()):
        raise FormError("A verification code has only digits: type the 6 or 8 digits the app shows.", "code")
    if len(value) not in (6, 8):
        raise FormError("A verification code has 6 or 8 digits.", "code")
    return value


def identifier(value: str) -> str:
    if not ID_RE.fullmatch(value):
        raise FormError("That link is not valid.")
    return value
