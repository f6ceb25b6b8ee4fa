"""Fusion and windowing on signals with known answers, and on the real Garmin hour."""
import numpy as np
import pandas as pd
import pytest

from har.fusion import CHANNELS, fuse_recording
from har.recording import Recording, SensorStream
from har.windows import make_windows, split_subjects


def jittery_times(duration_s, hz, rng, drop_fraction=0.05, start=0.0):
    """Native-rate times with +-1 ms jitter and a fraction of samples missing, like the Garmin logger."""
    t = start + np.arange(0, duration_s, 1 / hz) + rng.uniform(-0.001, 0.001, int(np.ceil(duration_s * hz)))
    return np.sort(t[rng.random(len(t)) > drop_fraction])


def sine_stream(t, freq, amplitude=1.0, phase=0.0):
    x = amplitude * np.sin(2 * np.pi * freq * t + phase)
    return SensorStream(t, np.column_stack([x, 2 * x, -x]))


def test_slow_signal_is_reproduced_on_the_grid():
    rng = np.random.default_rng(0)
    acc_t, gyr_t = jittery_times(20, 100, rng), jittery_times(20, 100, rng, start=0.037)
    recording = Recording("sine", sine_stream(acc_t, 1.5), sine_stream(gyr_t, 0.5, phase=1.0))
    fused, quality = fuse_recording(recording, target_hz=50, max_gap_s=0.5, lowpass_hz=10)
    t = fused["t"].to_numpy()
    assert np.allclose(np.diff(t), 0.02)  # uniform 50 Hz grid
    assert t[0] >= 0.037 and t[-1] <= min(acc_t[-1], gyr_t[-1])  # only where both sensors are
    inner = (t > 1) & (t < 19)  # zero-phase filter edges aside
    np.testing.assert_allclose(fused["ax"][inner], np.sin(2 * np.pi * 1.5 * t[inner]), atol=0.01)
    np.testing.assert_allclose(fused["ay"][inner], 2 * np.sin(2 * np.pi * 1.5 * t[inner]), atol=0.02)
    np.testing.assert_allclose(fused["gx"][inner], np.sin(2 * np.pi * 0.5 * t[inner] + 1.0), atol=0.01)
    assert list(fused.columns) == ["t", *CHANNELS]
    assert all(fused[c].dtype == np.float32 for c in CHANNELS) and fused["t"].dtype == np.float64


def test_content_above_the_cutoff_is_removed_not_aliased():
    """30 Hz at 100 Hz native would alias to 20 Hz on a 50 Hz grid without the anti-alias filter."""
    t = np.arange(0, 10, 0.01)
    fused, _ = fuse_recording(Recording("hf", sine_stream(t, 30.0), sine_stream(t, 30.0)), target_hz=50, lowpass_hz=None)
    assert fused["ax"].abs()[100:-100].max() < 0.02
    # lowpass_hz band-limits further: 15 Hz passes the anti-alias filter but not a 10 Hz cutoff.
    mid = Recording("mid", sine_stream(t, 15.0), sine_stream(t, 15.0))
    kept, _ = fuse_recording(mid, target_hz=50, lowpass_hz=None)
    removed, _ = fuse_recording(mid, target_hz=50, lowpass_hz=10)
    assert kept["ax"].abs()[100:-100].max() > 0.5
    assert removed["ax"].abs()[100:-100].max() < 0.05


