"""More context for the classifier, measured (issue 37): `python -m stages.context` -> metrics/context.json.

Not a DVC stage: it fits two forests (the training subjects' windows) and is run by hand, like
stages.crossval; what it measured decided what the pipeline keeps (docs/training.md#more-context).

The generated sessions of the validation and test subjects (stages.sessions: each subject's recordings in
a seeded order, and the `varied` design whose activities change in composition and length) are scored by
the exported model, and each candidate turns the worn windows into probabilities:

- `cnn`: the model's calibrated probabilities, window by window;
- `cnn_hmm`: the posteriors of the timeline's HMM (har/smoothing.py) at the minutes estimator's switch
  probability (the model card's `minutes`): the context the pipeline already has;
- `context`: a second stage over the neighbouring windows: softmax(a log p + b mean of log p over the
  windows within +-R of it in its run), a and b fitted by log-likelihood on the validation subjects'
  sessions, R (6, 12 or 20 s) chosen by leaving one validation subject out; on the validation subjects each
  one's figures come from the fit on the other five;
- `context_hmm`: the same, then the HMM;
- `forest`: the baseline's 158-feature random forest (stages/baseline.py) on the training subjects;
- `cnn_forest`: the CNN's and the forest's probabilities averaged, weights 0.5;
- `forest_24s`: a forest on the 158 features and their mean and standard deviation over +-12 s (the windows of
  a training recording around each), on the training subjects;
- `cnn_forest_24s`: the CNN and `forest_24s` combined as a geometric mean, then the HMM.

For each: window accuracy and macro-F1 (over worn windows with a true activity), and the minutes error of
the probability sums (har/minutes.py) per design; validation and test side by side.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from har.config import load_params, resolve_raw, write_json
from har.evaluation import macro_f1
from har.features import window_features
from har.minutes import MinutesEstimator, minutes_error, sums
from har.runtime import ModelRuntime
from har.smoothing import runs, smooth
from har.study import generate_study
from stages.baseline import fit_baseline
from stages.sessions import MODEL, garmin_hour, plan_from, score_study, split_subjects
from stages.window import load_split

OUT = Path("metrics/context.json")
RADII = (3, 6, 10)  # windows each side: 6, 12 and 20 s at a 2-s step
EPS = 1e-6


def pooled(values: np.ndarray, start_s: np.ndarray, step_s: float, radius: int) -> np.ndarray:
    """The mean of `values` over the windows within `radius` of each, inside its run of consecutive windows."""
    result = np.zeros_like(values, dtype=np.float64)
    for index in runs(start_s, step_s):
        total = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values[index], axis=0)])
        k = np.arange(len(index))
        low, high = np.maximum(k - radius, 0), np.minimum(k + radius + 1, len(index))
        result[index] = (total[high] - total[low]) / (high - low)[:, None]
    return result


def spread_over(values: np.ndarray, start_s: np.ndarray, step_s: float, radius: int) -> np.ndarray:
    """`values`, their mean and their standard deviation over +-radius windows (pooled)."""
    mean = pooled(values, start_s, step_s, radius)
    deviation = np.sqrt(np.maximum(pooled(values * values, start_s, step_s, radius) - mean * mean, 0.0))
    return np.hstack([values, mean, deviation])


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def context_probabilities(weights, session: dict, radius: int) -> np.ndarray:
    log_p = np.log(np.clip(session["probabilities"], EPS, 1.0))
    return softmax(weights[0] * log_p + weights[1] * pooled(log_p, session["start_s"], session["step_s"], radius))


def fit_context(sessions: list[dict], radius: int) -> np.ndarray:
    """(a, b) by the log-likelihood of the true classes, windows weighted by the seconds they own."""
    known = [s["y"] >= 0 for s in sessions]
    y = np.concatenate([s["y"][k] for s, k in zip(sessions, known)])
    seconds = np.concatenate([s["seconds"][k] for s, k in zip(sessions, known)])
    log_p = [np.log(np.clip(s["probabilities"], EPS, 1.0)) for s in sessions]
    own = np.vstack([lp[k] for lp, k in zip(log_p, known)])
    around = np.vstack([pooled(lp, s["start_s"], s["step_s"], radius)[k] for lp, s, k in zip(log_p, sessions, known)])

    def loss(weights):
        p = softmax(weights[0] * own + weights[1] * around)
        return -float(seconds @ np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))) / seconds.sum()

    return minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7}).x


def judged(probabilities: dict, designs: dict, n_classes: int) -> dict:
    """Window accuracy and macro-F1 (balanced design) and the probability sums' minutes error per design."""
    result = {}
    for design, sessions in designs.items():
        estimates = [sums(probabilities[design][k], s["seconds"])[0] for k, s in enumerate(sessions)]
        result[f"{design}_minutes_error"] = round(minutes_error(estimates, [s["true_s"] for s in sessions]), 4)
    sessions = designs["balanced"]
    y = np.concatenate([s["y"] for s in sessions])
    predicted = np.concatenate([p.argmax(axis=1) for p in probabilities["balanced"]])
    known = y >= 0
    result["window_accuracy"] = round(float(np.mean(predicted[known] == y[known])), 4)
    result["window_macro_f1"] = round(macro_f1(y[known], predicted[known], n_classes), 4)
    return result


