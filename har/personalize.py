"""Personalisation: the generic model's head refitted on a minute or so of one person's data.

The method (chosen on the validation subjects, see docs/personalisation.md and
metrics/personalize.json): the body of the network stays frozen. For each window onnxruntime
computes, once, the embedding `h` that feeds the last Dense layer and, where the graph has one,
the summary `u` that feeds the Dense layer before it (BiLSTM state and pooled convolution
features). The logits become

    z = s * (h W + b + u A)        W, b start at the generic weights; A (a residual) at zero

and W, b, A are fitted by class-balanced multinomial logistic regression with L2 penalties that
pull W, b toward the generic weights (`l2`) and A toward zero (`residual_l2`):

    minimise  mean_i w_i * CE(softmax(z_i), y_i) + l2/2 |W - W0|^2 + l2/2 |b - b0|^2 + residual_l2/2 |A|^2

`s` is 1 / temperature when the generic graph scales its logits before the softmax (calibration),
so the personal model keeps the generic model's calibration step. Only the columns of classes the
person recorded are fitted; a class they did not record keeps the generic weights exactly (and a
zero residual). L-BFGS on a convex problem: no randomness, the same data give the same model.

The new W and b are written into a copy of the generic ONNX graph's initializers, and A as one
MatMul + Add beside the last layer: no re-conversion, the same input contract.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from scipy.special import softmax
from threadpoolctl import threadpool_limits

from har.annotations import subject_recordings
from har.export import parity, parity_sample
from har.modelfile import read_card, stamp
from har.preprocessing import Preprocessing
from har.recording import Recording
from har.runtime import ModelRuntime
from har.windows import window_step

MIN_SECONDS_ADVISED = 30  # per class; below it the worst test subject lost up to 0.08 macro-F1


# ---------------------------------------------------------------- the last layer in the ONNX graph

@dataclass(frozen=True)
class Head:
    """probabilities = softmax(scale * (f @ weights + bias)) over features f = [h, u]:
    rows [:embedding] of `weights` are the last layer's W, the rest the residual A."""

    weights: np.ndarray  # float32 [features, classes]
    bias: np.ndarray  # float32 [classes]
    scale: float = 1.0  # 1 / temperature
    embedding: int | None = None  # rows that belong to h (None: all)

    def logits(self, f: np.ndarray) -> np.ndarray:
        return self.scale * (f.astype(np.float64) @ self.weights + self.bias)

    def probabilities(self, f: np.ndarray) -> np.ndarray:
        return softmax(self.logits(f), axis=1)


@dataclass(frozen=True)
class HeadNodes:
    """Where the head lives in the graph: tensor and initializer names."""

    embedding: str  # the tensor h
    matmul_output: str
    weights: str  # initializer
    bias: str | None  # initializer; None when the converter folded a zero bias away
    logits: str  # h W + b, before any temperature
    summary: str | None  # the tensor u: input of the Dense layer whose ReLU output is h (None if not found)


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def locate_head(model: onnx.ModelProto) -> tuple[HeadNodes, float]:
    """Walk back from the Softmax that produces the graph output: [Mul or Div by a scalar (temperature)]
    <- [Add bias] <- MatMul(h, W). Returns the names and the logit scale."""
    producer = {out: node for node in model.graph.node for out in node.output}
    output = model.graph.output[0].name
    node = producer.get(output)
    while node is not None and node.op_type == "Identity":
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Softmax":
        raise ValueError(f"the graph output {output!r} is not produced by a Softmax; cannot personalise this model")
    node, scale = producer.get(node.input[0]), 1.0
    if node is not None and node.op_type in ("Div", "Mul"):
        constant = _constant(model, node.input[1])
        if constant is None or constant.size != 1:
            raise ValueError(f"{node.op_type} before the Softmax is not by a scalar constant")
        scale = float(1.0 / constant.ravel()[0]) if node.op_type == "Div" else float(constant.ravel()[0])
        node = producer.get(node.input[0])
    bias, logits = None, node.output[0] if node is not None else None
    if node is not None and node.op_type == "Add":
        bias_name = next((i for i in node.input if _constant(model, i) is not None), None)
        bias, node = bias_name, producer.get(next(i for i in node.input if i != bias_name))
    if node is None or node.op_type != "MatMul" or _constant(model, node.input[1]) is None:
        raise ValueError("no MatMul with constant weights feeds the Softmax; cannot personalise this model")
    return HeadNodes(node.input[0], node.output[0], node.input[1], bias, logits, _dense_input(producer, node.input[0])), scale


