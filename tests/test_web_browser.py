"""``ztfcat serve`` in a real browser: Debian's chromium driven headless by selenium through chromedriver.

Every page must load with no console error and no failed request; the stamps and the light curve must
decode in the browser (``naturalWidth > 0``); the cone form, filled in and submitted as a user does, must
list exactly what :meth:`ztfcat.Catalog.cone_search` returns; datasette's SQL page must refuse a write.
Each page's screenshot is saved under ``$ZTFCAT_ARTIFACTS`` (default: the test's tmp dir) and its path
printed.  Skipped where chromium, chromedriver or selenium is absent (``.ci/run`` installs them).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import fastavro
import pytest

pytest.importorskip("datasette")
pytest.importorskip("selenium")

from tests.tarballs import write_tarball  # noqa: E402
from tests.test_web import start_server  # noqa: E402
from ztfcat.testing.synthetic import make_night  # noqa: E402
from ztfcat.web.app import make_datasette  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless chromium under selenium, with console and network logs on."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(
            "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    root = os.environ.get("ZTFCAT_ARTIFACTS")
    path = Path(root) / "web" if root else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def problems(driver) -> list[str]:
    """Console errors and failed requests (network errors, HTTP >= 400) since the last call."""
    found = [f"console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.loadingFailed" and not params.get("canceled"):
            found.append(f"request failed: {params.get('errorText')}")
        elif message["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            found.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
    return found


def visit(driver, url: str, shot: Path, *, expect_clean: bool = True) -> None:
    """Load ``url``, wait for its images, save a screenshot; assert nothing failed."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(i => i.complete || i.loading === 'lazy')"
        )
    )
    driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    seen = problems(driver)
    if expect_clean:
        assert seen == [], f"{url}: {seen}"


def natural_width(driver, element_id: str) -> int:
    return driver.execute_script(f"return document.getElementById('{element_id}').naturalWidth")


def serve_catalog(catalog):
    datasette = make_datasette(catalog)
    return start_server(datasette)


@pytest.fixture
def served(tmp_path, database_url):
    """A server over a synthetic night: (base URL, catalog, night spec)."""
    from ztfcat import Catalog

    catalog = Catalog(database_url, tmp_path / "data")
    spec = make_night(tmp_path / "ztf_public_20200101.tar.gz", night="20200101", n_alerts=30, seed=11)
    catalog.ingest(spec.path)
    url, thread, server = serve_catalog(catalog)
    yield url, catalog, spec
    server.should_exit = True
    thread.join(10)
    catalog.close()


def scroll_to_load(driver) -> None:
    """Scroll to the bottom so lazy images load, and wait until every image has."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)")
    )
    driver.execute_script("window.scrollTo(0, 0)")


def test_pages_in_a_real_browser(browser, served, artifacts) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, catalog, spec = served
    backend = "sqlite" if catalog.database_url.startswith("sqlite") else "postgres"
    problems(browser)  # drop what an earlier test left in the logs

    visit(browser, url + "/", artifacts / f"{backend}-home.png")

    candid = spec.candids[0]
    visit(browser, f"{url}/alert/{candid}", artifacts / f"{backend}-alert-{candid}.png")
    for panel in ("Science", "Template", "Difference"):
        assert natural_width(browser, f"stamp-{panel}") > 0, panel
    object_id = browser.find_element(By.ID, "object-link").text

    visit(browser, f"{url}/object/{object_id}", artifacts / f"{backend}-object-{object_id}.png")
    assert natural_width(browser, "lightcurve") > 400
    scroll_to_load(browser)
    assert problems(browser) == []
    thumbs = browser.find_elements(By.CSS_SELECTOR, "img.zt-thumb")
    assert thumbs and all(t.get_property("naturalWidth") > 0 for t in thumbs)

    # The cone form, filled in and submitted: exactly Catalog.cone_search.
    first = catalog.get_alert(candid)["candidate"]
    browser.get(url + "/cone")
    browser.find_element(By.ID, "cone-pos").send_keys(f"{first['ra']:.6f} {first['dec']:.6f}")
    radius = browser.find_element(By.ID, "cone-radius")
    radius.clear()
    radius.send_keys("0.5deg")
    browser.find_element(By.ID, "cone-submit").click()
    WebDriverWait(browser, 30).until(lambda d: "pos=" in d.current_url)
    visit(browser, browser.current_url, artifacts / f"{backend}-cone.png")
    expected = catalog.cone_search(round(first["ra"], 6), round(first["dec"], 6), "0.5deg", limit=500)
    rows = browser.find_elements(By.CSS_SELECTOR, "#cone-results tbody tr")
    shown = [
        (int(r.find_element(By.CSS_SELECTOR, "td.col-candid").text),
         r.find_element(By.CSS_SELECTOR, "td.col-separation").text)
        for r in rows
    ]  # fmt: skip
    assert shown == [
        (int(c), f"{s:.4f}") for c, s in zip(expected["candid"], expected["separation"], strict=True)
    ]
    assert len(shown) >= 1

    if backend == "postgres":
        browser.get(url + "/")
        assert "need a SQLite catalog" in browser.page_source
        return
    # datasette's own pages, and its SQL page refusing a write.
    visit(browser, f"{url}/catalog/alerts", artifacts / "sqlite-datasette-alerts.png")
    visit(browser, f"{url}/catalog/high_drb", artifacts / "sqlite-canned-high-drb.png")
    n = catalog.count()
    visit(
        browser,
        f"{url}/catalog?sql=delete+from+alerts",
        artifacts / "sqlite-sql-write.png",
        expect_clean=False,
    )
    assert "Statement must be a SELECT" in browser.page_source or "not authorized" in browser.page_source
    assert catalog.count() == n


def test_real_packets_of_every_version_in_a_real_browser(browser, shared_alerts, tmp_path, artifacts) -> None:
    """One real packet per schema version: each stamp decodes in the browser, or the page says why not."""
    from selenium.webdriver.common.by import By

    from ztfcat import Catalog

    files = [sorted(d.glob("*.avro"))[0] for d in sorted((shared_alerts / "alerts").glob("v*"))]
    real = {p.parent.name: next(fastavro.reader(io.BytesIO(p.read_bytes())))["candid"] for p in files}
    catalog = Catalog(f"sqlite:///{tmp_path / 'real.sqlite'}", tmp_path / "data")
    tarball = write_tarball(
        tmp_path / "ztf_public_20240101.tar.gz", [(p.name, p.read_bytes()) for p in files]
    )
    catalog.ingest(tarball)
    url, thread, server = serve_catalog(catalog)
    problems(browser)
    try:
        for version, candid in real.items():
            visit(browser, f"{url}/alert/{candid}", artifacts / f"real-alert-{version}.png")
            for panel in ("Science", "Template", "Difference"):
                images = browser.find_elements(By.ID, f"stamp-{panel}")
                if images:
                    assert images[0].get_property("naturalWidth") > 0, (version, panel)
                else:
                    reason = browser.find_element(By.ID, f"stamp-{panel}-reason").text
                    assert str(candid) in reason or "no cutout" in reason, (version, panel, reason)
            if version.startswith("v4"):  # gzip'd FITS stamps always draw
                assert all(
                    natural_width(browser, f"stamp-{p}") > 0 for p in ("Science", "Template", "Difference")
                )
            object_id = browser.find_element(By.ID, "object-link").text
            visit(browser, f"{url}/object/{object_id}", artifacts / f"real-object-{version}.png")
            assert natural_width(browser, "lightcurve") > 400
    finally:
        server.should_exit = True
        thread.join(10)
        catalog.close()
