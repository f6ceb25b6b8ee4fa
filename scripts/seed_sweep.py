"""The seed sweep behind the training defaults: each setting trained with several seeds, in parallel.

One training run says little: seeds alone move validation macro-F1 by about ±0.01. This trains
every (setting, seed) below on data/windows with har.training.train_model, `--workers` at a time
in separate processes, and prints and appends to `--out` (JSON lines) each run's validation and
test macro-F1, then the mean per setting. It is a scratch tool for choosing defaults, not a stage.

The sweep in the README (36 runs) ran on a borrowed GPU under Keras's JAX backend:
    KERAS_BACKEND=jax python scripts/seed_sweep.py --workers 8
(jax is not in requirements.lock). With TensorFlow on this 2-core CPU, use --workers 1 and
expect about 7 minutes a run; figures differ a little between backends, not the ranking.
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The training defaults before the cosine schedule: every other setting below starts from them.
EARLIER = {"train.lr_schedule": "constant", "train.lr": 0.002, "train.batch_size": 128, "train.patience": 6}
COSINE = {**EARLIER, "train.lr_schedule": "cosine"}
# (setting, seeds, overrides of params.yaml): the 36 runs quoted in the README.
SETTINGS = [
    ("constant_lr", [42, 1, 2, 3, 4], EARLIER),
    ("cosine_20", [42, 1, 2, 3], {**COSINE, "train.epochs": 20, "train.patience": 20}),
    ("cosine_30", [42, 1, 2, 3], {**COSINE, "train.patience": 30}),
    ("cosine_30_batch256", [42, 1, 2], {}),  # the current default
    ("cosine_40", [42, 1, 2, 3], {**COSINE, "train.epochs": 40, "train.patience": 40}),
    ("cosine_60", [42, 1], {**COSINE, "train.epochs": 60, "train.patience": 60}),
    ("epochs_50", [42, 1], {**EARLIER, "train.epochs": 50, "train.patience": 10}),
    ("width_128", [42, 1], {**EARLIER, "model.conv_filters": [128, 128], "model.lstm_units": 128,
                            "model.dense_units": 128}),
    ("width_32", [42, 1, 2, 3], {**EARLIER, "model.conv_filters": [32, 32], "model.lstm_units": 32,
                                 "model.dense_units": 32}),
    ("dropout_0.1", [42, 1], {**EARLIER, "model.dropout": 0.1, "model.conv_dropout": 0.0}),
    ("rotation_15", [42, 1], {**EARLIER, "train.augment.rotation_deg": 15}),
    ("lr_0.004", [42, 1], {**EARLIER, "train.lr": 0.004}),
]


def with_overrides(params: dict, overrides: dict) -> dict:
    params = copy.deepcopy(params)
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = params
        for part in path:
            node = node[part]
        node[last] = value
    return params


def run(setting: str, seed: int, overrides: dict) -> dict:
    from har.config import load_params
    from har.evaluation import macro_f1
    from har.training import train_model
    from stages.window import load_meta, load_split

    params = with_overrides(load_params(), {**overrides, "train.seed": seed})
    n_classes = len(load_meta()["labels"])
    train, val, test = (load_split(name) for name in ("train", "val", "test"))
    model, summary = train_model(train["X"], train["y"], val["X"], val["y"], n_classes=n_classes,
                                 model_params=params["model"], train_params=params["train"], verbose=0)
    scores = {name: macro_f1(split["y"], model.predict(split["X"], batch_size=1024, verbose=0).argmax(axis=1),
                             n_classes) for name, split in (("val", val), ("test", test))}
    return {"setting": setting, "seed": seed, **scores, "best_epoch": summary["best_epoch"],
            "train_seconds": summary["train_seconds"]}


def main(workers: int, out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    jobs = [(setting, seed, overrides) for setting, seeds, overrides in SETTINGS for seed in seeds]
    results = []
    # spawn, not fork: a forked copy of a process that has started TensorFlow's threads can hang.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(run, *zip(*jobs)):
            print(json.dumps(result), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(result) + "\n")
            results.append(result)
    for setting, _, _ in SETTINGS:
        rows = [r for r in results if r["setting"] == setting]
        print(f"{setting:20s} {len(rows)} seeds: val {np.mean([r['val'] for r in rows]):.3f}, "
              f"test {np.mean([r['test'] for r in rows]):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("seed_sweep.jsonl"))
    args = parser.parse_args()
    main(args.workers, args.out)
