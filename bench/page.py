"""Benchmark: the real one-hour Garmin pair through the page at `/`, from the click to the drawn timeline;
and the study page at `/study` opening a participant with 90 days, from navigation to the drawn heatmap.

    python bench/page.py [--runs 5] [--model models/model.onnx] [--part both|upload|study] [--days 90]

Starts the real service on 127.0.0.1, signs in through headless Chromium once, then for each
run chooses the two workbooks, clicks "Upload and score" and waits until the timeline is
drawn (and, separately, until the download links are ready). In the same run, the baseline:
the same two files posted to `POST /recordings` by httpx. page_over_direct says what the
browser, the upload through it and the drawing add. Without --model, models/model.onnx when
the pipeline has made one, else the tests' tiny ONNX model (its scoring costs next to nothing;
bench/batch.py times the real model alone).

The study part fills a fresh SQLite store with one participant of `--days` synthetic days (one
recording a day of 2-20 minute episodes, tests/study_page_helpers.py; nothing is scored), starts the
service on it, signs in once, then for each run opens `/study#<participant>` and reads the page's own
`performance.mark("heatmap-drawn")`: milliseconds from the navigation's start to the drawn heatmap
(HTML, the vendored Plot and D3, the JSON routes, the drawing). The baseline, in the same run: the
four JSON requests the heatmap waits for (access, model, days, hour rows), one after another by httpx. Writes metrics/bench_page.json (a
part not run keeps its figures from the file).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from timing import median_seconds, report  # noqa: E402

from har.config import load_params, resolve_raw  # noqa: E402
from har.garmin import find_garmin_pairs  # noqa: E402
from tests.browser_helpers import chromium_driver, quit_driver  # noqa: E402
from tests.serve_helpers import (LABELS, TOKEN, start_server, stop_server, write_tiny_model,  # noqa: E402
                                 write_tiny_reference)
from tests.browser_helpers import write_params  # noqa: E402

SUBJECT = "P090"


def through_the_page(driver, acc: Path, gyr: Path) -> tuple[float, float]:
    """Seconds from the click to the drawn timeline, and to the ready download links."""
    from selenium.webdriver.common.by import By

    driver.execute_script("document.getElementById('timeline-box').replaceChildren();"
                          "document.getElementById('downloads').replaceChildren();")
    chooser = driver.find_element(By.ID, "files")
    driver.execute_script("arguments[0].value = ''", chooser)
    chooser.send_keys(f"{acc}\n{gyr}")
    button = driver.find_element(By.ID, "upload-button")
    started = time.perf_counter()
    button.click()
    timeline = files = None
    while files is None and time.perf_counter() - started < 120:
        if timeline is None and driver.execute_script("return !!document.getElementById('timeline')"):
            timeline = time.perf_counter() - started
        if driver.execute_script("return document.querySelectorAll('#downloads a[data-file]').length === 4"):
            files = time.perf_counter() - started
        time.sleep(0.01)
    if timeline is None or files is None:
        raise RuntimeError(f"no answer drawn within 120 s: {driver.find_element(By.ID, 'upload-error').text}")
    return timeline, files


def sign_in(driver, url: str, path: str = "/") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + path)
    driver.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "signed-in").is_displayed())


def upload_part(args, params: dict) -> dict:
    acc, gyr = find_garmin_pairs(resolve_raw(ROOT / params["paths"]["garmin"]).resolve())[0][0]  # chromedriver: canonical
    with tempfile.TemporaryDirectory(prefix="bench-page-") as folder:
        model = Path(args.model) if args.model else ROOT / "models" / "model.onnx"
        if not model.exists() and args.model is None:
            model = write_tiny_model(Path(folder) / "model.onnx")
            write_tiny_reference(model, params["monitor"])
        process, url = start_server(model, Path(folder) / "server.log", "--no-access-log")
        driver = chromium_driver()
        try:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            sign_in(driver, url)
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "upload-button").is_enabled())
            through_the_page(driver, acc, gyr)  # warm-up: first-use costs of browser and service
            page = [through_the_page(driver, acc, gyr) for _ in range(args.runs)]
            with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                def direct():
                    with open(acc, "rb") as a, open(gyr, "rb") as g:
                        client.post("/recordings", files={"accelerometer": a, "gyroscope": g}).raise_for_status()
                direct()
                direct_s = median_seconds(direct, args.runs)
            model_name = httpx.get(url + "/model").json()["version"]
        finally:
            quit_driver(driver)
            stop_server(process)
    timeline_s = statistics.median(t for t, _ in page)
    return {
        "runs": args.runs,
        "model": {"source": str(args.model or ("models/model.onnx" if (ROOT / "models" / "model.onnx").exists()
                                              else "tests tiny ONNX model")), "version": model_name},
        "recording": acc.name.removesuffix("-accelerometer_data.xlsx"),
        "raw_pair_mb": round((acc.stat().st_size + gyr.stat().st_size) / 1e6, 2),
        "click_to_timeline_median_s": round(timeline_s, 3),
        "click_to_download_links_median_s": round(statistics.median(f for _, f in page), 3),
        "direct_post_recordings_median_s": round(direct_s, 3),
        "page_over_direct": round(timeline_s / direct_s, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def load_to_heatmap(driver, url: str) -> float:
    """Seconds from the navigation's start to the page's heatmap-drawn mark, on a fresh load of the participant."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get(f"{url}/study#{SUBJECT}")
    WebDriverWait(driver, 60, poll_frequency=0.05).until(
        lambda d: d.execute_script("return performance.getEntriesByName('heatmap-drawn').length > 0"))
    return driver.execute_script("return performance.getEntriesByName('heatmap-drawn')[0].startTime") / 1000.0


