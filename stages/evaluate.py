"""evaluate stage: the trained model on the test subjects only, and its calibration.

Writes metrics/eval.json (macro-F1 first, then accuracy, balanced accuracy, Cohen's kappa, MCC,
per-class precision/recall/F1, macro-F1 per test subject; under `calibration` the temperature and
abstention threshold chosen on the validation subjects, the test subjects' expected calibration
error before and after, and coverage with accepted-window accuracy and macro-F1; under `minutes` the minutes
estimator's switch probability and interval scale chosen on the validation subjects, har/minutes.py),
plots/confusion.csv (one row per window, for DVC's confusion template), plots/per_class_f1.csv,
the PNGs of both, and the reliability diagram and risk-coverage curve as CSV for `dvc plots`.
"""
from __future__ import annotations

import os
import numpy as np
import pandas as pd

from har.calibration import apply_temperature, calibrate, day_like_report
from har.config import load_params, write_json
from har.minutes import choose, day_like_designs, judge
from har.wear import WearRule, recording_wear, worn_windows
from stages.window import FUSED, load_meta, load_split
from har.evaluation import classification_metrics, confusion, confusion_records, macro_f1
from har.model import load_model
from har.training import make_deterministic

MODEL = "models/model.keras"
PLOTS = "plots"


def evaluate_predictions(y_true, probabilities, subjects, labels: list[str]) -> dict:
    """All test metrics for predicted probabilities [n, n_classes]."""
    y_pred = probabilities.argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred, labels)
    # How the model does per person: the spread says more about unseen users than the mean.
    metrics["per_subject_macro_f1"] = {
        str(s): macro_f1(y_true[subjects == s], y_pred[subjects == s], len(labels)) for s in np.unique(subjects)}
    return metrics


def wear_on_labelled(split, params: dict) -> dict:
    """How many of a split's windows the non-wear rule would take away: every labelled window was worn."""
    if not (FUSED / "index.csv").exists():  # windows made elsewhere (the tests' tiny project): nothing to check
        return {"skipped": f"no {FUSED / 'index.csv'}: the split's recordings are not at hand"}
    index = pd.read_csv(FUSED / "index.csv", dtype={"subject": str}).set_index("recording")
    target_hz = float(params["data"]["target_hz"])
    window_s = params["window"]["length"] / target_hz
    rule = WearRule.from_params(params.get("wear"))
    not_worn = 0
    for recording in np.unique(split["recording"]):
        episodes = recording_wear(pd.read_parquet(FUSED / index.loc[recording, "file"]), target_hz, rule)
        not_worn += int((~worn_windows(split["start_t"][split["recording"] == recording], window_s, episodes)).sum())
    return {"windows": int(len(split["y"])), "not_worn_windows": not_worn,
            "not_worn_share": not_worn / max(len(split["y"]), 1)}


def selection(selective: dict) -> str:
    """The abstention figures in words (no window accepted: no accuracy to give)."""
    if not selective["accepted_windows"]:
        return f"threshold {selective['threshold']:.3f} accepts no test window"
    return (f"threshold {selective['threshold']:.3f}: coverage {selective['coverage']:.3f}, accepted accuracy "
            f"{selective['accepted_accuracy']:.3f}, accepted macro-F1 {selective['accepted_macro_f1']:.3f}")


def save_confusion_png(counts: np.ndarray, labels: list[str], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Rows normalised to recall, so classes with fewer windows read the same.
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 1 + 0.5 * len(labels)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(counts.shape):
        ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Test subjects: share of each actual class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_per_class_png(per_class_f1: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(per_class_f1) + 1))
    ax.barh(list(per_class_f1), list(per_class_f1.values()))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 on test subjects")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def minutes_report(probabilities: dict, splits: dict, params: dict, n_classes: int) -> dict:
    """The minutes estimator's switch probability and interval scale chosen on the validation subjects' day-like
    sequences (har.minutes.choose), judged on the test subjects' (export stamps the choice into the model card)."""
    settings = params["minutes"]
    window_s = params["window"]["length"] / float(params["data"]["target_hz"])
    step_s = window_s * (1 - float(params["window"]["overlap"]))
    designs = {split: day_like_designs(probabilities[split], splits[split], settings, int(params["smoothing"]["seed"]),
                                       window_s=window_s, step_s=step_s) for split in ("val", "test")}
    chosen = choose(designs["val"], settings["switch_probabilities"], n_classes, float(settings["coverage"]))
    return {**chosen, "validation": judge(designs["val"], chosen["switch_probability"], chosen["interval_scale"],
                                          n_classes, chosen["coverage"]),
            "test": judge(designs["test"], chosen["switch_probability"], chosen["interval_scale"], n_classes,
                          chosen["coverage"])}


