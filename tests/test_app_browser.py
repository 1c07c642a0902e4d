"""``fyp-app`` in a real browser: the app on the tiny models in a subprocess on 127.0.0.1, headless Chromium (Debian's
``chromium`` + ``chromium-driver``, driven by selenium; nothing downloaded at run time) uploads the bundled driving
video, types a prompt, extracts the poses, generates and downloads the video and its sidecar; a text file named
``.mp4`` shows its error in the page; an upload over ``--max-upload-mb`` is refused (in the page, and with HTTP 413 for
a direct POST to the upload route). Screenshots of each step go to the test's tmp folder (and the final page to
``docs/app.png`` when ``FYP_APP_SCREENSHOT_DOCS=1``). If the browser cannot start, the test fails when ``CI`` is set
and is skipped otherwise."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import av
import pytest

from app_models import SIZE, make_tiny_parts
from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
CARPHONE = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))
PROMPT = "a man talking on the phone in a car"
pytestmark = pytest.mark.slow


def no_browser(reason: str):
    """In CI the browser test must run: fail; elsewhere skip, saying why."""
    if os.environ.get("CI"):
        pytest.fail(f"the browser test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        no_browser(f"selenium is not installed ({err}); pip install .[dev]")
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        no_browser("Chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_bin))
    except Exception as err:  # noqa: BLE001 - any reason the browser does not start
        no_browser(f"Chromium did not start: {str(err).splitlines()[0]}")
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``python -m model.app.cli`` on the tiny models (uploads up to 5 MB); yields its URL and temporary folder; stopped
    with SIGTERM, that folder checked gone."""
    parts = make_tiny_parts(tmp_path_factory.mktemp("app-models"))
    port = free_port()
    log = tmp_path_factory.mktemp("app-log") / "app.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "model.app.cli", "--base", parts["base"], "--pose-encoder", parts["pose_encoder"],
                                 "--video-layers", parts["video_layers"], "--port", str(port), "--device", "cpu",
                                 "--pose-backend", "mediapipe", "--max-upload-mb", "5"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while not (serving := re.search(rf"fyp-app: serving on {re.escape(url)} \(temporary files in (\S+)\)", log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"fyp-app did not start: {log.read_text()[-3000:]}")
        time.sleep(1)
    with urllib.request.urlopen(url, timeout=30) as response:  # said to serve: it answers at once
        assert response.status == 200
    temp = Path(serving.group(1))
    assert temp.is_dir()
    yield SimpleNamespace(url=url, temp=temp)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:  # it did not stop: never leave it serving
            proc.kill()
            proc.wait(timeout=30)
    assert not temp.exists()  # uploads, extracted poses and videos all removed with the app


def wait_for(driver, what, timeout=300, every=0.5):
    """``what(driver)`` once it is truthy; on a timeout the page's text and a screenshot (``timeout.png`` beside the
    downloads) say what the page showed instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what(driver)
        if found:
            return found
        time.sleep(every)
    shot = driver.downloads.parent / f"timeout-{int(time.time())}.png"
    driver.save_screenshot(str(shot))
    raise AssertionError(f"timed out after {timeout} s; the page says: {body_text(driver)[-1500:]!r} (screenshot {shot})")


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def set_number(driver, elem_id: str, value) -> None:
    from selenium.webdriver.common.keys import Keys

    field = css(driver, f"#{elem_id} input")[0]
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.TAB)


def body_text(driver) -> str:
    """The page's visible text (a toast's message included)."""
    return driver.execute_script("return document.body.innerText")


def test_upload_extract_generate_download(browser, app, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser.get(app.url)
    wait_for(browser, lambda d: css(d, "#upload input[type=file]"), 60)
    browser.save_screenshot(str(shots / "1-loaded.png"))
    css(browser, "#upload input[type=file]")[0].send_keys(str(CARPHONE))
    wait_for(browser, lambda d: "carphone" in css(d, "#upload")[0].text, 60)  # uploaded (shown as "carphone" ".mp4")
    css(browser, "#prompt textarea")[0].send_keys(PROMPT)
    next(b for b in css(browser, "button") if b.text.strip().lower().startswith("settings")).click()
    wait_for(browser, lambda d: css(d, "#frames input") and css(d, "#frames input")[0].is_displayed(), 30)
    for elem_id, value in (("frames", 12), ("steps", 2), ("seed", 3), ("height", SIZE), ("width", SIZE)):
        set_number(browser, elem_id, value)
    browser.save_screenshot(str(shots / "2-filled.png"))
    css(browser, "#extract")[0].click()
    video = wait_for(browser, lambda d: [v for v in css(d, "#skeleton video") if v.get_attribute("src")], 300)[0]
    assert "carphone.mp4: poses extracted from the driving video, 12 pose frame(s)" in body_text(browser)
    assert video.is_displayed()
    browser.save_screenshot(str(shots / "3-extracted.png"))
    css(browser, "#generate")[0].click()
    wait_for(browser, lambda d: [v for v in css(d, "#result video") if v.get_attribute("src")], 600)
    links = wait_for(browser, lambda d: [a for a in css(d, "#downloads a") if (a.get_attribute("href") or "").startswith("http")], 60)
    assert "12 frames at 8 fps" in body_text(browser) and "seed 3" in body_text(browser)
    browser.save_screenshot(str(shots / "4-generated.png"))
    if os.environ.get("FYP_APP_SCREENSHOT_DOCS") == "1":
        shutil.copy(shots / "4-generated.png", REPO / "docs" / "app.png")
    names = set()
    for link in links:
        names.add(link.text.strip() or link.get_attribute("download"))
        browser.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", link)
    downloads = browser.downloads
    done = wait_for(browser, lambda d: (lambda f: f if len(f) == 2 and not any(p.suffix == ".crdownload" for p in f) else None)(
        sorted(downloads.iterdir())), 60)  # fmt: skip
    video_file = next(p for p in done if p.suffix == ".mp4")
    sidecar = json.loads(next(p for p in done if p.suffix == ".json").read_text())
    assert video_file.name == "carphone-seed3.mp4" and sidecar["video"] == video_file.name
    with av.open(str(video_file)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (SIZE, 2 * SIZE, 3)  # skeleton | video
    assert sidecar["prompt"] == PROMPT and sidecar["frames"] == 12 and sidecar["seed"] == 3
    expected = {"num_frames": 12, "steps": 2, "seed": 3, "window": 8, "guidance": 12.5, "fps": 8.0, "side_by_side": True,
                "pose_backend": "mediapipe", "source_kind": "skeleton_video", "height": SIZE, "width": SIZE}  # fmt: skip
    assert {k: sidecar["settings"][k] for k in expected} == expected


def session_folders(app) -> set[Path]:
    sessions = app.temp / "sessions"
    return set(sessions.iterdir()) if sessions.is_dir() else set()


def test_a_text_file_named_mp4_shows_an_error_in_the_page(browser, app, tmp_path):
    earlier = session_folders(app)  # an earlier test's session (its poses and videos), if one ran
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 100)
    browser.get(app.url)  # leaving the page ends that session: its folder goes
    wait_for(browser, lambda d: not earlier & session_folders(app), 30)
    wait_for(browser, lambda d: css(d, "#upload input[type=file]"), 60)
    css(browser, "#upload input[type=file]")[0].send_keys(str(bad))
    wait_for(browser, lambda d: "notes" in css(d, "#upload")[0].text, 60)
    css(browser, "#extract")[0].click()
    wait_for(browser, lambda d: "notes.mp4 is not a video this app can read" in body_text(d), 120)
    assert "Traceback" not in body_text(browser)
    browser.save_screenshot(str(tmp_path / "5-bad-upload.png"))


def test_an_upload_over_max_upload_mb_is_refused_in_the_page(browser, app, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(CARPHONE.read_bytes() * 10)  # 5.7 MB, over the app's --max-upload-mb 5
    browser.get(app.url)
    wait_for(browser, lambda d: css(d, "#upload input[type=file]"), 60)
    css(browser, "#upload input[type=file]")[0].send_keys(str(big))
    wait_for(browser, lambda d: "exceed the maximum allowed size" in body_text(d), 60)
    browser.save_screenshot(str(tmp_path / "6-too-large.png"))
    assert not list((app.temp / "gradio").rglob("big.mp4"))  # never stored


def test_an_oversized_post_to_the_upload_route_is_refused_with_413(app):
    boundary = "fyp-app-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
    body = head.encode() + b"\0" * (6 * 2**20) + f"\r\n--{boundary}--\r\n".encode()  # 6 MB, over --max-upload-mb 5
    request = urllib.request.Request(app.url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert not list((app.temp / "gradio").rglob("big.mp4"))  # never stored
