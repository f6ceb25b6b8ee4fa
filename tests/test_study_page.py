"""The study page at /study, in a real browser: headless Chromium under Selenium against the real service
process with a real study store (SQLite in a temporary folder).

The participant is a generated one (har.study: Garmin-format sessions over local days in Europe/Berlin,
one across midnight, the second day the 23-hour day of the spring clock change), uploaded through the
store's own route. Everything on the page is checked against what the JSON routes answer for it.
"""
from __future__ import annotations

import copy
import json
import os
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from browser_helpers import (chromium_driver, foreign_requests, quit_driver, require_chromium, wait_for, requested_urls,
                             write_params)
from conftest import GARMIN_ACC, GARMIN_GYR, ROOT, WISDM_DIR
from har.config import load_params
from har.study import StudyPlan, generate_study
from serve_helpers import LABELS, TOKEN, start_server, stop_server, write_tiny_model
from store_helpers import garmin_slice

READ_TOKEN = "read-only-token-0123456789abcdef"
READ_TOKEN_ENV = "HAR_SERVE_READ_TOKEN"
ZONE = "Europe/Berlin"
SUBJECT = "P001"
PLAN = StudyPlan(days=2, sessions_per_day=2, first_day="2025-03-29", timezone=ZONE, midnight=True, seed=4,
                 recordings_per_session=3, max_recording_s=30.0, nonwear_minutes=(1.0,))


def setup_module(_module):
    require_chromium()


def start_study_server(folder, model, params):
    os.environ[READ_TOKEN_ENV] = READ_TOKEN  # start_server passes the environment on
    try:
        return start_server(model, folder / "server.log", "--params", str(write_params(folder / "params.yaml", params)))
    finally:
        del os.environ[READ_TOKEN_ENV]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The generated sessions uploaded through POST /subjects/{subject}/recordings; then the service again on the
    same store, with a valid-day rule between the two days' worn hours, so that one day is valid and one is not."""
    folder = tmp_path_factory.mktemp("study-page")
    manifest = generate_study(folder / "study", WISDM_DIR, ["1604"], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR),
                              plan=PLAN)
    sessions = manifest["sessions"]
    assert any(len(s["days"]) == 2 for s in sessions), "the plan must give a session across midnight"
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["store"].update({"url": f"sqlite:///{folder / 'study.db'}", "blob_root": str(folder / "blobs"),
                            "timezone": ZONE})
    params["data"]["timezone"] = ZONE
    params["serve"]["personal"]["models_dir"] = str(folder / "personal")
    params["wear"]["min_duration_min"] = 0.5  # the sessions' 1-minute desk stretches are not worn
    model = write_tiny_model(folder / "model.onnx", calibration={  # some windows uncertain; minutes with an interval
        "threshold": 0.55, "minutes": {"method": "pcc", "switch_probability": 0.0, "interval_scale": 3.0}})
    headers = {"Authorization": f"Bearer {TOKEN}"}
    process, url = start_study_server(folder, model, params)
    try:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
            for session in sessions:
                name = session["session"]
                with open(folder / "study" / "recordings" / f"{name}-accelerometer_data.xlsx", "rb") as acc, \
                        open(folder / "study" / "recordings" / f"{name}-gyroscope_data.xlsx", "rb") as gyr:
                    stored = client.post(f"/subjects/{SUBJECT}/recordings", files={"accelerometer": acc, "gyroscope": gyr})
                assert stored.status_code == 201, stored.text
            worn = sorted(d["worn_minutes"] / 60 for d in client.get(f"/subjects/{SUBJECT}/days").json())
    finally:
        stop_server(process)
    assert len(worn) == 2 and worn[0] < worn[1]
    params["store"]["min_worn_hours"] = (worn[0] + worn[1]) / 2
    process, url = start_study_server(folder, model, params)
    client = httpx.Client(base_url=url, timeout=120, headers=headers)
    yield {"url": url, "client": client, "folder": folder, "manifest": manifest, "log": folder / "server.log"}
    client.close()
    stop_server(process)


@pytest.fixture
def browser(study):
    driver = chromium_driver()
    driver.set_script_timeout(30)
    yield driver
    quit_driver(driver)


def sign_in(driver, url, token, subject=None):
    """Open /study (at a participant's address, if given) and sign in with the keyboard."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(url + "/study" + (f"#{subject}" if subject else ""))
    driver.find_element(By.ID, "token").send_keys(token, Keys.ENTER)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#participants-table tbody tr"),
             message="the participants never appeared")


def open_participant(driver, subject):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#participants-table tr[data-subject='{subject}'] a.open").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap rect[data-date]"), message="no heatmap")


def only_the_service_was_asked(driver, url) -> list[str]:
    urls = requested_urls(driver.get_log("performance"))
    assert urls, "the performance log recorded no request at all: the check would be blind"
    assert foreign_requests(urls, url) == []
    return urls


def hour_cells(rows: list[dict]) -> dict:
    """The store's hour rows added up per date and local hour, as the heatmap draws them."""
    cells: dict = {}
    for row in rows:
        cell = cells.setdefault((row["date"], row["hour"]), {})
        for label, minutes in [*row["minutes_per_activity"].items(), ("not_worn", row["not_worn_minutes"]),
                               ("uncertain", row["uncertain_minutes"])]:
            cell[label] = cell.get(label, 0.0) + minutes
    return cells


