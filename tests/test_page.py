"""The page at `/`, in a real browser: headless Chromium driven by Selenium against the real service process.

Everything goes through the page's own controls (token field, file chooser, buttons); the
answers are checked against what the JSON routes say for the same files.
"""
from __future__ import annotations

import copy
import io
import json
import re

import httpx
import pandas as pd
import pytest

from har.config import load_params
from serve.batch.outputs import write_outputs
from browser_helpers import (chromium_driver, foreign_requests, quit_driver, require_chromium, wait_for,
                                   requested_urls, write_params)
from conftest import GARMIN_ACC, GARMIN_GYR, ROOT
from serve_helpers import TOKEN, start_server, stop_server, write_tiny_model, write_tiny_reference

WRONG_TOKEN = "not-the-token-0123456789"


def setup_module(_module):
    require_chromium()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service on loopback: tiny model, its drift reference, and a drift stage report to link to."""
    folder = tmp_path_factory.mktemp("page")
    params = load_params(ROOT / "params.yaml")
    model = write_tiny_model(folder / "model.onnx")
    write_tiny_reference(model, params["monitor"])
    (folder / "drift.html").write_text("<!doctype html><title>drift report</title><h1>the drift stage's report</h1>")
    params = copy.deepcopy(params)
    params["monitor"]["report"] = str(folder / "drift.html")
    process, url = start_server(model, folder / "server.log", "--params", str(write_params(folder / "params.yaml", params)))
    yield {"url": url, "log": folder / "server.log", "folder": folder}
    stop_server(process)


@pytest.fixture
def browser(service):
    driver = chromium_driver()
    driver.set_script_timeout(30)
    yield driver
    quit_driver(driver)


def sign_in(driver, url, token):
    """Open the page and sign in with the keyboard only: type the token, press Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(url + "/")
    wait_for(driver, lambda d: d.find_element(By.ID, "model-name").text, message="the model card never loaded")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token, Keys.ENTER)


def choose_files(driver, *paths):
    from selenium.webdriver.common.by import By

    chooser = driver.find_element(By.ID, "files")
    driver.execute_script("arguments[0].value = ''", chooser)  # chromedriver adds to a multiple input's files
    chooser.send_keys("\n".join(str(p) for p in paths))
    driver.find_element(By.ID, "upload-button").click()


def only_the_service_was_asked(driver, url) -> list[str]:
    urls = requested_urls(driver.get_log("performance"))
    assert urls, "the performance log recorded no request at all: the check would be blind"
    assert foreign_requests(urls, url) == []
    return urls


def wall_clock(start_time: str, seconds: float) -> str:
    """The recording's own clock (as the service wrote it, no time-zone conversion), to the second."""
    start = pd.Timestamp(start_time)
    second = round(start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6 + seconds) % 86400
    return f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"


def blob_text(driver, href: str) -> str:
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.text()).then(done, e => done('failed: ' + e))", href)


def test_a_wrong_token_shows_the_sign_in_message(service, browser):
    from selenium.webdriver.common.by import By

    sign_in(browser, service["url"], WRONG_TOKEN)
    message = wait_for(browser, lambda d: d.find_element(By.ID, "sign-in-message").text)
    assert "did not accept the token" in message and "invalid bearer token" in message
    assert not browser.find_element(By.ID, "upload-button").is_enabled()
    assert browser.find_element(By.ID, "sign-in").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('har.token')") is None
    only_the_service_was_asked(browser, service["url"])