def test_gaps_are_not_bridged_and_windows_never_span_them():
    t = np.arange(0, 30, 0.01)
    t = t[(t < 10) | (t > 12)]  # a 2 s gap in the accelerometer
    recording = Recording("gap", sine_stream(t, 1.0), sine_stream(np.arange(0, 30, 0.01), 1.0))
    fused, quality = fuse_recording(recording, target_hz=50, max_gap_s=0.5)
    ft = fused["t"].to_numpy()
    assert not np.any((ft > 10.01) & (ft < 11.99))
    assert quality["segments"] == 2 and quality["acc"]["gaps"] == 1
    assert quality["acc"]["gap_seconds"] == pytest.approx(2.02, abs=0.005)  # 9.99 s -> 12.01 s
    X, starts = make_windows(fused, length=100, overlap=0.5, target_hz=50)
    ends = starts + 99 / 50
    assert not np.any((starts < 10) & (ends > 12))  # no window straddles the gap
    # Segments of 500 (0-9.98 s) and 899 (12.02-29.98 s) grid points: 9 + 16 windows of 100, step 50.
    assert len(X) == 9 + 16
    # Windows hold exactly the fused rows they start at.
    first = int(np.searchsorted(ft, starts[3]))
    np.testing.assert_array_equal(X[3], fused[CHANNELS].to_numpy()[first:first + 100])


def test_duplicates_and_out_of_order_samples_are_counted_and_every_sample_accounted_for():
    t = np.arange(0, 10, 0.01)
    shuffled = t.copy()
    shuffled[[100, 101]] = shuffled[[101, 100]]  # one swap
    with_dupes = np.concatenate([shuffled, t[:7]])  # seven repeated timestamps
    acc = SensorStream(with_dupes, np.ones((len(with_dupes), 3)))
    gyr = SensorStream(t[200:] , np.ones((len(t) - 200, 3)))  # gyroscope starts 2 s later
    _, quality = fuse_recording(Recording("dupes", acc, gyr), target_hz=50)
    q = quality["acc"]
    assert q["samples_read"] == 1007 and q["duplicates"] == 7
    assert q["out_of_order"] == 2  # the swap, and the repeated block going back to t = 0
    assert q["samples_read"] == q["duplicates"] + q["samples_used"] + q["samples_outside_fused"]
    assert q["samples_outside_fused"] == pytest.approx(200, abs=1)  # before the gyroscope starts


def test_real_garmin_hour_fuses_to_the_published_sample_count(garmin_recording):
    # The real export is deterministic: every count is exact (a 1 % band would hide 36 s of lost data).
    fused, quality = fuse_recording(garmin_recording, target_hz=50, max_gap_s=0.5, lowpass_hz=10)
    assert len(fused) == quality["samples_written"] == 181_698
    assert (quality["segments"], quality["grid_points_without_both_sensors"]) == (1, 0)
    magnitude = np.linalg.norm(fused[["ax", "ay", "az"]].to_numpy(), axis=1)
    assert np.median(magnitude) == pytest.approx(9.8, abs=0.15)
    assert fused[["gx", "gy", "gz"]].abs().median().max() < 1.0  # rad/s, not deg/s
    expected = {"acc": {"samples_read": 363_400, "duplicates": 238, "out_of_order": 0, "samples_used": 363_158,
                        "samples_outside_fused": 4, "gaps": 0},
                "gyr": {"samples_read": 363_400, "duplicates": 252, "out_of_order": 3, "samples_used": 363_144,
                        "samples_outside_fused": 4, "gaps": 0}}
    for sensor, counts in expected.items():
        q = quality[sensor]
        assert {k: q[k] for k in counts} == counts
        assert q["native_hz"] == 100.0
    assert quality["overlap_s"] == 3633.968 and quality["fused_seconds"] == 3633.96


def test_subject_split_puts_each_subject_in_exactly_one_split():
    subjects = [str(1600 + i) for i in range(41)]
    splits = split_subjects(subjects, {"seed": 42, "test_fraction": 0.2, "val_fraction": 0.15})
    together = splits["train"] + splits["val"] + splits["test"]
    assert sorted(together) == sorted(subjects) and len(set(together)) == 41
    assert len(splits["test"]) == 8 and len(splits["val"]) == 6
    assert split_subjects(subjects, {"seed": 42, "test_fraction": 0.2, "val_fraction": 0.15}) == splits
    explicit = split_subjects(subjects, {"test_subjects": ["1600", "1601"], "val_subjects": ["1602"]})
    assert explicit["test"] == ["1600", "1601"] and explicit["val"] == ["1602"] and len(explicit["train"]) == 38
    with pytest.raises(ValueError, match="more than one split"):
        split_subjects(subjects, {"test_subjects": ["1600"], "val_subjects": ["1600"]})


