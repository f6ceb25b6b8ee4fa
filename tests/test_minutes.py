"""Minutes per activity as an estimate (har/minutes.py): probability sums over every worn window, their 90 %
interval, the choice on validation sequences, the estimators measured beside it, and the answer's one shape."""
import numpy as np
import pandas as pd
import pytest

from har.answer import answer_for
from har.minutes import (MinutesEstimator, adjusted, choose, clipped_sums, confusion_shares, conformal_scale, counts,
                         emq, interval_seconds, judge, minutes_error, minutes_figures, sums, varied_order,
                         window_shares)
from har.modelfile import ModelCard
from har.preprocessing import Preprocessing
from har.scoring import PreparedRecording
from har.smoothing import smooth
from har.wear import WearRule

LABELS = ["sitting", "typing", "clapping"]
PREPROCESSING = Preprocessing(target_hz=50.0, max_gap_s=0.5, lowpass_hz=10.0, window_length=200, overlap=0.5)


def card(minutes: dict | None = None, smoothing: dict | None = None) -> ModelCard:
    calibration = {"threshold": 0.8, **({"smoothing": smoothing} if smoothing else {}),
                   **({"minutes": minutes} if minutes else {})}
    return ModelCard(name="har", version="v1", labels=LABELS, input_contract={"window_length": 200, "target_hz": 50.0},
                     preprocessing={}, metrics={}, git_commit=None, data_hash=None, sha256="0" * 64,
                     calibration=calibration)


def prepared(worn: np.ndarray) -> PreparedRecording:
    n = len(worn)
    start = np.arange(n) * 2.0  # back to back: each window owns 2 s, the last its whole 4 s
    return PreparedRecording("r1", "2025-03-29T10:00:00+01:00", np.zeros((n, 200, 6), np.float32), start,
                             np.asarray(worn, bool), [], {"samples_written": n * 100 + 100,
                                                          "fused_seconds": n * 2.0 + 2.0, "segments": 1},
                             pd.DataFrame(), PREPROCESSING)


def test_probability_sums_count_every_worn_window_uncertain_ones_included():
    worn = np.arange(12) < 10
    probabilities = np.tile([0.6, 0.3, 0.1], (10, 1))  # every window below the 0.8 threshold: all uncertain
    answer = answer_for(prepared(worn), probabilities, card({"method": "pcc", "switch_probability": 0.0,
                                                             "interval_scale": 2.0, "coverage": 0.9}), WearRule())
    assert answer.counted_minutes_per_activity == {"sitting": 0.0, "typing": 0.0, "clapping": 0.0}
    assert answer.uncertain_minutes == round(20 / 60, 3)
    # 10 worn windows x 2 s: 12 s sitting, 6 s typing, 2 s clapping
    assert answer.minutes_per_activity == {"sitting": 0.2, "typing": 0.1, "clapping": round(2 / 60, 3)}
    # spread 0.24 / 0.21 / 0.09 x 20 s, times 2; cut at 0 and at the 20 worn seconds
    assert answer.minutes_interval_90 == {"sitting": [round(2.4 / 60, 3), round(20 / 60, 3)],
                                          "typing": [0.0, round(14.4 / 60, 3)], "clapping": [0.0, round(5.6 / 60, 3)]}
    assert answer.minutes_estimate.switch_probability == 0.0 and answer.minutes_estimate.interval_scale == 2.0
    # the basis: the worn windows' own spans (the not-worn ones give nothing), adding up to the estimate
    basis = answer.minutes_basis
    assert basis.start_s == [2.0 * k for k in range(10)] and basis.end_s == [2.0 * k + 2 for k in range(10)]
    estimate, _ = sums(np.array(basis.shares), np.array(basis.end_s) - np.array(basis.start_s))
    assert np.allclose(estimate / 60, [0.2, 0.1, 2 / 60])
    assert "uncertain" in " ".join(answer.findings)
    assert set(answer.to_builtins()) >= {"minutes_per_activity", "minutes_interval_90", "counted_minutes_per_activity",
                                         "minutes_estimate", "minutes_basis"}


def test_the_estimate_sums_the_posteriors_of_its_own_switch_probability():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1, 1, 1], size=40)
    worn = np.ones(40, bool)
    minutes = {"method": "pcc", "switch_probability": 0.03, "interval_scale": 1.0}
    answer = answer_for(prepared(worn), probabilities, card(minutes, {"switch_probability": 0.001, "threshold": 0.5}),
                        WearRule())
    expected = np.round(smooth(probabilities, np.arange(40) * 2.0, 2.0, 0.03), 4)
    assert np.array_equal(np.array(answer.minutes_basis.shares), expected)
    assert answer.smoothing.switch_probability == 0.001  # the timeline keeps its own


def test_a_model_without_minutes_calibration_sums_its_timeline_and_gives_no_interval():
    estimator = MinutesEstimator.from_card(card(smoothing={"switch_probability": 0.003, "threshold": 0.5}))
    assert estimator.switch_probability == 0.003 and estimator.interval_scale is None
    answer = answer_for(prepared(np.ones(5, bool)), np.tile([0.5, 0.3, 0.2], (5, 1)), card(), WearRule())
    assert answer.minutes_interval_90 == dict.fromkeys(LABELS)
    with pytest.raises(ValueError, match="model har v1: minutes method 'emq' is not one this service computes"):
        MinutesEstimator.from_card(card({"method": "emq", "switch_probability": 0.0}))


def test_interval_is_cut_at_zero_and_at_the_worn_time():
    bounds = interval_seconds(np.array([10.0, 50.0]), np.array([30.0, 30.0]), worn_s=60.0)
    assert bounds.tolist() == [[0.0, 40.0], [20.0, 60.0]]
    assert interval_seconds(np.array([1.0]), None, 60.0) is None
    estimate, interval = minutes_figures(["a"], np.array([90.0]), np.array([30.0]), 120.0)
    assert estimate == {"a": 1.5} and interval == {"a": [1.0, 2.0]}