def test_the_real_hour_through_the_page(service, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url = service["url"]
    sign_in(browser, url, TOKEN)
    wait_for(browser, lambda d: d.find_element(By.ID, "upload-button").is_enabled(), message="sign-in did not finish")
    choose_files(browser, GARMIN_ACC, GARMIN_GYR)
    timeline = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline-box svg#timeline"),
                        message="no timeline")[0]
    # Wait for the downloads too: the last thing the page fetches for an answer.
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#downloads a[data-file]")) == 4)

    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        with open(GARMIN_ACC, "rb") as acc, open(GARMIN_GYR, "rb") as gyr:
            answer = client.post("/recordings", files={"accelerometer": acc, "gyroscope": gyr}).json()

    # The timeline spans the recording: from its wall-clock start to the end of its last window.
    window_ends = [e["end_s"] for e in answer["episodes"]]
    assert float(timeline.get_attribute("data-from-s")) <= min(t["start_s"] for t in answer["timeline"])
    assert float(timeline.get_attribute("data-to-s")) == pytest.approx(max(window_ends))
    assert max(window_ends) >= answer["timeline"][-1]["start_s"] + answer["window_s"] - 1e-6
    start = answer["recording"]["start_time"]
    assert timeline.get_attribute("data-from-time") == wall_clock(start, 0.0)
    assert timeline.get_attribute("data-to-time") == wall_clock(start, max(window_ends))
    # Each episode is drawn where it lies, and the drawn minutes per label are the answer's.
    segments = timeline.find_elements(By.CSS_SELECTOR, "rect.segment")
    drawn = [(s.get_attribute("data-label"), float(s.get_attribute("data-start-s")), float(s.get_attribute("data-end-s")))
             for s in segments if s.get_attribute("data-label") != "gap"]
    assert sorted(drawn) == sorted((e["label"], e["start_s"], e["end_s"]) for e in answer["episodes"])

    # The minutes shown are the JSON answer's, label by label, as numbers and as the text people read.
    bars = browser.find_elements(By.CSS_SELECTOR, "#minutes li")
    shown = {b.get_attribute("data-label"): (float(b.get_attribute("data-minutes")), b.find_element(By.CLASS_NAME, "value").text)
             for b in bars}
    expected = dict(answer["minutes_per_activity"])
    expected.update({k: answer[f"{k}_minutes"] for k in ("uncertain", "not_worn") if f"{k}_minutes" in answer})
    assert {k: v[0] for k, v in shown.items()} == pytest.approx(expected)
    assert all(text == f"{expected[label]:.1f} min" for label, (_, text) in shown.items())

    rows = browser.find_elements(By.CSS_SELECTOR, "#episodes tbody tr")
    assert len(rows) == len(answer["episodes"])
    assert rows[0].find_elements(By.TAG_NAME, "td")[0].text.replace(" ", "_") == answer["episodes"][0]["label"]
    quality = browser.find_element(By.ID, "quality").text
    assert str(answer["recording"]["fused_samples"]) in quality

    # Drift of this recording, in the drift report's words, and the link to the stage's full report.
    drift = browser.find_element(By.ID, "recording-drift").text
    assert answer["drift"]["severity"] in drift
    assert all(c["channel"] in drift for c in answer["drift"]["most_drifted"])
    assert browser.find_element(By.ID, "drift-report-link").is_displayed()

    # The downloads are byte for byte what serve.batch writes for this answer.
    write_outputs(tmp_path, answer)
    for link in browser.find_elements(By.CSS_SELECTOR, "#downloads a[data-file]"):
        name = link.get_attribute("data-file")
        text = blob_text(browser, link.get_attribute("href"))
        if name.endswith(".json"):
            assert json.loads(text) == json.loads((tmp_path / name).read_text())
        else:
            assert text == (tmp_path / name).read_text()
            assert pd.read_csv(io.StringIO(text)).shape[0] == pd.read_csv(tmp_path / name).shape[0]

    # The model and the live drift summary.
    model = httpx.get(url + "/model").json()
    assert browser.find_element(By.ID, "model-name").text == model["name"]
    assert browser.find_element(By.ID, "model-version").text == model["version"]
    assert browser.find_element(By.ID, "model-labels").text == ", ".join(model["labels"])
    assert "macro f1" in browser.find_element(By.ID, "model-metrics").text
    assert "Severity" in wait_for(browser, lambda d: "windows received" in d.find_element(By.ID, "live-drift").text
                                  and d.find_element(By.ID, "live-drift").text)

    # On a phone's width nothing spills sideways.
    browser.set_window_size(390, 844)
    wide = browser.execute_script("""return [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.table-scroll'))
        .map(e => e.tagName + '#' + e.id + '.' + e.className)""")
    assert wide == [] and browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")

    # The token lives in the tab's sessionStorage only: not in the markup, a URL, or the service's log.
    assert TOKEN not in browser.page_source
    urls = only_the_service_was_asked(browser, url)
    assert not any(TOKEN in u for u in urls)
    assert TOKEN not in service["log"].read_text()
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_reader_errors_are_shown_in_the_readers_words(service, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url = service["url"]
    fake = tmp_path / "2025-03-23-15-23-10-accelerometer_data.xlsx"
    fake.write_text("timestamp,timestamp_ms,x,y,z\n2025-03-23 15:23:10,0,[1],[2],[3]\n")  # a CSV renamed .xlsx
    sign_in(browser, url, TOKEN)
    wait_for(browser, lambda d: d.find_element(By.ID, "upload-button").is_enabled())
    choose_files(browser, fake, GARMIN_GYR)
    shown = wait_for(browser, lambda d: d.find_element(By.ID, "upload-error").text)
    with open(fake, "rb") as acc, open(GARMIN_GYR, "rb") as gyr:
        refusal = httpx.post(url + "/recordings", files={"accelerometer": acc, "gyroscope": gyr}, timeout=120,
                             headers={"Authorization": f"Bearer {TOKEN}"})
    assert refusal.status_code == 422
    # The service's words, then the id its log holds the page's request under (its access event's status: 422).
    shown_id = re.fullmatch(r".* \(request id ([0-9a-f]{32})\)", shown, re.S)[1]
    assert shown == f"{refusal.json()['detail']} (request id {shown_id})"
    logged = [json.loads(line) for line in service["log"].read_text().splitlines() if shown_id in line]
    assert [(e["route"], e["status"]) for e in logged if e["logger"] == "serve.access"] == [("/recordings", 422)]
    assert re.search(r"accelerometer \(.*accelerometer_data\.xlsx\): cannot be read as an Excel workbook", shown)
    assert "Traceback" not in browser.page_source and not browser.find_element(By.ID, "answer").is_displayed()

    # A workbook without its partner never leaves the page: it says which one is missing.
    choose_files(browser, GARMIN_GYR)
    wait_for(browser, lambda d: "Choose the two workbooks" in d.find_element(By.ID, "upload-error").text)
    assert "gyroscope_data.xlsx" in browser.find_element(By.ID, "upload-error").text
    only_the_service_was_asked(browser, url)


def contract_answer() -> dict:
    """An answer with every field of /work/TIMELINE_CONTRACT.md (issue 14): non-wear, uncertain, a gap, quality."""
    start = "2025-03-23T15:23:10.000"

    def at(seconds):
        return (pd.Timestamp(start) + pd.Timedelta(seconds=seconds)).isoformat(timespec="milliseconds")

    parts = [("sitting", "sitting", 0, 60), ("uncertain", "typing", 60, 80), ("not_worn", None, 80, 200),
             ("typing", "typing", 260, 300)]  # nothing between 200 and 260 s: a gap in the recording
    timeline = [{"start_s": float(t), "time": at(t), "label": label, "activity": activity, "confidence": 0.9}
                for label, activity, a, b in parts for t in range(a, b, 4)]
    episodes = [{"label": label, "start_s": float(a), "end_s": float(b), "start_time": at(a), "end_time": at(b),
                 "windows": (b - a) // 4, "mean_confidence": 0.9, "duration_s": float(b - a)} for label, _, a, b in parts]
    sensor = {"samples_read": 15000, "duplicates": 7, "out_of_order": 2, "gaps": 1, "gap_seconds": 60.0,
              "native_hz": 25.0, "samples_used": 14991}
    return {"recording": {"id": "contract", "start_time": start, "fused_samples": 12000, "fused_seconds": 240.0,
                          "segments": 2, "quality": {"acc": sensor, "gyr": {**sensor, "duplicates": 0}}},
            "model": {"name": "har", "version": "tiny0001"}, "windows": len(timeline), "window_s": 4.0,
            "covered_minutes": 4.0, "timeline": timeline, "episodes": episodes,
            "minutes_per_activity": {"sitting": 1.0, "typing": 0.667, "clapping": 0.0},
            "uncertain_minutes": 0.333, "not_worn_minutes": 2.0,
            "wear": {"worn_minutes": 2.0, "not_worn_minutes": 2.0, "rule": {"window_s": 60},
                     "episodes": [{"start_s": 80.0, "end_s": 200.0, "start_time": at(80), "end_time": at(200),
                                   "rule": "still"}]}}


def test_non_wear_uncertain_and_gaps_are_drawn_as_what_they_are(service, browser):
    """The fields issue 14 adds (TIMELINE_CONTRACT.md), rendered by the page's own code from such an answer."""
    from selenium.webdriver.common.by import By

    answer = contract_answer()
    sign_in(browser, service["url"], TOKEN)
    wait_for(browser, lambda d: d.find_element(By.ID, "upload-button").is_enabled())
    browser.execute_script("render(arguments[0], arguments[1])", answer, json.dumps(answer))
    timeline = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg#timeline"))[0]
    fills = {r.get_attribute("data-label"): r.get_attribute("fill") for r in timeline.find_elements(By.CSS_SELECTOR, "rect.segment")}
    assert fills["not_worn"] == "url(#pattern-not-worn)" and fills["uncertain"] == "url(#pattern-uncertain)"
    assert fills["gap"] == "url(#pattern-gap)" and fills["sitting"].startswith("#") and fills["sitting"] != fills["typing"]
    gap = timeline.find_element(By.CSS_SELECTOR, "rect.segment[data-label=gap]")
    assert (float(gap.get_attribute("data-start-s")), float(gap.get_attribute("data-end-s"))) == (200.0, 260.0)
    assert timeline.get_attribute("data-from-time") == "15:23:10" and timeline.get_attribute("data-to-time") == "15:28:10"
    legend = browser.find_element(By.ID, "legend").text
    assert all(word in legend for word in ("sitting", "typing", "not worn", "uncertain", "gap (no data)"))
    minutes = {b.get_attribute("data-label"): float(b.get_attribute("data-minutes"))
               for b in browser.find_elements(By.CSS_SELECTOR, "#minutes li")}
    assert minutes == {"sitting": 1.0, "typing": 0.667, "clapping": 0.0, "uncertain": 0.333, "not_worn": 2.0}
    cells = {c.get_attribute("data-key"): c.text for c in browser.find_elements(By.CSS_SELECTOR, "#quality-table td")}
    assert cells["acc.samples_read"] == "15000" and cells["acc.duplicates"] == "7" and cells["gyr.duplicates"] == "0"
    assert cells["acc.gaps"] == "1" and cells["acc.out_of_order"] == "2"
    assert "Worn minutes" in browser.find_element(By.ID, "quality").text
    assert "No drift reference" in browser.find_element(By.ID, "recording-drift").text  # absent: said, not crashed
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#downloads a[data-file]")) == 4)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_an_upload_over_the_limit_is_refused_with_the_limit(tmp_path, browser):
    """A service whose upload limit (serve.max_upload_mb) is below the real pair's 6 MB: its 413 detail is shown."""
    from selenium.webdriver.common.by import By

    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["serve"]["max_upload_mb"] = 1
    model = write_tiny_model(tmp_path / "model.onnx")
    process, url = start_server(model, tmp_path / "server.log", "--params", str(write_params(tmp_path / "p.yaml", params)))
    try:
        sign_in(browser, url, TOKEN)
        wait_for(browser, lambda d: d.find_element(By.ID, "upload-button").is_enabled())
        choose_files(browser, GARMIN_ACC, GARMIN_GYR)
        shown = wait_for(browser, lambda d: d.find_element(By.ID, "upload-error").text)
        assert re.fullmatch(r"request body exceeds 1048576 bytes \(serve\.max_body_mb / serve\.max_upload_mb\) "
                            r"\(request id [0-9a-f]{32}\)", shown), shown
    finally:
        stop_server(process)
