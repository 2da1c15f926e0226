"""Browser tests: a real gateway on a loopback port, driven by headless Chromium (Playwright).

Chromium is Debian's (``/usr/bin/chromium``; ``.ci/run`` installs it). Without it these tests
are skipped, except under CI, where a missing browser fails. Screenshots of each role's main
screen are written to ``docs/screenshots/`` when ``ENCLAVE_TEST_SCREENSHOTS=1`` (1280x800 PNG),
else to the test's temporary folder, so every run exercises them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Gateway, MakeGateway

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = REPO / "docs" / "screenshots"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield instance
        finally:
            await instance.close()


@dataclass
class Console:
    """A gateway and a browser page on it; ``errors`` collects uncaught script errors."""

    gw: Gateway
    browser: Any
    shots: Path
    page: Any = None
    errors: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return str(self.gw.client.make_url("")).rstrip("/")

    async def new_page(self) -> Any:
        context = await self.browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.page = await context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return self.page

    async def open_as(self, sub: str, roles: Any, **claims: Any) -> Any:
        """Open the console signed in through the demo's ``#token=`` link."""
        page = await self.new_page()
        await page.goto(f"{self.base}/console#token={self.gw.tokens(sub, roles, **claims)}")
        return page

    async def assert_labelled(self) -> None:
        """Every visible form field has a label (or an aria-label) naming it."""
        unlabelled = await self.page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                .filter((el) => el.offsetParent !== null && el.type !== 'hidden')
                .filter((el) => !el.labels.length && !el.getAttribute('aria-label'))
                .map((el) => el.name || el.outerHTML)"""
        )
        assert unlabelled == []

    async def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.page.evaluate("window.scrollTo(0, 0)")
        await self.page.screenshot(path=str(path))
        return path


@pytest.fixture
async def console(make_gateway: MakeGateway, browser: Any, tmp_path: Path) -> AsyncIterator[Any]:
    shots = SCREENSHOTS if os.environ.get("ENCLAVE_TEST_SCREENSHOTS") == "1" else tmp_path

    async def make(**over: Any) -> Console:
        gw = await make_gateway(**over)
        made.append(Console(gw=gw, browser=browser, shots=shots))
        return made[-1]

    made: list[Console] = []
    yield make
    for c in made:
        assert c.errors == [], f"uncaught errors in the page: {c.errors}"
