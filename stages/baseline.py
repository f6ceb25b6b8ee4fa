"""baseline stage: hand-made window features + a random forest, on the same subject split as the model.

Writes metrics/baseline.json with the same keys as metrics/eval.json (test subjects only),
plus the validation subjects' macro-F1, so every number of the model has a reference beside it.
No fitting time in it: a duration would change dvc.lock on every run (it is printed instead).
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from stages.window import load_meta, load_split
from har.config import load_params, write_json
from har.evaluation import classification_metrics, macro_f1
from har.features import window_features



def fit_baseline(features: np.ndarray, y: np.ndarray, baseline_params: dict, seed: int) -> RandomForestClassifier:
    """The forest, fitted on every core and predicting on one.

    Fitting in parallel is deterministic (each tree's random state is drawn from `seed` before the
    trees are shared out); predicting is not: the threads add their trees' probabilities into one
    array in whatever order they finish, which can move a float's last bit, and a tie with it.
    """
    forest = RandomForestClassifier(n_estimators=baseline_params["n_estimators"],
                                    min_samples_leaf=baseline_params["min_samples_leaf"],
                                    class_weight="balanced", n_jobs=-1, random_state=seed)
    forest.fit(features, y)
    forest.n_jobs = 1
    return forest


def main() -> None:
    params = load_params()
    meta = load_meta()
    labels, target_hz = meta["labels"], meta["target_hz"]
    splits = {name: load_split(name) for name in ("train", "val", "test")}
    features = {name: window_features(s["X"], target_hz) for name, s in splits.items()}

    started = time.perf_counter()
    forest = fit_baseline(features["train"], splits["train"]["y"], params["train"]["baseline"],
                          params["train"]["seed"])
    seconds = time.perf_counter() - started
    metrics = classification_metrics(splits["test"]["y"], forest.predict(features["test"]), labels)
    metrics["val_macro_f1"] = macro_f1(splits["val"]["y"], forest.predict(features["val"]), len(labels))
    write_json("metrics/baseline.json", metrics)
    print(f"baseline (random forest, {features['train'].shape[1]} features, fitted in {seconds:.0f} s): test macro-F1 "
          f"{metrics['macro_f1']:.3f}, accuracy {metrics['accuracy']:.3f}; val macro-F1 {metrics['val_macro_f1']:.3f}")


if __name__ == "__main__":
    main()
