"""The Garmin reader on the real export, and the bad-input corpus built from it."""
import json

import numpy as np
import openpyxl
import pytest
from conftest import GARMIN_ACC, GARMIN_DIR

from har.garmin import find_garmin_pairs, read_garmin_pair, read_sensor_workbook
from har.recording import G, InputError

HEADER = {"acc": ["timestamp", "timestamp_ms", "sample_time_offset", "calibrated_accel_x", "calibrated_accel_y", "calibrated_accel_z"],
          "gyr": ["timestamp", "timestamp_ms", "sample_time_offset", "calibrated_gyro_x", "calibrated_gyro_y", "calibrated_gyro_z"]}


def batch_row(second: int, ms: int, offsets, values):
    """One export row: whole-second text time, ms part, and JSON lists of strings, as the logger writes them."""
    as_list = lambda xs: json.dumps([str(x) for x in xs])
    return [f"03/24/2025, 07:52:{second:02d} AM", str(ms), as_list(offsets), *[as_list(v) for v in values]]


def write_workbook(path, sensor: str, rows, header=None):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header or HEADER[sensor])
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def good_rows(n=8, value=1000.0):
    """n batches of 25 samples at 100 Hz, 250 ms apart, constant `value` on x."""
    offsets = list(range(0, 250, 10))
    rows = []
    for i in range(n):
        second, ms = divmod(250 * i, 1000)
        rows.append(batch_row(10 + second, ms, offsets, [[value] * 25, [0] * 25, [0] * 25]))
    return rows


@pytest.fixture
def good_pair(tmp_path):
    acc = write_workbook(tmp_path / "s-accelerometer_data.xlsx", "acc", good_rows(value=1000.0))
    gyr = write_workbook(tmp_path / "s-gyroscope_data.xlsx", "gyr", good_rows(value=180.0))
    return acc, gyr


def test_real_export_is_read_whole_and_in_si_units(garmin_recording):
    report = garmin_recording.report
    assert report["acc"]["rows_read"] == report["gyr"]["rows_read"] == 14536
    assert report["acc"]["samples_read"] == len(garmin_recording.acc.t) == 363400
    assert report["acc"]["rows_skipped"] == report["gyr"]["rows_skipped"] == 0
    # The first cell of calibrated_accel_x is "-62.48186" milli-g.
    assert garmin_recording.acc.xyz[0, 0] == pytest.approx(-62.48186 * G / 1000)
    # At rest |a| is about 1 g: the reader converted milli-g to m/s^2.
    magnitude = np.linalg.norm(garmin_recording.acc.xyz, axis=1)
    assert np.median(magnitude) == pytest.approx(9.8, abs=0.2)
    # The gyroscope's first x value is 39.15614 deg/s.
    assert garmin_recording.gyr.xyz[0, 0] == pytest.approx(np.deg2rad(39.15614))
    # Batches start 07:52:19.766 (acc) and .795 (gyr): both on one clock, from the earlier.
    assert garmin_recording.acc.t[0] == pytest.approx(0.0)
    assert garmin_recording.gyr.t[0] == pytest.approx(0.029, abs=1e-6)
    assert garmin_recording.acc.t[1] == pytest.approx(0.010)
    assert garmin_recording.start_time == "2025-03-24T07:52:19.766000"
    assert garmin_recording.acc.t[-1] == pytest.approx(3634.0, abs=1.0)


def test_synthetic_pair_units_and_times(good_pair):
    recording = read_garmin_pair(*good_pair, timezone="Europe/Berlin")
    assert recording.acc.xyz[:, 0] == pytest.approx(G)  # 1000 milli-g
    assert recording.gyr.xyz[:, 0] == pytest.approx(np.pi)  # 180 deg/s
    assert np.allclose(np.diff(recording.acc.t), 0.01)
    assert recording.start_time.endswith("+01:00")  # the zone is applied to the start time only


