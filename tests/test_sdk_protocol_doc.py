"""docs/protocol.md against protocol/: every frame, field, direction, error code and
close code the document lists is the one the code has, and none is missing.

The document is how a second implementation learns the protocol; this keeps it from
drifting when a frame or code changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import signing
from protocol.codec import MAX_FRAME_SIZE
from protocol.errors import CLOSE_CODES, ErrorCode
from protocol.frames import FRAME_TYPES, Sender

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
FRAME_HEADING = re.compile(r"^### `(\w+)` \((B->D|D->B)\)$", re.MULTILINE)


def frame_sections() -> dict[str, tuple[str, str]]:
    """frame type -> (direction, section text), from the '### `type` (X->Y)' headings."""
    heads = list(FRAME_HEADING.finditer(DOC))
    out: dict[str, tuple[str, str]] = {}
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else DOC.index("\n## ", head.end())
        out[head.group(1)] = (head.group(2), DOC[head.end() : end])
    return out


SECTIONS = frame_sections()


def test_every_frame_type_is_documented_once() -> None:
    assert sorted(SECTIONS) == sorted(FRAME_TYPES)


@pytest.mark.parametrize("frame_type", sorted(FRAME_TYPES))
def test_frame_fields_and_direction_match_the_code(frame_type: str) -> None:
    direction, text = SECTIONS[frame_type]
    cls = FRAME_TYPES[frame_type]
    assert direction == ("B->D" if cls.SENDER is Sender.BROKER else "D->B")
    table_fields = re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE)
    assert table_fields == list(cls.SCHEMA), "the table lists the fields in schema order"


def test_error_table_matches_codes_and_close_codes() -> None:
    section = DOC[DOC.index("## 9.") : DOC.index("## 10.")]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|$", section, re.MULTILINE)
    documented = {code: cell.strip() for code, cell in rows}
    assert sorted(documented) == sorted(ErrorCode)
    for code in ErrorCode:
        close = CLOSE_CODES.get(code)
        if close is None:
            assert not documented[code][:1].isdigit(), f"{code} is not fatal"
        else:
            assert documented[code] == str(close), f"{code} closes with {close}"


def test_domains_and_limits_match_the_code() -> None:
    for domain in (signing.DOMAIN_AUTH, signing.DOMAIN_ENROLL, signing.DOMAIN_ANSWER, signing.DOMAIN_CONTEXT):
        assert f"`{domain}`" in DOC
    assert f"`protocol.codec.MAX_FRAME_SIZE` = {MAX_FRAME_SIZE} bytes" in DOC
