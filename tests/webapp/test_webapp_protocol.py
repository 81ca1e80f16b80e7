"""The web authenticator's protocol modules against docs/test-vectors.json, inside
real Chromium: the same signing bytes and Ed25519 signatures as the Python agent
(keys imported from the vectors' seeds, for this test only: the app makes its own
keys non-extractable), frames byte for byte, the device's rejections, the URI parser, the setup test marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from webapp_world import VECTORS, Phone

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
