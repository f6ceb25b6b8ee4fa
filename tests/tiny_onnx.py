"""A tiny ONNX classifier built with onnx.helper (no TensorFlow): float32 [None, L, 6] -> softmax [None, k].

Mean over time, one dense layer, softmax; `labels` in metadata_props as the export stage writes them.
Enough for registry and drift tests that need a real ONNX file but not a trained network.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_onnx_model(path, labels=("sitting", "standing", "typing"), window_length: int = 200, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(6, len(labels))).astype(np.float32)
    bias = rng.normal(size=len(labels)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["windows", "axes"], ["mean"], keepdims=0),
         helper.make_node("MatMul", ["mean", "weights"], ["logits_raw"]),
         helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "tiny",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, [None, window_length, 6])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(labels)])],
        initializer=[numpy_helper.from_array(np.array([1], np.int64), "axes"),
                     numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, {"labels": json.dumps(list(labels))})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)