def test_pairs_in_a_folder_and_unpaired_files_are_reported(tmp_path, good_pair):
    pairs, unpaired = find_garmin_pairs(GARMIN_DIR)
    assert len(pairs) == 1 and unpaired == []
    write_workbook(tmp_path / "lonely-accelerometer_data.xlsx", "acc", good_rows())
    pairs, unpaired = find_garmin_pairs(tmp_path)
    assert [p[0].name for p in pairs] == ["s-accelerometer_data.xlsx"]
    assert unpaired == [{"file": "lonely-accelerometer_data.xlsx", "reason": "no gyroscope partner"}]
    write_workbook(tmp_path / "alone-gyroscope_data.xlsx", "gyr", good_rows())
    assert find_garmin_pairs(tmp_path)[1][1] == {"file": "alone-gyroscope_data.xlsx", "reason": "no accelerometer partner"}


def corrupt(rows, row_index, column_index, value):
    rows = [list(r) for r in rows]
    rows[row_index][column_index] = value
    return rows


LIST = '(expected a JSON list of numbers such as ["0","10","19"])'
TIME = "(expected timestamp like '03/24/2025, 07:52:19 AM' and timestamp_ms 0-999)"
BAD_CASES = {
    # name: (rows, expected Excel row, expected column, the message after the location)
    "cell is not a JSON list": (corrupt(good_rows(), 2, 3, "oops"), 4, "calibrated_accel_x",
                                f"cell is not a JSON list: 'oops' {LIST}"),
    "list lengths disagree": (corrupt(good_rows(), 5, 4, json.dumps(["1"] * 24)), 7, "calibrated_accel_y",
                              "24 values but 25 sample offsets (expected one value per offset in sample_time_offset)"),
    "non-numeric value": (corrupt(good_rows(), 1, 5, json.dumps(["1"] * 24 + ["abc"])), 3, "calibrated_accel_z",
                          "non-numeric value 'abc' (expected a number)"),
    "NaN value": (corrupt(good_rows(), 2, 4, json.dumps(["1"] * 24 + ["NaN"])), 4, "calibrated_accel_y",
                  "NaN or infinite value (expected a finite number)"),
    "time goes backwards": (corrupt(good_rows(), 4, 0, "03/24/2025, 07:52:05 AM"), 6, "timestamp",
                            "time goes backwards: batch starts 2025-03-24 07:52:05 after a batch at "
                            "2025-03-24 07:52:10.750000 (expected batch start times that never decrease)"),
    "unreadable time": (corrupt(good_rows(), 3, 0, "yesterday"), 5, "timestamp",
                        f"unreadable batch time 'yesterday' + '750' ms {TIME}"),
    "unreadable milliseconds": (corrupt(good_rows(), 3, 1, "soon"), 5, "timestamp_ms",
                                f"unreadable batch time '03/24/2025, 07:52:10 AM' + 'soon' ms {TIME}"),
    "offsets not a list": (corrupt(good_rows(), 0, 2, "[1, 2"), 2, "sample_time_offset",
                           f"cell is not a JSON list: '[1, 2' {LIST}"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_rows_are_located_or_counted(tmp_path, case):
    rows, row, column, message = BAD_CASES[case]
    path = write_workbook(tmp_path / "bad-accelerometer_data.xlsx", "acc", rows)
    with pytest.raises(InputError) as raised:
        read_sensor_workbook(path, "acc")
    error = raised.value
    assert (error.file, error.row, error.column) == (str(path), row, column)
    assert str(error) == f"{path}, row {row}, column {column!r}: {message}"

    # With on_error="skip" the row is dropped, and the drop is counted with its reason.
    starts, batch, offsets, values, report = read_sensor_workbook(path, "acc", on_error="skip")
    assert report["rows_skipped"] == 1
    assert report["skipped"] == [{"row": row, "column": column, "reason": message.rsplit(" (expected", 1)[0]}]
    assert report["samples_read"] == len(values) == len(offsets) == len(batch) == 25 * 7
    assert len(starts) == 7 and batch.tolist() == np.repeat(np.arange(7), 25).tolist()


def test_a_workbook_without_one_readable_row_is_refused_even_when_skipping(tmp_path):
    rows = [corrupt(good_rows(1), 0, 3, "oops")[0], corrupt(good_rows(2), 1, 3, "oops")[1]]
    path = write_workbook(tmp_path / "hopeless-accelerometer_data.xlsx", "acc", rows)
    with pytest.raises(InputError) as raised:
        read_sensor_workbook(path, "acc", on_error="skip")
    assert str(raised.value) == f"{path}: no readable batch rows (expected at least one valid row)"


def test_both_parsing_paths_agree_and_report_what_they_read(tmp_path, good_pair, monkeypatch):
    """The vectorised parse and the row-by-row parse (used for bad files) give the same arrays."""
    import har.garmin as garmin

    acc, _ = good_pair
    fast = read_sensor_workbook(acc, "acc")
    monkeypatch.setattr(garmin, "_parse_all_rows", lambda *args: None)
    slow = read_sensor_workbook(acc, "acc")
    for a, b in zip(fast[:4], slow[:4]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    starts, batch, offsets, values, report = fast
    assert starts.dtype == np.dtype("datetime64[ns]") and str(starts[1]) == "2025-03-24T07:52:10.250000000"
    assert batch.tolist() == np.repeat(np.arange(8), 25).tolist()
    np.testing.assert_allclose(offsets, np.tile(np.arange(0, 0.25, 0.01), 8))
    np.testing.assert_allclose(values[:, 0], G)  # 1000 milli-g
    assert report == {"file": "s-accelerometer_data.xlsx", "rows_read": 8, "rows_skipped": 0, "skipped": [],
                      "unit_in_file": "milli-g", "samples_read": 200}


def test_one_data_row_is_enough(tmp_path):
    path = write_workbook(tmp_path / "one-accelerometer_data.xlsx", "acc", good_rows(1))
    assert read_sensor_workbook(path, "acc")[4]["samples_read"] == 25


def test_a_pair_shares_one_clock_from_the_earlier_sensor_and_names_the_session(tmp_path):
    acc = write_workbook(tmp_path / "s-accelerometer_data.xlsx", "acc", good_rows(value=1000.0)[2:])  # from 10.5 s
    gyr = write_workbook(tmp_path / "s-gyroscope_data.xlsx", "gyr", good_rows(value=180.0))  # from 10.0 s
    recording = read_garmin_pair(acc, gyr)
    assert recording.recording_id == "s" and recording.start_time == "2025-03-24T07:52:10"
    np.testing.assert_allclose(recording.gyr.t[[0, 1, 25]], [0.0, 0.01, 0.25])
    np.testing.assert_allclose(recording.acc.t[[0, 1, 25]], [0.5, 0.51, 0.75])
    assert recording.report["acc"]["rows_read"] == 6 and recording.report["gyr"]["unit_in_file"] == "deg/s"
    assert read_garmin_pair(acc, gyr, recording_id="walk-7").recording_id == "walk-7"


def test_missing_column(tmp_path):
    header = HEADER["acc"][:-1] + ["accel_z"]
    path = write_workbook(tmp_path / "x-accelerometer_data.xlsx", "acc", good_rows(), header)
    with pytest.raises(InputError) as raised:
        read_sensor_workbook(path, "acc")
    assert raised.value.column == "calibrated_accel_z"
    assert str(raised.value) == (f"{path}, column 'calibrated_accel_z': missing column(s) ['calibrated_accel_z'] "
                                 f"(expected columns {HEADER['acc']})")


def test_empty_workbook(tmp_path):
    path = write_workbook(tmp_path / "empty-accelerometer_data.xlsx", "acc", [])
    with pytest.raises(InputError) as raised:
        read_sensor_workbook(path, "acc")
    assert str(raised.value) == f"{path}: the workbook has no data rows (expected a header row and at least one batch row)"


def test_wrong_file_type(tmp_path):
    path = tmp_path / "notes-accelerometer_data.xlsx"
    path.write_text("timestamp,timestamp_ms\n1,2\n")
    with pytest.raises(InputError) as raised:
        read_sensor_workbook(path, "acc")
    assert str(raised.value).startswith(f"{path}: cannot be read as an Excel workbook (")
    assert str(raised.value).endswith("(expected an .xlsx export of the Garmin sensor logger)")


def test_real_export_parses_identically_on_the_row_by_row_path(monkeypatch):
    """The vectorised parse and the row-by-row parse (used for bad files) must agree."""
    import har.garmin as garmin

    fast = read_sensor_workbook(GARMIN_ACC, "acc")
    monkeypatch.setattr(garmin, "_parse_all_rows", lambda *args: None)
    slow = read_sensor_workbook(GARMIN_ACC, "acc")
    for a, b in zip(fast[:4], slow[:4]):
        np.testing.assert_array_equal(a, b)
