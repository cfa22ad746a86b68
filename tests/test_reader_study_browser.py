"""Reader study end to end in a real browser: headless Chromium (Debian's) driven by Playwright.

A reader opens their link, labels every image with clicks and with the R / S keys, reloads
midway and closes the browser midway, and resumes each time where they left off; the analysis
then counts exactly what was clicked.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright import sync_api

from helpers import answer_key, make_study, require_asset, thread_server
from synthmed.reader_study.analysis import CELLS, analyze_study

CHROMIUM = Path("/usr/bin/chromium")


def test_a_reader_labels_every_image_in_the_browser_and_resumes(tmp_path):
    require_asset(CHROMIUM.exists(), f"Debian's chromium at {CHROMIUM}")
    study, admin_token = make_study(tmp_path, 6)
    key = answer_key(study)
    given: dict[str, str] = {}
    errors: list[str] = []
    with thread_server(study) as base, sync_api.sync_playwright() as playwright:
        link = httpx.post(f"{base}/admin/{admin_token}/readers", json={"name": "R1"}).json()["link"]
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)

        def open_link():
            page = browser.new_context(viewport={"width": 900, "height": 760}).new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(link)
            return page

        page = open_link()
        progress = page.locator("#progress")
        shown = page.locator("#image")
        sync_api.expect(progress).to_have_text("Image 1 of 12")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(128, 128, 128)"
        assert shown.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width, "
                              "getComputedStyle(img).imageRendering]") == [32, 512, "pixelated"]
        for n in range(12):
            image_id = shown.get_attribute("data-image")
            label = ("real", "synthetic", "synthetic")[n % 3]
            if n == 2:
                page.dblclick(f"#{label}")  # a double click answers once
            elif n < 6:
                page.click(f"#{label}")
            else:
                page.keyboard.press(label[0])  # "r" / "s"
            given[image_id] = label
            sync_api.expect(progress).to_have_text(f"Image {n + 2} of 12" if n < 11 else "All 12 images are labelled.")
            if n == 4:
                page.reload()
                sync_api.expect(progress).to_have_text("Image 6 of 12")
            if n == 7:
                page.context.close()  # the reader closes the browser and comes back later
                page = open_link()
                progress, shown = page.locator("#progress"), page.locator("#image")
                sync_api.expect(progress).to_have_text("Image 9 of 12")
                assert shown.get_attribute("data-image") not in given
        browser.close()
    assert not errors

    result = analyze_study(study)
    expected = dict.fromkeys(("TR", "FR", "TS", "FS"), 0)
    for image_id, label in given.items():
        expected[CELLS[key[image_id], label]] += 1
    reader = result["readers"][0]
    assert len(given) == 12 and {c: reader[c] for c in expected} == expected
    assert reader["accuracy"] == (expected["TR"] + expected["TS"]) / 12
