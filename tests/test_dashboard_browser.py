"""End to end in a browser: a tiny search, `psvae-opt dashboard`, headless Chromium.

Checks that the dashboard shows the studies, their metric names and search summary, a
trial's PNG and MP4 artifacts (loaded and decodable by the browser) and the rating form, and
that a rating submitted through the form lands in the stage-2 export. Screenshots go to
test-output/. Needs Debian's chromium and chromium-driver and the selenium client: missing
ones fail the test in CI (CI=true) and skip it elsewhere.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from PIL import Image

from psvae_opt.search import trial_queue
from psvae_opt.search.storage import open_database
from tests.pgserver import free_port
from tests.test_search import REPO, study_file

pytestmark = [pytest.mark.browser, pytest.mark.slow]
OUTPUT = REPO / "test-output"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)


def _require_browser() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None
    if chromium and driver:
        return chromium, driver
    message = "needs chromium, chromium-driver (scripts/system-deps.sh) and selenium (pip install -e '.[test]')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path):
    chromium, driver = _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(60)
    yield chrome
    chrome.quit()


@pytest.fixture
def searched(tiny_h5: Path, tmp_path: Path, cli) -> tuple[Path, str]:
    """A finished tiny stage 1 (one trial) and stage 2 (one beta, two seeds)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, alphas=(100.0,), n_unsup=(2,), betas=(1.0,))
    for stage in (["stage1"], ["stage2", "--seeds", "2"]):
        r = cli(*stage, "--config", config, "--storage", url, "--workers", "1")
        assert r.code == 0, r.err
    return config, url


@pytest.fixture
def server(searched: tuple[Path, str], tmp_path: Path):
    config, url = searched
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "psvae_opt.cli",
            "dashboard",
            "--config",
            str(config),
            "--storage",
            url,
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, TZ="UTC"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/studies", timeout=5).read()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "dashboard.log").read_text()
            time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _wait_text(browser, *texts: str, timeout: float = 30) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts))
    return browser.find_element(By.TAG_NAME, "body").text


def test_the_dashboard_shows_studies_artifacts_and_the_rating_form(browser, server: str, searched, tmp_path: Path, cli):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    config, url = searched
    storage = open_database(url).storage
    stage1, stage2, rating = (
        optuna.load_study(study_name=n, storage=storage) for n in ("t-stage1", "t-stage2", "t-stage2-rating")
    )
    OUTPUT.mkdir(exist_ok=True)

    browser.get(f"{server}/dashboard")
    _wait_text(browser, "t-stage1", "t-stage2", "t-stage2-rating")
    browser.get(f"{server}/dashboard/studies/{trial_queue.study_id(stage1)}")
    _wait_text(browser, "pixel_mse", "label_mse", "t-stage1: search summary")
    browser.get(f"{server}/dashboard/studies/{trial_queue.study_id(stage2)}")
    _wait_text(browser, "zu_corr", "pixel_mse", "t-stage2: search summary", "train_zu_corr")
    # the study note (its Note page): the recommendation in words, the chosen trial one click away
    browser.get(f"{server}/dashboard/studies/{trial_queue.study_id(stage2)}/note")
    _wait_text(browser, "Recommended model", "recommended beta = 1 by zu_corr: the only beta")
    chosen = stage2.user_attrs["recommendation"]["trial"]
    link = browser.find_element(By.LINK_TEXT, f"trial {chosen}")
    assert link.get_attribute("href").endswith(
        f"/dashboard/studies/{trial_queue.study_id(stage2)}/trials?numbers={chosen}"
    )

    # a stage-2 trial: its four artifacts, the image and the movie loaded by the browser
    trial = stage2.trials[0]
    browser.get(f"{server}/dashboard/studies/{trial_queue.study_id(stage2)}/trials?numbers=0")
    _wait_text(browser, "curves.html", "labels.html", "traversal.png", "traversal.mp4", "t-stage2-rating")
    diagnostics = Path(trial.user_attrs["run_dir"]) / "diagnostics"
    png = browser.find_element(By.CSS_SELECTOR, "img[alt='traversal.png']")
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return arguments[0].naturalWidth", png) > 0)
    assert (
        browser.execute_script("return arguments[0].naturalWidth", png)
        == Image.open(diagnostics / "traversal.png").width
    )
    with urllib.request.urlopen(png.get_attribute("src")) as response:
        assert response.read() == (diagnostics / "traversal.png").read_bytes()
    source = browser.find_element(By.CSS_SELECTOR, "video source")
    assert source.get_attribute("type") == "video/mp4" and "/artifacts/" in source.get_attribute("src")
    video = browser.find_element(By.TAG_NAME, "video")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return arguments[0].readyState", video) >= 1)
    import av

    with av.open(str(diagnostics / "traversal.mp4")) as container:
        width = container.streams.video[0].width
    assert browser.execute_script("return arguments[0].videoWidth", video) == width  # H.264 decoded by Chromium
    browser.save_screenshot(str(OUTPUT / "dashboard_trial.png"))

    # its rating twin: the form, filled in and submitted
    twin = next(t for t in rating.trials if t.user_attrs["stage2_trial"] == trial.number)
    browser.get(f"{server}/dashboard/studies/{trial_queue.study_id(rating)}/trials?numbers={twin.number}")
    _wait_text(
        browser,
        "Set User Attributes Form",
        "show one single behavioural feature",
        "move only its own label",
        "traversal.mp4",
        "traversal.png",
    )
    browser.find_element(By.CSS_SELECTOR, "input[type='range']").send_keys(Keys.ARROW_RIGHT)
    browser.find_element(By.XPATH, "//label[.//text()[normalize-space()='partly']]").click()
    browser.find_element(By.CSS_SELECTOR, "input[type='text']").send_keys("z_u0 jaw, z_u1 chest")
    time.sleep(1.0)  # the text field reports its value after 500 ms
    browser.save_screenshot(str(OUTPUT / "dashboard_rating.png"))
    browser.find_element(By.XPATH, "//button[normalize-space()='Submit']").click()
    deadline = time.monotonic() + 20
    while "rating_note" not in storage.get_trial(trial_queue.trial_id(twin)).user_attrs:
        assert time.monotonic() < deadline, "the rating never reached the database"
        time.sleep(0.3)
    attrs = storage.get_trial(trial_queue.trial_id(twin)).user_attrs
    assert (attrs["rating_single_feature_dims"], attrs["rating_supervised_clean"], attrs["rating_note"]) == (
        1,
        0.5,
        "z_u0 jaw, z_u1 chest",
    )

    r = cli("export", "--config", config, "--storage", url, "--stage", "2", "--out", tmp_path / "export")
    assert r.code == 0, r.err
    with (tmp_path / "export" / "ratings.csv").open() as fh:
        rows = {int(row["trial"]): row for row in csv.DictReader(fh)}
    assert rows[trial.number]["rating_note"] == "z_u0 jaw, z_u1 chest"
    assert float(rows[trial.number]["rating_supervised_clean"]) == 0.5
    assert rows[1 - trial.number]["rating_note"] == ""
