"""Temperature scaling, calibration error and abstention (har/calibration.py) against values known by construction."""
import numpy as np
import pytest
from scipy.special import softmax

from har.calibration import (apply_temperature, choose_threshold, expected_calibration_error, fit_temperature,
                             reliability, risk_coverage, selective_metrics)


def sampled(true_temperature: float, n: int = 20000, k: int = 6, seed: int = 0):
    """Labels drawn from softmax(z); the model reports softmax(z / T_true): miscalibrated by a known temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.5, (n, k))
    truth = softmax(logits, axis=1)
    y = np.array([rng.choice(k, p=p) for p in truth])
    return softmax(logits / true_temperature, axis=1), y, truth


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_the_fitted_temperature_recovers_the_true_one(true_temperature):
    reported, y, truth = sampled(true_temperature)
    # Reported = softmax(z / T_true): dividing its logits by 1 / T_true gives back the truth.
    fitted = fit_temperature(reported, y)
    assert fitted == pytest.approx(1.0 / true_temperature, rel=0.05)
    assert np.abs(apply_temperature(reported, fitted) - truth).max() < 0.05
    assert expected_calibration_error(apply_temperature(reported, fitted), y) < 0.02
    assert expected_calibration_error(reported, y) > 0.05


def test_temperature_keeps_every_argmax():
    reported, _, _ = sampled(0.5, n=500)
    assert (apply_temperature(reported, 3.0).argmax(1) == reported.argmax(1)).all()


def test_ece_and_reliability_by_hand():
    # Two windows at confidence 0.9 (one right), two at 0.6 (both right): |0.5 - 0.9| / 2 + |1.0 - 0.6| / 2 = 0.4.
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(p, y, bins=10) == pytest.approx(0.4)
    rows = reliability(p, y, bins=10)
    assert [(r["bin"], r["windows"], r["accuracy"]) for r in rows] == [(6, 2, 1.0), (9, 2, 0.5)]


def test_the_threshold_is_the_lowest_that_reaches_the_target():
    # Confidences 0.9, 0.8, 0.7, 0.6 with the third wrong: the two most confident give 2/2, three 2/3, four 3/4.
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    y = np.array([0, 0, 1, 0])
    assert choose_threshold(p, y, 0.8) == pytest.approx(0.8)
    assert choose_threshold(p, y, 0.75) == pytest.approx(0.6)  # the most coverage that reaches the target
    with pytest.raises(ValueError, match="no confidence threshold reaches accuracy 0.9"):
        choose_threshold(np.array([[0.9, 0.1]]), np.array([1]), 0.9)


def test_selective_metrics_count_only_accepted_windows():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    y = np.array([0, 0, 1, 0])
    result = selective_metrics(p, y, 0.8, n_classes=2)
    assert result["coverage"] == 0.5 and result["accepted_windows"] == 2 and result["accepted_accuracy"] == 1.0
    assert result["all_accuracy"] == 0.75
    curve = risk_coverage(p, y)
    assert curve[0]["coverage"] == 1.0 and curve[-1]["coverage"] == 0.25
    assert all(r["risk"] == pytest.approx(1 - r["accuracy"]) for r in curve)
