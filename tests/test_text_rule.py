"""protocol/text.py's table of Default_Ignorable_Code_Point against Unicode's rule.

Python's unicodedata has no such property, so protocol/text.py writes the ranges out.
Here they are rebuilt, for every code point, by the rule of DerivedCoreProperties.txt:
Other_Default_Ignorable_Code_Point + Cf + Variation_Selector - White_Space -
FFF9..FFFB - 13430..1343F - Prepended_Concatenation_Mark. Cf comes from unicodedata;
the other properties are not in it, so they are copied below from PropList.txt of the
same Unicode version and checked against unicodedata where it can tell (names,
categories, isspace)."""

from __future__ import annotations

import sys
import unicodedata

from protocol import text

# PropList.txt 14.0.0.
OTHER_DEFAULT_IGNORABLE = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x2065, 0x2065), (0x3164, 0x3164),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0xE0000, 0xE0000), (0xE0002, 0xE001F), (0xE0080, 0xE00FF),
    (0xE01F0, 0xE0FFF),
)  # fmt: skip
VARIATION_SELECTOR = ((0x180B, 0x180D), (0x180F, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
WHITE_SPACE = (
    (0x0009, 0x000D), (0x0020, 0x0020), (0x0085, 0x0085), (0x00A0, 0x00A0), (0x1680, 0x1680),
    (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
)  # fmt: skip
PREPENDED_CONCATENATION_MARK = (
    (0x0600, 0x0605), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD),
)  # fmt: skip
NOT_IGNORABLE = ((0xFFF9, 0xFFFB), (0x13430, 0x1343F))


def points(ranges: tuple[tuple[int, int], ...]) -> set[int]:
    return {cp for a, b in ranges for cp in range(a, b + 1)}


def test_the_table_is_default_ignorable_by_its_definition() -> None:
    assert unicodedata.unidata_version == "14.0.0", "a new Unicode version: check PropList.txt and the table"
    cf = {cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf"}
    rule = points(OTHER_DEFAULT_IGNORABLE) | cf | points(VARIATION_SELECTOR)
    rule -= points(WHITE_SPACE) | points(NOT_IGNORABLE) | points(PREPENDED_CONCATENATION_MARK)
    assert points(text.DEFAULT_IGNORABLE) == rule


def test_the_copied_properties_agree_with_unicodedata() -> None:
    """What unicodedata can say about the properties copied from PropList.txt."""
    named = {cp for cp in range(sys.maxunicode + 1) if "VARIATION SELECTOR" in unicodedata.name(chr(cp), "")}
    assert points(VARIATION_SELECTOR) == named
    # isspace() is White_Space plus the information separators U+001C..U+001F.
    spaces = {cp for cp in range(0x10000) if chr(cp).isspace()} - set(range(0x1C, 0x20))
    assert points(WHITE_SPACE) == spaces
    assert {unicodedata.category(chr(cp)) for cp in points(PREPENDED_CONCATENATION_MARK)} == {"Cf"}
    assert {unicodedata.category(chr(cp)) for cp in points(OTHER_DEFAULT_IGNORABLE)} == {"Cn", "Lo", "Mn"}
    assert "FILLER" in unicodedata.name("\u3164") and "FILLER" in unicodedata.name("\uffa0")


def test_only_ascii_and_printable_text_takes_the_short_cut() -> None:
    """isprintable() lets the invisible letters and marks through; the extra check catches
    each wherever it stands, and no ordinary letter."""
    for cp in sorted(points(text.INVISIBLE)):
        ch = chr(cp)
        assert text.first_unsafe(f"Webmail {ch}x") == ch, f"U+{cp:04X}"
        assert text.printable(f"a{ch}") == (f"a\\u{cp:04x}" if cp >= 0x100 else f"a\\x{cp:02x}")
    for ok in ("서울", "ᄀ", "ㄱ", "東京", "Zürich", "ÆØÅ", "❤", "\u2801", "ﾡ"):
        assert text.first_unsafe(ok) is None and text.printable(ok) == ok, ok
