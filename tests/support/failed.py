"""Where a failed test's artifacts go, for fixtures that add to them in their teardown.

tests/conftest.py keeps each failed test's logs (and the pages of sync Playwright tests)
in artifacts/failed/<test id>/ and records that directory here. Async fixtures cannot be
reached from that hook (their event loop is not running then), so they keep what they
own, such as the web app's pages, in their own teardown, before closing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

FAILED_DIR = pytest.StashKey[Path]()  # on the item of a test that failed in setup or call
