"""Text that people read: what may be shown as it is, and how the rest is shown.

Context values (browser, location, ...) and names come from the RP, the broker or
whoever is behind them, and the device shows them next to "approve?". A control
character there is not data but an instruction to the terminal or the text layout:
ESC starts an ANSI sequence that can move the cursor and redraw the IP line, a
carriage return or a line separator starts a fake new line, a bidi override turns
"moc.evil" into "live.com". So the broker refuses such characters in what it is
given (`first_unsafe`), and every device shows text through `printable`, which
makes whatever is left visible as an escape instead of obeying it.
"""

from __future__ import annotations

import unicodedata

# Cc: C0/C1 controls (NUL, ESC, CR, LF, DEL, CSI...). Cf: format characters (bidi
# overrides and isolates, zero-width joiners, soft hyphen, BOM). Zl/Zp: the line and
# paragraph separators U+2028/U+2029. Cs (lone surrogates) and Co/Cn (private use,
# unassigned) cannot reach here from valid UTF-8 JSON or msgpack, or are harmless.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def is_unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in UNSAFE_CATEGORIES


def first_unsafe(text: str) -> str | None:
    """The first character of `text` that must not be shown as it is, or None."""
    if text.isprintable():  # the common case, in C: no Cc/Cf/Zl/Zp/Zs-other-than-space
        return None
    for ch in text:
        if is_unsafe(ch):
            return ch
    return None


def describe(ch: str) -> str:
    """U+001B (ESC)-style name of a character, for error messages."""
    name = unicodedata.name(ch, "") or {"\x1b": "ESC", "\n": "LINE FEED", "\r": "CARRIAGE RETURN"}.get(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def printable(text: str) -> str:
    """`text` with every unsafe character replaced by a visible escape (\\x1b, \\u202e),
    so nothing a sender writes can move the cursor, start a line or reorder text."""
    if first_unsafe(text) is None:
        return text
    out = []
    for ch in text:
        if not is_unsafe(ch):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)
