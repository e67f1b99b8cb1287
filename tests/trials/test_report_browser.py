"""The HTML report in a real headless Chromium: loads cleanly, renders, never runs registry text.

Needs the system ``chromium`` and ``chromedriver`` (``.ci/run`` installs them with apt); skips
with a clear reason otherwise. Screenshots of the first screen and of the flow diagram are
saved under ``build/screenshots/`` (CI artifacts, not committed).
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from irtscope.trials._report import REPORT_SECTIONS

pytestmark = pytest.mark.browser

EVIL = "<script>window.__pwned=1</script><b>x</b>"
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "build" / "screenshots"


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def driver():
    chromium = _binary("chromium", "chromium-browser", "google-chrome")
    chromedriver = _binary("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(
            "headless Chromium or chromedriver not installed (apt: chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="irtscope-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _contract_report(tmp: Path) -> Path:
    """Without the shared records: contract-shaped screening/classification frames."""
    import pandas as pd

    from irtscope.trials._protocol import load_protocol
    from irtscope.trials._report import write_landscape_report

    ids = ["NCT00000001", "NCT00000002"]
    studies = [
        {"protocolSection": {"identificationModule": {"nctId": nct, "briefTitle": title}}}
        for nct, title in zip(ids, [EVIL, "A plain title"], strict=True)
    ]
    screening = pd.DataFrame(
        {
            "nct_id": ids,
            "decision": ["included", "excluded"],
            "step": [0, 6],
            "reason": ["", "no_radiotherapy"],
            "reason_label": ["", "No radiotherapy"],
        }
    )
    classification = pd.DataFrame(
        [(ids[0], "period", "2018-2020"), (ids[0], "rt_technology", "stereotactic RT")],
        columns=["nct_id", "variable", "value"],
    )
    return write_landscape_report(
        screening, classification, studies, tmp, protocol=load_protocol("nsclc-irt")
    ).html


def _report_with_evil_title(tmp: Path, ctgov_dir: Path | None) -> Path:
    """Real records (nsclc_150) with one included trial's title replaced by a script tag."""
    if ctgov_dir is None:
        return _contract_report(tmp)
    from irtscope.trials._protocol import load_protocol
    from irtscope.trials._report import build_landscape_report
    from irtscope.trials._screen import screen_studies

    with gzip.open(ctgov_dir / "nsclc_150.json.gz", "rt", encoding="utf-8") as fh:
        studies = json.load(fh)
    screening = screen_studies(studies, load_protocol("nsclc-irt"))
    included = set(screening.loc[screening["decision"] == "included", "nct_id"])
    target = next(
        (s for s in studies if s["protocolSection"]["identificationModule"]["nctId"] in included),
        studies[0],
    )
    target["protocolSection"]["identificationModule"]["briefTitle"] = EVIL
    return build_landscape_report(studies, "nsclc-irt", tmp).html


@pytest.fixture(scope="module")
def loaded(driver, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    try:
        ctgov_dir = request.getfixturevalue("ctgov_dir")
    except pytest.skip.Exception:
        ctgov_dir = None
    html = _report_with_evil_title(tmp_path_factory.mktemp("browser-report"), ctgov_dir)
    driver.get(html.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return driver


def test_no_console_errors(loaded) -> None:
    severe = [entry for entry in loaded.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []


def test_every_section_present(loaded) -> None:
    from selenium.webdriver.common.by import By

    for section in REPORT_SECTIONS:
        assert loaded.find_elements(By.ID, section), f"section #{section} missing"


def test_figures_render(loaded) -> None:
    sizes = loaded.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert len(sizes) >= 7
    assert all(width > 0 for width in sizes)


def test_registry_text_escaped_never_executed(loaded) -> None:
    assert loaded.execute_script("return typeof window.__pwned") == "undefined"
    body = loaded.execute_script("return document.body.innerText")
    assert EVIL in body
    assert loaded.execute_script("return document.querySelectorAll('td b').length") == 0


def test_screenshots(loaded) -> None:
    from selenium.webdriver.common.by import By

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    loaded.execute_script("window.scrollTo(0, 0)")
    first = SCREENSHOTS / "report_first_screen.png"
    assert loaded.save_screenshot(str(first))
    loaded.set_window_size(1280, 1400)
    figure = loaded.find_element(By.ID, "fig-flow_diagram")
    loaded.execute_script("arguments[0].scrollIntoView()", figure)
    flow = SCREENSHOTS / "flow_diagram.png"
    assert figure.screenshot(str(flow))
    assert first.stat().st_size > 5000 and flow.stat().st_size > 5000


def _changes_report(tmp: Path) -> Path:
    """A report with the "Changes since" section; a changed trial's title is a script tag."""
    import pandas as pd

    from irtscope.trials._changes import compare_studies
    from irtscope.trials._protocol import load_protocol
    from irtscope.trials._report import write_landscape_report

    def study(status: str, count: int, kind: str) -> dict:
        return {
            "protocolSection": {
                "identificationModule": {"nctId": "NCT00000003", "briefTitle": EVIL},
                "statusModule": {"overallStatus": status, "whyStopped": EVIL},
                "designModule": {"enrollmentInfo": {"count": count, "type": kind}},
            }
        }

    before, after = study("RECRUITING", 80, "ESTIMATED"), study("TERMINATED", 12, "ACTUAL")
    changes = compare_studies([before], [after], "nsclc-irt", since={"snapshot_id": 1})
    screening = pd.DataFrame(
        {"nct_id": ["NCT00000003"], "decision": ["excluded"], "step": [4], "reason": ["not_nsclc"]}
    )
    screening["reason_label"] = "Not NSCLC"
    screening["evidence"] = "[]"
    screening["overridden"] = False
    classification = pd.DataFrame(columns=["nct_id", "variable", "value"])
    return write_landscape_report(
        screening,
        classification,
        [after],
        tmp,
        protocol=load_protocol("nsclc-irt"),
        changes=changes,
    ).html


def test_changes_section_renders(driver, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    previous = driver.current_url
    driver.get(_changes_report(tmp_path).resolve().as_uri())
    try:
        assert driver.find_elements(By.ID, "changes")
        assert driver.find_elements(By.CSS_SELECTOR, "nav a[href='#changes']")
        image = driver.find_element(By.CSS_SELECTOR, "#fig-status_flows img")
        alt = image.get_attribute("alt")
        assert "landscape" in alt and alt in driver.find_element(By.ID, "changes").text
        assert driver.execute_script("return arguments[0].naturalWidth", image) > 0
        rows = driver.find_elements(By.CSS_SELECTOR, "#changes-table tbody tr")
        assert len(rows) == 2  # status (with the why-stopped text) and enrollment
        assert driver.execute_script("return typeof window.__pwned") == "undefined"
        assert EVIL in driver.find_element(By.ID, "changes").text
        assert driver.execute_script("return document.querySelectorAll('#changes b').length") == 0
    finally:
        if previous and previous != "data:,":
            driver.get(previous)


def test_offline_demo_report_opens(
    driver, ctgov_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report `make demo` writes without the registry: archived records, banner on screen."""
    from test_demo_archive import run_offline_demo

    from irtscope.trials._archive import ARCHIVE_BANNER

    out = run_offline_demo(ctgov_dir, tmp_path, monkeypatch)
    driver.get((out / "report.html").resolve().as_uri())
    banner = driver.find_element("css selector", "p.banner").text
    assert banner.startswith(ARCHIVE_BANNER)
    assert "data of 2020-07-28" in banner
    assert driver.execute_script("return window.__pwned === undefined")
    assert driver.find_elements("css selector", "img")
