"""Calibrated probabilities and abstention: how sure the model is, and when it should not answer.

Temperature scaling (Guo et al., 2017): one scalar T divides the logits before the softmax. It is
fitted on the validation subjects by minimising the negative log-likelihood; it changes no
argmax, so every accuracy-type metric is unchanged and only the confidences move. Trained with
label smoothing, this model is under-confident, so T < 1 is expected.

Abstention (selective prediction): a window whose calibrated top-1 probability is below a
threshold is reported as `uncertain`. The threshold is the lowest one at which the validation
subjects' accepted windows reach a target accuracy, so the test subjects never choose it.

The timeline smoother's switch probability (har/smoothing.py) is chosen the same way, on the
validation subjects' day-like sequences, with its own threshold on the smoothed posteriors.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from har.evaluation import macro_f1
from har.smoothing import day_like_order, episode_count, hmm_posteriors

EPS = 1e-12


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (which the softmax ignores): log p."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1.0))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) for probabilities given by a softmax."""
    scaled = logits_of(probabilities) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y)), y], EPS, 1.0))))


def fit_temperature(probabilities: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the negative log-likelihood of `y` (searched on log T)."""
    if len(y) == 0:
        raise ValueError("cannot fit a temperature on no windows")
    result = minimize_scalar(lambda log_t: negative_log_likelihood(apply_temperature(probabilities, np.exp(log_t)), y),
                             bounds=np.log(bounds), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def reliability(probabilities: np.ndarray, y: np.ndarray, bins: int) -> list[dict]:
    """Per equal-width confidence bin: windows, mean top-1 confidence and accuracy (empty bins left out)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append({"bin": b, "lower": b / bins, "upper": (b + 1) / bins, "windows": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return rows


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Σ_bins (windows in bin / all windows) · |accuracy − mean confidence|, over equal-width bins."""
    rows = reliability(probabilities, y, bins)
    total = sum(r["windows"] for r in rows)
    return float(sum(r["windows"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows)) if total else 0.0


def risk_coverage(probabilities: np.ndarray, y: np.ndarray, points: int = 101) -> list[dict]:
    """Coverage and accuracy of the accepted windows for thresholds on the top-1 confidence, most to least covered."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    rows = []
    for threshold in np.unique(np.quantile(confidence, np.linspace(0.0, 1.0, points))):
        accepted = confidence >= threshold
        accuracy = float(correct[accepted].mean())
        rows.append({"threshold": float(threshold), "coverage": float(accepted.mean()), "accuracy": accuracy,
                     "risk": 1.0 - accuracy})
    return rows


def choose_threshold(probabilities: np.ndarray, y: np.ndarray, target_accuracy: float) -> float:
    """The lowest confidence threshold whose accepted windows reach `target_accuracy` (max coverage at the target).

    Raises when no threshold reaches it: then the target is out of this model's reach.
    """
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y)[np.argsort(-confidence, kind="stable")]
    ordered = np.sort(confidence)[::-1]
    accuracy = np.cumsum(correct) / np.arange(1, len(correct) + 1)  # accuracy of the k most confident windows
    # A threshold accepts every window at or above it, so only cut where the confidence changes.
    last_of_value = np.append(ordered[1:] < ordered[:-1], True)
    reaching = np.flatnonzero((accuracy >= target_accuracy) & last_of_value)
    if len(reaching) == 0:
        raise ValueError(f"no confidence threshold reaches accuracy {target_accuracy} on these windows "
                         f"(the most confident window is {'right' if correct[0] else 'wrong'})")
    return float(ordered[reaching[-1]])


def selective_metrics(probabilities: np.ndarray, y: np.ndarray, threshold: float, n_classes: int) -> dict:
    """Coverage, accuracy and macro-F1 of the windows accepted at `threshold`, beside all windows' figures."""
    predicted = probabilities.argmax(axis=1)
    accepted = probabilities.max(axis=1) >= threshold
    return {"threshold": float(threshold), "coverage": float(accepted.mean()) if len(y) else 0.0,
            "accepted_windows": int(accepted.sum()),
            "accepted_accuracy": float((predicted[accepted] == y[accepted]).mean()) if accepted.any() else None,
            "accepted_macro_f1": macro_f1(y[accepted], predicted[accepted], n_classes) if accepted.any() else None,
            "all_accuracy": float((predicted == y).mean()) if len(y) else None,
            "all_macro_f1": macro_f1(y, predicted, n_classes) if len(y) else None}


def calibrate(val_probabilities: np.ndarray, val_y: np.ndarray, test_probabilities: np.ndarray, test_y: np.ndarray,
              n_classes: int, settings: dict) -> dict:
    """Temperature and abstention threshold from the validation subjects, judged on the test subjects.

    `settings`: bins, target_accuracy, threshold (a number overrides the choice on validation).
    Returns the figures for metrics/eval.json plus the calibrated test probabilities' curves.
    """
    bins = int(settings["bins"])
    temperature = fit_temperature(val_probabilities, val_y)
    val_calibrated = apply_temperature(val_probabilities, temperature)
    test_calibrated = apply_temperature(test_probabilities, temperature)
    threshold = settings.get("threshold")
    if threshold is None:
        threshold = choose_threshold(val_calibrated, val_y, float(settings["target_accuracy"]))
    return {
        "temperature": temperature,
        "threshold": float(threshold),
        "target_accuracy": None if settings.get("threshold") is not None else float(settings["target_accuracy"]),
        "ece_bins": bins,
        "val_ece_before": expected_calibration_error(val_probabilities, val_y, bins),
        "val_ece_after": expected_calibration_error(val_calibrated, val_y, bins),
        "ece_before": expected_calibration_error(test_probabilities, test_y, bins),
        "ece_after": expected_calibration_error(test_calibrated, test_y, bins),
        "validation": selective_metrics(val_calibrated, val_y, threshold, n_classes),
        "selective": selective_metrics(test_calibrated, test_y, threshold, n_classes),
    }, {"reliability_before": reliability(test_probabilities, test_y, bins),
        "reliability_after": reliability(test_calibrated, test_y, bins),
        "risk_coverage": risk_coverage(test_calibrated, test_y)}


def day_like_report(probabilities: dict, meta: dict, candidates: list[float], target_accuracy: float,
                    n_classes: int, seed: int, threshold: float | None = None) -> dict:
    """The switch probability and timeline threshold chosen on validation day-like sequences, judged on test.

    `probabilities` and `meta` map "val" and "test" to calibrated probabilities and to the split's arrays
    (y, subject, recording, start_t). The candidate with the best validation macro-F1 is kept (the
    smallest on a tie, 0 = off); the threshold is then the lowest whose accepted smoothed windows reach
    `target_accuracy` on validation, unless a fixed `threshold` is given.
    """
    def sequences(split: str, s: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
        m = meta[split]
        order = day_like_order(m["subject"], m["recording"], m["start_t"], seed)
        return [hmm_posteriors(probabilities[split][i], s) for i in order], [m["y"][i] for i in order]

    def score(split: str, s: float) -> dict:
        posts, ys = sequences(split, s)
        post, y = np.concatenate(posts), np.concatenate(ys)
        return {"macro_f1": macro_f1(y, post.argmax(1), n_classes),
                "episodes": sum(episode_count(p.argmax(1)) for p in posts),
                "true_episodes": int(sum(len(np.unique(meta[split]["recording"][meta[split]["subject"] == person]))
                                         for person in np.unique(meta[split]["subject"]))),
                "posteriors": post, "y": y}

    val_scores = {s: score("val", s) for s in sorted(set(candidates) | {0.0})}
    chosen = max(val_scores, key=lambda s: (round(val_scores[s]["macro_f1"], 6), -s))
    if threshold is None:
        threshold = choose_threshold(val_scores[chosen]["posteriors"], val_scores[chosen]["y"], target_accuracy)
    test_off, test_on = score("test", 0.0), score("test", chosen)

    def public(result: dict) -> dict:
        return {k: v for k, v in result.items() if k not in ("posteriors", "y")}

    return {"switch_probability": chosen, "threshold": threshold, "seed": seed,
            "validation": {str(s): public(r) for s, r in val_scores.items()},
            "test_without": public(test_off), "test_with": public(test_on),
            "test_with_selective": selective_metrics(test_on["posteriors"], test_on["y"], threshold, n_classes)}
