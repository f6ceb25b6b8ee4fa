"""Classification metrics over label indices, shared by training, evaluation and the baseline.

Macro-F1 comes first: every class counts the same, whatever its share of the windows.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, cohen_kappa_score, confusion_matrix,
                             f1_score, matthews_corrcoef, precision_recall_fscore_support)


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Mean F1 over all `n_classes` classes; a class never predicted nor present scores 0."""
    return float(f1_score(y_true, y_pred, labels=np.arange(n_classes), average="macro", zero_division=0))


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    """macro_f1, accuracy, balanced_accuracy, cohen_kappa, mcc and per-class precision/recall/F1/support."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    classes = np.arange(len(labels))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0)
    return {
        "macro_f1": macro_f1(y_true, y_pred, len(labels)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Mean recall over the classes present in y_true (scikit-learn's definition).
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "cohen_kappa": float(cohen_kappa_score(y_true, y_pred, labels=classes)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "windows": int(len(y_true)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    return confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))


def confusion_records(y_true, y_pred, labels: list[str]) -> list[dict]:
    """One {actual, predicted} row per window: the input DVC's confusion plot template counts."""
    return [{"actual": labels[t], "predicted": labels[p]} for t, p in zip(y_true, y_pred)]
