"""Labelled sessions: a Garmin workbook pair plus an annotations CSV saying what was done when.

Layout: `<session>-accelerometer_data.xlsx`, `<session>-gyroscope_data.xlsx` and
`<session>-annotations.csv` side by side (a folder may hold several sessions of one person).
The CSV has the columns `start, end, activity`, one row per annotated interval [start, end).
A time is either

- a number: seconds from the recording's start (t = 0 is the earlier of the two workbooks'
  first batch), e.g. `12.5`; or
- a wall-clock date and time in ISO 8601, e.g. `2025-03-24 07:53:00` or `2025-03-24T07:53:00.250`,
  read in the export's zone (`data.timezone`; naive local time when that is null).

Each interval becomes its own labelled Recording (the workbooks' samples inside it), so the
pipeline's fusion and windowing run unchanged and no window spans two activities. Time that
no row annotates is left out and counted in the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from har.garmin import find_garmin_pairs, read_garmin_pair
from har.recording import InputError, Recording, SensorStream

COLUMNS = ("start", "end", "activity")
ANNOTATIONS_SUFFIX = "-annotations.csv"
FIRST_DATA_ROW = 2  # spreadsheet numbering: row 1 is the header
TIME_EXPECTED = "seconds from the recording's start (e.g. 12.5) or a wall-clock time (e.g. 2025-03-24 07:53:00)"


@dataclass(frozen=True)
class Annotation:
    row: int  # the CSV row, numbered as a spreadsheet shows it (header = 1)
    start_s: float
    end_s: float
    activity: str


def read_annotation_table(path) -> pd.DataFrame:
    """The CSV as text cells, with a located error when it is not `start, end, activity` with rows."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:
        raise InputError(path, f"cannot be read as CSV ({type(exc).__name__}: {exc})",
                         expected="a CSV with columns start, end, activity") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}", column=missing[0], expected="columns start, end, activity")
    if table.empty:
        raise InputError(path, "no annotation rows", expected="at least one row of start, end, activity")
    return table


def annotation_activities(path) -> list[tuple[int, str]]:
    """(row, activity) of each row, without reading the recording: what the retraining trigger counts."""
    table = read_annotation_table(path)
    return [(FIRST_DATA_ROW + i, str(a).strip()) for i, a in enumerate(table["activity"])]


def _seconds(cell: str, origin: pd.Timestamp | None, path, row: int, column: str) -> float:
    text = str(cell).strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not np.isfinite(value):
            raise InputError(path, f"{column} is {text!r}", row=row, column=column, expected=TIME_EXPECTED)
        return value
    try:
        stamp = pd.Timestamp(text) if text else None
    except (ValueError, TypeError):
        stamp = None
    if stamp is None or pd.isna(stamp):
        raise InputError(path, f"unreadable time {text!r}", row=row, column=column, expected=TIME_EXPECTED)
    if origin is None:
        raise InputError(path, f"wall-clock time {text!r}, but the recording has no start time", row=row,
                         column=column, expected="seconds from the recording's start")
    if (stamp.tzinfo is None) != (origin.tzinfo is None):
        if stamp.tzinfo is not None:
            raise InputError(path, f"time {text!r} names a zone, but the recording's clock has none", row=row,
                             column=column, expected="a time without zone, or set data.timezone")
        stamp = stamp.tz_localize(origin.tzinfo)  # a naive time is read in the export's zone
    return (stamp - origin).total_seconds()