def forests(params: dict, radius: int) -> tuple:
    """The baseline forest on the training windows' features, and one on the features pooled over +-radius
    windows of their recording (what a 24-s context gives a feature model)."""
    train = load_split("train")
    target_hz = float(params["data"]["target_hz"])
    features = window_features(train["X"], target_hz)
    order = np.lexsort((train["start_t"], train["recording"]))
    step_s = params["window"]["length"] * (1 - params["window"]["overlap"]) / target_hz
    # one run per training recording: its windows in time order, a new run where the recording changes
    clock = np.zeros(len(order))
    same = train["recording"][order][1:] == train["recording"][order][:-1]
    clock[1:] = np.cumsum(np.where(same, step_s, 1e6))
    wide = spread_over(features[order], clock, step_s, radius)
    settings, seed = params["train"]["baseline"], params["train"]["seed"]
    return fit_baseline(features, train["y"], settings, seed), fit_baseline(wide, train["y"][order], settings, seed)


def main() -> int:
    started = time.perf_counter()
    params = load_params()
    runtime = ModelRuntime(MODEL)
    card = runtime.card
    k = len(card.labels)
    switch = MinutesEstimator.from_card(card).switch_probability
    settings = params["sessions"]
    varied = settings["varied"]
    varied_plan = {"recordings_per_session": int(varied["recordings_per_session"]),
                   "piece_seconds": tuple(float(x) for x in varied["piece_seconds"]),
                   "nonwear_minutes": tuple(float(m) for m in varied["nonwear_minutes"])}
    designs = {}
    with tempfile.TemporaryDirectory(prefix="context-") as work:
        for split in ("val", "test"):
            subjects = split_subjects(split)
            for design, overrides in (("balanced", {}), ("varied", varied_plan)):
                folder = Path(work) / f"{split}_{design}"
                manifest = generate_study(folder, resolve_raw(params["data"]["raw"]), subjects, labels=card.labels,
                                          data=params["data"], garmin=garmin_hour(params),
                                          plan=plan_from(settings, participants=len(subjects), **overrides))
                scored = score_study(folder, manifest, {None: runtime}, params)
                designs.setdefault(split, {})[design] = [
                    {**s.arrays(), "subject": s.subject, "windows": s.prepared.worn_windows} for s in scored]
    target_hz = float(params["data"]["target_hz"])
    for split in designs.values():
        for sessions in split.values():
            for s in sessions:
                s["features"] = window_features(s["windows"], target_hz)
                del s["windows"]
    radius_24s = 6
    forest, forest_wide = forests(params, radius_24s)

    # the context stage's radius, by leaving one validation subject out (balanced and varied designs alike)
    validation = designs["val"]
    subjects = sorted({s["subject"] for s in validation["balanced"]})
    out_of_fold = {}
    for radius in RADII:
        fits = {who: fit_context([s for d in validation.values() for s in d if s["subject"] != who], radius)
                for who in subjects}
        out_of_fold[radius] = {d: [context_probabilities(fits[s["subject"]], s, radius) for s in sessions]
                               for d, sessions in validation.items()}
    loso = {radius: judged(p, validation, k) for radius, p in out_of_fold.items()}
    radius = max(RADII, key=lambda r: (loso[r]["window_macro_f1"], -r))
    weights = fit_context([s for d in validation.values() for s in d], radius)

    def candidates(split: str) -> dict:
        chosen = designs[split]

        def each(make) -> dict:
            return {d: [make(s) for s in sessions] for d, sessions in chosen.items()}

        def hmm(p: np.ndarray, s: dict) -> np.ndarray:
            return smooth(p, s["start_s"], s["step_s"], switch)

        context = out_of_fold[radius] if split == "val" else each(lambda s: context_probabilities(weights, s, radius))
        forest_p = each(lambda s: forest.predict_proba(s["features"]))
        wide_p = each(lambda s: forest_wide.predict_proba(spread_over(s["features"].astype(np.float64), s["start_s"],
                                                                      s["step_s"], radius_24s)))

        def geometric(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return softmax(0.5 * np.log(np.clip(a, EPS, 1.0)) + 0.5 * np.log(np.clip(b, 1e-3, 1.0)))

        made = {"cnn": each(lambda s: s["probabilities"]),
                "cnn_hmm": each(lambda s: hmm(s["probabilities"], s)),
                "context": context,
                "context_hmm": {d: [hmm(p, s) for p, s in zip(context[d], chosen[d])] for d in chosen},
                "forest": forest_p,
                "cnn_forest": {d: [0.5 * s["probabilities"] + 0.5 * f for s, f in zip(chosen[d], forest_p[d])]
                               for d in chosen},
                "forest_24s": wide_p,
                "cnn_forest_24s": {d: [hmm(geometric(s["probabilities"], w), s) for s, w in zip(chosen[d], wide_p[d])]
                                   for d in chosen}}
        return {name: judged(p, chosen, k) for name, p in made.items()}

    report = {"model_version": card.version, "minutes_switch_probability": switch,
              "context": {"radius_windows": radius, "weights": [round(float(w), 4) for w in weights],
                          "leave_one_subject_out": {str(r): v for r, v in loso.items()}},
              "validation": candidates("val"), "test": candidates("test")}
    write_json(OUT, report)
    for name in report["test"]:
        v, t = report["validation"][name], report["test"][name]
        print(f"{name:15s} validation: accuracy {v['window_accuracy']:.3f}, minutes error {v['balanced_minutes_error']:.3f}"
              f" / varied {v['varied_minutes_error']:.3f}; test: accuracy {t['window_accuracy']:.3f}, minutes error "
              f"{t['balanced_minutes_error']:.3f} / varied {t['varied_minutes_error']:.3f}")
    print(f"context: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
