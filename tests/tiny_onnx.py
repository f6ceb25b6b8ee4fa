"""A tiny ONNX classifier for registry and drift tests: the service tests' model, with any labels."""
from __future__ import annotations

from serve_helpers import tiny_graph, tiny_metadata

from har.modelfile import stamp


def tiny_onnx_model(path, labels=("sitting", "standing", "typing")) -> str:
    labels = list(labels)
    with open(path, "wb") as f:
        f.write(stamp(tiny_graph(labels), tiny_metadata(labels)))
    return str(path)
