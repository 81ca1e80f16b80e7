"""axe-core (bundled with axe-playwright-python) run on the page as it is now: every
violation fails the test, listed with its rule, impact and the elements it found."""

from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

_AXE = Axe()


def assert_no_axe_violations(page: Page, state: str) -> None:
    """`state` names the page state in the failure message (e.g. "recovery code refused")."""
    violations = _AXE.run(page).response["violations"]
    if violations:
        lines = [
            f"- {v['id']} ({v.get('impact')}): {v['help']} -> "
            + ", ".join(" ".join(node["target"]) for node in v["nodes"])
            for v in violations
        ]
        raise AssertionError(
            f"axe found {len(violations)} violation(s) on {state} ({page.url}):\n" + "\n".join(lines)
        )
