"""The seed sweep behind the training defaults: each setting trained with several seeds, in parallel.

One training run says little: seeds alone move validation macro-F1 by about ±0.01. This trains
every (setting, seed) below on data/windows with har.training.train_model, `--workers` at a time
in separate processes, and prints and appends to `--out` (JSON lines) each run's validation and
test macro-F1. Then, per setting, the mean over its seeds and the macro-F1 of the seeds' averaged
outputs (an ensemble of those models), and that of all runs averaged. It is a scratch tool for
choosing defaults, not a stage.

The sweep in docs/training.md (36 runs) ran on a borrowed GPU under Keras's JAX backend:
    KERAS_BACKEND=jax python scripts/seed_sweep.py --workers 8
(jax is not in requirements.lock). With TensorFlow on this 2-core CPU, use --workers 1 and
expect about 7 minutes a run; figures differ a little between backends, not the ranking.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The training defaults before the cosine schedule: every other setting below starts from them.
# Overrides are `dvc exp run -S` overrides, composed from conf/ the same way.
EARLIER = ["train.lr_schedule=constant", "train.lr=0.002", "train.batch_size=128", "train.patience=6"]
COSINE = [*EARLIER, "train.lr_schedule=cosine"]
# (setting, seeds, overrides): the 36 runs quoted in docs/training.md.
SETTINGS = [
    ("constant_lr", [42, 1, 2, 3, 4], EARLIER),
    ("cosine_20", [42, 1, 2, 3], [*COSINE, "train.epochs=20", "train.patience=20"]),
    ("cosine_30", [42, 1, 2, 3], [*COSINE, "train.patience=30"]),
    ("cosine_30_batch256", [42, 1, 2], []),  # the current default
    ("cosine_40", [42, 1, 2, 3], [*COSINE, "train.epochs=40", "train.patience=40"]),
    ("cosine_60", [42, 1], [*COSINE, "train.epochs=60", "train.patience=60"]),
    ("epochs_50", [42, 1], [*EARLIER, "train.epochs=50", "train.patience=10"]),
    ("width_128", [42, 1], [*EARLIER, "model.conv_filters=[128,128]", "model.lstm_units=128", "model.dense_units=128"]),
    ("width_32", [42, 1, 2, 3], [*EARLIER, "model.conv_filters=[32,32]", "model.lstm_units=32", "model.dense_units=32"]),
    ("dropout_0.1", [42, 1], [*EARLIER, "model.dropout=0.1", "model.conv_dropout=0.0"]),
    ("rotation_15", [42, 1], [*EARLIER, "train.augment.rotation_deg=15"]),
    ("lr_0.004", [42, 1], [*EARLIER, "train.lr=0.004"]),
]


def run(setting: str, seed: int, overrides: list[str]) -> dict:
    """One training run on data/windows: its scores and its output probabilities on val and test."""
    from har.config import load_params
    from har.evaluation import macro_f1
    from har.training import train_model
    from stages.compose_params import compose
    from stages.window import load_meta, load_split

    with tempfile.TemporaryDirectory() as folder:
        params = Path(folder) / "params.yaml"
        compose(params, [*overrides, f"train.seed={seed}"])
        params = load_params(params)
    n_classes = len(load_meta()["labels"])
    train, val, test = (load_split(name) for name in ("train", "val", "test"))
    model, summary = train_model(train["X"], train["y"], val["X"], val["y"], n_classes=n_classes,
                                 model_params=params["model"], train_params=params["train"], verbose=0)
    probabilities = {name: model.predict(split["X"], batch_size=1024, verbose=0)
                     for name, split in (("val", val), ("test", test))}
    scores = {name: macro_f1(split["y"], probabilities[name].argmax(axis=1), n_classes)
              for name, split in (("val", val), ("test", test))}
    return {"setting": setting, "seed": seed, **scores, "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "train_seconds": summary["train_seconds"], "probabilities": probabilities}


def averaged(results: list[dict], truth: dict, n_classes: int) -> dict:
    """Macro-F1 of the mean of the runs' output probabilities (an ensemble of those models)."""
    from har.evaluation import macro_f1

    return {name: macro_f1(y, np.mean([r["probabilities"][name] for r in results], axis=0).argmax(axis=1),
                           n_classes) for name, y in truth.items()}


def main(workers: int, out: Path) -> None:
    from stages.window import load_meta, load_split

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    truth = {name: load_split(name)["y"] for name in ("val", "test")}
    n_classes = len(load_meta()["labels"])
    jobs = [(setting, seed, overrides) for setting, seeds, overrides in SETTINGS for seed in seeds]
    results = []
    # spawn, not fork: a forked copy of a process that has started TensorFlow's threads can hang.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(run, *zip(*jobs)):
            line = json.dumps({k: v for k, v in result.items() if k != "probabilities"})
            print(line, flush=True)
            with out.open("a") as f:
                f.write(line + "\n")
            results.append(result)
    for setting, _, _ in SETTINGS:
        runs = [r for r in results if r["setting"] == setting]
        ensemble = averaged(runs, truth, n_classes)
        print(f"{setting:20s} {len(runs)} seeds: val {np.mean([r['val'] for r in runs]):.3f}, "
              f"test {np.mean([r['test'] for r in runs]):.3f}; their average: val {ensemble['val']:.3f}, "
              f"test {ensemble['test']:.3f}")
    ensemble = averaged(results, truth, n_classes)
    print(f"all {len(results)} runs averaged: val {ensemble['val']:.3f}, test {ensemble['test']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("seed_sweep.jsonl"))
    args = parser.parse_args()
    main(args.workers, args.out)
