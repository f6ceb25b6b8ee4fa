"""Learning curve over training subjects: model and baseline trained on nested subsets of the
training subjects, scored on the same validation and test subjects (not part of `dvc repro`).

Whether more labelled people would widen the model's margin over the baseline is the question
this answers: each size n trains both on the first n training subjects of a seeded shuffle
(each subset holds the smaller ones), with the params in params.yaml.
Writes metrics/learning_curve.json.

    python -m stages.learning_curve --sizes 6 12 18 24    # about 30 minutes on a 2-core CPU
"""
from __future__ import annotations

import argparse

import numpy as np

from har.config import load_params, write_json
from har.features import window_features
from stages.crossval import missing_classes, model_against_baseline
from stages.window import load_meta, load_split

OUT = "metrics/learning_curve.json"


def nested_subsets(subject: np.ndarray, y: np.ndarray, n_classes: int, sizes: list[int],
                   seed: int) -> dict[int, list[str]]:
    """For each size n, the first n subjects of one seeded shuffle (every subset holds the smaller
    ones); every subset's windows must hold every class, checked before any training."""
    order = np.random.default_rng(seed).permutation(sorted({str(s) for s in subject})).tolist()
    out_of_range = [n for n in sizes if not 1 <= n <= len(order)]
    if out_of_range:
        raise ValueError(f"--sizes must be between 1 and the {len(order)} training subjects, got {out_of_range}")
    subsets = {n: sorted(order[:n]) for n in sorted(sizes)}
    for n, subjects in subsets.items():
        missing = missing_classes(y[np.isin(subject, subjects)], n_classes)
        if missing:
            raise ValueError(f"the first {n} training subjects {subjects} have no windows of classes {missing}; "
                             f"use larger --sizes")
    return subsets


def main(sizes: list[int]) -> dict:
    params = load_params()
    meta = load_meta()
    n_classes = len(meta["labels"])
    splits = {name: load_split(name) for name in ("train", "val", "test")}
    X, y, subject = (np.concatenate([s[key] for s in splits.values()]) for key in ("X", "y", "subject"))
    split = np.concatenate([np.full(len(s["y"]), name) for name, s in splits.items()])
    in_train = split == "train"
    subsets = nested_subsets(subject[in_train], y[in_train], n_classes, sizes, params["split"]["seed"])
    features = window_features(X, meta["target_hz"])

    points = []
    for n, subjects in subsets.items():
        train = in_train & np.isin(subject, subjects)
        print(f"{n} training subjects ({train.sum()} windows): {subjects}")
        scores, summary = model_against_baseline(X, y, features, train, split == "val",
                                                 {name: split == name for name in ("val", "test")}, params, n_classes)
        point = {"training_subjects": n, "training_windows": int(train.sum()), "subjects": subjects,
                 "train_seconds": summary["train_seconds"], "best_epoch": summary["best_epoch"]}
        for name, (model_f1, baseline_f1) in scores.items():
            point.update({f"{name}_model_macro_f1": model_f1, f"{name}_baseline_macro_f1": baseline_f1,
                          f"{name}_margin": model_f1 - baseline_f1})
        print(f"{n} subjects: test model {point['test_model_macro_f1']:.3f}, baseline "
              f"{point['test_baseline_macro_f1']:.3f}; val model {point['val_model_macro_f1']:.3f}, "
              f"baseline {point['val_baseline_macro_f1']:.3f}")
        points.append(point)
        write_json(OUT, {"points": points})  # after every size: an interrupted run keeps what it did
    return {"points": points}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 12, 18, 24])
    main(parser.parse_args().sizes)
