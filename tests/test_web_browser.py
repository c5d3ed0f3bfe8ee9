"""`capindex serve` in a real browser: Debian's chromium driven by Playwright's Python API
(never `playwright install`: no browser is downloaded), against uvicorn on a free loopback
port, over the sample photos captioned by the shipped models (once per session).

Skipped, with the reason, when playwright or /usr/bin/chromium is missing, except where
CAPINDEX_BROWSER_TESTS=required (set by .ci/run, which installs chromium): there a
missing browser fails. CAPINDEX_SCREENSHOTS=DIR saves a screenshot of the grid and of a
photo page there (docs/web-*.png are made so).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"the browser tests need playwright and uvicorn (the [test] extra): {exc}"
    if not CHROMIUM.exists():
        return f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    return None


MISSING = _missing()
if MISSING and os.environ.get("CAPINDEX_BROWSER_TESTS") == "required":
    pytest.fail(f"CAPINDEX_BROWSER_TESTS=required, but {MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="session")
def captioned(tmp_path_factory):
    """The sample photos and one named like an HTML tag, captioned by the shipped models."""
    import capindex
    from capindex.pipeline.caption import load_captioner
    from capindex.pipeline.detect import load_detector

    root = tmp_path_factory.mktemp("browser")
    photos = Path(shutil.copytree(SAMPLES, root / "photos"))
    shutil.copy(photos / "coffee.jpg", photos / XSS_NAME)
    captioner, detector = load_captioner(None, "cpu"), load_detector()
    library = capindex.Library(root / "lib")
    summary = library.ingest([photos], captioner=captioner, detector=detector, workers=0)
    assert (summary.new, summary.failed) == (6, 0)
    return library, captioner, detector


@pytest.fixture(scope="session")
def server(captioned):
    """http://127.0.0.1:PORT of uvicorn serving the library in a thread."""
    import uvicorn

    from capindex.cli.serve_command import bind
    from capindex.web import create_app

    library, captioner, detector = captioned
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(library, captioner=captioner, detector=detector)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh page; console errors (a CSP violation is one), page errors and dialogs (an
    alert() that escaped) fail the test."""
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def dialog(d):
        problems.append(f"dialog: {d.message}")
        d.dismiss()

    page.on("dialog", dialog)
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert problems == []


def screenshot(page, name: str) -> None:
    folder = os.environ.get("CAPINDEX_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def search(page, words: str) -> None:
    page.goto("/")
    page.locator("#q").fill(words)
    with page.expect_navigation():
        page.keyboard.press("Enter")


def click_and_load(page, selector: str) -> None:
    with page.expect_navigation():
        page.locator(selector).first.click()


def eventually(check, seconds: float = 15) -> None:
    """Poll `check()` until true (wait_for_function would need eval, which the CSP forbids)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def card_named(page, name: str):
    return page.locator(".card").filter(has=page.locator(".name", has_text=name))


def test_search_finds_the_cat_with_its_thumbnail(page, captioned):
    library = captioned[0]
    search(page, "cat")
    cat = card_named(page, "chelsea.jpg")
    assert cat.count() == 1
    thumbnail = cat.locator("img")
    thumbnail.scroll_into_view_if_needed()
    eventually(lambda: thumbnail.evaluate("img => img.complete && img.naturalWidth > 0"))
    assert 0 < thumbnail.evaluate("img => img.naturalWidth") <= 320
    (chelsea,) = [h for h in library.search("", 10) if h.path.endswith("/chelsea.jpg")]
    assert cat.locator(".caption").inner_text() == chelsea.caption
    assert page.locator("#count").inner_text().startswith(f"{library.count('cat')} photo")
    screenshot(page, "web-search.png")


def test_keys_reach_the_search_box_and_move_between_results(page):
    page.goto("/")
    page.locator("#q").blur()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.locator(".card a").first.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement === document.querySelectorAll('.card a')[1]")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    assert page.locator("#q").input_value() == ""


def test_more_results_load_as_the_page_scrolls(page):
    assert page.request.get("/?limit=2").text().count('<li class="card">') == 2  # as served
    page.goto("/?limit=2")
    page.mouse.wheel(0, 10_000)
    eventually(lambda: page.locator(".card").count() == 6)
    assert page.locator("#more").count() == 0
    assert page.locator("#shown").inner_text() == "6"


def test_edit_a_caption_find_it_by_a_word_of_it_and_revert(page, captioned):
    library = captioned[0]
    search(page, "cat")
    with page.expect_navigation():
        card_named(page, "chelsea.jpg").locator("a").click()
    generated = page.locator("#caption").inner_text()
    assert page.locator("svg.boxes rect").count() >= 1  # the detector's boxes over the photo
    screenshot(page, "web-photo.png")
    page.keyboard.press("e")  # the editor's key
    page.locator("#caption-text").fill("Chelsea the tabby naps on a marmalade cushion")
    click_and_load(page, "#save")
    page.reload()
    assert page.locator("#caption").inner_text() == "Chelsea the tabby naps on a marmalade cushion"
    assert page.locator("#generated").inner_text() == generated

    search(page, "marmalade")  # hybrid: the edit's word, and the nearest by meaning
    assert "chelsea.jpg" in page.locator(".card .name").all_inner_texts()
    page.goto("/?q=marmalade&mode=keyword")
    assert page.locator(".card .name").all_inner_texts() == ["chelsea.jpg"]
    click_and_load(page, ".card a")
    click_and_load(page, "#revert")
    assert page.locator("#caption").inner_text() == generated
    assert page.locator("#revert").count() == 0
    assert library.count("marmalade", mode="keyword") == 0


def test_a_file_named_like_html_is_shown_as_text(page):
    search(page, "onerror")
    card = card_named(page, "onerror")
    assert card.locator(".name").inner_text() == XSS_NAME
    assert page.locator('img[src="x"]').count() == 0
    with page.expect_navigation():
        card.locator("a").click()
    assert page.locator("#path").inner_text().endswith("/" + XSS_NAME)
    assert page.locator('img[src="x"]').count() == 0


def test_an_uploaded_photo_gets_a_caption(page, captioned):
    library = captioned[0]
    (chelsea,) = [h for h in library.search("", 10) if h.path.endswith("/chelsea.jpg")]
    page.goto("/")
    page.locator("#upload").set_input_files(str(SAMPLES / "chelsea.jpg"))
    page.locator("#upload-result").wait_for(state="visible", timeout=60_000)
    assert page.locator("#upload-caption").inner_text() == library.photo(chelsea.id)["generated_caption"]
    assert page.locator("#upload-tags").inner_text() != ""
    eventually(lambda: page.locator("#upload-preview").evaluate("img => img.naturalWidth > 0"))
