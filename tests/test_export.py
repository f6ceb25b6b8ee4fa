"""The export stage on a tiny Conv1D + BiLSTM Keras model (never the real trained one)."""
import json

import numpy as np
import onnx
import pytest
import yaml

from har.config import load_params
from har.fusion import CHANNELS
from har.model import build_model, channel_stats, load_model
from har.runtime import ModelRuntime
from serve_helpers import ROOT

LABELS = ["sitting", "typing", "clapping"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with what the export stage reads: a tiny model, its info, test windows, eval, dvc.lock."""
    import keras

    root = tmp_path_factory.mktemp("project")
    (root / "models").mkdir()
    (root / "data/windows").mkdir(parents=True)
    (root / "metrics").mkdir()
    rng = np.random.default_rng(0)
    test_windows = (rng.normal(size=(300, 200, 6)) * [3, 3, 3, 1, 1, 1] + [0, 0, 9.8, 0, 0, 0]).astype(np.float32)
    np.savez(root / "data/windows/test.npz", X=test_windows, y=rng.integers(0, 3, 300))

    # The pipeline's own architecture at the tiny size (every layer type the real model has).
    keras.utils.set_random_seed(0)
    tiny = yaml.safe_load((ROOT / "conf/model/tiny.yaml").read_text())
    mean, variance = channel_stats(test_windows[:100])
    build_model(tiny, window_length=200, n_channels=6, n_classes=len(LABELS), mean=mean,
                variance=variance).save(root / "models/model.keras")
    (root / "models/model.json").write_text(json.dumps({
        "labels": LABELS, "window_length": 200, "target_hz": 50.0, "channels": CHANNELS,
        "units": {"acc": "m/s^2", "gyr": "rad/s"}, "train": {}}))
    (root / "metrics/eval.json").write_text(json.dumps({"macro_f1": 0.61, "accuracy": 0.7, "per_class": {}}))
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"window": {"outs": [
        {"path": "data/windows", "md5": "abc123.dir"}]}}}))
    return root


def run_export(project, monkeypatch, **export_settings):
    from stages import export

    params = load_params(ROOT / "params.yaml")
    params["serve"]["export"].update(export_settings)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "models/model.onnx").unlink(missing_ok=True)
    monkeypatch.chdir(project)
    return export.main()


@pytest.fixture(scope="module")
def exported(project):
    """One successful export: exit status, report, the model loaded as the service loads it, its op types."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        status = run_export(project, monkeypatch, parity_max_windows=200)
    model = project / "models/model.onnx"
    return (status, json.loads((project / "metrics/export.json").read_text()), ModelRuntime(model),
            {node.op_type for node in onnx.load(model).graph.node})


def test_the_exported_file_answers_as_the_keras_model_does(project, exported):
    """Parity judged here, not by the export stage's own report: both models on the same test windows."""
    import keras
    import onnxruntime

    status, report, _, _ = exported
    assert status == 0
    windows = np.load(project / "data/windows/test.npz")["X"]
    keras_probs = load_model(project / "models/model.keras").predict(windows, verbose=0)
    session = onnxruntime.InferenceSession(str(project / "models/model.onnx"), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {session.get_inputs()[0].name: windows})[0]
    assert onnx_probs.shape == keras_probs.shape == (300, len(LABELS))
    largest = float(np.max(np.abs(onnx_probs - keras_probs)))
    assert largest <= 1e-4
    assert np.array_equal(onnx_probs.argmax(axis=1), keras_probs.argmax(axis=1))  # top-1 agreement 1.0
    # The answers differ between windows by far more than the tolerance: a constant output would agree with anything.
    assert np.ptp(keras_probs, axis=0).min() > 1e-2
    # The stage's report says what we measured on its first 200 windows.
    assert report["parity"]["passed"] and report["parity"]["windows"] == 200
    assert report["parity"]["top1_agreement"] == 1.0
    assert report["parity"]["max_abs_diff"] <= largest + 1e-7


def test_export_writes_a_verified_model_that_matches_keras(exported):
    status, report, runtime, op_types = exported
    assert status == 0
    card = runtime.card  # loaded with its checksum verified
    assert card.labels == LABELS and card.name == "har" and card.version == report["model_version"]
    assert card.input_contract["channels"] == CHANNELS and card.input_contract["window_length"] == 200
    assert card.input_contract["units"] == {"acc": "m/s^2", "gyr": "rad/s"}
    assert card.preprocessing == {"target_hz": 50.0, "max_gap_s": 0.5, "lowpass_hz": 10.0, "window_length": 200,
                                  "overlap": 0.5}
    assert card.metrics == {"macro_f1": 0.61, "accuracy": 0.7}
    # Provenance from the files it came from; no git commit (it would change the bytes on every commit).
    assert card.data_hash == "abc123.dir" and card.git_commit is None
    assert (runtime.input_name, runtime.output_name) == ("windows", "probabilities")
    # Converted with no GPU visible, the BiLSTM is a native ONNX LSTM, not an unrolled loop.
    assert "LSTM" in op_types


def test_export_fails_and_writes_no_model_when_parity_fails(project, exported, monkeypatch):
    assert run_export(project, monkeypatch, parity_max_windows=50, parity_atol=-1.0) == 1
    report = json.loads((project / "metrics/export.json").read_text())
    assert report["parity"]["passed"] is False and report["parity"]["windows"] == 50
    assert not (project / "models/model.onnx").exists()
    # A second conversion of the same weights: the same version, and the same bytes (below).
    assert report["model_version"] == exported[1]["model_version"]


def test_the_same_keras_model_converts_to_the_same_bytes(project):
    """tf2onnx numbers its names from a process-wide counter, so two conversions in one process name their
    constants and nodes differently; after canonical_names the graphs are the same to the byte (dvc.lock
    records the ONNX file's md5)."""
    import keras

    from har.export import convert

    model = load_model(project / "models/model.keras", compile=False)
    first, _ = convert(model, 200, 6, opset=17)
    second, _ = convert(model, 200, 6, opset=17)
    assert first.SerializeToString() == second.SerializeToString()
    assert [t.name for t in first.graph.input] == ["windows"] and [t.name for t in first.graph.output] == ["probabilities"]


def test_a_calibrated_export_answers_softmax_of_logits_over_the_temperature(project, exported, monkeypatch):
    """With a temperature in eval.json, the ONNX model's probabilities are the calibrated ones: checked here against
    the uncalibrated model's own answers, sharpened by hand (softmax(log p / T)), not against the stage's report."""
    import keras

    eval_path = project / "metrics/eval.json"
    uncalibrated = eval_path.read_text()
    calibration = {"temperature": 0.5, "threshold": 0.7, "target_accuracy": 0.9, "ece_after": 0.02,
                   "selective": {"coverage": 0.8}}
    smoothing = {"switch_probability": 0.003, "threshold": 0.95, "validation": {}}
    eval_path.write_text(json.dumps({**json.loads(uncalibrated), "calibration": calibration, "smoothing": smoothing}))
    try:
        assert run_export(project, monkeypatch, parity_max_windows=200) == 0
    finally:
        eval_path.write_text(uncalibrated)
    runtime = ModelRuntime(project / "models/model.onnx")
    windows = np.load(project / "data/windows/test.npz")["X"][:64]
    raw = load_model(project / "models/model.keras").predict(windows, verbose=0).astype(np.float64)
    by_hand = np.exp(np.log(raw) / 0.5)
    by_hand /= by_hand.sum(axis=1, keepdims=True)
    assert np.abs(runtime.predict(windows) - by_hand).max() < 1e-4
    card = runtime.card
    assert card.calibration == {"temperature": 0.5, "threshold": 0.7, "target_accuracy": 0.9, "ece_after": 0.02,
                                "smoothing": {"switch_probability": 0.003, "threshold": 0.95}}
    assert card.switch_probability == 0.003 and card.abstain_threshold == 0.95  # timelines judge the posteriors
    assert card.version != exported[1]["model_version"]  # same weights, another calibration: another version
