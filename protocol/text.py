"""Text that people read: what may be shown as it is, and how the rest is shown.

Context values (browser, location, ...) and names come from the RP, the broker or
whoever is behind them, and the device shows them next to "approve?". A control
character there is not data but an instruction to the terminal or the text layout:
ESC starts an ANSI sequence that can move the cursor and redraw the IP line, a
carriage return or a line separator starts a fake new line, a bidi override turns
"moc.evil" into "live.com". A character that renders as nothing (a Hangul filler, a
variation selector) makes a name that looks empty, or two names that look the same
and are not. So the broker refuses such characters in what it is given
(`first_unsafe`), and every device shows text through `printable`, which makes
whatever is left visible as an escape instead of obeying it (docs/protocol.md 18.4).
The web authenticator applies the same rule (device_agent/webapp/js/protocol/text.js);
the vectors' `text` group pins both.
"""

from __future__ import annotations

import re
import unicodedata

# Cc: C0/C1 controls (NUL, ESC, CR, LF, DEL, CSI...). Cf: format characters (bidi
# overrides and isolates, zero-width joiners, soft hyphen, BOM). Zl/Zp: the line and
# paragraph separators U+2028/U+2029. Cs (lone surrogates) and Co/Cn (private use,
# unassigned) cannot reach here from valid UTF-8 JSON or msgpack, or are harmless.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})

# Unicode's Default_Ignorable_Code_Point, which renderers show as nothing, for
# Unicode 14.0.0 (unicodedata.unidata_version of the Python this project runs). Python
# has no such property, so the ranges are written out here: DerivedCoreProperties.txt
# defines it as Other_Default_Ignorable_Code_Point + Cf + Variation_Selector -
# White_Space - FFF9..FFFB - 13430..1343F - Prepended_Concatenation_Mark, with those
# properties from PropList.txt 14.0.0 (listed by Perl 5.36's \p{Default_Ignorable_
# Code_Point}, also Unicode 14.0.0). tests/test_text_rule.py rebuilds it by that rule
# for every code point. Its Cf members are refused by category already; the others are
# letters (Lo), marks (Mn) and reserved code points that isprintable() lets through.
DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # SOFT HYPHEN (Cf)
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER (Mn)
    (0x061C, 0x061C),  # ARABIC LETTER MARK (Cf)
    (0x115F, 0x1160),  # HANGUL CHOSEONG FILLER, HANGUL JUNGSEONG FILLER (Lo)
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ, AA (Mn)
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS (Mn), VOWEL SEPARATOR (Cf)
    (0x200B, 0x200F),  # ZERO WIDTH SPACE .. RIGHT-TO-LEFT MARK (Cf)
    (0x202A, 0x202E),  # bidi embeddings and overrides (Cf)
    (0x2060, 0x206F),  # WORD JOINER .. NOMINAL DIGIT SHAPES (Cf; U+2065 reserved)
    (0x3164, 0x3164),  # HANGUL FILLER (Lo)
    (0xFE00, 0xFE0F),  # VARIATION SELECTOR-1..16 (Mn)
    (0xFEFF, 0xFEFF),  # ZERO WIDTH NO-BREAK SPACE, the BOM (Cf)
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER (Lo)
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # SHORTHAND FORMAT controls (Cf)
    (0x1D173, 0x1D17A),  # MUSICAL SYMBOL BEGIN BEAM .. END PHRASE (Cf)
    (0xE0000, 0xE0FFF),  # tags (Cf), VARIATION SELECTOR-17..256 (Mn), the rest reserved
)
# Blank without being ignorable: BRAILLE PATTERN BLANK (So) draws an empty cell and is
# the usual filler of "empty" names where the ignorable ones are refused.
BLANK: tuple[tuple[int, int], ...] = ((0x2800, 0x2800),)
# Unsafe whatever their category (the table's Cf members are unsafe twice over).
INVISIBLE = DEFAULT_IGNORABLE + BLANK


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


# One regex search, in C, is what non-ASCII printable text costs on top of isprintable().
_INVISIBLE = re.compile(f"[{_char_class(INVISIBLE)}]")


def is_unsafe(ch: str) -> bool:
    # U+00AD is the first invisible character: Latin-1 text needs no regex.
    return unicodedata.category(ch) in UNSAFE_CATEGORIES or (
        ch >= "\xad" and _INVISIBLE.match(ch) is not None
    )


def _plain(text: str) -> bool:
    """True when `text` is certainly shown as it is: the common case, in C. isprintable()
    is False for every Cc, Cf, Zl, Zp, Cs (and Zs other than U+0020, Co, Cn), but True
    for the invisible letters and marks, which ASCII text cannot hold."""
    return text.isprintable() and (text.isascii() or _INVISIBLE.search(text) is None)


def first_unsafe(text: str) -> str | None:
    """The first character of `text` that must not be shown as it is, or None."""
    if _plain(text):
        return None
    for ch in text:
        if is_unsafe(ch):
            return ch
    return None


def describe(ch: str) -> str:
    """U+001B (ESC)-style name of a character, for error messages."""
    name = unicodedata.name(ch, "") or {"\x1b": "ESC", "\n": "LINE FEED", "\r": "CARRIAGE RETURN"}.get(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def refusal(ch: str) -> str:
    """The words of every refusal of such text (API, frames, CLI), after the field's name."""
    return f"must not contain control, format or invisible characters (found {describe(ch)})"


def printable(text: str) -> str:
    """`text` with every unsafe character replaced by a visible escape (\\x1b, \\u202e),
    so nothing a sender writes can move the cursor, start a line, reorder text or hide.

    A space other than U+0020 (NO-BREAK SPACE, U+202F, U+2000..U+200A, IDEOGRAPHIC
    SPACE...) is shown as U+0020. It is not refused: a location may hold a no-break
    space, and ICU writes U+202F before "AM". Nor escaped: "10:00\\u202fAM" would teach
    people to read past escapes. But as it is, a run of them is blank that neither
    collapses (HTML collapses runs of ordinary spaces only) nor wraps (no-break spaces), and
    U+3000 is twice as wide: enough to push the rest of a value, a real domain, out of
    view. As U+0020 it does no more than an ordinary space can."""
    if _plain(text):
        return text
    out = []
    for ch in text:
        if is_unsafe(ch):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        elif ch != " " and unicodedata.category(ch) == "Zs":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def printable_clipped(text: str, limit: int = 40) -> str:
    """printable(), cut after `limit` characters, saying how long it was: a name or
    a pasted page echoed in a message must not fill the terminal."""
    if len(text) <= limit:
        return printable(text)
    return f"{printable(text[:limit])}... ({len(text)} characters)"
