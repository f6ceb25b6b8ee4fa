"""Subject-wise cross-validation of the model against the baseline (not part of `dvc repro`).

One split says little with 37 people: which 7 land in the test set moves macro-F1 by several
points. Here every subject is tested once. The subjects (those the window stage kept) are dealt
into `--folds` groups; in fold k group k is the test set, group k+1 stops the model's training
early, and the rest train both the model and the baseline, with the params in params.yaml.
Writes metrics/crossval.json: per fold and on average, both macro-F1s and the model's margin.

    python -m stages.crossval --folds 5     # about 5 x 8 minutes on a 2-core CPU
"""
from __future__ import annotations

import argparse

import numpy as np

from har.config import load_params, write_json
from har.evaluation import macro_f1
from har.features import window_features
from har.training import train_model
from har.windows import subject_folds
from stages.baseline import fit_baseline
from stages.window import load_meta, load_split

OUT = "metrics/crossval.json"


def missing_classes(y: np.ndarray, n_classes: int) -> list[int]:
    """The class indices in range(n_classes) that no window of y has."""
    return np.flatnonzero(np.bincount(y, minlength=n_classes) == 0).tolist()


def fold_masks(subject: np.ndarray, y: np.ndarray, groups: list[list[str]], n_classes: int):
    """(test, val, train) window masks per fold; every fold's training windows must hold every class."""
    masks = []
    for k, test_subjects in enumerate(groups):
        test, val = np.isin(subject, test_subjects), np.isin(subject, groups[(k + 1) % len(groups)])
        train = ~(test | val)
        missing = missing_classes(y[train], n_classes)
        if missing:
            raise ValueError(f"fold {k + 1}: the training subjects {sorted(set(subject[train]))} have no windows of "
                             f"classes {missing}; use fewer --folds")
        masks.append((test, val, train))
    return masks


def model_against_baseline(X, y, features, train, val, scored: dict, params: dict, n_classes: int):
    """The model (early-stopped on the `val` windows) and the baseline, both trained on the `train`
    windows; per mask in `scored`, both macro-F1s as (model, baseline), and the model's training summary."""
    model, summary = train_model(X[train], y[train], X[val], y[val], n_classes=n_classes,
                                 model_params=params["model"], train_params=params["train"])
    forest = fit_baseline(features[train], y[train], params["train"]["baseline"], params["train"]["seed"])
    scores = {name: (macro_f1(y[rows], model.predict(X[rows], batch_size=512, verbose=0).argmax(axis=1), n_classes),
                     macro_f1(y[rows], forest.predict(features[rows]), n_classes))
              for name, rows in scored.items()}
    return scores, summary


def summarise(folds: list[dict], n_folds: int) -> dict:
    summary = {key: float(np.mean([f[key] for f in folds])) for key in ("model_macro_f1", "baseline_macro_f1", "margin")}
    summary.update(folds=n_folds, margin_min=float(min(f["margin"] for f in folds)),
                   model_macro_f1_sd=float(np.std([f["model_macro_f1"] for f in folds])),
                   baseline_macro_f1_sd=float(np.std([f["baseline_macro_f1"] for f in folds])),
                   per_fold=folds)
    return summary


def main(n_folds: int) -> dict:
    params = load_params()
    meta = load_meta()
    labels = meta["labels"]
    splits = [load_split(name) for name in ("train", "val", "test")]
    X, y, subject = (np.concatenate([s[key] for s in splits]) for key in ("X", "y", "subject"))
    groups = subject_folds(subject, n_folds, params["split"]["seed"])
    masks = fold_masks(subject, y, groups, len(labels))  # checked before hours of training, not after
    features = window_features(X, meta["target_hz"])

    folds = []
    for k, (test, val, train) in enumerate(masks):
        print(f"fold {k + 1}/{n_folds}: test {groups[k]}, validation {groups[(k + 1) % n_folds]}, "
              f"{len(set(subject[train]))} training subjects")
        scores, summary = model_against_baseline(X, y, features, train, val, {"test": test}, params, len(labels))
        fold = {"test_subjects": groups[k], "val_subjects": groups[(k + 1) % n_folds],
                "model_macro_f1": scores["test"][0], "baseline_macro_f1": scores["test"][1],
                "best_epoch": summary["best_epoch"], "train_seconds": summary["train_seconds"]}
        fold["margin"] = fold["model_macro_f1"] - fold["baseline_macro_f1"]
        print(f"fold {k + 1}: model {fold['model_macro_f1']:.3f}, baseline {fold['baseline_macro_f1']:.3f}")
        folds.append(fold)
        result = summarise(folds, n_folds)
        write_json(OUT, result)  # after every fold: an interrupted run keeps what it did

    print(f"{n_folds} folds: model {result['model_macro_f1']:.3f}, baseline {result['baseline_macro_f1']:.3f}, "
          f"margin {result['margin']:+.3f} (smallest {result['margin_min']:+.3f})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    main(parser.parse_args().folds)
