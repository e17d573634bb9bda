"""Driving the explore page in a real browser: Debian's chromium, headless, through Playwright.

Used by tests/test_explore_browser.py, and as a script that draws the docs' screenshots:

    python tests/browser.py docs/figures/explore.png      # or: make explore-figure
    python tests/browser.py docs/figures/explore-zh.png --lang zh

The browser is the system's chromium (``apt-get install chromium``; ``.ci/run`` installs it),
never a downloaded one: :func:`find_chromium` looks for it and the tests skip, saying why,
only when there is none. ``CROSSENTROPY_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Headless chromium on a machine without network access: without the background-networking
#: flags it keeps trying to reach its update and sync services.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = {"width": 1320, "height": 1000}


def find_chromium() -> str | None:
    """The chromium binary: ``$CROSSENTROPY_CHROMIUM``, else the first on ``PATH``."""
    named = os.environ.get("CROSSENTROPY_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def chromium(executable: str) -> Iterator[Any]:
    """A headless chromium with a fresh profile (a Playwright ``BrowserContext``: its
    ``new_page()`` opens a tab), closed on exit."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="crossentropy-chromium-")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=list(CHROMIUM_ARGS),
                viewport=VIEWPORT,
            )
            try:
                yield browser
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_page(browser: Any, url: str) -> Any:
    """A new tab on ``url``, once the page's script has drawn everything.

    The tab records every request (``page.requests``) and every console or script error
    (``page.problems``).
    """
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.requests = []
    page.problems = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.problems.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda msg: (
            page.problems.append(f"{msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", timeout=10_000)
    return page


def set_value(page: Any, element_id: str, value: object) -> str:
    """Set an input's value as a person dragging or typing would (an ``input`` event) and
    return the value the input took (a slider snaps to its step)."""
    taken: str = page.evaluate(
        """([id, value]) => {
            const el = document.getElementById(id);
            el.value = String(value);
            el.dispatchEvent(new Event("input", {bubbles: true}));
            el.dispatchEvent(new Event("change", {bubbles: true}));
            return el.value;
        }""",
        [element_id, value],
    )
    return taken


def outputs(page: Any) -> dict[str, tuple[str, float]]:
    """Every ``<output>`` on the page: id -> (the text shown, the full-precision value)."""
    found: dict[str, list[str]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll("output")]
            .filter((o) => o.id && o.offsetParent !== null)
            .map((o) => [o.id, [o.textContent, o.dataset.value]]))"""
    )
    return {k: (text, float(value)) for k, (text, value) in found.items()}


def screenshot(path: Path, lang: str = "en") -> None:
    """Draw the README's screenshot: the softmax view of four logits, the true class not the
    most likely, temperature 1.5, in ``lang``."""
    from crossentropy.explore import write_page

    executable = find_chromium()
    if executable is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        page_path = write_page(
            Path(tmp) / "explore.html", [3.0, 1.0, -2.0, 0.5], label=2, lang=lang
        )
        with chromium(executable) as browser:
            page = open_page(browser, page_path.as_uri())
            set_value(page, "temperature-value", 1.5)
            page.screenshot(path=str(path), full_page=True)
            if page.problems:
                raise SystemExit(f"the page reported problems: {page.problems}")
    print(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Draw a screenshot of the explore page.")
    parser.add_argument("path", nargs="?", default="docs/figures/explore.png", type=Path)
    parser.add_argument("--lang", default="en", choices=("en", "zh", "ru"))
    args = parser.parse_args()
    screenshot(args.path, args.lang)