def main() -> None:
    meta = load_meta()
    labels = meta["labels"]
    params = load_params()
    # The training's thread pools and deterministic kernels: the same probabilities to the bit on every run.
    make_deterministic(params["train"]["seed"], params["train"].get("threads"))
    test, val = load_split("test"), load_split("val")
    model = load_model(MODEL)
    probabilities = model.predict(test["X"], batch_size=512, verbose=0)
    metrics = evaluate_predictions(test["y"], probabilities, test["subject"], labels)
    # Temperature and threshold from the validation subjects; the test subjects only judge them.
    val_probabilities = model.predict(val["X"], batch_size=512, verbose=0)
    metrics["calibration"], curves = calibrate(val_probabilities, val["y"], probabilities, test["y"], len(labels),
                                               params["calibration"])
    temperature = metrics["calibration"]["temperature"]
    metrics["smoothing"] = day_like_report(
        {"val": apply_temperature(val_probabilities, temperature),
         "test": apply_temperature(probabilities, temperature)}, {"val": val, "test": test},
        params["smoothing"]["switch_probabilities"], params["calibration"]["target_accuracy"], len(labels),
        params["smoothing"]["seed"], params["calibration"].get("threshold"))
    metrics["minutes"] = minutes_report({"val": apply_temperature(val_probabilities, temperature),
                                         "test": apply_temperature(probabilities, temperature)},
                                        {"val": val, "test": test}, params, len(labels))
    metrics["wear"] = wear_on_labelled(test, params)  # the test subjects wore the watch: ~0 must be marked
    write_json("metrics/eval.json", metrics)

    os.makedirs(PLOTS, exist_ok=True)
    y_pred = probabilities.argmax(axis=1)
    pd.DataFrame(confusion_records(test["y"], y_pred, labels)).to_csv(f"{PLOTS}/confusion.csv", index=False)
    save_confusion_png(confusion(test["y"], y_pred, len(labels)), labels, f"{PLOTS}/confusion.png")
    per_class_f1 = {name: m["f1"] for name, m in metrics["per_class"].items()}
    pd.DataFrame({"class": list(per_class_f1), "f1": list(per_class_f1.values())}).to_csv(
        f"{PLOTS}/per_class_f1.csv", index=False)
    save_per_class_png(per_class_f1, f"{PLOTS}/per_class_f1.png")
    for name, rows in curves.items():
        pd.DataFrame(rows).to_csv(f"{PLOTS}/{name}.csv", index=False)
    print(f"test subjects ({len(test['y'])} windows): macro-F1 {metrics['macro_f1']:.3f}, "
          f"accuracy {metrics['accuracy']:.3f}, balanced accuracy {metrics['balanced_accuracy']:.3f}, "
          f"kappa {metrics['cohen_kappa']:.3f}, MCC {metrics['mcc']:.3f}")
    c, sm = metrics["calibration"], metrics["smoothing"]
    print(f"calibration: temperature {c['temperature']:.3f}, ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}; "
          f"{selection(c['selective'])}")
    print(f"smoothing (day-like sequences): switch probability {sm['switch_probability']:g} chosen on validation; "
          f"test macro-F1 {sm['test_without']['macro_f1']:.3f} -> {sm['test_with']['macro_f1']:.3f}, episodes "
          f"{sm['test_without']['episodes']} -> {sm['test_with']['episodes']} (true {sm['test_with']['true_episodes']}); "
          f"{selection(sm['test_with_selective'])}")
    m = metrics["minutes"]
    print(f"minutes: probability sums over HMM posteriors at switch probability {m['switch_probability']:g}, interval "
          f"scale {m['interval_scale']:.3f} (chosen on validation); test minutes error "
          + ", ".join(f"{k} {v['minutes_error']:.3f} (interval coverage {v['interval_coverage']:.2f})"
                      for k, v in m["test"].items()))


if __name__ == "__main__":
    main()
