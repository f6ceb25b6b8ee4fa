"""A study with known truth: labelled people's recordings written as Garmin sessions over local days.

    generate_study(out, source, subjects, labels=..., plan=StudyPlan(...), garmin=(acc.xlsx, gyr.xlsx)) -> manifest

For each of `plan.participants` participants (participant p wears subject `subjects[p % len(subjects)]`'s
recordings) and each of `plan.days` local days, `plan.sessions_per_day` sessions are written. A session
is the subject's labelled recordings (read by the project's own readers: a WISDM folder, a folder of
labelled sessions or a long table, `har.annotations.subject_recordings`) one after another in a seeded
random order, with still stretches of the real Garmin hour (the watch lying on a desk) between some of
them, on one clock with no gap. What is written (under `out`):

- `recordings/<session>-accelerometer_data.xlsx` and `...-gyroscope_data.xlsx`: the Garmin export format
  of ../shared/data/README.md exactly: `timestamp` text in local wall-clock time, `timestamp_ms`,
  `sample_time_offset` and `calibrated_accel_*` / `calibrated_gyro_*` as JSON lists of strings, in
  milli-g and deg/s, one row per batch of about 250 ms, the gyroscope's batches offset from the
  accelerometer's. Samples keep the labelled source's own rate (20 Hz for WISDM: about 5 per batch), so
  the model sees the signal it was trained on; the desk stretch is taken at the same instants (nearest
  real sample). With `plan.output = "fused"` the same samples are fused instead and written as the
  fused tables `python -m serve.batch` reads (`<session>.parquet`, `index.csv`, `quality.json`): for
  benchmarks, where writing and reading workbooks would dominate.
- `truth/<session>.csv`: the label of every second of the session (`second, time, label`; an activity or
  `not_worn`; second i is [i, i+1) from the first sample, labelled by what holds at i + 0.5 s).
- `truth/<session>.json`: the pieces (start, end, label, source recording), minutes per activity and
  not-worn minutes for the session and for each local day it touches.
- `days.csv`: per participant and local day, the day's length in hours (23 or 25 on a daylight-saving
  day), recorded and not-worn minutes and minutes per activity; `participants.csv`, `sessions.csv` and
  `study.json` (the plan, the sources and every session).

Wall-clock times are local to `plan.timezone`. Unless `plan.midnight` is off, the first participant's
first day ends with a session that crosses midnight; `plan.first_day` defaults to the day before the EU
spring change, so with two or more days one local day has 23 hours. A session may not span a
daylight-saving change itself: the export's text times carry no offset, so a reader would see an hour
missing or time running backwards; the generator refuses such a plan by name.

With `plan.piece_seconds` (low, high) each session's recordings are cut to seeded lengths in that range
(from their start): sessions whose activities change in composition and length, so that a minutes
estimator cannot win by spreading time evenly over the activities.

The same plan, sources and seed give the same files, byte for byte (workbooks included). Participant p's
sessions depend only on the seed and p, not on how many participants are asked for.
"""
from __future__ import annotations

import functools
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from har.fusion import clean_stream, fuse_recording, native_rate
from har.garmin import SENSORS, TIMESTAMP_FORMAT, read_garmin_pair
from har.minutes import clipped_sums, interval_seconds
from har.recording import ACC_TO_SI, GYR_TO_SI, Recording, SensorStream
from har.wear import WearRule, recording_wear

if TYPE_CHECKING:
    from har.answer import Answer

NOT_WORN = "not_worn"
BATCH_MS = 250  # one workbook row per this many ms, as the Garmin logger writes them
GYRO_PHASE_MS = 30  # the gyroscope's batches start this much later than the accelerometer's
DESK_MARGIN_S = 60.0  # the desk stretch is cut this far inside the Garmin hour's non-wear episode
PIECE_ALIGN_MS = 100  # pieces start on whole 100 ms: the 50 Hz grid of the session meets each recording's own
DAY_START_H, DAY_END_H = 8.0, 21.0  # sessions of an ordinary day start between these local hours