def clipped_episodes(stored: dict, day: str) -> list[tuple]:
    """A stored recording's episodes on `day`, in seconds after local midnight, cut at the day's ends."""
    zone = ZoneInfo(ZONE)
    midnight = datetime.combine(date.fromisoformat(day), datetime.min.time(), zone)
    following = datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), zone)
    length = following.timestamp() - midnight.timestamp()
    offset = datetime.fromisoformat(stored["start_time"]).timestamp() - midnight.timestamp()
    parts = [(e["label"], max(0.0, e["start_s"] + offset), min(length, e["end_s"] + offset))
             for e in stored["answer"]["episodes"]]
    return sorted((label, round(a, 3), round(b, 3)) for label, a, b in parts if b > a)


def test_a_participants_days_hours_and_a_day_equal_the_api(study, browser):
    from selenium.webdriver.common.by import By

    url, client = study["url"], study["client"]
    sign_in(browser, url, TOKEN)
    people = {p["subject"]: p for p in client.get("/subjects").json()}
    row = browser.find_element(By.CSS_SELECTOR, f"#participants-table tr[data-subject='{SUBJECT}']")
    person = people[SUBJECT]
    assert row.find_element(By.CLASS_NAME, "days").text == str(person["days"])
    assert row.find_element(By.CLASS_NAME, "valid-days").text == str(person["valid_days"])
    assert row.find_element(By.CLASS_NAME, "first-day").text == person["first_day"]
    assert row.find_element(By.CLASS_NAME, "last-day").text == person["last_day"]
    days = client.get(f"/subjects/{SUBJECT}/days").json()
    assert [d["valid"] for d in days].count(False) >= 1 and [d["valid"] for d in days].count(True) >= 1
    # Not a blind check: every day has not-worn and uncertain time, and different amounts of each.
    assert all(0 < d["not_worn_minutes"] != d["uncertain_minutes"] > 0 for d in days)
    spark = json.loads(row.find_element(By.CSS_SELECTOR, "svg.sparkline").get_attribute("data-worn-hours"))
    assert spark == pytest.approx([d["worn_minutes"] / 60 if d["recorded_minutes"] > 0 else None for d in days])

    open_participant(browser, SUBJECT)
    # The heatmap: one cell per local hour with data, its minutes the store's hours of that date and hour.
    expected = hour_cells(client.get(f"/study/subjects/{SUBJECT}/hours").json()["hours"])
    drawn = {(c.get_attribute("data-date"), int(c.get_attribute("data-hour"))): json.loads(c.get_attribute("data-minutes"))
             for c in browser.find_elements(By.CSS_SELECTOR, "#heatmap rect[data-date]")}
    assert drawn.keys() == expected.keys()
    for key, minutes in expected.items():
        assert drawn[key] == pytest.approx(minutes, abs=1e-9), key
    # ... and the heatmap's hours of each day add up to the day's minutes of GET /days (each hour rounded to 0.001).
    for day in days:
        cells = [m for (d, _), m in drawn.items() if d == day["date"]]
        for label, minutes in [*day["minutes_per_activity"].items(), ("not_worn", day["not_worn_minutes"])]:
            assert sum(c.get(label, 0.0) for c in cells) == pytest.approx(minutes, abs=0.001 * 25)
    gaps = [c for c in browser.find_elements(By.CSS_SELECTOR, "#heatmap rect[data-date]")
            if c.get_attribute("data-dominant") == "gap"]
    assert all(c.get_attribute("fill") == "url(#pattern-gap)" for c in gaps) and gaps  # hours without data
    not_worn = [c for c in browser.find_elements(By.CSS_SELECTOR, "#heatmap rect[data-dominant=not_worn]")]
    assert all(c.get_attribute("fill") == "url(#pattern-not-worn)" for c in not_worn)

    # The day bars: per day and label, the API's estimated minutes, with not-worn time (the estimates share out the
    # uncertain time); invalid days marked.
    bars = {(b.get_attribute("data-date"), b.get_attribute("data-label")): float(b.get_attribute("data-minutes"))
            for b in browser.find_elements(By.CSS_SELECTOR, "#day-bars rect[data-date]")}
    for day in days:
        expected_bars = {**day["minutes_per_activity"], "not_worn": day["not_worn_minutes"]}
        assert {label: bars[(day["date"], label)] for label in expected_bars} == pytest.approx(expected_bars)
        assert sum(expected_bars.values()) == pytest.approx(day["recorded_minutes"], abs=0.01)
    marks = browser.find_elements(By.CSS_SELECTOR, "#day-bars .invalid-day text")
    assert len(marks) == sum(not d["valid"] for d in days)

    # Another colouring: the minutes of one activity, states keep their patterns.
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element(By.ID, "heatmap-mode")).select_by_value(LABELS[0])
    wait_for(browser, lambda d: d.find_element(By.ID, "heatmap-svg").get_attribute("data-mode") == LABELS[0])
    assert all(c.get_attribute("fill") == "url(#pattern-gap)" for c in browser.find_elements(
        By.CSS_SELECTOR, "#heatmap rect[data-dominant=gap]"))

    # Click the day after the midnight crossing: its timelines are the stored recordings' episodes on that day.
    crossing = next(s for s in study["manifest"]["sessions"] if len(s["days"]) == 2)
    day = crossing["days"][1]
    next(b for b in browser.find_elements(By.CSS_SELECTOR, f"#day-bars rect[data-date='{day}']")
         if float(b.get_attribute("data-minutes")) > 0.5).click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#day-timelines svg.day-timeline"))
    recordings = [r for r in client.get(f"/subjects/{SUBJECT}/recordings").json() if day in r["days"]]
    shown = {int(svg.get_attribute("data-recording")): sorted(
        (s.get_attribute("data-label"), round(float(s.get_attribute("data-start-s")), 3),
         round(float(s.get_attribute("data-end-s")), 3))
        for s in svg.find_elements(By.CSS_SELECTOR, "rect.segment") if s.get_attribute("data-label") != "gap")
        for svg in browser.find_elements(By.CSS_SELECTOR, "#day-timelines svg.day-timeline")}
    assert shown.keys() == {r["id"] for r in recordings} and len(shown) >= 2
    for rec in recordings:
        assert shown[rec["id"]] == clipped_episodes(client.get(f"/subjects/{SUBJECT}/recordings/{rec['id']}").json(), day)
    assert "23-hour day" in browser.find_element(By.ID, "day-summary").text  # the spring clock change

    # The trend's dots are the days' minutes per activity (days with nothing recorded have none); profiles drawn.
    dots = {(c.get_attribute("data-date"), c.get_attribute("data-label")): float(c.get_attribute("data-minutes"))
            for c in browser.find_elements(By.CSS_SELECTOR, "#trend circle[data-date]")}
    assert dots == pytest.approx({(d["date"], label): minutes for d in days if d["recorded_minutes"] > 0
                                  for label, minutes in d["minutes_per_activity"].items()})
    # ... each with its 90 % interval drawn behind it
    rules = {(r.get_attribute("data-date"), r.get_attribute("data-label")):
             [float(r.get_attribute("data-low")), float(r.get_attribute("data-high"))]
             for r in browser.find_elements(By.CSS_SELECTOR, "#trend line[data-date]")}
    assert rules and rules == {(d["date"], label): pytest.approx(bounds) for d in days if d["recorded_minutes"] > 0
                               for label, bounds in d["minutes_interval_90"].items()}
    assert browser.find_elements(By.CSS_SELECTOR, "#profiles svg")
    assert TOKEN not in browser.page_source
    only_the_service_was_asked(browser, url)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_a_bad_upload_shows_the_readers_words_and_days_csv_downloads(study, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, client = study["url"], study["client"]
    fake = tmp_path / "2025-03-29-10-00-00-accelerometer_data.xlsx"
    fake.write_text("timestamp,timestamp_ms,x,y,z\n2025-03-29 10:00:00,0,[1],[2],[3]\n")  # a CSV renamed .xlsx
    sign_in(browser, url, TOKEN, SUBJECT)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap rect[data-date]"))
    chooser = browser.find_element(By.ID, "files")
    chooser.send_keys(f"{fake}\n{GARMIN_GYR}")
    browser.find_element(By.ID, "upload-button").click()
    shown = wait_for(browser, lambda d: d.find_element(By.ID, "upload-error").text)
    with open(fake, "rb") as acc, open(GARMIN_GYR, "rb") as gyr:
        refusal = client.post(f"/subjects/{SUBJECT}/recordings", files={"accelerometer": acc, "gyroscope": gyr})
    assert refusal.status_code == 422
    # The reader's words, then the id the service logged the page's request under.
    assert re.fullmatch(re.escape(refusal.json()["detail"]) + r" \(request id [0-9a-f]{32}\)", shown), shown
    assert "cannot be read as an Excel workbook" in shown

    # days.csv: the page fetches it with the token and hands it over; its text is the route's.
    csv = browser.execute_async_script("""const done = arguments[arguments.length - 1];
        const created = URL.createObjectURL; let got = null;
        URL.createObjectURL = (blob) => { got = blob; return created.call(URL, blob); };
        document.getElementById('days-csv').click();
        const wait = () => got ? got.text().then(done) : setTimeout(wait, 50); wait();""")
    assert csv == client.get(f"/subjects/{SUBJECT}/days", headers={"Accept": "text/csv"}).text
    only_the_service_was_asked(browser, url)


def test_erase_after_typing_the_id(study, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, client = study["url"], study["client"]
    other = "P-erase"
    acc_path, gyr_path = garmin_slice(GARMIN_ACC, GARMIN_GYR, tmp_path, minutes=3)  # 3 minutes of the real hour
    with open(acc_path, "rb") as acc, open(gyr_path, "rb") as gyr:
        assert client.post(f"/subjects/{other}/recordings", files={"accelerometer": acc, "gyroscope": gyr}).status_code == 201
    sign_in(browser, url, TOKEN, other)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap rect[data-date]"))
    browser.find_element(By.ID, "erase-start").click()
    field, button = browser.find_element(By.ID, "erase-confirm"), browser.find_element(By.ID, "erase-button")
    field.send_keys(other[:-1])
    assert not button.is_enabled()  # not the id yet
    field.send_keys(other[-1])
    assert button.is_enabled()
    button.click()
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, f"#participants-table tr[data-subject='{other}']"))
    assert "Erased" in browser.find_element(By.ID, "upload-done").text
    assert other not in [p["subject"] for p in client.get("/subjects").json()]
    assert client.get(f"/subjects/{other}/days").status_code == 404
    assert not browser.find_element(By.ID, "participant").is_displayed()
    only_the_service_was_asked(browser, url)


