"""The page at /: type a sentence in headless Chromium, click, read the result (Playwright)."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

if not os.path.exists(CHROMIUM) and not os.environ.get("FINSENT_REQUIRE_BROWSER"):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)


def test_type_a_sentence_and_see_probability_bars(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('meta').textContent.includes('labels')")
        page.fill("#texts", "Operating profit rose to EUR 13.1 mn .\nNet sales fell sharply .")
        page.click("#go")
        page.wait_for_selector(".result .bar")
        results = page.locator(".result")
        assert results.count() == 2
        first = results.nth(0)
        assert first.locator(".label").inner_text().lower() in {"positive", "neutral", "negative"}
        assert "Operating profit rose" in first.locator(".sentence").inner_text()
        assert first.locator(".bar").count() == 3
        widths = [
            float(b.get_attribute("style").split(":")[1].strip(" %;")) for b in first.locator(".fill").all()
        ]
        assert sum(widths) == pytest.approx(100, abs=0.5)
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()