def _dense_input(producer: dict, h: str) -> str | None:
    """u in h = Relu(u W' [+ b']), the previous Dense layer's input; None when h is made otherwise."""
    node = producer.get(h)
    if node is None or node.op_type != "Relu":
        return None
    node = producer.get(node.input[0])
    if node is not None and node.op_type == "Add":
        node = next((producer[i] for i in node.input if i in producer and producer[i].op_type == "MatMul"), None)
    return node.input[0] if node is not None and node.op_type == "MatMul" else None


def generic_head(model: onnx.ModelProto, features: int | None = None) -> Head:
    """The generic last layer as a Head over `features` inputs (h, then a zero residual for u)."""
    nodes, scale = locate_head(model)
    weights = _constant(model, nodes.weights).astype(np.float32)
    bias = _constant(model, nodes.bias).astype(np.float32).reshape(-1) if nodes.bias else np.zeros(weights.shape[1], np.float32)
    residual = np.zeros(((features or len(weights)) - len(weights), weights.shape[1]), np.float32)
    return Head(np.concatenate([weights, residual]), bias, scale, len(weights))


def with_embedding_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy that also outputs the embedding h and, where found, the summary u."""
    nodes, _ = locate_head(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in filter(None, (nodes.embedding, nodes.summary)):
        copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy


def write_head(model: onnx.ModelProto, head: Head) -> onnx.ModelProto:
    """A copy of the generic graph with `head`'s weights and bias in the last layer's initializers."""
    nodes, scale = locate_head(model)
    if not np.isclose(scale, head.scale):
        raise ValueError(f"the head was fitted at logit scale {head.scale}, the graph applies {scale}")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {init.name: init for init in copy.graph.initializer}

    def replace(name: str, value: np.ndarray) -> None:
        old = initializers[name]
        old.CopyFrom(numpy_helper.from_array(value.astype(np.float32).reshape(tuple(old.dims)), name))

    def add_after(tensor: str, new_nodes: list, output: str) -> None:
        """Insert `new_nodes` right after the producer of `tensor` and feed `output` to its consumers."""
        for node in copy.graph.node:
            if node.output[0] != output:
                node.input[:] = [output if i == tensor else i for i in node.input]
        position = next(i for i, n in enumerate(copy.graph.node) if tensor in n.output)
        for offset, node in enumerate(new_nodes, 1):
            copy.graph.node.insert(position + offset, node)

    embedding = head.embedding or len(head.weights)
    replace(nodes.weights, head.weights[:embedding])
    logits = nodes.logits
    if nodes.bias is not None:
        replace(nodes.bias, head.bias)
    else:  # the converter dropped an all-zero bias: add the Add node it would have had
        logits = nodes.matmul_output + "_personal_biased"
        copy.graph.initializer.append(numpy_helper.from_array(head.bias.astype(np.float32), "personal_bias"))
        add_after(nodes.matmul_output, [onnx.helper.make_node("Add", [nodes.matmul_output, "personal_bias"], [logits])],
                  logits)
    residual = head.weights[embedding:]
    if residual.size and np.any(residual):
        if nodes.summary is None:
            raise ValueError("the head has a residual but the graph has no summary tensor to feed it")
        copy.graph.initializer.append(numpy_helper.from_array(residual.astype(np.float32), "personal_residual"))
        added = logits + "_personal_residual"
        add_after(logits, [onnx.helper.make_node("MatMul", [nodes.summary, "personal_residual"], ["personal_residual_out"]),
                           onnx.helper.make_node("Add", [logits, "personal_residual_out"], [added])], added)
    onnx.checker.check_model(copy)
    return copy


# ---------------------------------------------------------------- fitting

def class_balanced_weights(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y)
    return 1.0 / counts[y]


def fit_head(h: np.ndarray, y: np.ndarray, generic: Head, *, l2: float, residual_l2: float | None = None,
             max_iter: int = 200) -> Head:
    """The generic head refitted on features (h, y); columns of classes absent from `y` stay the generic ones.

    Rows of the residual (beyond `generic.embedding`) are penalised by `residual_l2` (default `l2`)."""
    from scipy.optimize import minimize

    h = h.astype(np.float64)
    classes = np.unique(y)
    W0 = generic.weights.astype(np.float64)
    b0 = generic.bias.astype(np.float64)
    d = W0.shape[0]
    embedding = generic.embedding or d
    penalty = np.where(np.arange(d) < embedding, l2, l2 if residual_l2 is None else residual_l2)[:, None]
    sample_weight = class_balanced_weights(y)
    sample_weight = sample_weight / sample_weight.sum()
    onehot = np.zeros((len(y), W0.shape[1]))
    onehot[np.arange(len(y)), y] = 1.0

    def unpack(theta):
        W, b = W0.copy(), b0.copy()
        W[:, classes] = theta[:d * len(classes)].reshape(d, len(classes))
        b[classes] = theta[d * len(classes):]
        return W, b

    def loss_and_gradient(theta):
        W, b = unpack(theta)
        z = generic.scale * (h @ W + b)
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        dW, db = W[:, classes] - W0[:, classes], b[classes] - b0[classes]
        loss = -(sample_weight * (onehot * log_p).sum(axis=1)).sum() + 0.5 * ((penalty * dW ** 2).sum() + l2 * (db ** 2).sum())
        dz = generic.scale * (np.exp(log_p) - onehot) * sample_weight[:, None]
        grad_W = h.T @ dz[:, classes] + penalty * dW
        grad_b = dz[:, classes].sum(axis=0) + l2 * db
        return loss, np.concatenate([grad_W.ravel(), grad_b])

    start = np.concatenate([W0[:, classes].ravel(), b0[classes]])
    # One BLAS thread: these matrices are small, and on a busy machine extra threads only wait on
    # each other (measured: 0.06 s on one thread, 3 s on two busy cores).
    with threadpool_limits(1):
        result = minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    W, b = unpack(result.x)
    return Head(W.astype(np.float32), b.astype(np.float32), generic.scale, generic.embedding)


def prototype_probabilities(h_calib: np.ndarray, y_calib: np.ndarray, h: np.ndarray, generic_p: np.ndarray,
                            *, blend: float) -> np.ndarray:
    """The prototype candidate (evaluated on validation subjects, not shipped): distances to the
    person's class means in the embedding, as a softmax, blended with the generic probabilities."""
    classes = np.unique(y_calib)
    centres = np.stack([h_calib[y_calib == c].mean(axis=0) for c in classes])
    own = ((h_calib - centres[np.searchsorted(classes, y_calib)]) ** 2).sum(axis=1)
    temperature = max(float(np.median(own)), 1e-6)
    distance = ((h[:, None, :] - centres[None]) ** 2).sum(axis=2)
    q = np.zeros_like(generic_p, dtype=np.float64)
    q[:, classes] = softmax(-distance / temperature, axis=1)
    return (1 - blend) * generic_p + blend * q