def test_the_read_only_token_sees_no_controls_and_is_refused_writes(study, browser):
    from selenium.webdriver.common.by import By

    url = study["url"]
    sign_in(browser, url, READ_TOKEN, SUBJECT)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap rect[data-date]"))
    assert "read-only" in browser.find_element(By.ID, "access").text
    assert not browser.find_element(By.ID, "upload").is_displayed()
    assert not browser.find_element(By.ID, "erase-start").is_displayed()
    assert not browser.find_element(By.ID, "upload-button").is_displayed()
    # Forced from the page anyway, with the tab's token: the server refuses both writes.
    statuses = browser.execute_async_script("""const done = arguments[arguments.length - 1];
        const headers = {Authorization: `Bearer ${sessionStorage.getItem('har.token')}`};
        const form = new FormData(); form.append('accelerometer', new Blob(['x']), 'a-accelerometer_data.xlsx');
        form.append('gyroscope', new Blob(['x']), 'a-gyroscope_data.xlsx');
        Promise.all([fetch('/subjects/P001', {method: 'DELETE', headers}),
                     fetch('/subjects/P001/recordings', {method: 'POST', headers, body: form})])
          .then(rs => done(rs.map(r => r.status)), e => done(String(e)));""")
    assert statuses == [403, 403]
    assert SUBJECT in [p["subject"] for p in study["client"].get("/subjects").json()]
    only_the_service_was_asked(browser, url)


