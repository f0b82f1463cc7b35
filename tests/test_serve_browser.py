"""The page at ``/`` in a real browser: headless Chromium (the system's,
driven by Playwright) against the real server process.

Uploads a photo and checks the digits shown and the boxes drawn on the
canvas; feeds Chromium's fake camera a generated video and checks that the
live readings follow it. Skipped, with the reason, where Chromium or
Playwright is missing, except when EDGE_DIGITS_REQUIRE_BROWSER=1 (CI),
where that is a failure.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and os.access(p, os.X_OK)), None)


def _browser_missing() -> str | None:
    for module in ("starlette", "uvicorn", "python_multipart", "prometheus_client", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[serve,dev]')"
    if CHROMIUM is None:
        return "Chromium not found (Debian: apt-get install chromium)"
    return None


_missing = _browser_missing()
if _missing and os.environ.get("EDGE_DIGITS_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"browser tests required (EDGE_DIGITS_REQUIRE_BROWSER=1) but {_missing}")
pytestmark = [pytest.mark.needs_model, pytest.mark.skipif(_missing is not None, reason=f"browser test: {_missing}")]

GOOD, DOUBT = (0, 200, 83), (255, 160, 0)  # box colours of app.js


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """A raw YUV 4:2:0 video, the format Chromium's fake camera plays (in a loop)."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def mnist(mnist_test):
    return mnist_test


@pytest.fixture(scope="module")
def video(tmp_path_factory, mnist, encode, number_photo, cli_json):
    """2 s of one number, then 2 s of another, as the camera sees them; the
    readings `runtime classify` makes of the same frames."""
    images, labels = mnist
    root = tmp_path_factory.mktemp("camera")
    rows = [[7, 8, 9], [11, 12, 13, 14]]
    frames, expected = [], []
    for j, idx in enumerate(rows):
        frame = number_photo([images[k] for k in idx], seed=10 + j)
        # what the camera delivers is the frame after YUV 4:2:0: classify exactly that
        frame = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), cv2.COLOR_YUV2BGR_I420)
        path = root / f"frame{j}.png"
        path.write_bytes(encode(frame, ".png"))
        expected.append(cli_json("--number", str(path))[0]["number"])
        assert expected[-1] == "".join(str(labels[k]) for k in idx), "test video: the CLI misreads a clean frame"
        frames += [frame] * 20
    return write_y4m(root / "camera.y4m", frames), expected


@pytest.fixture(scope="module")
def server(serve):
    with serve("--workers", "2") as url:
        yield url


@pytest.fixture(scope="module")
def browser(video):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox",  # CI runs as root
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video[0]}"])
        yield b
        b.close()


