"""export stage: models/model.keras -> models/model.onnx, stamped with metadata, checked for parity.

Converts (har/export.py) with tf2onnx in a process that sees no GPU (with a GPU visible, TensorFlow
picks the cuDNN LSTM kernel and tf2onnx cannot express it as a native ONNX LSTM). The same Keras
model gives the same ONNX bytes, so dvc.lock records one md5 for it on every machine. When Keras
and onnxruntime disagree on the test windows, the stage fails and no model is written. Report:
metrics/export.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from har.config import load_params, write_json
from har.export import export
from har.training import make_deterministic

KERAS_MODEL = Path("models/model.keras")
MODEL_INFO = Path("models/model.json")
ONNX_MODEL = Path("models/model.onnx")
TEST_WINDOWS = Path("data/windows/test.npz")
EVAL_METRICS = Path("metrics/eval.json")
REPORT = Path("metrics/export.json")


def main() -> int:
    params = load_params()
    # Keras's answers in the parity check (max_abs_diff in the report) the same to the bit on every run.
    make_deterministic(params["train"]["seed"], params["train"].get("threads"))
    info = json.loads(MODEL_INFO.read_text())
    with np.load(TEST_WINDOWS) as test:
        test_windows = test["X"]
    report = export(KERAS_MODEL, info, params, test_windows, ONNX_MODEL, eval_path=EVAL_METRICS)
    write_json(REPORT, report)
    p = report["parity"]
    print(f"export: {ONNX_MODEL} version {report['model_version']}; parity on {p['windows']} test windows: "
          f"max |p_keras - p_onnx| = {p['max_abs_diff']:.2e} (limit {p['atol']:g}), top-1 agreement {p['top1_agreement']:.4f}")
    if not p["passed"]:
        print(f"export: parity FAILED; {ONNX_MODEL} not written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