def test_the_pages_own_routes(study):
    """GET /study/access says which token it was given; GET /study/subjects/{subject}/hours is every local hour."""
    url, client = study["url"], study["client"]

    def access(token=None):
        return httpx.get(url + "/study/access", headers={"Authorization": f"Bearer {token}"} if token else {})

    assert access(TOKEN).json() == {"write": True}
    assert access(READ_TOKEN).json() == {"write": False}
    assert access().status_code == 401 and access("not-a-token-0123456789").status_code == 401
    hours = client.get(f"/study/subjects/{SUBJECT}/hours").json()
    assert hours["timezone"] == ZONE
    days = client.get(f"/subjects/{SUBJECT}/days").json()
    # One row per hour of absolute time: 24 on 2025-03-29, 23 on the spring day 2025-03-30 (02:00 does not exist).
    assert [sum(h["date"] == d["date"] for h in hours["hours"]) for d in days] == [24, 23]
    assert 2 not in [h["hour"] for h in hours["hours"] if h["date"] == "2025-03-30"]
    for day in days:
        rows = [h for h in hours["hours"] if h["date"] == day["date"]]
        assert sum(h["recorded_minutes"] for h in rows) == pytest.approx(day["recorded_minutes"], abs=0.03)
        assert {label for h in rows for label in h["minutes_per_activity"]} == set(day["minutes_per_activity"])
    assert client.get("/study/subjects/nobody/hours").status_code == 404
    assert client.get("/study/subjects/no%20spaces/hours").status_code == 400
    assert httpx.get(url + f"/study/subjects/{SUBJECT}/hours").status_code == 401
