"""One onnxruntime session over a verified model file: windows in, probabilities out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from har.modelfile import ModelCard, ModelFileError, read_card


def model_file(model, tracking: str | None = None) -> Path:
    """A local ONNX file for a path, or for a registry URI (models:/<name>@<alias>), which is
    downloaded with the drift reference registered beside it. `tracking`: the configured
    tracking URI (MLFLOW_TRACKING_URI wins)."""
    if str(model).startswith("models:/"):
        from har.registry import load_onnx_from_registry, tracking_uri

        return load_onnx_from_registry(str(model), tracking=tracking_uri(tracking))
    return Path(model)


def session_options(threads: int = 1):
    """onnxruntime's options for every session of this project (the service, batch scoring, the stages).

    Graph optimisations stop at the extended level: the next level rewrites convolutions into a blocked
    layout (NCHWc) whose block is the CPU's vector width, so AVX2 and AVX-512 machines would answer in
    other last bits (har/numerics.py). It costs about a tenth of the throughput.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle worker threads would otherwise spin and steal the CPU that request handling needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class ModelRuntime:
    """The model the service answers with. `predict` is thread-safe (onnxruntime sessions are)."""

    def __init__(self, path: str | Path, *, threads: int = 1):
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read the model file ({exc.strerror})") from None
        # The session is built from the very bytes that were verified, never from a second read.
        self.card: ModelCard = read_card(data, str(path))
        self.session = ort.InferenceSession(data, session_options(threads), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._check_contract(path)

    def _check_contract(self, path: Path) -> None:
        """The graph's input and output must agree with what the metadata promises clients."""
        shape = self.session.get_inputs()[0].shape
        expected = [self.card.window_length, len(self.card.channels)]
        if len(shape) != 3 or list(shape[1:]) != expected:
            raise ModelFileError(f"{path}: graph input shape {shape} does not match the metadata's "
                                 f"[batch, {expected[0]}, {expected[1]}]")
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.card.labels):
            raise ModelFileError(f"{path}: graph outputs {classes} classes but the metadata lists "
                                 f"{len(self.card.labels)} labels")

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities [n, labels] for float32 windows [n, window_length, channels]."""
        if len(windows) == 0:
            return np.empty((0, len(self.card.labels)), np.float32)
        return self.session.run([self.output_name], {self.input_name: windows})[0]