# ---------------------------------------------------------------- data

@dataclass
class LabelledWindows:
    X: np.ndarray  # float32 [n, length, 6]
    y: np.ndarray  # label index [n]
    recording: np.ndarray  # recording id per window
    start_t: np.ndarray  # seconds from the recording's origin


def recordings_to_windows(recordings: list[Recording], labels: list[str],
                          preprocessing: Preprocessing) -> LabelledWindows:
    """The pipeline's fusion and windowing with the model's own settings (har.scoring.Preprocessing.from_card)."""
    parts = {"X": [], "y": [], "recording": [], "start_t": []}
    for recording in recordings:
        fused, _ = preprocessing.fuse(recording)
        X, start_t = preprocessing.cut(fused)
        parts["X"].append(X)
        parts["y"].append(np.full(len(X), labels.index(recording.activity)))
        parts["recording"].append(np.full(len(X), recording.recording_id, dtype=object))
        parts["start_t"].append(start_t)
    if not recordings:
        return LabelledWindows(np.empty((0, preprocessing.window_length, 6), np.float32), np.empty(0, int),
                               np.empty(0, object), np.empty(0))
    return LabelledWindows(*(np.concatenate(parts[k]) for k in ("X", "y", "recording", "start_t")))


def calibration_split(recording: np.ndarray, start_t: np.ndarray, *, seconds: float,
                      window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, evaluation) masks: windows lying wholly in the first `seconds` of their recording,
    and windows starting at least one window length after that (none when `seconds` is 0: all evaluate).

    The gap of one window keeps every evaluation window clear of every calibration window.
    """
    recording, start_t = np.asarray(recording), np.asarray(start_t, dtype=np.float64)
    origin = np.zeros(len(start_t))
    for name in np.unique(recording):
        mine = recording == name
        origin[mine] = start_t[mine].min()
    offset = start_t - origin
    if seconds <= 0:
        return np.zeros(len(start_t), bool), np.ones(len(start_t), bool)
    return offset + window_s <= seconds + 1e-9, offset >= seconds + window_s - 1e-9


def seconds_per_class(y: np.ndarray, labels: list[str], window_s: float, step_s: float) -> dict[str, float]:
    """Seconds of signal the windows of each class cover (overlapping windows counted once per step)."""
    counts = np.bincount(y, minlength=len(labels))
    return {label: round(float(n * step_s + (window_s - step_s if n else 0.0)), 1) for label, n in zip(labels, counts)
            if n}


def calibration_hash(X: np.ndarray, y: np.ndarray) -> str:
    """A content address of the calibration windows and their labels."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def head_version(generic_version: str, head: Head) -> str:
    digest = hashlib.sha256(generic_version.encode())
    digest.update(np.ascontiguousarray(head.weights).tobytes())
    digest.update(np.ascontiguousarray(head.bias).tobytes())
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------- the whole adaptation

