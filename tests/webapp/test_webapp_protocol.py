"""The web authenticator's protocol modules against docs/test-vectors.json, inside
real Chromium: the same signing bytes and Ed25519 signatures as the Python agent
(keys imported from the vectors' seeds, for this test only: the app makes its own
keys non-extractable), frames byte for byte, the device's rejections, the URI parser, the setup test marker,
what it shows of untrusted text, and that for every code point.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import pytest
from webapp_world import VECTORS, Phone

from protocol import text

pytestmark = pytest.mark.asyncio(loop_scope="module")
CHECK = (Path(__file__).parents[1] / "webapp_js" / "check_vectors.js").read_text()


async def test_every_vector_passes_in_the_browser(phone: Phone) -> None:
    result = await phone.page.evaluate(CHECK, VECTORS)
    assert result["failures"] == []
    checked = result["checked"]
    signing = VECTORS["signing"]
    for group, items in signing.items():
        assert checked[f"signing.{group}"] == len(items), group
    assert checked["frames"] == len(VECTORS["frames"])
    assert checked["decode"] == len(VECTORS["decode"])
    device = [r for r in VECTORS["rejections"] if r["receiver"] == "device" and "text" not in r]
    assert checked["rejections.device"] == len(device)
    assert checked["uris.valid"] == len(VECTORS["uris"]["valid"])
    assert checked["uris.invalid"] == len(VECTORS["uris"]["invalid"])
    assert checked["purposes"] == len(VECTORS["purposes"])
    assert checked["text"] == len(VECTORS["text"])
    # The same page (a phone costs a third of a second): the text rule for every code point.
    await the_app_escapes_exactly_what_the_reference_does(phone)


# Every code point through the app's text.js: the ones it escapes, as ranges, and the
# ones it shows as U+0020.
EVERY_CODE_POINT = """async () => {
  const text = await import(new URL("js/protocol/text.js", document.baseURI).href);
  const unsafe = [], spaces = [];
  for (let cp = 0; cp <= 0x10ffff; cp++) {
    const ch = String.fromCodePoint(cp);
    if (text.hasUnsafe(ch)) {
      const last = unsafe[unsafe.length - 1];
      if (last && last[1] === cp - 1) last[1] = cp; else unsafe.push([cp, cp]);
    } else if (ch !== " " && text.printable(ch) === " ") spaces.push(cp);
  }
  return { unsafe, spaces };
}"""


async def the_app_escapes_exactly_what_the_reference_does(phone: Phone) -> None:
    """protocol/text.py has its own table of Default_Ignorable_Code_Point for Python's
    Unicode version; the app uses the browser's. They agree on every code point assigned
    in Python's Unicode (a newer browser knows more: U+13439..U+1343F, format characters
    since Unicode 15, it escapes and the broker, which knows them not, lets through)."""
    result = await phone.page.evaluate(EVERY_CODE_POINT)
    escaped = {cp for a, b in result["unsafe"] for cp in range(a, b + 1)}
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if unicodedata.category(ch) != "Cn":
            assert (cp in escaped) is text.is_unsafe(ch), f"U+{cp:04X} {unicodedata.name(ch, '')}"
    assert set(result["spaces"]) == {cp for cp in range(0x10000) if unicodedata.category(chr(cp)) == "Zs"} - {
        0x20
    }
