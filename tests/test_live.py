"""A recording prepared while it is recorded (har/live.py) against the whole recording's prepare -> score: the real
Garmin hour and a generated study session with real activity, fed as watch batches in random interleavings."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import GARMIN_ACC, GARMIN_GYR, WISDM_DIR
from har.answer import answer_for
from har.garmin import SENSORS, read_sensor_rows
from har.live import LiveError, LiveRecording, SensorBatch, fused_table
from har.modelfile import stamp
from har.preprocessing import Preprocessing
from har.recording import to_si
from har.runtime import ModelRuntime
from har.scoring import GarminPair, prepare, score
from har.smoothing import RunSmoother, hmm_posteriors
from har.study import StudyPlan, generate_study
from har.wear import WearRule
from serve_helpers import LABELS, tiny_graph, tiny_metadata

# The tiny model with a smoother and an abstention threshold, so that every stage of the timeline is exercised.
CALIBRATION = {"threshold": 0.5, "smoothing": {"switch_probability": 0.01, "threshold": 0.8}}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "model.onnx"
    path.write_bytes(stamp(tiny_graph(), tiny_metadata(calibration=CALIBRATION)))
    return ModelRuntime(path)


def watch_batches(accelerometer, gyroscope) -> list[SensorBatch]:
    """The workbook rows as a watch sends them, one batch per row, the two sensors in the order of their start."""
    batches = []
    for sensor, path in (("acc", accelerometer), ("gyr", gyroscope)):
        starts, row, offsets_ms, values, _ = read_sensor_rows(path, sensor)
        start_ns = starts.astype("datetime64[ns]").astype(np.int64)
        _, unit, units = SENSORS[sensor]
        bounds = [0, *(np.flatnonzero(np.diff(row)) + 1), len(row)]
        batches += [SensorBatch(sensor, int(start_ns[row[a]]), offsets_ms[a:b], to_si(values[a:b], unit, units))
                    for a, b in zip(bounds[:-1], bounds[1:])]
    return batches


def jittered(batches: list[SensorBatch], seed: int, jitter_s: float = 1.0) -> list[SensorBatch]:
    """The batches in an order a phone could forward them: each sensor's in its own order, the two sensors
    interleaved by their start plus a random delay of up to `jitter_s`."""
    rng = np.random.default_rng(seed)
    keyed = []
    for sensor in ("acc", "gyr"):
        mine = [b for b in batches if b.sensor == sensor]
        arrival = np.maximum.accumulate([b.start_ns / 1e9 + rng.uniform(0, jitter_s) for b in mine])
        keyed += list(zip(arrival, [sensor] * len(mine), range(len(mine)), mine))
    return [b for *_, b in sorted(keyed, key=lambda k: k[:3])]


def live_run(batches, card, predict, rule=WearRule()):
    live = LiveRecording(Preprocessing.from_card(card), rule, recording_id="live", labels=card.labels,
                         switch_probability=card.switch_probability, threshold=card.abstain_threshold)
    labels, rows = [], []

    def drain():
        windows = live.to_score()
        if len(windows):
            live.scored(predict(windows))
        labels.extend(live.labels())
        rows.append(live.take_fused())

    for batch in batches:
        live.add(batch)
        drain()
    live.close()
    drain()
    return live, labels, fused_table(np.concatenate([t for t, _ in rows]), np.concatenate([v for _, v in rows]))


def assert_same_timeline(accelerometer, gyroscope, model, seed, rule=WearRule()):
    card = model.card
    prepared = prepare(GarminPair(accelerometer, gyroscope), Preprocessing.from_card(card), rule)
    answer = score(prepared, model.predict, card, rule)
    live, labels, fused = live_run(jittered(watch_batches(accelerometer, gyroscope), seed), card, model.predict, rule)
    assert [e["start_s"] for e in labels] == [e["start_s"] for e in answer.timeline]
    assert [e["label"] for e in labels] == [e["label"] for e in answer.timeline]
    assert np.array_equal(fused["t"].to_numpy(), prepared.fused["t"].to_numpy())
    # the values agree but for the native rate's estimate (docs/streaming.md): well below a milli-g
    assert np.abs(fused.iloc[:, 1:].to_numpy() - prepared.fused.iloc[:, 1:].to_numpy()).max() < 0.01
    stream_prepared, probabilities = live.prepared(fused)
    streamed = answer_for(stream_prepared, probabilities, card, rule)
    assert [(e["label"], e["start_s"], e["end_s"]) for e in streamed.episodes] == \
        [(e["label"], e["start_s"], e["end_s"]) for e in answer.episodes]
    assert streamed.minutes_per_activity == answer.minutes_per_activity
    assert streamed.wear.episodes == answer.wear.episodes
    assert streamed.recording.quality == answer.recording.quality
    return answer


def test_the_garmin_hour_streamed_gives_the_uploads_timeline(model):
    answer = assert_same_timeline(GARMIN_ACC, GARMIN_GYR, model, seed=1)
    assert {e["label"] for e in answer.timeline} >= {"not_worn"}  # the watch lay on a desk most of the hour


def test_a_study_session_with_real_activity_streamed_gives_the_uploads_timeline(model, tmp_path):
    plan = StudyPlan(days=1, sessions_per_day=1, first_day="2025-03-27", midnight=False, seed=3,
                     recordings_per_session=4, max_recording_s=120.0, nonwear_minutes=(1.0,))
    session = generate_study(tmp_path, WISDM_DIR, ["1604"], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR),
                             plan=plan)["sessions"][0]["session"]
    folder = tmp_path / "recordings"
    rule = WearRule(min_duration_min=0.5)  # the session's desk minute is not worn
    for seed in (2, 3):
        answer = assert_same_timeline(folder / f"{session}-accelerometer_data.xlsx",
                                      folder / f"{session}-gyroscope_data.xlsx", model, seed, rule)
    labels = {e["label"] for e in answer.timeline}
    assert "not_worn" in labels and len(labels & set(LABELS)) >= 2


def test_the_smoother_gives_each_label_once_no_continuation_can_change_it():
    rng = np.random.default_rng(0)
    for trial in range(50):
        k, n = int(rng.integers(2, 13)), int(rng.integers(1, 200))
        s, threshold = float(rng.choice([0.001, 0.01, 0.3])), float(rng.choice([0.0, 0.5, 0.9, 0.9997]))
        states = np.repeat(rng.integers(0, k, size=n // 20 + 1), 20)[:n]
        logits = rng.normal(size=(n, k)) * rng.uniform(0.5, 3)
        logits[np.arange(n), states] += rng.uniform(0, 5)
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        exact = hmm_posteriors(p, s)
        smoother, given = RunSmoother(s, k, threshold), []
        for row in p:
            smoother.add(row)
            given += smoother.decided()
        tail = smoother.end()
        assert np.array_equal(tail, exact[len(given):])  # the rest: hmm_posteriors' own numbers
        expected = [int(e.argmax()) if e.max() >= threshold else None for e in exact[:len(given)]]
        assert given == expected, trial


def test_a_batch_going_back_in_time_is_refused_and_changes_nothing(model):
    card = model.card
    live = LiveRecording(Preprocessing.from_card(card), WearRule(), recording_id="x", labels=card.labels,
                         switch_probability=0.0, threshold=0.0)
    ones = np.ones((3, 3))
    live.add(SensorBatch("acc", 2_000_000_000, np.array([0.0, 10.0, 20.0]), ones))
    before = live.buffered_samples
    with pytest.raises(LiveError, match="time goes backwards"):
        live.add(SensorBatch("acc", 1_000_000_000, np.array([0.0, 10.0, 20.0]), ones))
    with pytest.raises(LiveError, match="offsets"):
        live.add(SensorBatch("gyr", 2_000_000_000, np.array([0.0, -10.0, 20.0]), ones))
    assert live.buffered_samples == before