def test_windows_cut_at_any_instant_add_up_to_the_whole():
    start = np.arange(0.0, 20.0, 2.0)
    end = start + 2.0
    shares = np.random.default_rng(1).dirichlet([1, 1], size=10)
    whole = clipped_sums(start, end, shares, 0.0, 20.0)
    parts = [clipped_sums(start, end, shares, a, b) for a, b in ((0.0, 7.3), (7.3, 13.0), (13.0, 20.0))]
    assert np.allclose(sum(p[0] for p in parts), whole[0]) and np.allclose(sum(p[1] for p in parts), whole[1])
    assert sum(p[2] for p in parts) == pytest.approx(20.0) and whole[2] == 20.0


def test_conformal_scale_is_the_rank_that_covers():
    # scores 1..19: with n = 19, the ceil(20 x 0.9) = 18th smallest
    truths = np.zeros(19)
    estimates = np.arange(1.0, 20.0)
    assert conformal_scale(estimates, truths, np.ones(19), 0.9) == 18.0
    with pytest.raises(ValueError, match="5 activity-sequences cannot give a 90% conformal interval"):
        conformal_scale(np.ones(5), np.zeros(5), np.ones(5), 0.9)


def sequence(labels: list[int], noise: float, rng, k: int = 3) -> dict:
    """Windows of known classes whose probabilities favour the right class with `noise` scattered mass."""
    y = np.repeat(labels, 30)
    p = np.full((len(y), k), noise / (k - 1))
    p[np.arange(len(y)), y] = 1 - noise
    p = 0.5 * p + 0.5 * rng.dirichlet(np.ones(k), size=len(y))  # each window unsure on its own
    return {"probabilities": p, "seconds": np.full(len(y), 2.0), "y": y}


def test_choose_keeps_the_smoothing_that_recovers_the_minutes_and_a_scale_that_covers():
    rng = np.random.default_rng(2)
    designs = {"balanced": [sequence([0, 1, 2], 0.3, rng) for _ in range(8)],
               "varied": [sequence([0, 0, 1], 0.3, rng) for _ in range(8)]}
    chosen = choose(designs, [0.0, 0.01], 3, coverage=0.9)
    errors = {row["switch_probability"]: row["mean_minutes_error"] for row in chosen["candidates"]}
    assert chosen["switch_probability"] == 0.01 and errors[0.01] < errors[0.0]
    assert chosen["activity_sequences"] == 48
    judged = judge(designs, chosen["switch_probability"], chosen["interval_scale"], 3)
    # fitted on these very sequences: at least 90 % of all their activity-sequences are covered
    assert np.mean([row["interval_coverage"] for row in judged.values()]) >= 0.9
    assert judged["balanced"]["minutes_error"] == pytest.approx(
        minutes_error([sums(np.round(p, 4), s["seconds"])[0] for p, s in
                       ((smooth(s["probabilities"], np.arange(90) * 2.0, 2.0, 0.01), s) for s in designs["balanced"])],
                      [np.bincount(s["y"], weights=s["seconds"], minlength=3) for s in designs["balanced"]]), abs=1e-4)


def test_varied_order_keeps_a_part_of_each_subjects_recordings_cut_short():
    subject = np.repeat(["a", "b"], 60)
    recording = np.repeat(np.arange(6), 20)  # three recordings each of 20 windows (40 s) per subject
    start_t = np.tile(np.arange(20) * 2.0, 6)
    sequences = varied_order(subject, recording, start_t, 0, keep=2, seconds=(10.0, 30.0), window_s=4.0)
    assert len(sequences) == 2
    for index, person in zip(sequences, ["a", "b"]):
        assert set(subject[index]) == {person} and len(set(recording[index])) == 2
        for r in set(recording[index]):
            assert 4 <= (recording[index] == r).sum() <= 14  # windows ending within 10..30 s


def test_window_shares_are_rounded_posteriors():
    p = np.array([[0.123456, 0.876544], [0.5, 0.5]])
    assert window_shares(p, np.array([0.0, 2.0]), 2.0, 0.0).tolist() == [[0.1235, 0.8765], [0.5, 0.5]]


def test_pacc_inverts_a_known_confusion_and_emq_finds_a_shifted_prior():
    confusion = np.array([[0.8, 0.2], [0.3, 0.7]])
    true = np.array([100.0, 20.0])
    assert np.allclose(adjusted(confusion.T @ true, confusion), true, atol=1e-6)
    y = np.array([0, 0, 1, 1, 1])
    shares = confusion_shares(y, np.eye(3)[[0, 1, 1, 1, 0]], np.ones(5), 3)
    assert np.allclose(shares, [[0.5, 0.5, 0], [1 / 3, 2 / 3, 0], [0, 0, 1]])  # an absent class: identity
    # calibrated posteriors under a uniform training prior for a population that is 80 % class 0
    rng = np.random.default_rng(3)
    labels = (rng.random(4000) > 0.8).astype(int)
    looks_like = np.where(rng.random(4000) < 0.7, labels, 1 - labels)  # the window looks like its class 70 % of the time
    likelihood = np.where(looks_like[:, None] == np.arange(2), 0.7, 0.3)
    estimate = emq(likelihood / likelihood.sum(axis=1, keepdims=True), np.ones(4000))
    assert estimate[0] / 4000 == pytest.approx(0.8, abs=0.05)
    assert counts(np.array([0, -1, 1, 1]), np.array([2.0, 2.0, 2.0, 4.0]), 3).tolist() == [2.0, 6.0, 0.0]
