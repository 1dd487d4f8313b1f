"""A person's path through the demo in headless Chromium (Debian's, via Playwright).

Saves screenshots to $SCREENSHOT_DIR (default: runs/screenshots) for a human look.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from app_server import ROOT, AppServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with AppServer() as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(server.url)
        yield page
        browser.close()


def shots():
    path = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "runs" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def image_src(page, elem_id):
    return page.locator(f"#{elem_id} img").first.get_attribute("src")


def test_upload_classify_overlay_and_patch_click(page):
    page.locator("#upload input[type=file]").set_input_files(str(ROOT / "examples" / "tiger.png"))
    top = page.locator("#top5 .output-class")
    top.wait_for(timeout=60_000)
    label = top.inner_text().strip()
    from vit.data import CIFAR100_LABELS

    assert label in CIFAR100_LABELS
    for elem_id in ("occlusion", "classmap", "rollout", "raw", "patch"):
        page.locator(f"#{elem_id} img").first.wait_for(timeout=30_000)
    page.locator("#deletion img").first.wait_for(timeout=30_000)
    assert image_src(page, "occlusion") and image_src(page, "rollout")
    assert "deletion score" in page.locator("#trust").inner_text()
    before_patch = image_src(page, "patch")
    before_seen = image_src(page, "seen")

    seen = page.locator("#seen img").first
    box = seen.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
    page.wait_for_function(
        "([id, old]) => { const i = document.querySelector(`#${id} img`); "
        "return i && i.getAttribute('src') !== old; }", arg=["patch", before_patch],
        timeout=30_000)
    assert image_src(page, "seen") != before_seen  # the clicked patch is outlined
    page.screenshot(path=str(shots() / "explore.png"), full_page=True)

    # another head fusion: the rollout redraws and its title quotes that setting's score
    title = page.locator("#rollout [data-testid='block-label']")
    before_title, before_rollout = title.inner_text(), image_src(page, "rollout")
    page.get_by_label("max", exact=True).check()
    page.wait_for_function(
        "([id, old]) => { const i = document.querySelector(`#${id} img`); "
        "return i && i.getAttribute('src') !== old; }", arg=["rollout", before_rollout],
        timeout=30_000)
    assert title.inner_text() != before_title
    page.get_by_label("mean", exact=True).check()  # back as it was, for the tests after


def test_a_doubtful_guess_says_not_sure_and_lists_the_classes(page, tmp_path):
    from PIL import Image

    # smooth random colour blobs: no CIFAR-100 class, and the model doubts itself
    # (pixel noise would not do: it reads as "keyboard" at 66%)
    blobs = tmp_path / "blobs.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(
        (64, 64), Image.Resampling.BICUBIC).save(blobs)
    page.locator("#upload input[type=file]").set_input_files(str(blobs))
    notice = page.locator("#unsure")
    notice.get_by_text("Not sure", exact=False).wait_for(timeout=60_000)
    classes = notice.get_by_text("aquarium fish", exact=False)
    assert not classes.is_visible()
    notice.get_by_text("The 100 classes it knows").click()  # one click away
    classes.wait_for(state="visible", timeout=10_000)
    page.screenshot(path=str(shots() / "not-sure.png"), full_page=True)


def test_bad_upload_shows_a_clear_message(page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert page.locator("#top5 .output-class").count() == 1  # the previous image's result
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    # said where it stays (not a fading toast), and the previous results are gone
    message = page.locator("#unsure").get_by_text("not an image Pillow can read", exact=False)
    message.wait_for(timeout=30_000)
    assert "Can't read this image" in page.locator("#unsure").inner_text()
    page.wait_for_function("() => !document.querySelector('#top5 .output-class') && "
                           "!document.querySelector('#rollout img')", timeout=10_000)
    page.screenshot(path=str(shots() / "bad-upload.png"), full_page=False)