@dataclass(frozen=True)
class StudyPlan:
    participants: int = 1
    days: int = 1
    sessions_per_day: int = 1
    timezone: str = "Europe/Berlin"
    first_day: str = "2025-03-29"  # Europe/Berlin springs forward on 2025-03-30: day 2 has 23 hours
    nonwear_minutes: tuple[float, ...] = (35.0,)  # desk stretches per session, each between two recordings
    recordings_per_session: int | None = None  # None: all of the subject's recordings in every session
    skip_s: float = 0.0  # leave out the first seconds of each recording (a personal model's calibration data)
    max_recording_s: float | None = None  # at most this much of each recording (None: the rest of it)
    piece_seconds: tuple[float, float] | None = None  # each session's recordings cut to seeded lengths in this range
    midnight: bool = True  # the first participant's first day ends with a session across midnight
    seed: int = 0
    output: str = "garmin"  # "garmin" (workbook pairs) | "fused" (fused tables, for benchmarks)

    def __post_init__(self):
        if self.piece_seconds is not None and not 0 < self.piece_seconds[0] <= self.piece_seconds[1]:
            raise ValueError(f"piece_seconds must be (low, high) with 0 < low <= high, got {self.piece_seconds}")
        if self.output not in ("garmin", "fused"):
            raise ValueError(f"study output must be 'garmin' or 'fused', got {self.output!r}")
        if min(self.participants, self.days, self.sessions_per_day) < 1:
            raise ValueError("a study needs at least one participant, day and session per day")


@dataclass
class Piece:
    """One stretch of a session: a labelled recording or a desk stretch, samples from its own t = 0 (SI units)."""

    label: str
    source: str
    acc_t: np.ndarray
    acc: np.ndarray
    gyr_t: np.ndarray
    gyr: np.ndarray

    @property
    def span_s(self) -> float:
        return float(min(self.acc_t[-1], self.gyr_t[-1]))


@dataclass
class Session:
    name: str
    participant: str
    subject: str
    start: pd.Timestamp  # local, zone-aware: the first sample
    acc_ms: np.ndarray  # int64 sample times, ms from the start
    acc: np.ndarray  # SI
    gyr_ms: np.ndarray
    gyr: np.ndarray
    pieces: list[dict] = field(default_factory=list)  # start_s, end_s, label, source

    @property
    def duration_s(self) -> float:
        return float(min(self.acc_ms[-1], self.gyr_ms[-1])) / 1000.0


# ---------------------------------------------------------------- pieces

def recording_piece(recording: Recording, *, skip_s: float = 0.0, max_s: float | None = None) -> Piece | None:
    """A labelled recording as a piece: both sensors cut to their common span (after `skip_s`, at most `max_s`)."""
    acc_t, acc, _ = clean_stream(recording.acc)
    gyr_t, gyr, _ = clean_stream(recording.gyr)
    origin = max(acc_t[0], gyr_t[0]) + skip_s
    stop = min(acc_t[-1], gyr_t[-1]) if max_s is None else min(acc_t[-1], gyr_t[-1], origin + max_s)
    a, g = (acc_t >= origin) & (acc_t <= stop), (gyr_t >= origin) & (gyr_t <= stop)
    if a.sum() < 2 or g.sum() < 2:
        return None  # nothing left after skip_s: the caller counts it
    stop = min(acc_t[a][-1], gyr_t[g][-1])  # neither sensor runs past the other: the next piece starts after both
    a, g = a & (acc_t <= stop), g & (gyr_t <= stop)
    return Piece(recording.activity, recording.recording_id, acc_t[a] - origin, acc[a], gyr_t[g] - origin, gyr[g])


def desk_interval(garmin: Recording, target_hz: float = 50.0) -> tuple[float, float]:
    """Where the real Garmin hour lies still: its non-wear episode (har.wear's default rule), less a margin."""
    fused, _ = fuse_recording(garmin, target_hz=target_hz, max_gap_s=0.5, lowpass_hz=10.0)
    episodes = recording_wear(fused, target_hz, WearRule())
    if not episodes:
        raise ValueError(f"{garmin.recording_id}: no non-wear episode to cut desk stretches from")
    start, end = max(episodes, key=lambda e: e[1] - e[0])
    return start + DESK_MARGIN_S, end - DESK_MARGIN_S


@functools.lru_cache(maxsize=2)
def garmin_hour(acc_path: str, gyr_path: str) -> tuple[Recording, tuple[float, float]]:
    """The real Garmin hour and where it lies still, read once per process (tests and benchmarks call often)."""
    hour = read_garmin_pair(acc_path, gyr_path)
    return hour, desk_interval(hour)


def desk_piece(garmin: Recording, interval: tuple[float, float], minutes: float, step_s: float,
               rng: np.random.Generator) -> Piece:
    """`minutes` of the still Garmin hour from a seeded offset, at the session's instants (nearest real sample)."""
    length = minutes * 60.0
    room = interval[1] - interval[0] - length
    if room < 0:
        raise ValueError(f"a desk stretch of {minutes} min is longer than the {(interval[1] - interval[0]) / 60:.1f} "
                         f"min the Garmin hour lies still")
    start = interval[0] + rng.uniform(0.0, room)
    instants = np.arange(0.0, length + 1e-9, step_s)

    def nearest(stream: SensorStream) -> np.ndarray:
        t, xyz, _ = clean_stream(stream)
        index = np.clip(np.searchsorted(t, start + instants), 1, len(t) - 1)
        index -= (start + instants - t[index - 1]) < (t[index] - start - instants)
        return xyz[index]

    return Piece(NOT_WORN, f"{garmin.recording_id}@{start:.0f}s", instants, nearest(garmin.acc), instants.copy(),
                 nearest(garmin.gyr))


