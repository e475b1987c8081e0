"""report.html of a small real sweep, opened in headless Chromium at 1400 pixels: it loads without
console errors, opens with the answer (front and recommendations), every image is drawn, the page
does not scroll sideways (wide tables scroll in their own box), and the summary and claims tables
are there. The screenshot and a PDF print are kept (`ARTIFACTS`) for a person to look at."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require, require_module

pytestmark = pytest.mark.slow
ARTIFACTS = Path(os.environ.get("MTEXP_TEST_ARTIFACTS", REPO_ROOT / ".cache" / "test-artifacts"))
TINY_SWEEP = ("backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=16",
              "eval.train_subset=0", "freezing=none,backbone", "seed=0,1")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-quic", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--window-size=1400,1000",
)
PAGE_FACTS = """
const section = (title) => {
  const heading = [...document.querySelectorAll('h2')].find(h => h.textContent.startsWith(title));
  let rows = 0;
  for (let node = heading && heading.nextElementSibling; node && node.tagName !== 'H2';
       node = node.nextElementSibling) {
    rows += node.matches('table') ? node.rows.length : node.querySelectorAll('tr').length;
  }
  return {found: !!heading, rows};
};
const answer = document.getElementById('answer');
return {
  answer: {found: !!answer, tables: answer ? answer.querySelectorAll('table').length : 0,
           images: answer ? answer.querySelectorAll('img').length : 0,
           first: !!answer && [...document.querySelectorAll('h2')][0] === answer.querySelector('h2')},
  scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  unboxedTables: [...document.querySelectorAll('table')]
    .filter(t => !t.parentElement.matches('.wide')).length,
  images: [...document.images].map(i => ({alt: i.alt, complete: i.complete,
                                           width: i.naturalWidth, height: i.naturalHeight})),
  summary: section('Summary'), claims: section('Claims'),
  height: document.documentElement.scrollHeight,
};
"""


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    require(chromium and driver, "Chromium and ChromeDriver not installed (Debian: chromium chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 scenarios x 2 seeds sweep on the tiny backbone; its end-of-sweep report."""
    root = tmp_path_factory.mktemp("browser")
    env = {**os.environ, "MTEXP_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mtexp.train", "-m", *TINY_SWEEP, f"hydra.sweep.dir={root / 'sweep'}"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    page = root / "sweep" / "report" / "report.html"
    assert page.is_file(), "the end-of-sweep callback wrote no report"
    return page


def open_page(page: Path, user_data: Path):
    webdriver = require_module("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.get(page.as_uri())
    return driver


def test_report_renders_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    driver = open_page(report_html, tmp_path / "profile")
    try:
        facts = driver.execute_script(PAGE_FACTS)
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        driver.set_window_size(1400, min(int(facts["height"]) + 100, 16000))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "report.png"))
        pdf = base64.b64decode(driver.print_page())
        (ARTIFACTS / "report.pdf").write_bytes(pdf)
    finally:
        driver.quit()
    assert not errors, errors
    assert facts["innerWidth"] == 1400 and facts["scrollWidth"] <= facts["innerWidth"], facts
    assert facts["unboxedTables"] == 0, facts
    answer = facts["answer"]
    assert answer["found"] and answer["first"], answer
    assert answer["tables"] >= 2 and answer["images"] == 1, answer  # front, recommendations, plot
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    assert facts["images"], "the report has no plots"
    for image in facts["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert facts["summary"]["found"] and facts["summary"]["rows"] >= 3, facts["summary"]
    assert facts["claims"]["found"] and facts["claims"]["rows"] >= 2, facts["claims"]
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


COMMITTED = sorted((REPO_ROOT / "results").glob("*/report.html"))


@pytest.mark.parametrize("page", COMMITTED, ids=lambda page: page.parent.name)
def test_committed_report_fits_1400_pixels(page: Path, tmp_path: Path) -> None:
    """The committed reports of real sweeps (wide cost and evidence tables) at 1400 pixels."""
    driver = open_page(page, tmp_path / "profile")
    try:
        facts = driver.execute_script(PAGE_FACTS)
    finally:
        driver.quit()
    assert facts["scrollWidth"] <= facts["innerWidth"] == 1400, facts
    assert facts["answer"]["found"] and facts["answer"]["first"], facts["answer"]
    assert facts["images"] and all(image["width"] > 0 for image in facts["images"]), facts["images"]
    assert facts["unboxedTables"] == 0
