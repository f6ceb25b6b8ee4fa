"""Reader for the Garmin sensor-logger export: one workbook per sensor, one row per batch.

Each row holds a batch of about 25 samples: the batch start (`timestamp`, whole seconds
as text, plus `timestamp_ms`), each sample's offset from it in ms (`sample_time_offset`,
a JSON list of strings) and one JSON list per axis. The format's units are fixed and
declared here: accelerometer in milli-g (gravity included), gyroscope in deg/s.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from python_calamine import CalamineWorkbook

from har.recording import ACC_TO_SI, GYR_TO_SI, InputError, Recording, SensorStream, to_si

TIMESTAMP_FORMAT = "%m/%d/%Y, %I:%M:%S %p"
SENSORS = {
    # sensor: (axis column prefix, unit of the format, conversion table)
    "acc": ("calibrated_accel_", "milli-g", ACC_TO_SI),
    "gyr": ("calibrated_gyro_", "deg/s", GYR_TO_SI),
}
FIRST_DATA_ROW = 2  # Excel numbering: row 1 is the header


def read_workbook(path) -> pd.DataFrame:
    """The first sheet as a table of raw cells, with a clear error for anything that is not such a workbook."""
    try:
        # python-calamine (Rust) reads these workbooks several times faster than openpyxl,
        # and faster used directly than through pandas.read_excel (bench/fuse.py).
        rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    except Exception as exc:  # calamine raises several types for non-workbooks
        raise InputError(path, f"cannot be read as an Excel workbook ({type(exc).__name__}: {exc})",
                         expected="an .xlsx export of the Garmin sensor logger") from None
    if len(rows) < 2:
        raise InputError(path, "the workbook has no data rows", expected="a header row and at least one batch row")
    return pd.DataFrame(rows[1:], columns=[str(c) for c in rows[0]], dtype=object)


def _parse_list(cell, path, row, column) -> list:
    try:
        value = json.loads(cell)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, list):
        raise InputError(path, f"cell is not a JSON list: {str(cell)[:40]!r}", row=row, column=column,
                         expected='a JSON list of numbers such as ["0","10","19"]')
    return value


def _parse_row(cells: dict, path, row: int, axis_columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One batch row -> sample offsets in ms [k] and values [k, 3], or an InputError locating the problem."""
    offsets = _parse_list(cells["sample_time_offset"], path, row, "sample_time_offset")
    axes = [_parse_list(cells[c], path, row, c) for c in axis_columns]
    for column, values in zip(axis_columns, axes):
        if len(values) != len(offsets):
            raise InputError(path, f"{len(values)} values but {len(offsets)} sample offsets", row=row, column=column,
                             expected="one value per offset in sample_time_offset")
    numbers = []
    for column, values in zip(["sample_time_offset", *axis_columns], [offsets, *axes]):
        try:
            numbers.append(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError):
            bad = next(v for v in values if not _is_number(v))
            raise InputError(path, f"non-numeric value {bad!r}", row=row, column=column, expected="a number") from None
        if not np.all(np.isfinite(numbers[-1])):
            raise InputError(path, "NaN or infinite value", row=row, column=column, expected="a finite number")
    return numbers[0], np.column_stack(numbers[1:])


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _parse_all_rows(table: pd.DataFrame, starts: pd.Series, axis_columns: list[str]):
    """Vectorised parse of a clean workbook, or None when any row needs a closer look.

    Parsing row by row costs about 3 s per workbook; this about 0.35 s. Any oddity
    (an unreadable time, a malformed list, lengths that disagree, a non-number, time going
    backwards) sends the caller to the row-by-row path, which locates and reports it.
    """
    if starts.isna().any() or (starts.diff().dt.total_seconds() < 0).any():
        return None
    lengths, flat = [], []
    for column in ["sample_time_offset", *axis_columns]:
        cells = [str(c) for c in table[column]]
        if not all(c.startswith("[") and c.endswith("]") for c in cells):
            return None
        inner = [c[1:-1].replace('"', "").replace(" ", "") for c in cells]
        lengths.append(np.array([c.count(",") + 1 if c else 0 for c in inner]))
        # numpy's C text parser, faster than converting the split strings one by one. A token that is
        # not a number raises; an empty one at the end is dropped, which the count check catches.
        try:
            values = np.fromstring(",".join(c for c in inner if c), dtype=np.float64, sep=",")
        except ValueError:
            return None
        if len(values) != lengths[-1].sum():
            return None
        flat.append(values)
    if any((n != lengths[0]).any() for n in lengths[1:]) or not all(np.isfinite(v).all() for v in flat):
        return None
    batch_index = np.repeat(np.arange(len(table)), lengths[0])
    return starts.to_numpy(dtype="datetime64[ns]"), batch_index, flat[0], np.column_stack(flat[1:]), []


