"""What deterministic training costs: the train stage's training with op determinism and fixed thread
pools (the default) against TensorFlow's defaults, on the pipeline's own windows.

    python -m bench.train_determinism [--epochs 3] [--runs 3]   # -> metrics/bench_train_determinism.json

Each run is a fresh process (thread pools and op determinism can only be set before TensorFlow's
first op) training the params.yaml model on data/windows for --epochs epochs; the two settings
alternate, so a change in the machine's load hits both alike. Reported: the median training seconds
of each, their ratio, and the SHA-256 of each run's weights: the deterministic runs must all agree.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys

SETTINGS = {
    "deterministic": {"deterministic": True},  # params.yaml's train.threads
    "tensorflow_default": {"deterministic": False, "threads": {"intra_op": 0, "inter_op": 0}},
}


def one_run(setting: str, epochs: int) -> dict:
    """Train once in this process with `setting`; the seconds and a hash of the weights."""
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from har.config import load_params
    from har.training import train_model
    from stages.window import load_meta, load_split

    params = load_params()
    train_params = {**params["train"], **SETTINGS[setting], "epochs": epochs}
    train, val = load_split("train"), load_split("val")
    model, summary = train_model(train["X"], train["y"], val["X"], val["y"], n_classes=len(load_meta()["labels"]),
                                 model_params=params["model"], train_params=train_params, verbose=0)
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"setting": setting, "train_seconds": summary["train_seconds"], "weights_sha256": digest.hexdigest()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="runs of each setting")
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)  # a child process: one run
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.one, args.epochs)))
        return
    from bench.timing import report

    rows = []
    for _ in range(args.runs):
        for setting in SETTINGS:
            done = subprocess.run([sys.executable, "-m", "bench.train_determinism", "--one", setting,
                                   "--epochs", str(args.epochs)], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    median = {s: statistics.median(r["train_seconds"] for r in rows if r["setting"] == s) for s in SETTINGS}
    hashes = {s: sorted({r["weights_sha256"] for r in rows if r["setting"] == s}) for s in SETTINGS}
    report({"epochs": args.epochs, "runs_per_setting": args.runs,
            "median_train_s_deterministic": median["deterministic"],
            "median_train_s_tensorflow_default": median["tensorflow_default"],
            "deterministic_over_default": round(median["deterministic"] / median["tensorflow_default"], 3),
            "distinct_weights_deterministic": len(hashes["deterministic"]),
            "distinct_weights_tensorflow_default": len(hashes["tensorflow_default"]),
            "runs": rows}, "train_determinism")


if __name__ == "__main__":
    main()
