"""axe-core (bundled with axe-playwright-python) run on the page as it is now: every
violation fails the test, listed with its rule, impact and the elements it found.
The one place for it: the demo RP's browser tests (sync Playwright) and the web
authenticator's (async Playwright) both call it."""

from __future__ import annotations

from typing import Any

from axe_playwright_python.async_playwright import Axe as AsyncAxe
from axe_playwright_python.sync_playwright import Axe
from playwright.async_api import Page as AsyncPage
from playwright.sync_api import Page

_AXE = Axe()
_ASYNC_AXE = AsyncAxe()


def _check(violations: list[dict[str, Any]], state: str, url: str) -> None:
    if violations:
        lines = [
            f"- {v['id']} ({v.get('impact')}): {v['help']} -> "
            + ", ".join(" ".join(node["target"]) for node in v["nodes"])
            for v in violations
        ]
        raise AssertionError(
            f"axe found {len(violations)} violation(s) on {state} ({url}):\n" + "\n".join(lines)
        )


def assert_no_axe_violations(page: Page, state: str) -> None:
    """`state` names the page state in the failure message (e.g. "recovery code refused")."""
    _check(_AXE.run(page).response["violations"], state, page.url)


async def assert_no_axe_violations_async(page: AsyncPage, state: str) -> None:
    """The same for a page driven by Playwright's async API."""
    _check((await _ASYNC_AXE.run(page)).response["violations"], state, page.url)
