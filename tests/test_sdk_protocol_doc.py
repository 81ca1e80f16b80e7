"""docs/protocol.md against the code: every frame, field, direction, error code, close
code, signing domain, limit and conformance requirement the specification names is
the one the code has, and none is missing.

The document is normative (the code is fixed to the text); this keeps the two from
drifting apart silently when either changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker import device_ws
from protocol import SUBPROTOCOLS, signing
from protocol.codec import MAX_FRAME_SIZE
from protocol.errors import CLOSE_CODES, ErrorCode
from protocol.frames import FRAME_TYPES, Sender
from relying_party.verify import MAX_CLOCK_SKEW_MS

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text()
FRAME_HEADING = re.compile(r"^### `(\w+)` \((B->D|D->B)\)$", re.MULTILINE)


def section(title: str) -> str:
    """The text of the `## N. <title>` section."""
    start = re.search(rf"^## \d+\. {re.escape(title)}$", DOC, re.MULTILINE)
    assert start, f"no section {title!r}"
    end = DOC.find("\n## ", start.end())
    return DOC[start.end() : end if end != -1 else len(DOC)]


def frame_sections() -> dict[str, tuple[str, str]]:
    """frame type -> (direction, section text), from the '### `type` (X->Y)' headings."""
    heads = list(FRAME_HEADING.finditer(DOC))
    out: dict[str, tuple[str, str]] = {}
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else DOC.index("\n## ", head.end())
        out[head.group(1)] = (head.group(2), DOC[head.end() : end])
    return out


SECTIONS = frame_sections()


def test_it_is_normative() -> None:
    assert "BCP 14 [RFC 2119] [RFC 8174] when, and only when, they\nappear in all capitals" in DOC
    assert "the code wins" not in DOC
    assert "**the code is fixed to the text**" in DOC
    for title in ("Security considerations", "Privacy considerations", "Threat model", "Conformance"):
        section(title)
    assert "```abnf" in section("Enrollment URI and enrollment binding")


def test_every_frame_type_is_documented_once() -> None:
    assert sorted(SECTIONS) == sorted(FRAME_TYPES)
    assert len(FRAME_HEADING.findall(DOC)) == len(FRAME_TYPES)


@pytest.mark.parametrize("frame_type", sorted(FRAME_TYPES))
def test_frame_fields_and_direction_match_the_code(frame_type: str) -> None:
    direction, text = SECTIONS[frame_type]
    cls = FRAME_TYPES[frame_type]
    assert direction == ("B->D" if cls.SENDER is Sender.BROKER else "D->B")
    table_fields = re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE)
    assert table_fields == list(cls.SCHEMA), "the table lists every field, in schema order"


def test_error_table_matches_codes_and_close_codes() -> None:
    rows = re.findall(
        r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \| [^|]+ \|$", section("Error codes and close codes"), re.MULTILINE
    )
    documented = {code: cell.strip() for code, cell in rows}
    assert sorted(documented) == sorted(ErrorCode)
    for code in ErrorCode:
        close = CLOSE_CODES.get(code)
        if close is None:
            assert not documented[code][:1].isdigit(), f"{code} is not fatal"
        else:
            assert documented[code] == str(close), f"{code} closes with {close}"


def test_domains_versions_and_limits_match_the_code() -> None:
    domains = [getattr(signing, name) for name in dir(signing) if name.startswith("DOMAIN_")]
    assert len(domains) == 9
    table = section("Signing bytes")
    for domain in domains:
        assert f"`{domain}`" in table, domain
    assert f"`protocol.codec.MAX_FRAME_SIZE` = {MAX_FRAME_SIZE} bytes" in DOC
    limits = section("Transport")
    assert f"a burst of {device_ws.FRAME_BURST}, then {device_ws.FRAMES_PER_S:g} per second" in limits
    assert f"{device_ws.AUTH_TIMEOUT_S:g} s from the handshake" in limits
    assert f"proven on the connection, {device_ws.UNPROVEN_BYTES} bytes (64 KiB) in all" in limits
    assert (
        f"at most {device_ws.BYTE_BURST} bytes (256 KiB), refilled at {device_ws.BYTES_PER_S:g} bytes"
        in limits
    )
    assert f"{MAX_CLOCK_SKEW_MS // 1000} s (`MAX_CLOCK_SKEW_MS`)" in limits
    assert f"`MAX_CLOCK_SKEW_MS` = {MAX_CLOCK_SKEW_MS}" in section("Freshness")
    assert f"subprotocol `{SUBPROTOCOLS[0]}`" in DOC


def test_conformance_table_lists_exactly_the_runners_requirements() -> None:
    runner = (ROOT / "protocol" / "conformance.py").read_text()
    checked = set(re.findall(r'"([A-Z]+-\d+)",\s*(?:MUST|SHOULD)', runner))
    rows = re.findall(r"^\| `([A-Z]+-\d+)` \| (MUST|SHOULD) \|", section("Conformance"), re.MULTILINE)
    assert {rid for rid, _ in rows} == checked
    levels = dict(re.findall(r'"([A-Z]+-\d+)",\s*(MUST|SHOULD)', runner))
    assert dict(rows) == levels, "the table gives each requirement the runner's level"


def test_threat_model_links_tests_that_exist() -> None:
    table = section("Threat model")
    # The seven attackers of issue 10, and whoever serves the web authenticator (issue 13).
    assert table.count("\n| **") == 8
    # `::name` is a test of the file named last before it in the same row: a reader
    # opens that file, so the test must be there, not merely somewhere.
    for row in table.splitlines():
        path = None
        for named, name in re.findall(r"`((?:browser/|webapp/)?test_\w+\.py)?::(test_\w+)`", row):
            path = named or path
            assert path is not None, f"::{name} follows no file"
            source = (ROOT / "tests" / path).read_text()
            assert f"def {name}(" in source, f"{path}::{name} does not exist"
