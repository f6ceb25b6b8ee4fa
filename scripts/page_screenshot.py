"""A screenshot of the page at `/` after it has answered the real Garmin hour (docs/img/page.png), or of
the study page's participant view (docs/img/study.png).

    python scripts/page_screenshot.py [--model models/model.onnx] [--out docs/img/page.png]
    python scripts/page_screenshot.py --study [--days 42] [--out docs/img/study.png]

Starts the real service on 127.0.0.1 with a throwaway token, drives headless Chromium
(Debian's `chromium` + `chromium-driver`) through the page's own controls, and saves the
answered page as a small PNG (palette-quantised). Without --model it uses models/model.onnx
when the pipeline has made one, else the tests' tiny ONNX model (same input contract, whose
answers mean nothing: it shows the page, not the model).

With --study it fills a throwaway SQLite study store with one participant of `--days` synthetic days
(tests/study_page_helpers.py: one recording a day of 2-20 minute episodes, a not-worn stretch, every
fifth day too short to be valid, the first night across midnight), opens the participant and clicks
the day after that night, so that the picture shows the heatmap, the day bars, the day's timelines,
the trends and the profiles.
"""
from __future__ import annotations

import argparse
import io
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from har.config import load_params  # noqa: E402
from har.drift import reference_path_for  # noqa: E402
from tests.browser_helpers import chromium_driver, quit_driver, write_params  # noqa: E402
from tests.serve_helpers import LABELS, start_server, stop_server, write_tiny_model, write_tiny_reference  # noqa: E402

GARMIN = ROOT.parent / "shared" / "data" / "garmin"
PAIR = ("2025-03-23-15-23-10-accelerometer_data.xlsx", "2025-03-23-15-23-10-gyroscope_data.xlsx")


def small_png(png: bytes, colours: int = 64) -> bytes:
    """The screenshot with a 64-colour palette: flat page colours survive, the file shrinks several times."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def screenshot(url: str, token: str, width: int, timeout_s: float) -> bytes:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver(width=width, height=900)
    try:
        wait = WebDriverWait(driver, timeout_s, poll_frequency=0.2)
        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "model-name").text)
        driver.find_element(By.ID, "token").send_keys(token, Keys.ENTER)
        wait.until(lambda d: d.find_element(By.ID, "upload-button").is_enabled())
        driver.find_element(By.ID, "files").send_keys("\n".join(str(GARMIN / name) for name in PAIR))
        driver.find_element(By.ID, "upload-button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#downloads a[data-file]"))
        driver.execute_script("window.scrollTo(0, 0)")
        # The whole page in one picture: the window as tall as the document.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, height + 200)  # + the window frame headless Chromium still counts
        return driver.get_screenshot_as_png()
    finally:
        quit_driver(driver)


def study_screenshot(url: str, token: str, subject: str, day: str, width: int, timeout_s: float) -> bytes:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver(width=width, height=900)
    try:
        wait = WebDriverWait(driver, timeout_s, poll_frequency=0.2)
        driver.get(f"{url}/study#{subject}")
        driver.find_element(By.ID, "token").send_keys(token, Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap rect[data-date]"))
        driver.execute_script("openDay(arguments[0])", day)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#day-timelines svg.day-timeline"))
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, height + 200)
        return driver.get_screenshot_as_png()
    finally:
        quit_driver(driver)


def study_png(args, token: str) -> bytes:
    """The participant view of a throwaway store's one synthetic participant."""
    import copy

    from store import Store

    sys.path.insert(0, str(ROOT / "tests"))
    from tests.study_page_helpers import fill_participant

    subject = "P001"
    with tempfile.TemporaryDirectory(prefix="har-screenshot-") as folder:
        folder = Path(folder)
        params = copy.deepcopy(load_params(ROOT / "params.yaml"))
        params["store"].update({"url": f"sqlite:///{folder / 'study.db'}", "blob_root": str(folder / "blobs")})
        params["serve"]["personal"]["models_dir"] = str(folder / "personal")
        store = Store.from_params(params)
        stored = fill_participant(store, subject, days=args.days, activities=LABELS)
        store.close()
        model = write_tiny_model(folder / "model.onnx")  # its labels name the synthetic activities
        process, url = start_server(model, folder / "server.log", "--params",
                                    str(write_params(folder / "params.yaml", params)), token=token)
        try:
            return small_png(study_screenshot(url, token, subject, stored[0]["days"][-1], args.width, args.timeout))
        finally:
            stop_server(process)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/page_screenshot.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: models/model.onnx if present, else a tiny one)")
    parser.add_argument("--out", type=Path, help="default docs/img/page.png, with --study docs/img/study.png")
    parser.add_argument("--study", action="store_true", help="the study page's participant view instead")
    parser.add_argument("--days", type=int, default=42, help="with --study: days of the synthetic participant")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(24)
    args.out = args.out or ROOT / "docs" / "img" / ("study.png" if args.study else "page.png")
    if args.study:
        png = study_png(args, token)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(png)
        print(f"{args.out}: {len(png) // 1024} KiB")
        return 0
    with tempfile.TemporaryDirectory(prefix="har-screenshot-") as folder:
        model = args.model or ROOT / "models" / "model.onnx"
        if args.model is None and not model.exists():
            model = write_tiny_model(Path(folder) / "model.onnx")
            write_tiny_reference(model, load_params(ROOT / "params.yaml")["monitor"])
        print(f"model {model} (drift reference {'present' if reference_path_for(model).exists() else 'absent'})")
        process, url = start_server(model, Path(folder) / "server.log", token=token)
        try:
            png = small_png(screenshot(url, token, args.width, args.timeout))
        finally:
            stop_server(process)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"{args.out}: {len(png) // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
