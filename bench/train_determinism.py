"""What reproducible training costs: the train stage's training as the pipeline runs it (portable kernels,
har/numerics.py, with op determinism and fixed thread pools) against the same deterministic training with each
library's fastest kernels for this CPU (the pipeline before issue 35) and against TensorFlow's defaults.

    python -m bench.train_determinism [--epochs 2] [--runs 3]   # -> metrics/bench_train_determinism.json

Each run is a fresh process (kernel choices, thread pools and op determinism can only be set before
TensorFlow's first op) training the params.yaml model on data/windows for --epochs epochs; the settings
alternate, so a change in the machine's load hits all alike. Reported: the median training seconds of each,
the ratios to the portable setting, the SHA-256 of each run's weights (every setting must repeat itself;
only the portable one promises the same weights on another CPU) and the load average around the runs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys

# name: (environment of the child process, train params overrides)
SETTINGS = {
    "portable": ({}, {}),  # what `dvc repro` runs: har/numerics.py pins the kernels
    "native_deterministic": ({"HAR_NUMERICS": "native"}, {}),
    "tensorflow_default": ({"HAR_NUMERICS": "native"}, {"deterministic": False, "threads": {"intra_op": 0, "inter_op": 0}}),
}


def one_run(setting: str, epochs: int) -> dict:
    """Train once in this process with `setting`; the seconds and a hash of the weights."""
    from stages.window import load_meta, load_split  # stages/__init__.py pins the kernels unless HAR_NUMERICS=native

    import numpy as np

    from har.config import load_params
    from har.numerics import setting as numerics_setting
    from har.training import train_model

    params = load_params()
    train_params = {**params["train"], **SETTINGS[setting][1], "epochs": epochs}
    train, val = load_split("train"), load_split("val")
    model, summary = train_model(train["X"], train["y"], val["X"], val["y"], n_classes=len(load_meta()["labels"]),
                                 model_params=params["model"], train_params=train_params, verbose=0)
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"setting": setting, "train_seconds": summary["train_seconds"], "weights_sha256": digest.hexdigest(),
            "numerics": numerics_setting()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs of each setting")
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)  # a child process: one run
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.one, args.epochs)))
        return
    from bench.timing import report

    load_before = os.getloadavg()
    rows = []
    for _ in range(args.runs):
        for setting, (environment, _) in SETTINGS.items():
            done = subprocess.run([sys.executable, "-m", "bench.train_determinism", "--one", setting,
                                   "--epochs", str(args.epochs)], capture_output=True, text=True, check=True,
                                  env={**os.environ, **environment})
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print({k: rows[-1][k] for k in ("setting", "train_seconds")}, flush=True)
    median = {s: statistics.median(r["train_seconds"] for r in rows if r["setting"] == s) for s in SETTINGS}
    hashes = {s: sorted({r["weights_sha256"] for r in rows if r["setting"] == s}) for s in SETTINGS}
    report({"epochs": args.epochs, "runs_per_setting": args.runs,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            **{f"median_train_s_{s}": median[s] for s in SETTINGS},
            "portable_over_native_deterministic": round(median["portable"] / median["native_deterministic"], 3),
            "portable_over_tensorflow_default": round(median["portable"] / median["tensorflow_default"], 3),
            **{f"distinct_weights_{s}": len(hashes[s]) for s in SETTINGS},
            "runs": rows}, "train_determinism")


if __name__ == "__main__":
    main()
