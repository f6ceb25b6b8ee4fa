"""fuse stage: raw recordings -> one canonical 50 Hz table per recording + a quality report.

    python -m stages.fuse labelled          # the configured labelled source -> data/fused/labelled
    python -m stages.fuse garmin SESSION    # one Garmin workbook pair       -> data/fused/garmin/SESSION
    python -m stages.fuse sessions          # list the Garmin sessions in paths.garmin (for production.sessions)

Each production session is its own DVC stage (`foreach` over production.sessions in dvc.yaml),
so a new recording is fused and cached on its own without touching the others.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from har.annotations import find_labelled_sessions, read_labelled_session, session_folders
from har.config import load_params, resolve_raw, write_json
from har.fusion import fuse_recording
from har.garmin import find_garmin_pairs, read_garmin_pair
from har.labelled import find_wisdm_pairs, read_long_table, read_wisdm_pair
from har.recording import InputError


def labelled_loaders(data: dict):
    """(one loader per input file, skipped files) for the configured labelled source.

    Loaders are called one by one so that a bad file can be skipped without losing the rest.
    """
    root = resolve_raw(data["raw"])
    if data["source"] == "wisdm":
        pairs, skipped = find_wisdm_pairs(root)
        return [lambda p=p: [read_wisdm_pair(p)] for p in pairs], skipped
    if data["source"] == "long_table":
        return [lambda: read_long_table(root, data["long_table"])], []
    if data["source"] == "sessions":  # <subject>/<session> Garmin pairs + annotations (har/annotations.py)
        loaders, skipped = [], []
        for subject, folder in session_folders(root):
            sessions, unpaired = find_labelled_sessions(folder)
            skipped += [{**item, "file": f"{subject}/{item['file']}"} for item in unpaired]
            loaders += [lambda s=s, subject=subject: read_labelled_session(
                s["acc"], s["gyr"], s["annotations"], labels=list(data["labels"]), subject=subject,
                timezone=data["timezone"], on_error=data["on_error"])[0] for s in sessions]
        return loaders, skipped
    raise ValueError(f"data.source must be 'wisdm', 'long_table' or 'sessions', got {data['source']!r}")


def garmin_loaders(data: dict, folder, session: str):
    """The loader of one session's workbook pair; a missing workbook is an error naming both files."""
    folder = resolve_raw(folder)
    acc, gyr = (folder / f"{session}-{kind}_data.xlsx" for kind in ("accelerometer", "gyroscope"))
    missing = [p.name for p in (acc, gyr) if not p.exists()]
    if missing:
        raise InputError(folder, f"session {session!r} lacks {missing}",
                         expected=f"{acc.name} and {gyr.name}")
    options = dict(timezone=data["timezone"], on_error=data["on_error"])
    return [lambda: [read_garmin_pair(acc, gyr, **options)]], []


def fuse_all(loaders, skipped: list[dict], out_dir: Path, data: dict) -> dict:
    """Fuse every recording into out_dir; a file that fails is raised or, with on_error: skip, counted."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    index, reports = [], []
    for load in loaders:
        try:
            recordings = load()
        except InputError as error:
            if data["on_error"] != "skip":
                raise
            skipped.append({"file": error.file, "reason": str(error)})
            continue
        for recording in recordings:
            fused, quality = fuse_recording(recording, target_hz=data["target_hz"], max_gap_s=data["max_gap_s"],
                                            lowpass_hz=data["lowpass_hz"])
            file = f"{recording.recording_id}.parquet"
            fused.to_parquet(out_dir / file, index=False)
            index.append({"recording": recording.recording_id, "subject": recording.subject,
                          "activity": recording.activity, "start_time": recording.start_time,
                          "file": file, "samples": len(fused)})
            reports.append(quality)
    pd.DataFrame(index).to_csv(out_dir / "index.csv", index=False)
    write_json(out_dir / "quality.json", reports)
    totals = {k: sum(r[s][k] for r in reports for s in ("acc", "gyr"))
              for k in ("samples_read", "duplicates", "out_of_order", "samples_used", "samples_outside_fused", "gaps")}
    return {"recordings": len(reports), "files_skipped": len(skipped), "skipped": skipped,
            "samples_written": sum(r["samples_written"] for r in reports),
            "rows_skipped": sum(r["reader"][s].get("rows_skipped", 0) for r in reports for s in ("acc", "gyr")),
            **{f"input_{k}": v for k, v in totals.items()},
            # One recording (a production session): its whole quality report; more: see quality.json.
            **({"recording": reports[0]} if len(reports) == 1 else {})}


def main(which: str, session: str | None = None) -> None:
    params = load_params()
    data = params["data"]
    if which == "labelled":
        loaders, skipped = labelled_loaders(data)
        out_dir, report_path = Path("data/fused/labelled"), "metrics/fuse_labelled.json"
    elif which == "garmin" and session:
        loaders, skipped = garmin_loaders(data, params["paths"]["garmin"], session)
        out_dir, report_path = Path("data/fused/garmin") / session, f"metrics/fuse_garmin/{session}.json"
    elif which == "sessions":
        pairs, unpaired = find_garmin_pairs(resolve_raw(params["paths"]["garmin"]))
        print("\n".join(a.name.removesuffix("-accelerometer_data.xlsx") for a, _ in pairs))
        for skip in unpaired:
            print(f"skipped {skip['file']}: {skip['reason']}", file=sys.stderr)
        return
    else:
        raise SystemExit(f"usage: python -m stages.fuse labelled | garmin SESSION | sessions (got {sys.argv[1:]})")
    report = fuse_all(loaders, skipped, out_dir, data)
    write_json(report_path, report)
    print(f"fused {report['recordings']} {which} recordings, {report['samples_written']} samples at "
          f"{data['target_hz']} Hz; skipped {report['files_skipped']} file(s), {report['rows_skipped']} row(s)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
