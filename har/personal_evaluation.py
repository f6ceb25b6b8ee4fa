"""What personalisation gains, measured on held-out subjects (the personalize stage, stages/personalize.py).

For each subject of a split, the first N seconds of each recording calibrate (har.personalize's
method fitted on them) and the rest, one window length later, is scored; the generic model's
macro-F1 on the same windows stands beside the personal one. The candidate methods are compared
on the validation subjects, the chosen one reported on the test subjects for each N.
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import f1_score

from har.personalize import Head, adapt, calibration_split, features_for, prototype_probabilities


def subject_macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes the subject's scored windows hold (a subject may lack an activity)."""
    return float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))


def subject_scores(h: np.ndarray, p: np.ndarray, windows, generic: Head, seconds: float, window_s: float,
                   adapt_fn) -> tuple[float, float, int, int]:
    """(generic macro-F1, personal macro-F1, calibration windows, scored windows) of one subject at `seconds`."""
    calib, scored = calibration_split(windows["recording"], windows["start_t"], seconds=seconds, window_s=window_s)
    y = windows["y"]
    personal_p = adapt_fn(h[calib], y[calib], h[scored], p[scored])
    return (subject_macro_f1(y[scored], p[scored].argmax(1)), subject_macro_f1(y[scored], personal_p.argmax(1)),
            int(calib.sum()), int(scored.sum()))


def head_adapter(generic: Head, settings: dict):
    def adapt_fn(f_calib, y_calib, f, p):
        return adapt(generic, f_calib, y_calib, settings).probabilities(features_for(f, generic, settings))
    return adapt_fn


def prototype_adapter(blend: float):
    def adapt_fn(h_calib, y_calib, h, p):
        return p if len(y_calib) == 0 else prototype_probabilities(h_calib, y_calib, h, p, blend=blend)
    return adapt_fn


def compare(split: dict, h: np.ndarray, p: np.ndarray, generic: Head, seconds: float, window_s: float,
            adapt_fn) -> dict:
    """Generic and personal macro-F1 per subject of a split, their means and the worst subject's change."""
    per_subject = {}
    for subject in sorted(set(split["subject"])):
        mine = split["subject"] == subject
        g, q, n_calib, n_scored = subject_scores(h[mine], p[mine], {k: split[k][mine] for k in ("y", "recording", "start_t")},
                                                 generic, seconds, window_s, adapt_fn)
        per_subject[str(subject)] = {"generic": round(g, 4), "personal": round(q, 4), "calibration_windows": n_calib,
                                     "scored_windows": n_scored}
    generic_f1 = np.mean([s["generic"] for s in per_subject.values()])
    personal_f1 = np.mean([s["personal"] for s in per_subject.values()])
    return {"generic_macro_f1": round(float(generic_f1), 4), "personal_macro_f1": round(float(personal_f1), 4),
            "gain": round(float(personal_f1 - generic_f1), 4),
            "worst_change": round(min(s["personal"] - s["generic"] for s in per_subject.values()), 4),
            "subjects": per_subject}


def gains(embedded: dict, generic: Head, settings: dict, window_s: float) -> tuple[dict, list[float]]:
    """The personalize stage's report (without the model's version) from the validation and test subjects'
    embeddings (`embedded[split]` = (arrays: y, subject, recording, start_t; h; p)), and each test subject's
    fit time in CPU seconds (printed by the stage, never reported: a duration would change dvc.lock)."""
    candidates = {}
    arrays, h, p = embedded["val"]
    for l2, residual_l2 in settings["candidates"]["head"]:
        adapter = head_adapter(generic, {**settings, "method": "head", "l2": l2, "residual_l2": residual_l2})
        name = f"head_l2_{l2:g}" + (f"_residual_l2_{residual_l2:g}" if residual_l2 is not None else "")
        candidates[name] = compare(arrays, h, p, generic, settings["select_seconds"], window_s, adapter)
    for blend in settings["candidates"]["prototype_blend"]:
        candidates[f"prototypes_blend_{blend:g}"] = compare(arrays, h[:, :generic.embedding], p, generic,
                                                            settings["select_seconds"], window_s, prototype_adapter(blend))
    for result in candidates.values():
        result.pop("subjects")

    arrays, h, p = embedded["test"]
    adapter = head_adapter(generic, settings)
    by_seconds = {str(n): compare(arrays, h, p, generic, float(n), window_s, adapter) for n in settings["seconds"]}

    # Adaptation time of the fit alone, per test subject at select_seconds, on this process's CPU time
    # (bench/personalize.py measures it properly).
    fit_cpu = []
    for subject in sorted(set(arrays["subject"])):
        mine = arrays["subject"] == subject
        calib, _ = calibration_split(arrays["recording"][mine], arrays["start_t"][mine],
                                     seconds=settings["select_seconds"], window_s=window_s)
        started = time.process_time()
        adapt(generic, h[mine][calib], arrays["y"][mine][calib], settings)
        fit_cpu.append(time.process_time() - started)
    chosen = max(candidates, key=lambda name: candidates[name]["gain"])
    return {"method": {k: settings.get(k) for k in ("method", "l2", "residual_l2", "max_iter")},
            "validation_best": chosen,
            "window_s": window_s, "gap_s": window_s,
            "validation_candidates_at_seconds": settings["select_seconds"], "validation": candidates,
            "test": by_seconds}, fit_cpu