def cut_piece(piece: Piece, seconds: float) -> Piece:
    """The piece's first `seconds` (both sensors; the whole piece when it is shorter)."""
    a, g = piece.acc_t <= seconds, piece.gyr_t <= seconds
    return Piece(piece.label, piece.source, piece.acc_t[a], piece.acc[a], piece.gyr_t[g], piece.gyr[g])


def session_order(pieces: list[Piece], desks: list[Piece], count: int | None, rng: np.random.Generator,
                  lengths: tuple[float, float] | None = None) -> list[Piece]:
    """A seeded order of the recordings (each cut to a seeded length in `lengths` when given) with the desk
    stretches at distinct seeded places between two of them."""
    chosen = [pieces[i] for i in rng.permutation(len(pieces))[:count or len(pieces)]]
    if lengths is not None:
        chosen = [cut_piece(piece, rng.uniform(*lengths)) for piece in chosen]
    inner = np.arange(1, len(chosen))  # boundaries between two recordings
    places = (rng.choice(inner, size=len(desks), replace=False) if len(desks) <= len(inner)
              else rng.integers(0, len(chosen) + 1, size=len(desks)))
    for place, desk in sorted(zip(places, desks), key=lambda item: -item[0]):
        chosen.insert(int(place), desk)
    return chosen