def read_annotations(path, *, labels: list[str], start_time: str | None, duration_s: float) -> list[Annotation]:
    """Validated annotations, sorted by start.

    Refused, with file, row and column: an unreadable time, end not after start, a time outside
    the recording [0, duration_s], an activity not in `labels`, and two rows that overlap.
    """
    path = Path(path)
    table = read_annotation_table(path)
    origin = pd.Timestamp(start_time) if start_time else None
    annotations = []
    for i, cells in enumerate(table[list(COLUMNS)].itertuples(index=False)):
        row = FIRST_DATA_ROW + i
        start = _seconds(cells.start, origin, path, row, "start")
        end = _seconds(cells.end, origin, path, row, "end")
        activity = str(cells.activity).strip()
        if end <= start:
            raise InputError(path, f"end {end:g} s is not after start {start:g} s", row=row, column="end",
                             expected="end > start")
        if start < 0 or end > duration_s + 1e-6:
            raise InputError(path, f"interval {start:g}-{end:g} s lies outside the recording (0-{duration_s:g} s)",
                             row=row, column="start" if start < 0 else "end",
                             expected=f"times within 0-{duration_s:g} s of the recording's start")
        if activity not in labels:
            raise InputError(path, f"unknown activity {activity!r}", row=row, column="activity",
                             expected=f"one of the model's labels {labels}")
        annotations.append(Annotation(row, start, end, activity))
    annotations.sort(key=lambda a: (a.start_s, a.row))
    for before, after in zip(annotations, annotations[1:]):
        if after.start_s < before.end_s:
            raise InputError(path, f"interval {after.start_s:g}-{after.end_s:g} s overlaps row {before.row} "
                                   f"({before.start_s:g}-{before.end_s:g} s)", row=after.row, column="start",
                             expected="intervals that do not overlap")
    return annotations


def session_recording_id(session: str, row: int, activity: str) -> str:
    return f"{session}_r{row}_{activity}"


def _cut(stream: SensorStream, start: float, end: float) -> SensorStream:
    inside = (stream.t >= start) & (stream.t < end)
    return SensorStream(stream.t[inside], stream.xyz[inside])


def split_by_annotations(recording: Recording, annotations: list[Annotation], *, session: str,
                         subject: str | None) -> tuple[list[Recording], dict]:
    """One labelled Recording per annotation, and how many seconds were annotated and left out."""
    pieces = []
    for a in annotations:
        acc, gyr = _cut(recording.acc, a.start_s, a.end_s), _cut(recording.gyr, a.start_s, a.end_s)
        if len(acc.t) < 2 or len(gyr.t) < 2:
            continue  # an interval in a gap of the recording: counted below as annotated but without data
        pieces.append(Recording(session_recording_id(session, a.row, a.activity), acc, gyr, subject=subject,
                                activity=a.activity, start_time=recording.start_time,
                                report={**recording.report, "annotation_row": a.row}))
    start = max(recording.acc.t.min(), recording.gyr.t.min())
    stop = min(recording.acc.t.max(), recording.gyr.t.max())
    annotated = sum(max(0.0, min(a.end_s, stop) - max(a.start_s, start)) for a in annotations)
    per_activity: dict[str, float] = {}
    for a in annotations:
        per_activity[a.activity] = round(per_activity.get(a.activity, 0.0) + a.end_s - a.start_s, 3)
    return pieces, {"session": session, "recorded_s": round(stop - start, 3), "annotated_s": round(annotated, 3),
                    "unannotated_s": round(stop - start - annotated, 3), "intervals": len(annotations),
                    "intervals_without_data": len(annotations) - len(pieces), "annotated_s_per_activity": per_activity}


def read_labelled_session(acc_path, gyr_path, annotations_path, *, labels: list[str], subject: str | None = None,
                          timezone: str | None = None, on_error: str = "raise") -> tuple[list[Recording], dict]:
    """A Garmin pair and its annotations -> one labelled Recording per interval, and the session's report."""
    recording = read_garmin_pair(acc_path, gyr_path, timezone=timezone, on_error=on_error)
    duration = float(min(recording.acc.t.max(), recording.gyr.t.max()))
    annotations = read_annotations(annotations_path, labels=labels, start_time=recording.start_time,
                                   duration_s=duration)
    return split_by_annotations(recording, annotations, session=recording.recording_id, subject=subject)