def test_the_quality_report_accounts_for_a_recording_whose_sensors_start_and_stop_apart():
    """Every figure of the report, worked out by hand for two clean 100 Hz streams.

    acc: 1000 samples at 0.003 + k/100 s (0.003 to 9.993 s); gyr: 851 samples at 0.505 + k/100 s
    (to 9.005 s). Both cover 0.505..9.005 s: grid points 0.52, 0.54, ..., 9.00 (26/50 to 450/50).
    A sample is used within half a grid step (0.01 s) of the fused span [0.52, 9.00].
    """
    acc_t, gyr_t = 0.003 + np.arange(1000) / 100, 0.505 + np.arange(851) / 100
    recording = Recording("apart", sine_stream(acc_t, 1.0), sine_stream(gyr_t, 0.5),
                          report={"acc": {"file": "a.xlsx"}, "gyr": {"file": "g.xlsx"}})
    fused, quality = fuse_recording(recording, target_hz=50, max_gap_s=0.5, lowpass_hz=10)
    np.testing.assert_allclose(fused["t"].to_numpy(), np.arange(26, 451) / 50)
    assert quality == {
        "recording": "apart", "reader": {"acc": {"file": "a.xlsx"}, "gyr": {"file": "g.xlsx"}},
        "acc": {"samples_read": 1000, "out_of_order": 0, "duplicates": 0, "native_hz": 100.0, "gaps": 0,
                "gap_seconds": 0.0, "samples_used": 850, "samples_outside_fused": 150, "span_s": 9.99},
        "gyr": {"samples_read": 851, "out_of_order": 0, "duplicates": 0, "native_hz": 100.0, "gaps": 0,
                "gap_seconds": 0.0, "samples_used": 850, "samples_outside_fused": 1, "span_s": 8.5},
        "overlap_s": 8.5, "target_hz": 50, "lowpass_hz": 10, "samples_written": 425,
        "grid_points_without_both_sensors": 0, "segments": 1, "fused_seconds": 8.5}


def test_a_gap_in_one_sensor_leaves_grid_points_without_both_and_splits_the_segments():
    t = np.arange(0, 2000) / 100  # 0..19.99 s
    gyr_t = t[(t < 8.0) | (t >= 9.0)]  # the gyroscope misses one second (a 1.01 s step)
    _, quality = fuse_recording(Recording("gap", sine_stream(t, 1.0), sine_stream(gyr_t, 1.0)), target_hz=50,
                                max_gap_s=0.5)
    # Grid points strictly inside (7.99, 9.00) have no gyroscope value: 8.00 .. 8.98 (50 points).
    assert (quality["grid_points_without_both_sensors"], quality["segments"]) == (50, 2)
    assert (quality["gyr"]["gaps"], quality["gyr"]["gap_seconds"]) == (1, 1.01)
    assert quality["samples_written"] == 1000 - 50 and quality["fused_seconds"] == 19.0