def _parse_row_by_row(table: pd.DataFrame, starts: pd.Series, millis: pd.Series, path, axis_columns: list[str],
                      on_error: str):
    """The careful path: every row checked, each problem raised or (on_error="skip") recorded as a skip."""
    skipped: list[dict] = []
    offsets, values, batch_of_sample, kept_starts = [], [], [], []
    records = table[["timestamp", "timestamp_ms", "sample_time_offset", *axis_columns]].to_dict("records")
    for i, cells in enumerate(records):
        row = FIRST_DATA_ROW + i
        try:
            if pd.isna(starts.iloc[i]):
                column = "timestamp_ms" if pd.isna(millis.iloc[i]) else "timestamp"
                raise InputError(path, f"unreadable batch time {cells['timestamp']!r} + {cells['timestamp_ms']!r} ms",
                                 row=row, column=column,
                                 expected="timestamp like '03/24/2025, 07:52:19 AM' and timestamp_ms 0-999")
            if kept_starts and starts.iloc[i] < kept_starts[-1]:
                raise InputError(path, f"time goes backwards: batch starts {starts.iloc[i]} after a batch at {kept_starts[-1]}",
                                 row=row, column="timestamp", expected="batch start times that never decrease")
            row_offsets, row_values = _parse_row(cells, path, row, axis_columns)
        except InputError as error:
            if on_error != "skip":
                raise
            skipped.append({"row": row, "column": error.column, "reason": error.problem})
            continue
        kept_starts.append(starts.iloc[i])
        offsets.append(row_offsets)
        values.append(row_values)
        batch_of_sample.append(np.full(len(row_offsets), len(kept_starts) - 1))
    if not kept_starts:
        raise InputError(path, "no readable batch rows", expected="at least one valid row")
    return (np.asarray(kept_starts, dtype="datetime64[ns]"), np.concatenate(batch_of_sample),
            np.concatenate(offsets), np.concatenate(values), skipped)


def read_sensor_workbook(path, sensor: str, *, on_error: str = "raise"):
    """Read one Garmin workbook.

    Returns (batch start times as datetime64[ns], each sample's batch index, each sample's
    offset from its batch start in s, values [n, 3] in SI units, report). Rows that fail to
    parse raise an InputError, or with on_error="skip" are skipped and counted in the report
    with their row number and reason.
    """
    batch_starts, batch_index, offsets_ms, raw_values, report = read_sensor_rows(path, sensor, on_error=on_error)
    _, unit, table_of_units = SENSORS[sensor]
    return batch_starts, batch_index, offsets_ms / 1000.0, to_si(raw_values, unit, table_of_units), report


def read_sensor_rows(path, sensor: str, *, on_error: str = "raise"):
    """read_sensor_workbook as the file has it: sample offsets in ms and values in the format's unit
    (a live stream's batches are these rows: serve/client.py sends them)."""
    prefix, unit, _ = SENSORS[sensor]
    axis_columns = [prefix + a for a in "xyz"]
    table = read_workbook(path)
    required = ["timestamp", "timestamp_ms", "sample_time_offset", *axis_columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}", column=missing[0],
                         expected=f"columns {required}")

    millis = pd.to_numeric(table["timestamp_ms"], errors="coerce")
    starts = pd.to_datetime(table["timestamp"], format=TIMESTAMP_FORMAT, errors="coerce") + pd.to_timedelta(millis, unit="ms")
    parsed = _parse_all_rows(table, starts, axis_columns) or \
        _parse_row_by_row(table, starts, millis, path, axis_columns, on_error)
    batch_starts, batch_index, offsets_ms, raw_values, skipped = parsed
    report = {
        "file": Path(path).name,
        "rows_read": len(table),
        "rows_skipped": len(skipped),
        "skipped": skipped[:50],  # the first reasons; the count above is complete
        "unit_in_file": unit,
        "samples_read": len(offsets_ms),
    }
    return batch_starts, batch_index, offsets_ms, raw_values, report


def read_garmin_pair(acc_path, gyr_path, *, timezone: str | None = None, on_error: str = "raise",
                     recording_id: str | None = None) -> Recording:
    """Both workbooks of one session on one clock: seconds since the earlier batch start.

    `timezone` names the wall-clock zone of the export (e.g. "Europe/Berlin"); None keeps
    naive local time. It only changes the reported start time, never the sample spacing.
    """
    acc_starts, acc_batch, acc_offsets, acc_values, acc_report = read_sensor_workbook(acc_path, "acc", on_error=on_error)
    gyr_starts, gyr_batch, gyr_offsets, gyr_values, gyr_report = read_sensor_workbook(gyr_path, "gyr", on_error=on_error)
    origin = min(acc_starts[0], gyr_starts[0])

    def seconds(starts, batch, offsets):
        return (starts - origin).astype("timedelta64[ns]").astype(np.float64)[batch] / 1e9 + offsets

    start = pd.Timestamp(origin)
    if timezone:
        start = start.tz_localize(timezone)
    return Recording(
        recording_id=recording_id or _session_name(acc_path),
        acc=SensorStream(seconds(acc_starts, acc_batch, acc_offsets), acc_values),
        gyr=SensorStream(seconds(gyr_starts, gyr_batch, gyr_offsets), gyr_values),
        start_time=start.isoformat(),
        report={"acc": acc_report, "gyr": gyr_report},
    )


def _session_name(path) -> str:
    """'2025-03-23-15-23-10-accelerometer_data.xlsx' -> '2025-03-23-15-23-10'."""
    name = Path(path).stem
    for suffix in ("-accelerometer_data", "-gyroscope_data"):
        name = name.removesuffix(suffix)
    return name


def find_garmin_pairs(folder) -> tuple[list[tuple[Path, Path]], list[dict]]:
    """Pair `<session>-accelerometer_data.xlsx` with `<session>-gyroscope_data.xlsx`.

    Returns the pairs and, for every file that has no partner, a skip record (never silent).
    """
    folder = Path(folder)
    acc = {_session_name(p): p for p in folder.glob("*-accelerometer_data.xlsx")}
    gyr = {_session_name(p): p for p in folder.glob("*-gyroscope_data.xlsx")}
    pairs = [(acc[s], gyr[s]) for s in sorted(acc.keys() & gyr.keys())]
    unpaired = [{"file": p.name, "reason": "no gyroscope partner"} for s, p in sorted(acc.items()) if s not in gyr]
    unpaired += [{"file": p.name, "reason": "no accelerometer partner"} for s, p in sorted(gyr.items()) if s not in acc]
    return pairs, unpaired