@pytest.fixture
def phone(browser, server):
    """A phone-sized page (iPhone 12-like viewport, touch)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True,
                                  is_mobile=True)
    context.grant_permissions(["camera"], origin=server)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def canvas_pixel(page, x: int, y: int) -> tuple[int, int, int]:
    return tuple(page.evaluate(
        "([x, y]) => Array.from(document.getElementById('view').getContext('2d')"
        ".getImageData(x, y, 1, 1).data.slice(0, 3))",
        [x, y]))


def upload(page, path: Path) -> None:
    before = int(page.get_attribute("body", "data-readings"))
    page.set_input_files("#file", str(path))
    page.wait_for_function(f"+document.body.dataset.readings > {before} && document.body.dataset.state === 'done'",
                           timeout=20_000)


def assert_boxes_drawn(page, expected_digits: list[dict]) -> None:
    """Each digit the server found has its box drawn on the canvas, in the
    box colour, where the server's box is (scaled to the canvas)."""
    drawn = page.evaluate("window.edgeDigits.drawn()")
    assert [d["digit"] for d in drawn] == [d["digit"] for d in expected_digits]
    width = page.evaluate("document.getElementById('view').width")
    for d in drawn:
        x, y, w, h = d["box"]
        for px, py in ((x + w // 2, y), (x, y + h // 2), (x + w, y + h // 2)):
            colour = canvas_pixel(page, min(px, width - 1), py)
            assert min(np.abs(np.subtract(colour, c)).max() for c in (GOOD, DOUBT)) <= 40, (d, colour)
        # and the box is where the digit is: its inside holds the dark ink, on light paper
        inset = d["line"] + 2
        darkest = page.evaluate(
            """([x, y, w, h]) => {
                 const px = document.getElementById('view').getContext('2d').getImageData(x, y, w, h).data;
                 let m = 255;
                 for (let i = 0; i < px.length; i += 4) m = Math.min(m, (px[i] + px[i + 1] + px[i + 2]) / 3);
                 return m; }""", [x + inset, y + inset, max(1, w - 2 * inset), max(1, h - 2 * inset)])
        assert darkest < 110, (d, darkest)


def test_uploaded_photo_shows_the_cli_reading_with_boxes(phone, tmp_path, mnist, encode, number_photo, cli_json):
    images, labels = mnist
    path = tmp_path / "row.jpg"
    path.write_bytes(encode(number_photo([images[k] for k in (3, 4, 5)], seed=3), ".jpg"))
    expected = cli_json("--number", str(path))[0]
    upload(phone, path)
    assert phone.inner_text("#value") == expected["number"] == "".join(str(labels[k]) for k in (3, 4, 5))
    items = phone.locator("#digits li").all_inner_texts()
    assert [t.split(" ")[0] for t in items] == [d["digit"] for d in expected["digits"]]
    for text, d in zip(items, expected["digits"]):
        assert f"{100 * d['confidence']:.1f}%" in text
    assert "ms round trip" in phone.inner_text("#timing")
    assert_boxes_drawn(phone, expected["digits"])
    # a phone-sized page: nothing wider than the screen
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390


def test_a_large_photo_decoded_reduced_gets_its_boxes_scaled(phone, tmp_path, mnist, encode, number_photo, cli_json):
    """A 2400x1800 JPEG is decoded at half size by the runtime: the boxes
    (in the decoded pixels, X-Image-Size) must still land on the digits."""
    images, labels = mnist
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(number_photo([images[k] for k in (15, 16)], size=(1800, 2400), height=500, gap=100,
                                        seed=5), ".jpg"))
    expected = cli_json("--number", str(path))[0]
    upload(phone, path)
    assert phone.inner_text("#value") == expected["number"] == "".join(str(labels[k]) for k in (15, 16))
    assert max(b for d in expected["digits"] for b in d["box"]) < 1200  # decoded reduced, as this test means
    assert_boxes_drawn(phone, expected["digits"])


def test_single_digit_mode_and_a_photo_without_digits(phone, tmp_path, mnist, paper_photo, encode, cli_json):
    images, labels = mnist
    digit = tmp_path / "digit.png"
    digit.write_bytes(encode(paper_photo(images[2], seed=2), ".png"))
    expected = cli_json(str(digit))[0]
    phone.check("input[value=digit]")
    upload(phone, digit)
    assert phone.inner_text("#value") == expected["digit"] == str(labels[2])
    assert len(phone.evaluate("window.edgeDigits.drawn()")) == 1
    blank = tmp_path / "blank.jpg"
    blank.write_bytes(encode(np.full((480, 640, 3), 210, np.uint8), ".jpg"))
    upload(phone, blank)
    assert phone.inner_text("#value") == "–" and "no digit" in phone.inner_text("#status")


def test_camera_readings_update_live(phone, video):
    _, expected = video
    phone.click("#camera")
    phone.wait_for_function("document.body.dataset.state === 'camera'", timeout=10_000)
    seen, readings = [], 0
    deadline = time.monotonic() + 60  # a few seconds on a quiet machine; generous for a busy one
    while time.monotonic() < deadline and not (set(expected) <= set(seen) and readings >= 3):
        phone.wait_for_timeout(100)
        last = phone.get_attribute("body", "data-last")
        readings = int(phone.get_attribute("body", "data-readings"))
        if last and (not seen or seen[-1] != last):
            seen.append(last)
    assert set(expected) <= set(seen), f"camera readings {seen}, expected both {expected}"
    assert readings >= 3
    # the frame on the canvas carries the boxes of its reading
    assert phone.evaluate("window.edgeDigits.drawn().length") in (len(e) for e in expected)
    phone.click("#camera")
    assert phone.get_attribute("body", "data-state") == "idle"
