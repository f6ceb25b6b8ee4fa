"""Non-wear detection (har/wear.py) on generated signals, the real WISDM recordings and the real Garmin hour."""
import numpy as np
import pandas as pd
import pytest
from conftest import WISDM_DIR

from har.fusion import fuse_recording
from har.labelled import find_wisdm_pairs, read_wisdm_pair
from har.wear import MG, WearRule, nonwear_episodes, still_epochs, wear_report, worn_windows

HZ = 50.0
RULE = WearRule()


def still_desk(minutes: float, seed: int = 0, noise_mg: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A watch lying face up: gravity on z and the sensor's noise floor on every axis (m/s^2)."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * HZ)
    acc = rng.normal(0.0, noise_mg * MG, (n, 3)) + np.array([0.0, 0.0, 9.80665])
    return np.arange(n) / HZ, acc


def wrist_motion(minutes: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A worn watch: the wrist turns and moves about 0.1 g at a few Hz."""
    t, acc = still_desk(minutes, seed)
    rng = np.random.default_rng(seed)
    return t, acc + 0.1 * 9.80665 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0, 3) * t[:, None])


def test_a_still_watch_at_the_noise_floor_is_not_worn():
    t, acc = still_desk(45)
    episodes = nonwear_episodes(t, acc, HZ, RULE)
    assert episodes == [(0.0, pytest.approx(45 * 60.0))]
    worn = worn_windows(np.arange(0, 45 * 60 - 4, 2.0), 4.0, episodes)
    assert not worn.any()


def test_stillness_shorter_than_the_minimum_is_worn_and_the_minimum_is_configurable():
    t, acc = still_desk(20)
    assert nonwear_episodes(t, acc, HZ, RULE) == []
    assert len(nonwear_episodes(t, acc, HZ, WearRule(min_duration_min=15))) == 1


def test_wrist_motion_is_never_still():
    t, acc = wrist_motion(40)
    _, still = still_epochs(t, acc, HZ, RULE)
    assert not still.any()
    assert nonwear_episodes(t, acc, HZ, RULE) == []


def test_a_short_nudge_does_not_end_non_wear_but_a_long_movement_and_a_gap_do():
    t1, still1 = still_desk(20, seed=1)
    t2, moved = wrist_motion(0.5, seed=2)
    t3, still2 = still_desk(20, seed=3)
    times = np.concatenate([t1, t1[-1] + 1 / HZ + t2, t1[-1] + t2[-1] + 2 / HZ + t3])
    nudged = np.concatenate([still1, moved, still2])
    assert len(nonwear_episodes(times, nudged, HZ, RULE)) == 1  # 40 min still with a 30-s nudge
    t4, long_move = wrist_motion(3, seed=4)
    times = np.concatenate([t1, t1[-1] + 1 / HZ + t4, t1[-1] + t4[-1] + 2 / HZ + t3])
    assert nonwear_episodes(times, np.concatenate([still1, long_move, still2]), HZ, RULE) == []
    with_gap = np.concatenate([t1, t1[-1] + 120.0 + t3])  # two minutes without data between two still stretches
    assert nonwear_episodes(with_gap, np.concatenate([still1, still2]), HZ, RULE) == []


def test_a_window_is_not_worn_when_the_time_it_owns_touches_an_episode():
    # Windows of 4 s every 2 s own [0, 2), [2, 4), [4, 6), [6, 8), [8, 12): the last owns its full length.
    worn = worn_windows(np.array([0.0, 2.0, 4.0, 6.0, 8.0]), 4.0, [(5.0, 9.0)])
    assert worn.tolist() == [True, True, False, False, False]
    worn = worn_windows(np.array([0.0, 2.0, 4.0, 6.0, 8.0, 10.0]), 4.0, [(4.0, 8.0)])
    assert worn.tolist() == [True, True, False, False, True, True]  # an episode on window edges takes exactly its own
    shuffled = worn_windows(np.array([8.0, 0.0, 4.0, 2.0, 6.0]), 4.0, [(5.0, 9.0)])
    assert shuffled.tolist() == [False, True, False, True, False]  # windows in any order


def rotated(acc: np.ndarray, degrees: float) -> np.ndarray:
    """The same samples with the watch turned about its x axis: gravity points elsewhere."""
    a = np.radians(degrees)
    turn = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return acc @ turn.T


def joined(*parts):
    """Consecutive stretches of (t, acc) on one clock, with no gap."""
    times, values, offset = [], [], 0.0
    for t, acc in parts:
        times.append(offset + t)
        values.append(acc)
        offset += t[-1] + 1 / HZ
    return np.concatenate(times), np.concatenate(values)


def test_an_episode_ends_when_the_watch_is_picked_up_even_if_it_is_still_again_straight_after():
    # 35 min on the desk, picked up (20 s of movement), then 10 min still on a resting wrist at another angle.
    desk = still_desk(35, seed=1)
    t, acc = joined(desk, wrist_motion(20 / 60, seed=2), (still_desk(10, seed=3)[0], rotated(still_desk(10, seed=3)[1], 60)))
    (episode,) = nonwear_episodes(t, acc, HZ, RULE)
    assert episode[1] == pytest.approx(35 * 60, abs=0.1)  # at the pick-up, to the sample, not 10 min later
    before = nonwear_episodes(t, acc, HZ, WearRule(max_tilt_deg=180.0))  # the stillness rule alone
    assert before[0][1] > 45 * 60 - 1  # absorbed the 10 still minutes on the wrist
    # And at the start: still on the wrist, put down at another angle, 35 min on the desk.
    t, acc = joined((still_desk(5, seed=4)[0], rotated(still_desk(5, seed=4)[1], 60)), wrist_motion(20 / 60, seed=5),
                    still_desk(35, seed=6))
    (episode,) = nonwear_episodes(t, acc, HZ, RULE)
    assert episode[0] == pytest.approx(5 * 60 + 20 + 2 / HZ, abs=0.1)


def test_a_small_nudge_at_one_orientation_does_not_end_the_episode():
    t, acc = joined(still_desk(20, seed=1), wrist_motion(20 / 60, seed=2),
                    (still_desk(20, seed=3)[0], rotated(still_desk(20, seed=3)[1], 5)))  # nudged: 5 degrees
    (episode,) = nonwear_episodes(t, acc, HZ, RULE)
    assert episode[0] == 0.0 and episode[1] == pytest.approx(t[-1] + 1 / HZ)


def test_an_episode_ends_at_the_sample_where_movement_starts_not_on_the_epoch_grid():
    t, acc = joined(still_desk(35 + 3.3 / 60, seed=1), wrist_motion(2, seed=2))
    (episode,) = nonwear_episodes(t, acc, HZ, RULE)
    assert episode[1] == pytest.approx(35 * 60 + 3.3, abs=0.05)  # the epoch grid alone would say 2100 s


def test_the_report_states_wear_time_episodes_and_the_rule():
    report = wear_report([(60.0, 1860.0)], 3600.0, RULE, clock=lambda s: f"t+{s:g}")
    assert report["not_worn_minutes"] == 30.0 and report["worn_minutes"] == 30.0
    assert report["episodes"] == [{"start_s": 60.0, "end_s": 1860.0, "start_time": "t+60", "end_time": "t+1860",
                                   "minutes": 30.0}]
    assert report["rule"]["std_mg"] == 13.0 and "13 mg" in report["rule"]["text"]


def test_unknown_wear_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"wear: unknown setting\(s\) \['std'\]"):
        WearRule.from_params({"std": 13})


def test_real_wisdm_sitting_and_standing_are_worn():
    """Whole WISDM recordings of sitting still can be at the noise floor: only the duration rule tells them
    from a watch on a desk, and no labelled recording is long enough to be marked."""
    pairs, _ = find_wisdm_pairs(WISDM_DIR)
    chosen = [p for p in pairs if p["activity"] in ("sitting", "standing")][:12]
    assert len(chosen) == 12
    for pair in chosen:
        recording = read_wisdm_pair(pair)
        fused, _ = fuse_recording(recording, target_hz=HZ, max_gap_s=0.5, lowpass_hz=10.0)
        assert nonwear_episodes(fused["t"].to_numpy(), fused[["ax", "ay", "az"]].to_numpy(), HZ, RULE) == []


def test_the_real_garmin_hour_is_almost_all_not_worn(garmin_recording):
    fused, _ = fuse_recording(garmin_recording, target_hz=HZ, max_gap_s=0.5, lowpass_hz=10.0)
    episodes = nonwear_episodes(fused["t"].to_numpy(), fused[["ax", "ay", "az"]].to_numpy(), HZ, RULE)
    not_worn_min = sum(end - start for start, end in episodes) / 60
    assert len(episodes) == 1 and not_worn_min >= 55  # put down in the first epoch, picked up in the last
    assert episodes[0][0] <= 60 and episodes[0][1] >= fused["t"].iloc[-1] - 60


# --- drift sees only worn windows ----------------------------------------------------------------

def test_the_live_monitor_counts_not_worn_windows_on_their_own():
    from har.drift import RunningDriftMonitor, build_reference, prometheus_samples

    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (200, 20, 6)).astype(np.float32)
    reference = build_reference(train, bins=10, max_samples=10_000, seed=0, votes=2, min_windows=50, thresholds={
        "psi": [0.25, 1.0], "ks_statistic": [0.25, 0.5]})
    monitor = RunningDriftMonitor(reference)
    monitor.observe(train[:60])
    monitor.observe_not_worn(1810)
    summary = monitor.summary()
    assert summary["windows"] == 60 and summary["not_worn_windows"] == 1810  # never binned with the worn ones
    assert summary["drifted"][0].startswith("not worn: 1810 of 1870 windows (97%)")
    assert summary["severity"] == "none"
    assert ("har_drift_not_worn_windows", {}, 1810.0) in prometheus_samples(summary)


def test_a_production_folder_of_the_real_hour_is_judged_on_worn_windows_only(garmin_recording, tmp_path):
    from har.drift import unjudged_report, wear_finding
    from har.preprocessing import Preprocessing
    from stages.drift import production_windows

    fused, _ = fuse_recording(garmin_recording, target_hz=HZ, max_gap_s=0.5, lowpass_hz=10.0)
    session = tmp_path / "session"
    session.mkdir()
    fused.to_parquet(session / "hour.parquet")
    pd.DataFrame([{"recording": "hour", "file": "hour.parquet"}]).to_csv(session / "index.csv", index=False)
    worn, not_worn, recordings = production_windows(
        tmp_path, Preprocessing(target_hz=HZ, max_gap_s=0.5, lowpass_hz=10.0, window_length=200, overlap=0.5), RULE)
    assert len(worn) + not_worn == recordings[0]["windows"] == 1815
    assert not_worn >= 55 * 30 and recordings[0]["not_worn_minutes"] >= 55
    finding = wear_finding(len(worn), not_worn, 50)
    assert f"the {len(worn)} worn windows are fewer than the 50 needed to judge drift" in finding
    report = unjudged_report(len(worn), 1000, finding)
    assert report["severity"] == "none" and not report["judged"] and report["drifted"] == [finding]
    assert not any("orientation" in line for line in report["drifted"])