def study_part(args, params: dict) -> dict:
    from store import Store

    sys.path.insert(0, str(ROOT / "tests"))
    from tests.study_page_helpers import fill_participant

    with tempfile.TemporaryDirectory(prefix="bench-study-") as folder:
        folder = Path(folder)
        params = json.loads(json.dumps(params))
        params["store"].update({"url": f"sqlite:///{folder / 'study.db'}", "blob_root": str(folder / "blobs")})
        params["serve"]["personal"]["models_dir"] = str(folder / "personal")
        store = Store.from_params(params)
        fill_participant(store, SUBJECT, days=args.days, activities=LABELS)
        store.close()
        model = write_tiny_model(folder / "model.onnx")  # nothing is scored: the model does not matter here
        process, url = start_server(model, folder / "server.log", "--no-access-log", "--params",
                                    str(write_params(folder / "params.yaml", params)))
        driver = chromium_driver()
        try:
            sign_in(driver, url, "/study")  # the token stays in the tab's sessionStorage for every load
            load_to_heatmap(driver, url)  # warm-up: first-use costs of browser and service
            loads = [load_to_heatmap(driver, url) for _ in range(args.runs)]
            cells = driver.execute_script("return document.querySelectorAll('#heatmap rect[data-date]').length")
            with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                def the_heatmaps_requests():  # what the page waits for before it draws the heatmap
                    for path in ("/study/access", "/model", f"/subjects/{SUBJECT}/days",
                                 f"/study/subjects/{SUBJECT}/hours"):
                        client.get(path).raise_for_status()
                the_heatmaps_requests()
                api_s = median_seconds(the_heatmaps_requests, args.runs)
                days = len(client.get(f"/subjects/{SUBJECT}/days").json())
        finally:
            quit_driver(driver)
            stop_server(process)
    load_s = statistics.median(loads)
    return {"runs": args.runs, "days": days, "heatmap_cells": cells,
            "load_to_heatmap_median_s": round(load_s, 3), "load_to_heatmap_max_s": round(max(loads), 3),
            "heatmap_requests_one_by_one_median_s": round(api_s, 3), "page_over_requests": round(load_s / api_s, 2),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", help="ONNX model (default: models/model.onnx if present, else the tiny one)")
    parser.add_argument("--part", choices=["both", "upload", "study"], default="both")
    parser.add_argument("--days", type=int, default=90, help="days of the study page's participant")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    previous = ROOT / "metrics" / "bench_page.json"
    result = json.loads(previous.read_text()) if previous.exists() and args.part != "both" else {}
    if args.part in ("both", "upload"):
        result.update(upload_part(args, params))
    if args.part in ("both", "study"):
        result["study"] = study_part(args, params)
    report(result, "page")


if __name__ == "__main__":
    main()
