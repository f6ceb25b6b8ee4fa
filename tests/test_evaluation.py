"""Metrics, features and augmentation on small hand-made arrays with known answers (no TensorFlow)."""
import numpy as np
import pytest

from har.evaluation import classification_metrics, confusion, confusion_records
from har.features import feature_names, window_features
from har.training import augment_windows, class_weights, random_rotations, time_warp

LABELS = ["a", "b", "c"]
# Worked by hand: per class (TP, FP, FN) = a (1, 1, 1), b (2, 1, 0), c (1, 0, 1).
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def test_metrics_match_hand_computed_values():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert m["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    # Observed agreement 2/3, chance agreement (2*2 + 2*3 + 2*1) / 36 = 1/3.
    assert m["cohen_kappa"] == pytest.approx(0.5)
    # Multi-class MCC: (correct * n - sum(pred_k * true_k)) / sqrt((n^2 - sum pred_k^2)(n^2 - sum true_k^2)).
    assert m["mcc"] == pytest.approx(12 / np.sqrt(22 * 24))
    assert list(m)[0] == "macro_f1"


def test_perfect_predictions_score_one_and_missing_class_scores_zero():
    perfect = classification_metrics(Y_TRUE, Y_TRUE, LABELS)
    assert perfect["macro_f1"] == perfect["accuracy"] == perfect["cohen_kappa"] == perfect["mcc"] == 1.0
    # A fourth label never seen nor predicted still counts in the macro average (as 0).
    assert classification_metrics(Y_TRUE, Y_TRUE, LABELS + ["d"])["macro_f1"] == pytest.approx(0.75)


def test_confusion_counts_and_records():
    assert confusion(Y_TRUE, Y_PRED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    records = confusion_records(Y_TRUE, Y_PRED, LABELS)
    assert records[1] == {"actual": "a", "predicted": "b"} and len(records) == 6


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="equal length"):
        classification_metrics(Y_TRUE, Y_PRED[:-1], LABELS)


def test_window_features_find_the_frequency_and_survive_constant_signals():
    t = np.arange(200) / 50.0
    window = np.zeros((2, 200, 6), np.float32)
    window[0, :, 0] = np.sin(2 * np.pi * 3.0 * t)  # 3 Hz on ax
    window[:, :, 2] = 9.81  # gravity on az, constant
    features = window_features(window, 50.0)
    names = feature_names()
    assert features.shape == (2, len(names)) and np.isfinite(features).all()
    value = dict(zip(names, features[0]))
    assert value["ax_dominant_hz"] == pytest.approx(3.0)
    assert value["ax_band_3_5hz"] > 10 * value["ax_band_1_2hz"]
    assert value["az_mean"] == pytest.approx(9.81) and value["az_std"] == pytest.approx(0.0, abs=1e-5)
    assert value["acc_mag_min"] == pytest.approx(np.sqrt(9.81 ** 2), abs=1e-3)


def test_rotation_augmentation_turns_both_sensors_alike():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 20, 6)).astype(np.float32)
    out = augment_windows(X, rng, rotation_deg=60, scale=0.0, jitter=0.0, channel_std=np.ones(6), flip_prob=0.5)
    norm = lambda a: np.linalg.norm(a, axis=-1)  # noqa: E731
    # A rotation keeps each vector's length and the angle between accelerometer and gyroscope.
    assert np.allclose(norm(out[..., :3]), norm(X[..., :3]), atol=1e-4)
    assert np.allclose(norm(out[..., 3:]), norm(X[..., 3:]), atol=1e-4)
    dot = lambda a: np.sum(a[..., :3] * a[..., 3:], axis=-1)  # noqa: E731
    assert np.allclose(dot(out), dot(X), atol=1e-3)
    assert not np.allclose(out, X)
    R = random_rotations(rng, 10, 45)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-9) and np.allclose(np.linalg.det(R), 1.0)


def test_flip_negates_x_and_y_of_both_sensors():
    X = np.arange(2 * 3 * 6, dtype=np.float32).reshape(2, 3, 6)
    out = augment_windows(X, np.random.default_rng(1), rotation_deg=0, scale=0.0, jitter=0.0,
                          channel_std=np.ones(6), flip_prob=1.0)
    assert np.allclose(out, X * np.array([-1, -1, 1, -1, -1, 1], np.float32))


def test_time_warp_keeps_the_centre_and_stretches_around_it():
    X = np.tile(np.arange(101, dtype=np.float32)[None, :, None], (4, 1, 6))  # a ramp 0..100
    assert np.allclose(time_warp(X, np.random.default_rng(0), 1e-9), X, atol=1e-4)
    out = time_warp(X, np.random.default_rng(0), 0.3)
    assert np.allclose(out[:, 50], 50.0, atol=1e-4)  # the centre stays where it was
    slope = out[:, 51, 0] - out[:, 49, 0]
    assert np.all(slope > 2 * 0.7 - 1e-4) and np.all(slope < 2 * 1.3 + 1e-4) and np.ptp(slope) > 0


def test_class_weights_balance_and_require_every_class():
    assert class_weights(np.array([0, 0, 0, 1]), 2) == pytest.approx({0: 4 / 6, 1: 2.0})
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        class_weights(np.array([0, 1]), 3)