def embed(model: onnx.ModelProto, X: np.ndarray, *, threads: int = 1, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(generic probabilities, features [h, u]) of windows X, with onnxruntime on `threads` threads."""
    import onnxruntime as ort

    from har.runtime import session_options

    session = ort.InferenceSession(with_embedding_output(model).SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: X[i:i + batch]}) for i in range(0, len(X), batch)]
    if not outputs:
        raise ValueError("no windows to embed")
    return (np.concatenate([o[0] for o in outputs]),
            np.concatenate([np.concatenate(o[1:], axis=1) for o in outputs]))


def metadata_of(model: onnx.ModelProto) -> dict[str, str]:
    """The model's metadata_props as stamped (strings; the checksum entry left out)."""
    return {p.key: p.value for p in model.metadata_props if p.key != "sha256"}


def personal_metadata(generic: dict[str, str], *, subject: str, head: Head, calibration: str,
                      seconds: dict[str, float], method: dict) -> dict[str, str]:
    """The generic model's metadata (labels, input contract, preprocessing, calibration...) and the person's."""
    import json

    return {**generic,
            "model_name": f"{generic['model_name']}-{subject}",
            "model_version": head_version(generic["model_version"], head),
            "subject": str(subject),
            "generic_model_name": generic["model_name"],
            "generic_model_version": generic["model_version"],
            "calibration_hash": calibration,
            "seconds_per_class": json.dumps(seconds),
            "personalisation": json.dumps(method)}


# ---------------------------------------------------------------- the method on one person's features

def uses_residual(settings: dict) -> bool:
    return settings["method"] == "head" and settings.get("residual_l2") is not None


def features_for(f: np.ndarray, generic: Head, settings: dict) -> np.ndarray:
    """[h, u] when the method fits the residual, else h alone."""
    return f if uses_residual(settings) else f[:, :generic.embedding]


def adapt(generic: Head, f: np.ndarray, y: np.ndarray, settings: dict) -> Head:
    """The person's head from features f = [h, u] (generic_head(model, f.shape[1]) as `generic`)."""
    if settings["method"] not in ("head", "generic"):
        raise ValueError(f"personalize.method must be 'head' or 'generic', got {settings['method']!r}")
    if settings["method"] == "generic" or len(y) == 0:
        return generic
    start = generic if uses_residual(settings) else Head(generic.weights[:generic.embedding], generic.bias,
                                                          generic.scale, generic.embedding)
    return fit_head(features_for(f, generic, settings), y, start, l2=float(settings["l2"]),
                    residual_l2=settings.get("residual_l2"), max_iter=int(settings["max_iter"]))


# ---------------------------------------------------------------- a person's model file

def keras_parity(keras_path: Path, head: Head, X: np.ndarray, onnx_probs: np.ndarray, atol: float) -> dict:
    """Keras's generic body (the inputs of the last two Dense layers: h, then u) with the new head,
    against onnxruntime."""
    import keras

    from har.model import load_model

    model = load_model(keras_path, compile=False)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    outputs = [dense[-1].input] + ([dense[-2].input] if head.embedding < len(head.weights) else [])
    predicted = keras.Model(model.inputs, outputs).predict(X, batch_size=256, verbose=0)
    f = np.concatenate([np.asarray(o) for o in (predicted if isinstance(predicted, list) else [predicted])], axis=1)
    return parity(head.probabilities(f).astype(np.float32), onnx_probs, atol)


def personalise(session: Path, subject: str, out: Path, params: dict, *, model_path: Path,
                keras_path: Path | None, seconds: float | None = None) -> dict:
    """Adapt, stamp, check parity; write `out` only when parity holds. Returns the report."""
    settings = params["personalize"]
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    data = model_path.read_bytes()
    card = read_card(data, str(model_path))  # the generic model, checksum verified
    model = onnx.load_from_string(data)
    recordings, read_report = subject_recordings(session, subject, labels=card.labels, data=params["data"])
    preprocessing = Preprocessing.from_card(card)
    windows = recordings_to_windows(recordings, card.labels, preprocessing)
    window_s = card.window_length / preprocessing.target_hz
    if seconds:  # only the first `seconds` of each recording (the personalize stage's calibration data)
        first, _ = calibration_split(windows.recording, windows.start_t, seconds=seconds, window_s=window_s)
        windows = LabelledWindows(*(getattr(windows, k)[first] for k in ("X", "y", "recording", "start_t")))
    if len(windows.y) == 0:
        raise SystemExit(f"personalize: {session} holds no complete {card.window_length}-sample window for "
                         f"subject {subject!r}")
    _, f = embed(model, windows.X, threads=int(settings["threads"]))
    generic = generic_head(model, f.shape[1])
    head = adapt(generic, f, windows.y, settings)
    step_s = window_step(card.window_length, preprocessing.overlap) / preprocessing.target_hz
    seconds = seconds_per_class(windows.y, card.labels, window_s, step_s)
    metadata = personal_metadata(
        {**metadata_of(model), "generic_sha256": card.sha256}, subject=subject, head=head,
        calibration=calibration_hash(windows.X, windows.y), seconds=seconds,
        method={k: settings.get(k) for k in ("method", "l2", "residual_l2", "max_iter")})
    personal = stamp(write_head(model, head), metadata)
    adapt_cpu, adapt_wall = time.process_time() - started_cpu, time.perf_counter() - started_wall

    sample = parity_sample(windows.X, int(params["serve"]["export"]["parity_max_windows"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    candidate = out.with_name(out.name + ".partial")
    candidate.write_bytes(personal)
    try:
        runtime = ModelRuntime(candidate)  # the service's loader: checksum and contract verified
        onnx_probs = runtime.predict(sample)
    finally:
        candidate.unlink()
    atol = float(params["serve"]["export"]["parity_atol"])
    _, f_sample = embed(model, sample)
    checks = {"numpy_head": parity(head.probabilities(features_for(f_sample, head, settings)).astype(np.float32),
                                   onnx_probs, atol)}
    if keras_path is not None and keras_path.exists():
        checks["keras"] = keras_parity(keras_path, head, sample, onnx_probs, atol)
    passed = all(c["passed"] for c in checks.values())
    if passed:
        out.write_bytes(personal)
    changed = np.flatnonzero(np.any(head.weights != generic.weights[:len(head.weights)], axis=0) | (head.bias != generic.bias))
    return {"subject": subject, "out": str(out), "written": passed, "model_name": runtime.card.name,
            "model_version": runtime.card.version, "sha256": runtime.card.sha256,
            "generic_model_version": card.version, "calibration_hash": metadata["calibration_hash"],
            "windows": int(len(windows.y)), "seconds_per_class": seconds,
            "classes_adapted": [card.labels[i] for i in changed],
            "adaptation_cpu_s": round(adapt_cpu, 3), "adaptation_wall_s": round(adapt_wall, 3),
            "read": read_report, "parity": checks}
