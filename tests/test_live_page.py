"""The study page's live view in a real browser (headless Chromium under Selenium) against the real service: a
watch streams a generated study session (serve.client, faster than real time) while the page shows the participant;
the page's live timeline fills in, final labels and the provisional ones after them, each drawn as GET
/subjects/{subject}/live gives it and agreeing with the labels the watch got; once the stream closes it is a stored
recording, and the live view goes."""
from __future__ import annotations

import threading
import time

import pytest

from browser_helpers import chromium_driver, quit_driver, require_chromium, wait_for, write_params
from serve.client import garmin_batches, stream_batches
from serve_helpers import TOKEN, start_server, stop_server
from test_stream import generated_session

SUBJECT = "L001"


def setup_module(_module):
    require_chromium()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live-page")
    pair, model, params = generated_session(folder)
    process, url = start_server(model, folder / "server.log", "--params", str(write_params(folder / "params.yaml", params)))
    yield {"url": url, "batches": garmin_batches(*pair)}
    stop_server(process)


def drawn(driver) -> dict | None:
    """The live timeline on the page now: the windows it counts final, and its segments (label, start, end, provisional)."""
    return driver.execute_script("""
        const svg = document.querySelector("#live:not([hidden]) svg.live-timeline[data-stream='watch']");
        if (!svg) return null;
        return {windows: Number(svg.dataset.windows), segments: [...svg.querySelectorAll("rect.segment")].map((r) =>
          [r.dataset.label, Number(r.dataset.startS), Number(r.dataset.endS), r.classList.contains("provisional")])};
    """)


def test_the_study_page_shows_a_live_participants_timeline_filling_in(service):
    from selenium.webdriver.common.by import By

    url = service["url"]
    driver = chromium_driver()
    try:
        from selenium.webdriver.common.keys import Keys

        driver.get(f"{url}/study#{SUBJECT}")  # nobody is stored yet: the participant's own address opens it
        driver.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)
        wait_for(driver, lambda d: d.find_element(By.ID, "participant").is_displayed(), message="no participant section")
        assert not driver.find_element(By.ID, "live").is_displayed()  # nothing streams yet
        result = {}

        def stream() -> None:
            try:
                result["streamed"] = stream_batches(url, SUBJECT, service["batches"], stream="watch", token=TOKEN,
                                                    speed=12)
            except Exception as error:  # said by the assertion below
                result["error"] = error

        watch = threading.Thread(target=stream, daemon=True)
        watch.start()
        seen = []  # what the page drew, once a second, while the watch streamed
        deadline = time.monotonic() + 240
        while watch.is_alive():
            assert time.monotonic() < deadline, "the stream did not end within 240 s"
            view = drawn(driver)
            if view is not None and (not seen or view != seen[-1]):
                seen.append(view)
            time.sleep(0.5)
        assert "streamed" in result, result
        streamed = result["streamed"]
    finally:
        try:
            # closed: a stored recording now; the live view goes and the participant's days show it
            wait_for(driver, lambda d: not d.find_element(By.ID, "live").is_displayed(), timeout=30,
                     message="the live view stayed after the stream closed")
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#day-bars rect[data-date]"), timeout=30,
                     message="the stored recording never reached the participant's charts")
        finally:
            quit_driver(driver)
    windows = [view["windows"] for view in seen]
    assert len(set(windows)) >= 5 and windows == sorted(windows), windows  # it filled in, window by window
    assert any(any(s[3] for s in view["segments"]) for view in seen)  # with provisional labels ahead of the final ones
    final = {round(m["start_s"], 3): m["label"] for m in streamed.labels}
    step = streamed.labels[1]["start_s"] - streamed.labels[0]["start_s"]
    for view in seen:  # every final segment drawn says what the watch was told for each of its windows
        for label, start, end, provisional in view["segments"]:
            if provisional or label == "gap":
                continue
            starts = [s for s in final if start - 1e-6 <= s < end - 1e-6]
            assert starts and {final[s] for s in starts} == {label}, (label, start, end)
            assert abs(end - start - len(starts) * step) < step + 1e-6  # no window missing inside it