def find_labelled_sessions(folder) -> tuple[list[dict], list[dict]]:
    """Sessions in `folder` that have both workbooks and an annotations CSV; everything else as a skip record."""
    folder = Path(folder)
    pairs, skipped = find_garmin_pairs(folder)
    sessions = []
    for acc, gyr in pairs:
        session = acc.name.removesuffix("-accelerometer_data.xlsx")
        annotations = folder / f"{session}{ANNOTATIONS_SUFFIX}"
        if annotations.is_file():
            sessions.append({"session": session, "acc": acc, "gyr": gyr, "annotations": annotations})
        else:
            skipped.append({"file": acc.name, "reason": f"no annotations ({annotations.name})"})
    paired = {s["annotations"] for s in sessions}
    skipped += [{"file": p.name, "reason": "no workbook pair for these annotations"}
                for p in sorted(folder.glob(f"*{ANNOTATIONS_SUFFIX}")) if p not in paired]
    return sessions, skipped


def session_folders(root) -> list[tuple[str, Path]]:
    """(subject, folder) for the labelled-sessions source: one folder per subject under `root`,
    or `root` itself (subject = its name) when it holds the sessions directly."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "folder not found", expected="a folder of labelled sessions")
    if any(root.glob(f"*{ANNOTATIONS_SUFFIX}")):
        return [(root.name, root)]
    return [(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob(f"*{ANNOTATIONS_SUFFIX}"))]


def subject_recordings(source, subject: str, *, labels: list[str], data: dict) -> tuple[list[Recording], dict]:
    """One person's labelled recordings from any labelled format, with a report of what was read.

    `source` is a folder of labelled sessions (Garmin pairs + annotations), a WISDM-layout folder
    (activities.json, acc_w/, gyr_w/), or a long table (.csv / .parquet, columns as in
    `data["long_table"]`). Activities outside `labels` are left out and counted.
    """
    from har.labelled import find_wisdm_pairs, read_long_table, read_wisdm_pair

    source, subject = Path(source), str(subject)
    if source.is_dir() and (source / "activities.json").is_file():
        pairs, _ = find_wisdm_pairs(source)
        mine = [p for p in pairs if p["subject"] == subject]
        if not mine:
            raise InputError(source, f"no recordings of subject {subject!r}",
                             expected=f"one of {sorted({p['subject'] for p in pairs})}")
        recordings = [read_wisdm_pair(p) for p in mine]
        kind = "wisdm"
    elif source.is_file() and source.suffix in (".csv", ".parquet"):
        if "long_table" not in data:
            raise InputError(source, "a long table needs its column names", expected="data.long_table in params.yaml")
        everyone = read_long_table(source, data["long_table"])
        recordings = [r for r in everyone if r.subject == subject]
        if not recordings:
            raise InputError(source, f"no rows of subject {subject!r}", column=data["long_table"]["subject"],
                             expected=f"one of {sorted({r.subject for r in everyone})}")
        kind = "long_table"
    elif source.is_dir():
        sessions, skipped = find_labelled_sessions(source)
        if not sessions:
            raise InputError(source, "no labelled session", expected="<session>-accelerometer_data.xlsx, "
                             f"<session>-gyroscope_data.xlsx and <session>{ANNOTATIONS_SUFFIX}; skipped: {skipped}")
        recordings, reports = [], []
        for s in sessions:
            pieces, report = read_labelled_session(s["acc"], s["gyr"], s["annotations"], labels=labels,
                                                   subject=subject, timezone=data.get("timezone"),
                                                   on_error=data.get("on_error", "raise"))
            recordings += pieces
            reports.append(report)
        return recordings, {"format": "labelled_sessions", "sessions": reports, "skipped": skipped,
                            "unannotated_s": round(sum(r["unannotated_s"] for r in reports), 3)}
    else:
        raise InputError(source, "not a labelled session", expected="a folder of Garmin pairs with annotations, "
                         "a WISDM-layout folder, or a long table (.csv / .parquet)")
    left_out = sorted({r.activity for r in recordings} - set(labels))
    return [r for r in recordings if r.activity in labels], {"format": kind, "activities_not_in_labels": left_out}