def test_fusion_helpers_at_their_boundaries():
    from har.fusion import clean_stream, gap_summary, lowpass_cutoff, native_rate, segments

    # The cutoff: lowpass_hz, never above 0.4 x target; none when the signal has nothing above it.
    assert lowpass_cutoff(100.0, 50.0, None) == 20.0
    assert lowpass_cutoff(100.0, 50.0, 10.0) == 10.0 and lowpass_cutoff(100.0, 50.0, 30.0) == 20.0
    assert lowpass_cutoff(20.0, 50.0, 10.0) is None  # 20 Hz data: Nyquist 10 Hz, nothing above 10 Hz
    assert lowpass_cutoff(20.2, 50.0, 10.0) == 10.0
    # The native rate ignores repeated timestamps; one sample has none.
    assert native_rate(np.array([0.0, 0.0, 0.0, 0.01])) == pytest.approx(100.0)
    assert np.isnan(native_rate(np.array([1.0])))
    # A step of exactly max_gap_s is not a gap; a longer one is, to the millisecond.
    assert segments(np.array([0.0, 0.5, 1.0, 2.0]), 0.5) == [(0, 3), (3, 4)]
    assert gap_summary(np.array([0.0, 0.5, 1.0, 1.61234]), 0.5) == {"gaps": 1, "gap_seconds": 0.612}
    # Repeated timestamps in order are duplicates, not out of order; the first sample of each time is kept.
    t, xyz, counts = clean_stream(SensorStream(np.array([0.0, 1.0, 1.0, 2.0]), np.arange(12.0).reshape(4, 3)))
    assert counts == {"samples_read": 4, "out_of_order": 0, "duplicates": 1}
    np.testing.assert_array_equal(t, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(xyz[:, 0], [0.0, 3.0, 9.0])


def fused_table(n: int, hz: float = 50.0, drop: tuple[int, ...] = ()) -> pd.DataFrame:
    """n grid points (float64 values = row number on every channel), minus the rows in `drop`."""
    rows = np.setdiff1d(np.arange(n), drop)
    return pd.DataFrame({"t": rows / hz, **{c: rows.astype(np.float64) for c in CHANNELS}})


def test_windows_edges_one_missing_grid_point_splits_exactly_one_window_and_none():
    # One missing grid point (a 0.04 s step at 50 Hz) is already a gap: no window may straddle it.
    X, start = make_windows(fused_table(300, drop=(150,)), length=100, overlap=0.5, target_hz=50)
    np.testing.assert_allclose(start, [0.0, 1.0, 3.02])  # rows 0, 50 | 151
    assert X.dtype == np.float32 and X.shape == (3, 100, 6)
    np.testing.assert_array_equal(X[2, :, 0], np.arange(151, 251))
    # Exactly one window's worth of samples gives one window; one sample less gives none, shaped.
    X, start = make_windows(fused_table(100), length=100, overlap=0.0, target_hz=50)
    assert X.shape == (1, 100, 6) and start.tolist() == [0.0]
    X, start = make_windows(fused_table(99), length=100, overlap=0.0, target_hz=50)
    assert X.shape == (0, 100, 6) and X.dtype == np.float32 and start.shape == (0,)


def test_window_step_magnitudes_and_fold_bounds():
    from har.windows import subject_folds, window_step, with_magnitudes

    assert window_step(100, 0.0) == 100 and window_step(100, 0.75) == 25 and window_step(1, 0.5) == 1
    with pytest.raises(ValueError, match=r"window.overlap must be in \[0, 1\), got 1"):
        window_step(100, 1)
    with pytest.raises(ValueError, match=r"got -0.1"):
        window_step(100, -0.1)
    magnitudes = with_magnitudes(np.array([[3.0, 4.0, 0.0, 2.0, 3.0, 6.0]], np.float32))
    np.testing.assert_allclose(magnitudes, [[3, 4, 0, 2, 3, 6, 5, 7]])
    assert magnitudes.dtype == np.float32
    # Three folds need three subjects, and there can be as many folds as subjects.
    assert sorted(subject_folds(["a", "b", "c"], 3, seed=0)) == [["a"], ["b"], ["c"]]
    with pytest.raises(ValueError, match="between 3 .* and the 3 subjects, got 4"):
        subject_folds(["a", "b", "c"], 4, seed=0)
    # Small fractions of few subjects still leave one test and one validation subject.
    splits = split_subjects(["a", "b", "c"], {"seed": 0, "test_fraction": 0.1, "val_fraction": 0.1})
    assert [len(splits[name]) for name in ("train", "val", "test")] == [1, 1, 1]
