"""Benchmark: the study generator (har/study.py), per session and for a benchmark-sized study.

    python bench/study.py [--runs 3] [--participants 10] [--days 3]

One session of a test subject as the sessions stage writes it (12 recordings, a 35-minute desk
stretch: about 71 minutes), written as workbooks and as a fused table, median of --runs. Baselines
in the same run: reading that workbook pair back and fusing it (`har.scoring.prepare`, what
scoring a session costs before the model) and writing the same rows with openpyxl (the writer
har/study.py replaced). Then a fused study of --participants x --days with benchmark-sized sessions
(4 recordings, a 30-minute desk stretch), timed once: seconds and bytes per session, and what 100
participants x 30 days would take at that rate. Writes metrics/bench_study.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import median_seconds, report  # noqa: E402

from har.config import load_params, resolve_raw  # noqa: E402
from har.study import StudyPlan, batch_rows, garmin_hour, generate_study, milli_units  # noqa: E402
from har.preprocessing import Preprocessing  # noqa: E402
from har.scoring import GarminPair, prepare  # noqa: E402
from har.wear import WearRule  # noqa: E402


def openpyxl_write(path: Path, rows: list[list]) -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Sheet1")
    for row in rows:
        sheet.append(row)
    book.save(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    data = params["data"]
    source = resolve_raw(ROOT / data["raw"])
    folder = resolve_raw(ROOT / params["paths"]["garmin"])
    session = params["production"]["sessions"][0]
    garmin = (folder / f"{session}-accelerometer_data.xlsx", folder / f"{session}-gyroscope_data.xlsx")
    garmin_hour(*(str(g) for g in garmin))  # read once, as a study of many sessions does
    labels, subject = list(data["labels"]), "1604"
    # No model here: the settings a model exported from these params would carry.
    preprocessing = Preprocessing(target_hz=float(data["target_hz"]), max_gap_s=float(data["max_gap_s"]),
                                  lowpass_hz=data["lowpass_hz"], window_length=int(params["window"]["length"]),
                                  overlap=float(params["window"]["overlap"]))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)

        def one(output: str):
            return lambda: generate_study(scratch / output, source, [subject], labels=labels, garmin=garmin,
                                          plan=StudyPlan(midnight=False, output=output))

        workbook_s = median_seconds(one("garmin"), args.runs)
        fused_s = median_seconds(one("fused"), args.runs)
        name = next((scratch / "garmin" / "recordings").glob("*-accelerometer_data.xlsx")).name
        pair = [scratch / "garmin" / "recordings" / name, scratch / "garmin" / "recordings" /
                name.replace("accelerometer", "gyroscope")]
        read_s = median_seconds(lambda: prepare(GarminPair(*pair), preprocessing, WearRule()), args.runs)
        prepared = prepare(GarminPair(*pair), preprocessing, WearRule())
        seconds = prepared.quality["fused_seconds"]
        from har.garmin import read_garmin_pair
        raw = read_garmin_pair(*pair)
        import pandas as pd
        start = pd.Timestamp("2025-03-29 10:00:00").tz_localize("Europe/Berlin")
        rows = batch_rows(start, (raw.acc.t * 1000).round().astype("int64"), milli_units(raw.acc.xyz, "acc"), 0)
        openpyxl_s = median_seconds(lambda: openpyxl_write(scratch / "openpyxl.xlsx", rows), args.runs)

        plan = StudyPlan(participants=args.participants, days=args.days, recordings_per_session=4,
                         nonwear_minutes=(30.0,), output="fused")
        started = time.perf_counter()
        manifest = generate_study(scratch / "big", source, ["1604", "1605", "1618", "1623", "1626", "1627", "1636"],
                                  labels=labels, garmin=garmin, plan=plan,
                                  fusion={k: data[k] for k in ("target_hz", "max_gap_s", "lowpass_hz")})
        big_s = time.perf_counter() - started
        sessions = len(manifest["sessions"])
        big_bytes = sum(p.stat().st_size for p in (scratch / "big").rglob("*") if p.is_file())
    per_session = big_s / sessions
    report({
        "session_minutes": round(seconds / 60.0, 1),
        "workbook_session_median_s": round(workbook_s, 3),
        "fused_session_median_s": round(fused_s, 3),
        "read_and_cut_session_median_s": round(read_s, 3),
        "openpyxl_one_workbook_median_s": round(openpyxl_s, 3),
        "study_participants": args.participants, "study_days": args.days, "study_sessions": sessions,
        "study_session_minutes": round(sum(s["seconds"] for s in manifest["sessions"]) / 60.0 / sessions, 1),
        "study_fused_s": round(big_s, 1), "study_fused_s_per_session": round(per_session, 3),
        "study_bytes_per_session": int(big_bytes / sessions),
        "study_100_participants_30_days_estimate_min": round(per_session * 3000 / 60.0, 1),
        "study_100_participants_30_days_estimate_gb": round(big_bytes / sessions * 3000 / 1e9, 2),
    }, "study")


if __name__ == "__main__":
    main()
