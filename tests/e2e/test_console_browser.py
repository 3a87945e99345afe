"""The officers' console in real headless Chromium (Debian's chromium and chromedriver, driven
by Selenium) against `face-dedup serve`'s server: see the case with both faces, decide as an
officer, be refused confirming as that officer, confirm as a supervisor, see the audit trail.
Screenshots of the run are saved under artifacts/screenshots/."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from face_dedup.bootstrap import build_service
from face_dedup.service import InputRef
from face_dedup.settings import Settings
from face_dedup_api.app import Dependencies, configure
from face_dedup_api.auth import LocalUsers
from face_dedup_api.images import ImageSigner
from face_dedup_api.local_server import serve

pytestmark = pytest.mark.shared_data

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
TOKENS = {
    "ann": ("officer", "t-ann-0123456789"),
    "sue": ("supervisor", "t-sue-0123456789"),
    "al": ("auditor", "t-al-0123456789"),
}


@pytest.fixture
def console(base_settings: Settings, faces_root: Path, tmp_path: Path) -> Iterator[str]:
    service, adapters = build_service(base_settings.with_overrides(data_dir=tmp_path / "registry"))
    tenant = service.for_tenant("registry-north")
    for name, application in (
        ("lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg", "APP-1"),
        ("lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg", "APP-2"),
        ("lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg", "APP-3"),
    ):
        tenant.enroll((faces_root / name).read_bytes(), InputRef(name, application))
    users_file = tmp_path / "users.json"
    users_file.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "name": name,
                        "role": role,
                        "tenant": "registry-north",
                        "token_sha256": LocalUsers.digest(token),
                    }
                    for name, (role, token) in TOKENS.items()
                ]
            }
        )
    )
    configure(Dependencies(service=service, signer=ImageSigner(b"browser-test", ttl_seconds=120)))
    server = serve(LocalUsers.load(users_file), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    adapters.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("Debian's chromium and chromium-driver are needed: `make browser` (part of `make test`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1500,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        # The page re-renders a case after each action: a stale element just means "look again".
        return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(
            condition
        )
    except TimeoutException:
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / "failure.png"))  # what the page showed when it timed out
        raise


def sign_in(driver: Any, who: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(TOKENS[who][1])
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    wait_for(driver, lambda d: "case(s)" in d.find_element(By.ID, "status").text)


def open_first_case(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "nav button"))[0].click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "section#case h2"))
    # both faces, each as aligned crop and full photo, actually loaded
    wait_for(
        driver,
        lambda d: d.execute_script(
            "const imgs = [...document.querySelectorAll('figure img')];"
            "return imgs.length >= 4 && imgs.every(i => i.complete && i.naturalWidth > 0);"
        ),
    )


def test_officer_decides_supervisor_confirms(console: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(console + "/")
    assert browser.title.startswith("face-dedup")
    sign_in(browser, "ann")
    open_first_case(browser)
    figures = browser.find_elements(By.CSS_SELECTOR, "figure")
    assert len(figures) == 2 and "New application" in figures[0].text and "Candidate 1" in figures[1].text
    assert "score 0." in figures[1].text and "different people" in figures[1].text  # what the score means
    browser.save_screenshot(str(SHOTS / "01-case-as-officer.png"))

    browser.find_element(By.TAG_NAME, "body").send_keys("s")  # keyboard: same person
    wait_for(
        browser, lambda d: "awaiting_confirmation" in d.find_element(By.CSS_SELECTOR, "section#case h2").text
    )
    browser.save_screenshot(str(SHOTS / "02-decided-same-person.png"))

    browser.find_element(
        By.CSS_SELECTOR, '.actions button[data-key="y"]'
    ).click()  # confirm as the same officer
    wait_for(browser, lambda d: d.find_element(By.ID, "status").get_attribute("class") == "error")
    assert "only supervisor" in browser.find_element(By.ID, "status").text
    browser.save_screenshot(str(SHOTS / "03-same-officer-refused.png"))

    sign_in(browser, "sue")
    Select(browser.find_element(By.ID, "filter")).select_by_value("awaiting_confirmation")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "nav button"))
    open_first_case(browser)
    browser.find_element(By.TAG_NAME, "body").send_keys("y")  # keyboard: confirm
    wait_for(browser, lambda d: "closed" in d.find_element(By.CSS_SELECTOR, "section#case h2").text)
    history = browser.find_element(By.CSS_SELECTOR, "table").text
    assert "ann" in history and "sue" in history and "confirmed" in history
    browser.save_screenshot(str(SHOTS / "04-confirmed-by-supervisor.png"))

    request = urllib.request.Request(
        console + "/audit", headers={"Authorization": "Bearer " + TOKENS["al"][1]}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        events = [json.loads(line) for line in response.read().decode().splitlines()]
    trail = [(e["action"], e["actor"]) for e in events if e["action"].startswith("case.")]
    assert ("case.decided", "ann") in trail and ("case.confirmed", "sue") in trail
    assert ("case.viewed", "ann") in trail and ("case.viewed", "sue") in trail
