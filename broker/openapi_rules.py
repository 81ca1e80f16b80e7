"""JSON Schema forms of the rules the API checks, built from the code that checks them.

The OpenAPI document (broker/openapi.py) must say exactly what the API accepts
(issue 11, finding 8): a schema looser than the handlers makes clients and fuzzers
send what is refused; a stricter one hides what is allowed. So the patterns here are
derived from the one place each rule lives: protocol/text.py for the characters text
may not hold, protocol/b64.py's alphabet for binary values.
"""

from __future__ import annotations

import math
import unicodedata
from functools import cache
from typing import Any

from protocol.text import INVISIBLE, UNSAFE_CATEGORIES


def b64url(nbytes: int) -> dict[str, Any]:
    """Exactly `nbytes` bytes in canonical unpadded base64url: that many characters,
    the last one with its unused low bits zero (protocol.b64.decode refuses others)."""
    chars = math.ceil(nbytes * 8 / 6)
    unused = chars * 6 - nbytes * 8
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = "".join(c for i, c in enumerate(alphabet) if i % (1 << unused) == 0)
    last_class = "A-Za-z0-9_-" if unused == 0 else last.replace("-", "\\-")
    return {
        "type": "string",
        "pattern": f"^[A-Za-z0-9_-]{{{chars - 1}}}[{last_class}]$",
        "minLength": chars,
        "maxLength": chars,
        "description": f"{nbytes} bytes, canonical base64url without padding ({chars} characters)",
    }


def _escape(cp: int) -> str:
    """A code point inside a character class, readable by both Python's re and
    ECMA-262 in Unicode mode: \\uXXXX for the BMP, the character itself above it
    (an astral escape is written differently in each)."""
    return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)


# Where Cc, Cf, Zl, Zp, Cs and the invisible characters live: planes 0 and 1, and the
# tags and variation selectors of plane 14. Planes 2 to 13 hold ideographs or nothing;
# leaving them out keeps the scan (done once per process, when the OpenAPI document is
# first asked for) at a few hundredths of a second instead of 0.3 s.
_PLANES = (range(0x20000), range(0xE0000, 0xE1000))


# Lone surrogates (Cs) cannot reach a handler: orjson refuses them in JSON and a URL's
# UTF-8 cannot encode them. A pattern naming them is one regex engines refuse (a
# surrogate is no Unicode scalar value), so the pattern leaves them out.
_CATEGORIES = UNSAFE_CATEGORIES - {"Cs"}


@cache
def _unsafe_ranges() -> tuple[tuple[int, int], ...]:
    # By category, then protocol.text's table of invisible characters: what is_unsafe
    # does, a third of the time of calling it for each code point.
    unsafe = {cp for plane in _PLANES for cp in plane if unicodedata.category(chr(cp)) in _CATEGORIES}
    unsafe.update(cp for a, b in INVISIBLE for cp in range(a, b + 1))
    ranges: list[tuple[int, int]] = []
    for cp in sorted(unsafe):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return tuple(ranges)


@cache
def safe_text_pattern() -> str:
    """Text with none of the characters protocol.text.is_unsafe refuses (Cc, Cf, Zl,
    Zp, the default ignorable ones, the Braille blank), by this Python's Unicode
    database: the same one the broker checks with.
    Made on first use, not at import: the scan costs a few hundredths of a second,
    which a broker's start need not pay (broker/openapi.py fills it in on the first
    request for the document)."""
    parts = [_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in _unsafe_ranges()]
    return f"^[^{''.join(parts)}]*$"
