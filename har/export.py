"""A trained Keras model as the ONNX file the service loads: converted, named canonically, calibrated, stamped
with its metadata, and checked for parity with Keras (the export stage, stages/export.py, runs `export`).

The ONNX file carries its labels, input contract, preprocessing, provenance (data hash, the Keras
file's md5) and test metrics, plus a checksum the service verifies (har/modelfile.py). No git commit
and no time: the same Keras model gives the same ONNX bytes (names canonicalised, `canonical_names`).
Keras and onnxruntime must agree on the test windows: max |p_keras - p_onnx| <= serve.export.parity_atol
and identical top-1, or no model is written. TensorFlow is imported only inside the functions that
need it, so that the caller decides first which devices it may see.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

from har.modelfile import stamp
from har.registry import data_hash
from har.runtime import ModelRuntime

INPUT_NAME, OUTPUT_NAME = "windows", "probabilities"


def load_keras(path: Path):
    from har.model import load_model

    return load_model(path, compile=False)


def convert(keras_model, window_length: int, channels: int, opset: int) -> tuple[onnx.ModelProto, str]:
    """The Keras model as ONNX (input `windows` [batch, length, channels], output `probabilities`) and the converter."""
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec([None, window_length, channels], tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=signature, opset=opset)
    return canonical_names(rename_output(proto, OUTPUT_NAME)), f"tf2onnx {tf2onnx.__version__}, opset {opset}"


def canonical_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with its constants, intermediate tensors and nodes named by position.

    tf2onnx numbers the names it makes from a process-wide counter, and its constant folding keeps
    one of several equal constants chosen by set order (which Python's hash seed changes between
    processes): the same model converts to equivalent graphs with other names, hence other bytes.
    Named by where they first occur in the (deterministic) node order, with the unknown dimensions'
    symbols likewise, the bytes depend on the model alone. The graph's own input and output keep
    their names (the service's contract).
    """
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ValueError("canonical_names: the converted graph has subgraphs (a Loop or If), which it cannot rename")
    fixed = {t.name for t in graph.input} | {t.name for t in graph.output}
    constants = {t.name for t in graph.initializer}
    mapping = {}
    for node in graph.node:
        for name in node.input:
            if name in constants and name not in mapping:
                mapping[name] = f"const_{len(mapping)}"
    unused = sorted(constants - set(mapping))
    mapping.update({name: f"unused_const_{i}" for i, name in enumerate(unused)})
    for i, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{i}"
        for j, name in enumerate(node.output):
            if name and name not in fixed:
                mapping[name] = f"{node.op_type}_{i}_out{j}"
    for node in graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
    for tensor in list(graph.initializer) + list(graph.value_info):
        tensor.name = mapping.get(tensor.name, tensor.name)
    symbols = {}  # the counter's names of unknown dimensions (unk__230: the batch), by first appearance too
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = symbols.setdefault(dim.dim_param, f"dim_{len(symbols)}")
    order = {name: i for i, name in enumerate(mapping.values())}
    initializers = sorted(graph.initializer, key=lambda t: order[t.name])
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return model


def with_softmax(model, temperature: float | None, *, exact: bool):
    """The same network answering softmax(logits / T) (T = 1 where None).

    exact=False: Keras' Softmax, which tf2onnx writes as one ONNX Softmax (what onnxruntime runs fastest, and
    where har/personalize.py finds the head); exact=True: har/layers.py's, the parity check's reference, the
    same on every CPU. With a temperature, the ONNX model's probabilities are the calibrated ones
    (har/calibration.py), and the parity check compares them with the calibrated Keras model's.
    """
    import keras
    from keras import layers

    from har import layers as exact_layers

    logits = model.get_layer("logits").output
    if temperature is not None:
        logits = layers.Rescaling(1.0 / float(temperature), name="temperature")(logits)
    outputs = (exact_layers.Softmax if exact else layers.Softmax)(name="probabilities")(logits)
    return keras.Model(model.inputs, outputs, name=model.name)


def calibration_of(eval_path: Path) -> dict:
    """The temperature, abstention threshold, timeline smoothing and minutes estimator the evaluate stage chose on
    the validation subjects ({} if none)."""
    if not eval_path.exists():
        return {}
    metrics = json.loads(eval_path.read_text())
    calibration = metrics.get("calibration") or {}
    chosen = {k: calibration[k] for k in ("temperature", "threshold", "target_accuracy", "ece_after") if k in calibration}
    if metrics.get("smoothing"):  # timelines: the HMM's switch probability and the threshold on its posteriors
        chosen["smoothing"] = {k: metrics["smoothing"][k] for k in ("switch_probability", "threshold")}
    if metrics.get("minutes"):  # minutes per activity: the estimator's posteriors and its interval (har/minutes.py)
        chosen["minutes"] = {k: metrics["minutes"][k]
                             for k in ("method", "switch_probability", "interval_scale", "coverage")}
    return chosen


