"""The public web gallery in a real headless Chromium (Playwright), against the loopback server.

The browser is ``STUDIOBOT_TEST_BROWSER`` or ``chromium`` on the PATH (Playwright's own download is
never used). Without either the tests skip, unless the variable is set: CI sets it, so there a
missing browser fails instead. The server and database are those of the integration tests (SQLite).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from playwright.async_api import Browser, ConsoleMessage, Page, Response, async_playwright

from studiobot.db.engine import Database
from studiobot.db.migrate import upgrade
from studiobot.media.store import LocalStore
from tests.integration.test_web_gallery import SPECS, XSS_PROMPT, Seeded, seed, serve_gallery

VIEWPORT = {"width": 1280, "height": 800}


def browser_path() -> str:
    """The Chromium to drive; skips when there is none and none was asked for."""
    configured = os.environ.get("STUDIOBOT_TEST_BROWSER")
    if configured:
        if not Path(configured).is_file():
            pytest.fail(f"STUDIOBOT_TEST_BROWSER={configured} does not exist")
        return configured
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("no Chromium: install it or set STUDIOBOT_TEST_BROWSER (CI sets it)")
    return found


@dataclass
class Gallery:
    base_url: str
    seeded: Seeded

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
async def gallery(tmp_path: Path) -> AsyncIterator[Gallery]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'studiobot.db'}")
    await upgrade(db)
    try:
        seeded = await seed(db, LocalStore(tmp_path / "store"))
        server = await serve_gallery(db, seeded.store, page_size=24)
        try:
            yield Gallery(f"http://127.0.0.1:{server.port}", seeded)
        finally:
            await server.stop()
    finally:
        await db.dispose()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = browser_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True,
                                                    args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page at :data:`VIEWPORT` (1 device pixel per CSS pixel) and the problems it reports:
    console errors (a Content-Security-Policy violation is one), uncaught errors, dialogs, and
    answers of 400 or more (except for the favicon, which the gallery does not have)."""
    page = await browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # Chromium also logs every failed load; those are reported with their URL below.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    def response(answer: Response) -> None:
        if answer.status >= 400 and urlsplit(answer.url).path != "/favicon.ico":
            problems.append(f"{answer.status} {answer.url}")

    page.on("console", console)
    page.on("response", response)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    return page, problems


async def open_community(page: Page, gallery: Gallery) -> list[int]:
    """Open the guild's gallery page; wait until every thumbnail in the first screen has painted.

    Returns:
        The asset ids of the page's thumbnails, in page order.
    """
    community_id = gallery.seeded.communities["guild"]
    response = await page.goto(gallery.url(f"/gallery/c/{community_id}"), wait_until="load")
    assert response is not None and response.status == 200
    await page.wait_for_function(
        """() => [...document.querySelectorAll('ul.grid img')]
                 .filter(img => img.getBoundingClientRect().top < window.innerHeight)
                 .every(img => img.complete && img.naturalWidth > 0)"""
    )
    sources = await page.locator("ul.grid img").evaluate_all("imgs => imgs.map(img => img.getAttribute('src'))")
    return [int(src.rsplit("/", 1)[1]) for src in sources]


async def test_browsing_the_community_gallery_to_an_image(browser: Browser, gallery: Gallery) -> None:
    page, problems = await new_page(browser)
    ids = await open_community(page, gallery)
    assert ids == gallery.seeded.public_ids("guild")

    thumbs = await page.locator("ul.grid img").evaluate_all(
        """imgs => imgs.map(img => ({lazy: img.loading === 'lazy', top: img.getBoundingClientRect().top,
                                     loaded: img.complete && img.naturalWidth > 0,
                                     natural: [img.naturalWidth, img.naturalHeight],
                                     attrs: [img.width, img.height]}))"""
    )
    assert all(t["lazy"] for t in thumbs)
    above_the_fold = [t for t in thumbs if t["top"] < VIEWPORT["height"]]
    assert above_the_fold and all(t["loaded"] for t in above_the_fold)
    # The reserved box has the file's own proportions, so nothing moves when it arrives.
    for t in above_the_fold:
        assert t["natural"][0] * t["attrs"][1] == pytest.approx(t["natural"][1] * t["attrs"][0], rel=0.02)

    first = ids[0]
    spec = next(s for s in SPECS if gallery.seeded.ids[s.label] == first)
    await page.locator(f'a[href="/gallery/i/{first}"]').click()
    await page.wait_for_url(gallery.url(f"/gallery/i/{first}"))
    assert await page.locator(".prompt").inner_text() == spec.text
    full = page.locator(f'img[src="/media/full/{first}"]')
    await full.wait_for()
    await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=await full.element_handle())
    natural = await full.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [int(await full.get_attribute("width") or 0), int(await full.get_attribute("height") or 0)]
    assert problems == []


async def test_a_script_in_a_prompt_is_shown_as_text_and_never_runs(browser: Browser, gallery: Gallery) -> None:
    page, problems = await new_page(browser)
    response = await page.goto(gallery.url(f"/gallery/i/{gallery.seeded.ids['xss']}"), wait_until="load")
    assert response is not None and response.status == 200
    assert await page.locator(".prompt").inner_text() == XSS_PROMPT
    assert await page.locator("script").count() == 0
    assert problems == []


async def test_a_private_image_is_the_not_found_page(browser: Browser, gallery: Gallery) -> None:
    page, _ = await new_page(browser)
    for label in ("priv1", "comm1", "hidden1", "nsfw1"):
        response = await page.goto(gallery.url(f"/gallery/i/{gallery.seeded.ids[label]}"), wait_until="load")
        assert response is not None and response.status == 404
        assert await page.locator("h1").inner_text() == "Not found"
        assert await page.locator("img").count() == 0


async def test_a_screenshot_of_the_community_page_shows_the_pictures(
    browser: Browser, gallery: Gallery, tmp_path: Path
) -> None:
    page, _ = await new_page(browser)
    await open_community(page, gallery)
    box = await page.locator("ul.grid img").first.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50
    shot = tmp_path / "community.png"
    await page.screenshot(path=shot, full_page=True)
    with Image.open(shot) as image:
        assert image.width == VIEWPORT["width"] and image.height >= VIEWPORT["height"]
        region = image.convert("RGB").crop(
            (int(box["x"]) + 2, int(box["y"]) + 2, int(box["x"] + box["width"]) - 2,
             int(box["y"] + box["height"]) - 2)
        )
    # A placeholder or an unpainted box is one or two colours; the seeded pictures are gradients.
    assert region.getcolors(maxcolors=64) is None