def chain(pieces: list[Piece], step_s: float):
    """The pieces on one clock, each starting one sample step after the last, rounded up to PIECE_ALIGN_MS (so
    fusion's 50 Hz grid falls on the same instants of each recording as when the pipeline fuses it alone, and
    no step is near the 0.5 s that fusion would not bridge): ms sample times, values and truth spans."""
    acc_ms, acc, gyr_ms, gyr, spans = [], [], [], [], []
    offset_ms = 0
    for piece in pieces:
        acc_ms.append(offset_ms + np.round(piece.acc_t * 1000.0).astype(np.int64))
        gyr_ms.append(offset_ms + np.round(piece.gyr_t * 1000.0).astype(np.int64))
        acc.append(piece.acc)
        gyr.append(piece.gyr)
        end_ms = offset_ms + int(round(piece.span_s * 1000.0)) + int(round(step_s * 1000.0))
        end_ms = -(-end_ms // PIECE_ALIGN_MS) * PIECE_ALIGN_MS
        spans.append({"start_s": offset_ms / 1000.0, "end_s": end_ms / 1000.0, "label": piece.label,
                      "source": piece.source})
        offset_ms = end_ms
    return np.concatenate(acc_ms), np.concatenate(acc), np.concatenate(gyr_ms), np.concatenate(gyr), spans


# ---------------------------------------------------------------- wall-clock times

def day_schedule(day: pd.Timestamp, durations_s: list[float], tz: str, rng: np.random.Generator,
                 cross_midnight: bool) -> list[pd.Timestamp]:
    """Zone-aware start times for a day's sessions: seeded times in [08:00, 21:00), the last one across midnight
    when asked. Sessions never overlap and never span a daylight-saving change."""
    starts = []
    slots = len(durations_s)
    slot_h = (DAY_END_H - DAY_START_H) / slots
    for k, duration in enumerate(durations_s):
        if cross_midnight and k == slots - 1:
            wall = day + pd.Timedelta(days=1) - pd.Timedelta(seconds=round(duration / 2))
        else:
            wall = day + pd.Timedelta(hours=DAY_START_H + k * slot_h + rng.uniform(0, slot_h / 2))
        wall = wall.floor("s") + pd.Timedelta(milliseconds=int(rng.integers(0, 1000)))
        try:
            start = wall.tz_localize(tz, nonexistent="raise", ambiguous="raise")
        except (ValueError, TypeError) as error:  # pytz-style AmbiguousTimeError / NonExistentTimeError
            raise ValueError(f"a session starting {wall} falls in a daylight-saving change in {tz} ({error}); "
                             "Garmin text times carry no offset (choose another first_day or timezone)") from None
        end = start + pd.Timedelta(seconds=duration)
        if start.utcoffset() != end.tz_convert(tz).utcoffset():
            raise ValueError(f"a session starting {start.isoformat()} would span a daylight-saving change in {tz}; "
                             "Garmin text times carry no offset (choose another first_day or timezone)")
        if starts and start < starts[-1][1]:
            raise ValueError(f"sessions of {day.date()} overlap: {slots} sessions of up to {max(durations_s) / 3600:.1f} h "
                             f"do not fit between {DAY_START_H:g}:00 and {DAY_END_H:g}:00 (lower sessions_per_day)")
        starts.append((start, end))
    return [s for s, _ in starts]


def session_name(participant: str, start: pd.Timestamp) -> str:
    """`<participant>-<YYYY-MM-DD-HH-MM-SS>`, as the Garmin logger names a session by its local start."""
    return f"{participant}-{start.strftime('%Y-%m-%d-%H-%M-%S')}"


# ---------------------------------------------------------------- truth

def second_labels(pieces: list[dict], duration_s: float) -> np.ndarray:
    """The label of each whole second [i, i+1) of the session: the piece holding i + 0.5 s."""
    middles = np.arange(int(np.floor(duration_s))) + 0.5
    ends = np.array([p["end_s"] for p in pieces])
    index = np.minimum(np.searchsorted(ends, middles, side="right"), len(pieces) - 1)
    return np.array([p["label"] for p in pieces], dtype=object)[index]


def local_days(start: pd.Timestamp, seconds: int) -> np.ndarray:
    """The local date (ISO text) of the middle of each second from `start` (zone-aware)."""
    moments = start.tz_convert("UTC") + pd.to_timedelta(np.arange(seconds) + 0.5, unit="s")
    return np.asarray(moments.tz_convert(start.tz).strftime("%Y-%m-%d"), dtype=object)


def minutes_of(labels: np.ndarray, activities: list[str]) -> dict:
    """Minutes per activity (every activity of the model's labels, 0 where absent) and not-worn minutes."""
    counts = pd.Series(labels).value_counts()
    return {"minutes_per_activity": {a: round(float(counts.get(a, 0)) / 60.0, 4) for a in activities},
            "not_worn_minutes": round(float(counts.get(NOT_WORN, 0)) / 60.0, 4),
            "recorded_minutes": round(len(labels) / 60.0, 4)}


def day_hours(date: str, tz: str) -> float:
    """Hours in a local day: 23 or 25 on a daylight-saving day."""
    midnight = pd.Timestamp(date)
    return ((midnight + pd.Timedelta(days=1)).tz_localize(tz) - midnight.tz_localize(tz)).total_seconds() / 3600.0


def iso_times(moments: pd.DatetimeIndex) -> list[str]:
    """ISO 8601 local times with milliseconds and the offset (2025-03-30T09:12:03.250+02:00), vectorised."""
    offset = moments.strftime("%z")
    return list(moments.strftime("%Y-%m-%dT%H:%M:%S.") + pd.Index(moments.microsecond // 1000).astype(str).str.zfill(3)
                + offset.str[:3] + ":" + offset.str[3:])


def session_truth(session: Session, activities: list[str]) -> tuple[pd.DataFrame, dict]:
    """The per-second truth table and the session's summary (pieces, minutes, per local day)."""
    labels = second_labels(session.pieces, session.duration_s)
    days = local_days(session.start, len(labels))
    moments = (session.start.tz_convert("UTC") + pd.to_timedelta(np.arange(len(labels)), unit="s")).tz_convert(
        session.start.tz)
    table = pd.DataFrame({"second": np.arange(len(labels)), "time": iso_times(moments), "label": labels})
    summary = {"session": session.name, "participant": session.participant, "subject": session.subject,
               "start_time": session.start.isoformat(timespec="milliseconds"),
               "seconds": int(len(labels)), "pieces": session.pieces, **minutes_of(labels, activities),
               "days": {d: minutes_of(labels[days == d], activities) for d in sorted(set(days))}}
    return table, summary


# ---------------------------------------------------------------- writing

def milli_units(values_si: np.ndarray, sensor: str) -> list[list[str]]:
    """SI -> the export's units (milli-g, deg/s) as text at the 7 significant digits the logger writes, per axis."""
    native = values_si / (ACC_TO_SI if sensor == "acc" else GYR_TO_SI)[SENSORS[sensor][1]]
    return [[f"{v:.7g}" for v in native[:, axis].tolist()] for axis in range(3)]


def batch_rows(start: pd.Timestamp, sample_ms: np.ndarray, text: list[list[str]], phase_ms: int) -> list[list]:
    """One workbook row per ~250-ms batch: timestamp text (local wall clock), timestamp_ms, offsets, x, y, z."""
    batch = (sample_ms + (BATCH_MS - phase_ms)) // BATCH_MS
    first = np.flatnonzero(np.r_[True, np.diff(batch) != 0])
    bounds = np.r_[first, len(sample_ms)].tolist()
    moments = start.tz_localize(None) + pd.to_timedelta(sample_ms[first], unit="ms")
    stamps, millis = moments.strftime(TIMESTAMP_FORMAT), (moments.microsecond // 1000).tolist()
    offsets = (sample_ms - np.repeat(sample_ms[first], np.diff(bounds))).astype(str).tolist()
    as_list = lambda values, a, b: '["' + '","'.join(values[a:b]) + '"]'
    return [[stamps[i], float(millis[i]), as_list(offsets, a, b), *(as_list(axis, a, b) for axis in text)]
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


SHEET_PARTS = {  # the smallest SpreadsheetML package Excel, LibreOffice, openpyxl and calamine all open
    "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Types xmlns="http://schemas.'
    'openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.'
    'openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override '
    'PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.'
    'main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.worksheet+xml"/></Types>',
    "_rels/.rels": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http://schemas.'
    'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>',
    "xl/workbook.xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook xmlns="http://schemas.'
    'openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>',
    "xl/_rels/workbook.xml.rels": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns='
    '"http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
    'openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
}


def sheet_xml(rows: list[list]) -> str:
    """The worksheet: text cells inline, numbers as numbers. Cell text here is digits, signs, quotes, commas,
    brackets, slashes, colons and AM/PM, none of which XML needs escaped in element content."""
    lines = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="http://schemas.openxmlformats'
             '.org/spreadsheetml/2006/main"><sheetData>']
    for number, row in enumerate(rows, 1):
        cells = "".join(f'<c r="{column}{number}"><v>{value:g}</v></c>' if isinstance(value, (int, float)) else
                        f'<c r="{column}{number}" t="inlineStr"><is><t>{value}</t></is></c>'
                        for column, value in zip("ABCDEF", row))
        lines.append(f'<row r="{number}">{cells}</row>')
    lines.append("</sheetData></worksheet>")
    return "".join(lines)


def write_workbook(path: Path, sensor: str, rows: list[list]) -> None:
    """One sheet: the header and the batch rows, as an .xlsx package written directly (openpyxl took 85 % of a
    session's generation time). Entries carry a fixed time, so the same seed gives the same bytes."""
    import zipfile

    header = ["timestamp", "timestamp_ms", "sample_time_offset", *(SENSORS[sensor][0] + a for a in "xyz")]
    parts = {**SHEET_PARTS, "xl/worksheets/sheet1.xml": sheet_xml([header, *rows])}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, content in parts.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), content,
                             compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)


def written_values(text: list[list[str]], sensor: str) -> np.ndarray:
    """The SI values a reader gets back from the written text (what the fused output is made of too)."""
    unit = SENSORS[sensor][1]
    return np.array(text, dtype=np.float64).T * (ACC_TO_SI if sensor == "acc" else GYR_TO_SI)[unit]


def write_session(folder: Path, session: Session, plan: StudyPlan, fusion: dict) -> dict | None:
    """The session's workbook pair (or, for output "fused", its fused table); returns the fusion report if fused."""
    acc_text, gyr_text = milli_units(session.acc, "acc"), milli_units(session.gyr, "gyr")
    if plan.output == "garmin":
        write_workbook(folder / f"{session.name}-accelerometer_data.xlsx", "acc",
                       batch_rows(session.start, session.acc_ms, acc_text, 0))
        # The gyroscope's batches start GYRO_PHASE_MS later; offsets stay relative to each batch's first sample.
        write_workbook(folder / f"{session.name}-gyroscope_data.xlsx", "gyr",
                       batch_rows(session.start, session.gyr_ms, gyr_text, GYRO_PHASE_MS))
        return None
    recording = Recording(session.name, SensorStream(session.acc_ms / 1000.0, written_values(acc_text, "acc")),
                          SensorStream(session.gyr_ms / 1000.0, written_values(gyr_text, "gyr")),
                          subject=session.participant, start_time=session.start.isoformat())
    fused, quality = fuse_recording(recording, **fusion)
    fused.to_parquet(folder / f"{session.name}.parquet", index=False)
    return {**quality, "samples": len(fused)}


# ---------------------------------------------------------------- the study

def participant_rng(seed: int, participant: int) -> np.random.Generator:
    """Participant p's own stream: the same whatever the number of participants."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(participant,)))


def generate_study(out, source, subjects: list[str], *, labels: list[str], plan: StudyPlan, garmin: tuple,
                   data: dict | None = None, fusion: dict | None = None) -> dict:
    """Write a study under `out` (see the module docstring) and return its manifest (also `study.json`).

    `source`: the labelled data (WISDM folder, labelled sessions folder or long table); `subjects`: whose
    recordings, in the order participants take them; `labels`: the activities (the model's labels);
    `garmin`: the (accelerometer, gyroscope) workbooks of the real non-wear hour; `data`: the params'
    `data` section (long-table column names, time zone of labelled sessions); `fusion`: target_hz,
    max_gap_s and lowpass_hz for output "fused" (the pipeline's data settings).
    """
    from har.annotations import subject_recordings

    out = Path(out)
    if not subjects:
        raise ValueError("a study needs at least one labelled subject")
    data = data or {}
    fusion = fusion or {"target_hz": 50.0, "max_gap_s": 0.5, "lowpass_hz": 10.0}
    recordings_folder, truth_folder = out / "recordings", out / "truth"
    for folder in (recordings_folder, truth_folder):  # a study is rewritten whole: no session of an older one stays
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    hour, still = garmin_hour(*(str(g) for g in garmin))
    first_day = pd.Timestamp(plan.first_day)

    pieces_of, left_out = {}, []
    for subject in dict.fromkeys(str(s) for s in subjects):
        recordings, _ = subject_recordings(source, subject, labels=labels, data=data)
        pieces = []
        for recording in sorted(recordings, key=lambda r: r.recording_id):
            if recording.activity not in labels:
                left_out.append({"recording": recording.recording_id, "reason": "activity not in the labels"})
                continue
            piece = recording_piece(recording, skip_s=plan.skip_s, max_s=plan.max_recording_s)
            if piece is None:
                left_out.append({"recording": recording.recording_id, "reason": f"nothing after skip_s {plan.skip_s}"})
            else:
                pieces.append(piece)
        if not pieces:
            raise ValueError(f"subject {subject}: no recording of {labels} left to build sessions from")
        pieces_of[subject] = pieces

    participants, sessions, day_rows, fused_index, fused_quality = [], [], [], [], []
    for p in range(plan.participants):
        rng = participant_rng(plan.seed, p)
        participant, subject = f"P{p + 1:03d}", str(subjects[p % len(subjects)])
        participants.append({"participant": participant, "subject": subject, "timezone": plan.timezone})
        pieces = pieces_of[subject]
        step_s = round(1000.0 / native_rate(pieces[0].acc_t)) / 1000.0  # the source's sample step, in whole ms
        per_day: dict[str, list[dict]] = {}
        for d in range(plan.days):
            day = first_day + pd.Timedelta(days=d)
            content = []
            for _ in range(plan.sessions_per_day):
                desks = [desk_piece(hour, still, m, step_s, rng) for m in plan.nonwear_minutes]
                content.append(chain(session_order(pieces, desks, plan.recordings_per_session, rng,
                                                   plan.piece_seconds), step_s))
            durations = [min(c[0][-1], c[2][-1]) / 1000.0 for c in content]
            starts = day_schedule(day, durations, plan.timezone, rng, plan.midnight and p == 0 and d == 0)
            for start, (acc_ms, acc, gyr_ms, gyr, spans) in zip(starts, content):
                session = Session(session_name(participant, start), participant, subject, start, acc_ms, acc, gyr_ms,
                                  gyr, spans)
                quality = write_session(recordings_folder, session, plan, fusion)
                if quality is not None:
                    fused_index.append({"recording": session.name, "subject": participant, "activity": None,
                                        "start_time": start.isoformat(), "file": f"{session.name}.parquet",
                                        "samples": quality.pop("samples")})
                    fused_quality.append(quality)
                table, summary = session_truth(session, labels)
                table.to_csv(truth_folder / f"{session.name}.csv", index=False)
                (truth_folder / f"{session.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
                for date, minutes in summary["days"].items():
                    per_day.setdefault(date, []).append(minutes)
                sessions.append({"session": session.name, "participant": participant, "subject": subject,
                                 "start_time": summary["start_time"],
                                 "end_time": (start + pd.Timedelta(seconds=session.duration_s)).isoformat(
                                     timespec="milliseconds"),
                                 "seconds": summary["seconds"], "not_worn_minutes": summary["not_worn_minutes"],
                                 "activity_minutes": round(sum(summary["minutes_per_activity"].values()), 4),
                                 "days": sorted(summary["days"])})
        for date, parts in sorted(per_day.items()):
            day_rows.append({"participant": participant, "date": date, "day_hours": day_hours(date, plan.timezone),
                             "sessions": len(parts),
                             "recorded_minutes": round(sum(x["recorded_minutes"] for x in parts), 4),
                             "not_worn_minutes": round(sum(x["not_worn_minutes"] for x in parts), 4),
                             **{a: round(sum(x["minutes_per_activity"][a] for x in parts), 4) for a in labels}})
    if plan.output == "fused":
        pd.DataFrame(fused_index).to_csv(recordings_folder / "index.csv", index=False)
        (recordings_folder / "quality.json").write_text(json.dumps(fused_quality, indent=1) + "\n")
    pd.DataFrame(participants).to_csv(out / "participants.csv", index=False)
    pd.DataFrame(sessions).drop(columns="days").to_csv(out / "sessions.csv", index=False)
    pd.DataFrame(day_rows).to_csv(out / "days.csv", index=False)
    manifest = {"plan": asdict(plan), "source": str(source), "subjects": [str(s) for s in subjects],
                "labels": list(labels), "garmin": [Path(g).name for g in garmin],
                "desk_interval_s": [round(still[0], 3), round(still[1], 3)],
                "recordings_left_out": left_out, "participants": participants, "sessions": sessions}
    (out / "study.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_truth(study, session: str) -> tuple[np.ndarray, dict]:
    """(label per second, summary) of one generated session."""
    folder = Path(study) / "truth"
    table = pd.read_csv(folder / f"{session}.csv", dtype={"label": str})
    return table["label"].to_numpy(dtype=object), json.loads((folder / f"{session}.json").read_text())


# ---------------------------------------------------------------- a scored session against its truth

UNCOVERED = "uncovered"  # a second no window of the answer covers (the end of a recording, a gap)


def reported_seconds(episodes: list[dict], seconds: int) -> np.ndarray:
    """What an answer says for each whole second [i, i+1): the label of the episode holding i + 0.5 s."""
    labels = np.full(seconds, UNCOVERED, dtype=object)
    middles = np.arange(seconds) + 0.5
    for episode in episodes:
        labels[(middles >= episode["start_s"]) & (middles < episode["end_s"])] = episode["label"]
    return labels


def truth_dates(summary: dict, timezone: str) -> np.ndarray:
    """The local date of each second of a generated session's truth (its summary from `read_truth`)."""
    return local_days(pd.Timestamp(summary["start_time"]).tz_convert(timezone), int(summary["seconds"]))


def day_minutes(answer: Answer, dates: np.ndarray, activities: list[str]) -> list[dict]:
    """Per local date of the truth (`dates`, one per second): the estimate's minutes and interval over the part of
    the recording on that date (the answer's per-window basis cut at the date's first and last second,
    har.minutes.clipped_sums), in the order of `activities`."""
    basis = answer.minutes_basis
    start, end = np.asarray(basis.start_s, float), np.asarray(basis.end_s, float)
    shares = np.asarray(basis.shares, float).reshape(len(start), -1)
    order = [answer.labels["activities"].index(a) for a in activities]
    result = []
    for date in dict.fromkeys(dates):
        seconds = np.flatnonzero(dates == date)
        estimate, spread, worn = clipped_sums(start, end, shares, float(seconds[0]), float(seconds[-1] + 1))
        half = None if basis.interval_scale is None else basis.interval_scale * spread
        bounds = interval_seconds(estimate, half, worn)
        result.append({"date": str(date), "estimate": estimate[order] / 60.0,
                       "bounds": None if bounds is None else bounds[order] / 60.0})
    return result


def compare_session(truth: np.ndarray, answer: Answer, activities: list[str], dates: np.ndarray | None = None) -> dict:
    """One scored session against its per-second truth: the sums the study figures are pooled from.

    `answer` is what `har.scoring.score` returns (`POST /recordings`, `serve.batch` answer the same): its
    episodes give each second's label, its `minutes_per_activity` (the estimate, with its interval) and
    `counted_minutes_per_activity` and `not_worn_minutes` what a researcher reads. `dates` (the local date of each
    second, `truth_dates`) adds the estimate and its interval per local day against the truth of that day.
    """
    truth = np.asarray(truth, dtype=object)
    reported = reported_seconds(answer.episodes, len(truth))
    true_minutes = {a: float(np.sum(truth == a)) / 60.0 for a in activities}
    worn, given = truth != NOT_WORN, np.isin(reported, activities)
    days = []
    if dates is not None:
        for day in day_minutes(answer, dates, activities):
            on_day = truth[dates == day["date"]]
            days.append({**day, "true": np.array([np.sum(on_day == a) / 60.0 for a in activities])})
    return {"true_minutes": true_minutes, "reported_minutes": {a: float(answer.minutes_per_activity[a])
                                                               for a in activities},
            "counted_minutes": {a: float(answer.counted_minutes_per_activity[a]) for a in activities},
            "interval": {a: answer.minutes_interval_90[a] for a in activities},
            "true_not_worn_minutes": float(np.sum(~worn)) / 60.0,
            "reported_not_worn_minutes": float(answer.not_worn_minutes),
            "worn_reported_not_worn_s": int(np.sum(worn & (reported == NOT_WORN))),
            "invented_in_not_worn_s": int(np.sum(~worn & given)),
            "truth": truth[worn], "reported": reported[worn], "days": days}


def interval_figures(days: list[dict]) -> dict:
    """How often the 90 % intervals of activity-days hold the true minutes, and how wide they are (their summed
    width over the summed true minutes); None without intervals."""
    with_bounds = [d for d in days if d.get("bounds") is not None]
    if not with_bounds:
        return {"activity_days": sum(len(d["true"]) for d in days), "interval_coverage": None,
                "interval_width_share": None}
    true = np.concatenate([d["true"] for d in with_bounds])
    bounds = np.concatenate([d["bounds"] for d in with_bounds])
    inside = (true >= bounds[:, 0] - 5e-4) & (true <= bounds[:, 1] + 5e-4)  # the reported minutes' rounding
    return {"activity_days": int(len(true)), "interval_coverage": round(float(np.mean(inside)), 4),
            "interval_width_share": round(float((bounds[:, 1] - bounds[:, 0]).sum() / max(true.sum(), 1e-9)), 4)}


def bounds_sum(intervals: list) -> dict:
    """The sessions' interval bounds added up (None where a session has none): a conservative interval of the sum."""
    if any(i is None for i in intervals):
        return {"low": None, "high": None}
    return {"low": round(sum(i[0] for i in intervals), 3), "high": round(sum(i[1] for i in intervals), 3)}


def study_figures(comparisons: list[dict], activities: list[str]) -> dict:
    """The pooled figures of several sessions.

    minutes error = sum over sessions and activities of |reported - true| minutes / the true activity
    minutes (each session's errors count; they do not cancel between sessions), overall and per
    activity, for the estimate (`minutes_per_activity`) and for the counted minutes. Over the true activity
    seconds: accuracy and macro-F1 (`uncertain`, `not_worn` and uncovered seconds count as wrong), coverage
    (the share given an activity) and the accuracy of the seconds given one. Over the activity-days (each
    activity on each local day of each session, where `dates` were given): how often the 90 % interval holds
    the true minutes.
    """
    from sklearn.metrics import f1_score

    true = {a: sum(c["true_minutes"][a] for c in comparisons) for a in activities}
    error = {a: sum(abs(c["reported_minutes"][a] - c["true_minutes"][a]) for c in comparisons) for a in activities}
    truth = np.concatenate([c["truth"] for c in comparisons]).astype(str)
    reported = np.concatenate([c["reported"] for c in comparisons]).astype(str)
    given = np.isin(reported, activities)
    worn_s = len(truth)
    present = [a for a in activities if true[a] > 0]
    return {
        "sessions": len(comparisons),
        "true_activity_minutes": round(sum(true.values()), 3),
        "reported_activity_minutes": round(sum(sum(c["reported_minutes"].values()) for c in comparisons), 3),
        "minutes_error": round(sum(error.values()) / max(sum(true.values()), 1e-9), 4),
        "counted_minutes_error": round(sum(abs(c["counted_minutes"][a] - c["true_minutes"][a]) for c in comparisons
                                           for a in activities) / max(sum(true.values()), 1e-9), 4),
        "minutes_error_per_activity": {a: round(error[a] / true[a], 4) for a in present},
        "session_minutes_error_max": round(max(sum(abs(c["reported_minutes"][a] - c["true_minutes"][a])
                                                   for a in activities) / max(sum(c["true_minutes"].values()), 1e-9)
                                               for c in comparisons), 4),
        "true_not_worn_minutes": round(sum(c["true_not_worn_minutes"] for c in comparisons), 3),
        "reported_not_worn_minutes": round(sum(c["reported_not_worn_minutes"] for c in comparisons), 3),
        "worn_reported_not_worn_minutes": round(sum(c["worn_reported_not_worn_s"] for c in comparisons) / 60.0, 3),
        "worn_reported_not_worn_share": round(sum(c["worn_reported_not_worn_s"] for c in comparisons) / max(worn_s, 1), 5),
        "invented_in_not_worn_minutes": round(sum(c["invented_in_not_worn_s"] for c in comparisons) / 60.0, 3),
        "accuracy": round(float(np.mean(reported == truth)), 4) if worn_s else None,
        "macro_f1": round(float(f1_score(truth, reported, labels=present, average="macro", zero_division=0)), 4)
        if worn_s else None,
        "coverage": round(float(np.mean(given)), 4) if worn_s else None,
        "given_accuracy": round(float(np.mean(reported[given] == truth[given])), 4) if given.any() else None,
        **interval_figures([d for c in comparisons for d in c["days"]]),
        "minutes": {a: {"true": round(true[a], 3), "reported": round(sum(c["reported_minutes"][a] for c in comparisons), 3),
                        "counted": round(sum(c["counted_minutes"][a] for c in comparisons), 3),
                        **bounds_sum([c["interval"][a] for c in comparisons])}
                    for a in activities},
    }