def weights_version(keras_model, calibration: dict | None = None) -> str:
    """The model version: a content address of the trained weights and the calibration (same both, same version).

    Not a hash of the ONNX graph: tf2onnx numbers its node names from a process-wide counter,
    so the same model converts to differently named (equivalent) graphs.
    """
    digest = hashlib.sha256(json.dumps(calibration, sort_keys=True).encode() if calibration else b"")
    for array in keras_model.get_weights():
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def rename_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """Give the single graph output a stable name (tf2onnx names it after the last Keras layer)."""
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    model.graph.output[0].name = name
    return model


def parity(keras_probs: np.ndarray, onnx_probs: np.ndarray, atol: float) -> dict:
    """How far onnxruntime's answers are from Keras's on the same windows."""
    max_diff = float(np.abs(keras_probs - onnx_probs).max()) if len(keras_probs) else 0.0
    agreement = float(np.mean(keras_probs.argmax(1) == onnx_probs.argmax(1))) if len(keras_probs) else 1.0
    return {"windows": int(len(keras_probs)), "max_abs_diff": max_diff, "atol": atol, "top1_agreement": agreement,
            "passed": bool(max_diff <= atol and agreement == 1.0)}


def parity_sample(windows: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` windows spread evenly over the (subject-ordered) test set: every subject and class shows up."""
    if len(windows) <= limit:
        return windows
    return windows[np.unique(np.linspace(0, len(windows) - 1, limit).round().astype(int))]


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def scalar_metrics(eval_path: Path) -> dict:
    """The headline test metrics: top-level numbers of metrics/eval.json (per-class tables stay there)."""
    if not eval_path.exists():
        return {}
    metrics = json.loads(eval_path.read_text())
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def build_metadata(info: dict, params: dict, *, version: str, metrics: dict, calibration: dict,
                   data_hash: str | None, keras_md5: str, converter: str) -> dict:
    """Everything the service and the registry need to know about the model, from the files it came from
    (`info`: the train stage's models/model.json)."""
    window_length, target_hz = int(info["window_length"]), float(info["target_hz"])
    if window_length != params["window"]["length"] or target_hz != float(params["data"]["target_hz"]):
        raise ValueError(f"models/model.json: window_length {window_length} at {target_hz} Hz, but params.yaml says "
                         f"{params['window']['length']} at {params['data']['target_hz']} Hz: retrain (dvc repro)")
    return {
        "model_name": params["serve"].get("model_name", "har"),
        "model_version": version,
        "labels": list(info["labels"]),
        "input_contract": {"input": INPUT_NAME, "output": OUTPUT_NAME, "dtype": "float32",
                           "shape": [None, window_length, len(info["channels"])], "window_length": window_length,
                           "target_hz": target_hz, "channels": list(info["channels"]), "units": info["units"]},
        "preprocessing": {"target_hz": target_hz, "max_gap_s": float(params["data"]["max_gap_s"]),
                          "lowpass_hz": params["data"]["lowpass_hz"], "window_length": window_length,
                          "overlap": float(params["window"]["overlap"])},
        "metrics": metrics,
        "calibration": calibration,
        "data_hash": data_hash or "unknown",
        "keras_model_md5": keras_md5,
        "converter": converter,
    }


def export(keras_path: Path, info: dict, params: dict, test_windows: np.ndarray, out_path: Path, *,
           lock_path: Path = Path("dvc.lock"), eval_path: Path = Path("metrics/eval.json")) -> dict:
    """Convert, stamp, and check parity; write `out_path` only when parity holds. Returns the report."""
    settings = params["serve"]["export"]
    keras_model = load_keras(keras_path)
    calibration = calibration_of(eval_path)
    version = weights_version(keras_model, calibration)
    temperature = calibration["temperature"] if calibration else None
    model, converter = convert(with_softmax(keras_model, temperature, exact=False), int(info["window_length"]),
                               len(info["channels"]), settings["opset"])
    metadata = build_metadata(info, params, version=version, metrics=scalar_metrics(eval_path), calibration=calibration,
                              data_hash=data_hash(lock_path), keras_md5=file_md5(keras_path), converter=converter)
    data = stamp(model, metadata)

    windows = parity_sample(test_windows, settings["parity_max_windows"])
    with tempfile.TemporaryDirectory() as folder:
        candidate = Path(folder) / "model.onnx"
        candidate.write_bytes(data)
        runtime = ModelRuntime(candidate)  # the service's own loader: checksum and contract checked too
        onnx_probs = runtime.predict(windows)
    report = {"model_version": metadata["model_version"], "sha256": runtime.card.sha256,
              "onnx_bytes": len(data),
              "parity": parity(with_softmax(keras_model, temperature, exact=True).predict(windows, batch_size=256, verbose=0),
                               onnx_probs, float(settings["parity_atol"]))}
    if report["parity"]["passed"]:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_bytes(data)
    return report
