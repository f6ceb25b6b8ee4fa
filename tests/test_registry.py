"""The promotion gate, the MLflow registry round trip, rollback and loading by alias.

One SQLite registry in a temporary folder for the module (creating its tables is the slow part),
a tiny ONNX model built with onnx.helper, no TensorFlow.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, WISDM_DIR
from log_helpers import documented_fields, json_lines, one_audit_event, recorded_audit
from tiny_onnx import tiny_onnx_model

from har import registry
from har.audit import FIELDS, local_actor

NAME = "har-test"


# ---------------------------------------------------------------- the gate, as a pure function

@pytest.mark.parametrize("macro_f1, parity, champion, promote, reason", [
    (0.80, True, None, True, "no champion yet"),
    (0.80, False, None, False, "parity check did not pass"),
    (0.80, None, None, False, "parity unknown"),
    (None, True, None, False, "no test macro_f1"),
    (0.70, True, {"version": 1, "macro_f1": 0.80}, False, "worse than champion v1"),
    (0.795, True, {"version": 1, "macro_f1": 0.80}, True, "not worse"),
    (0.90, True, {"version": 1, "macro_f1": 0.80}, True, "not worse"),
    (0.90, False, {"version": 1, "macro_f1": 0.80}, False, "parity check did not pass"),
    (0.90, True, {"version": 1, "macro_f1": None}, False, "no macro-F1 comparable with this one: kept"),
])
def test_promotion_gate(macro_f1, parity, champion, promote, reason):
    decided, reasons = registry.promotion_decision(macro_f1, parity, champion, tolerance=0.01)
    assert decided is promote
    assert any(reason in r for r in reasons), reasons


def test_parity_is_read_defensively_from_the_export_report():
    assert registry.parity_passed({"parity": {"passed": True, "max_abs_diff": 1e-6}}) is True
    assert registry.parity_passed({"parity": {"passed": False}}) is False
    assert registry.parity_passed({}) is None
    assert registry.parity_passed({"parity": {"passed": "yes"}}) is None  # only a real boolean counts
    assert registry.parity_passed({"passed": True}) is None  # not where stages/export.py writes it


def test_data_hash_comes_from_the_window_stage_in_dvc_lock(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"window": {"outs": [
        {"path": "data/windows", "md5": "abc.dir"}, {"path": "metrics/windows.json", "md5": "def"}]}}}))
    assert registry.data_hash(lock) == "abc.dir"
    assert registry.data_hash(tmp_path / "missing.lock") is None


def test_queued_experiments_register_into_the_real_checkout(tmp_path):
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    assert registry.checkout_root(copy) == (tmp_path / "repo").resolve()
    assert registry.checkout_root(tmp_path) == tmp_path.resolve()


def test_metrics_are_flattened_to_finite_numbers():
    metrics = {"macro_f1": 0.8, "passed": True, "per_class": {"sitting": {"f1": 0.9}}, "labels": ["a"], "nan": float("nan")}
    assert registry.numeric(metrics, "test.") == {"test.macro_f1": 0.8, "test.per_class.sitting.f1": 0.9}


# ---------------------------------------------------------------- the registry round trip

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry")
    model = tiny_onnx_model(folder / "model.onnx")
    (folder / "drift_reference.json").write_text(json.dumps({"channels": {}, "note": "shipped with the model"}))
    return {"uri": f"sqlite:///{folder / 'mlflow.db'}", "model": model, "folder": folder}


@pytest.fixture(scope="module")
def history(store):
    """v1 first (promoted), v2 clearly worse (kept out), v3 within the tolerance (promoted)."""
    def register(f1, **extra):
        return registry.register_model(
            store["model"], name=NAME, experiment="test", params={"train": {"lr": 0.001, "units": [64, 64]}},
            eval_metrics={"macro_f1": f1, "per_class": {"sitting": {"f1": f1}}}, export_metrics={"parity": {"passed": True}},
            tolerance=0.01, uri=store["uri"], provenance={"git_commit": "c0ffee", "data_hash": "d4t4.dir"},
            extra_files=[store["folder"] / "drift_reference.json"], **extra)
    return [register(0.80), register(0.70), register(0.795)]


def client(store):
    return registry.connect(store["uri"])


def test_champion_moves_only_through_the_gate(store, history):
    first, worse, close = history
    assert (first["version"], first["promoted"], first["champion_version"]) == (1, True, 1)
    assert (worse["version"], worse["promoted"], worse["champion_version"]) == (2, False, 1)
    assert (close["version"], close["promoted"], close["champion_version"]) == (3, True, 3)
    mlflow_client = client(store)
    assert int(mlflow_client.get_model_version_by_alias(NAME, "champion").version) == 3
    assert int(mlflow_client.get_model_version_by_alias(NAME, "challenger").version) == 3
    assert mlflow_client.get_model_version(NAME, "2").tags["gate"] == "failed"


def test_versions_carry_provenance_and_the_run_its_params_and_metrics(store, history):
    mlflow_client = client(store)
    version = mlflow_client.get_model_version(NAME, "1")
    assert version.tags["git_commit"] == "c0ffee" and version.tags["data_hash"] == "d4t4.dir"
    assert version.tags["model_sha256"] == hashlib.sha256(open(store["model"], "rb").read()).hexdigest()
    run = mlflow_client.get_run(history[0]["run_id"])
    assert run.data.metrics["test.macro_f1"] == 0.80
    assert run.data.params["train.lr"] == "0.001"


def test_champion_loads_as_the_same_onnx_file_with_its_drift_reference(store, history, tmp_path):
    path = registry.load_onnx_from_registry(f"models:/{NAME}@champion", tmp_path / "download", tracking=store["uri"])
    assert path.suffix == ".onnx"
    # Byte for byte: the service verifies the checksum stamped into the file's metadata.
    assert path.read_bytes() == open(store["model"], "rb").read()
    assert json.loads((path.parent / "drift_reference.json").read_text())["note"] == "shipped with the model"
    import onnx
    from mlflow.models import Model

    signature = Model.load(str(path.parent / "MLmodel")).signature
    assert tuple(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 200, 6)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["labels"]) == ["sitting", "standing", "typing"]


def test_plain_paths_pass_through_and_missing_ones_are_named(store, tmp_path):
    assert str(registry.load_onnx_from_registry(store["model"])) == store["model"]
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        registry.load_onnx_from_registry(tmp_path / "nowhere.onnx")


def test_rollback_moves_champion_to_a_named_version(store, history):
    result = registry.rollback(NAME, 2, reason="v3 misreads typing", uri=store["uri"])
    assert (result["champion_before"], result["champion_version"], result["gate"]) == (3, 2, "failed")
    version = client(store).get_model_version_by_alias(NAME, "champion")
    assert int(version.version) == 2 and version.tags["rolled_back_from"] == "3"
    assert version.tags["rollback_reason"] == "v3 misreads typing"
    with pytest.raises(ValueError, match=r"no version 9 \(versions: \[1, 2, 3\]\)"):
        registry.rollback(NAME, 9, uri=store["uri"])
    registry.rollback(NAME, 3, uri=store["uri"])


def test_register_promote_and_rollback_each_write_one_audit_event(store):
    name = "har-audited"
    with recorded_audit() as events:
        first = registry.register_model(store["model"], name=name, experiment="test", params={},
                                        eval_metrics={"macro_f1": 0.8}, export_metrics={"parity": {"passed": True}},
                                        tolerance=0.01, uri=store["uri"])
        worse = registry.register_model(store["model"], name=name, experiment="test", params={},
                                        eval_metrics={"macro_f1": 0.5}, export_metrics={"parity": {"passed": True}},
                                        tolerance=0.01, uri=store["uri"], actor="token:admin")
        registry.rollback(name, 2, reason="v1 misreads typing", uri=store["uri"])
    assert [e["action"] for e in events] == ["registry.register", "registry.promote", "registry.register",
                                             "registry.rollback"]
    actor = local_actor()
    one_audit_event(events, "registry.register", version="1", model=name, actor=actor, run_id=first["run_id"],
                    gate="passed", subject=None, counts=None)
    one_audit_event(events, "registry.promote", version="1", champion_before=None, macro_f1=0.8, actor=actor)
    one_audit_event(events, "registry.register", version="2", gate="failed", actor="token:admin",
                    run_id=worse["run_id"])
    one_audit_event(events, "registry.rollback", version="2", champion_before=1, reason="v1 misreads typing",
                    gate="failed", actor=actor)


def test_a_personal_model_registered_is_audited_with_its_subject(store):
    with recorded_audit() as events:
        registry.register_personal_model(store["model"], name="har-test-s07", experiment="personal",
                                         tags={"subject": "s07"}, generic_name=NAME, uri=store["uri"])
    one_audit_event(events, "registry.register", subject="s07", model="har-test-s07", version="1", alias="champion")
    one_audit_event(events, "registry.promote", subject="s07", model="har-test-s07", version="1", champion_before=None)


def test_the_rollback_command_writes_its_audit_event_as_a_json_line(store, history):
    done = subprocess.run([sys.executable, "-m", "stages.rollback", "1", "--model", NAME, "--reason", "audit check",
                           "--log-format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": store["uri"]})
    assert done.returncode == 0, done.stderr[-2000:]
    audits = [e for e in json_lines(done.stderr) if e["logger"] == "audit"]
    assert len(audits) == 1 and audits[0]["message"] == "audit"
    assert {k: audits[0][k] for k in ("action", "model", "version", "reason")} == {
        "action": "registry.rollback", "model": NAME, "version": "1", "reason": "audit check"}
    assert set(documented_fields("The audit event")) >= set(FIELDS)
    registry.rollback(NAME, 3, uri=store["uri"])  # as the module's other tests expect it


# ---------------------------------------------------------------- the stage

def test_register_stage_refuses_promotion_without_a_parity_verdict(store, tmp_path, monkeypatch):
    from stages import register

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["registry"]["model_name"] = "har-stage-test"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "models").mkdir()
    shutil.copy(store["model"], tmp_path / "models" / "model.onnx")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps({"macro_f1": 0.9, "accuracy": 0.91}))
    (tmp_path / "dvclive" / "plots").mkdir(parents=True)
    (tmp_path / "dvclive" / "plots" / "loss.tsv").write_text("step\tloss\n0\t1.0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])

    register.main()  # no metrics/export.json: parity unknown

    decision = json.loads((tmp_path / "logs" / "register.json").read_text())
    # The tracked record holds only what the files determine: nothing of the registry's state (version,
    # run id, champion), which differs between a fresh clone and a developer's machine.
    submitted = json.loads((tmp_path / "metrics" / "register.json").read_text())
    assert submitted == {"model_name": "har-stage-test", "model_sha256": decision["model_sha256"],
                         "data_hash": decision["data_hash"], "macro_f1": 0.9, "parity_passed": None, "tolerance": 0.01}
    assert decision["version"] == 1 and decision["promoted"] is False and decision["champion_version"] is None
    assert any("parity unknown" in r for r in decision["reasons"])
    artifacts = [a.path for a in client(store).list_artifacts(decision["run_id"])]
    assert "dvclive" in artifacts


def test_champion_is_rescored_only_when_its_windows_differ_or_are_unknown():
    calls = []

    def rescore(uri, seen):
        calls.append((uri, seen))
        return 0.5, ""

    champion = {"version": 2, "macro_f1": 0.7, "data_hash": "abc.dir", "subjects_seen": ["s1"]}
    assert registry.comparable_champion(champion, "abc.dir", rescore, NAME) == (champion, []) and not calls
    rescored, notes = registry.comparable_champion({**champion, "data_hash": None}, "unknown", rescore, NAME)
    assert rescored["macro_f1"] == 0.5 and calls == [(f"models:/{NAME}/2", ["s1"])]
    assert "data hash unknown, macro-F1 0.7000); re-scored on this test split: 0.5000" in notes[0]

    def broken(uri, seen):
        raise OSError("artifact store unreachable")

    rescored, notes = registry.comparable_champion(champion, "new.dir", broken, NAME)
    assert rescored["macro_f1"] is None
    assert "re-scoring failed (OSError: artifact store unreachable)" in notes[0]


SAME = ["sitting", "standing", "typing"]  # the champion's labels (tiny_onnx_model)


@pytest.mark.parametrize("seen, labels, length, rescored, reason", [
    (["s1", "s2"], SAME, 200, 1.0, "re-scored on this test split: 1.0000"),
    # A champion that learned from today's test subject would score itself on its own training data.
    (["s1", "s9"], SAME, 200, None, "it learned from subjects ['s9'], who are in this test split"),
    (None, SAME, 200, None, "the subjects it learned from are not recorded"),
    # A champion for other classes or another window length cannot be scored on these windows at all.
    (["s1", "s2"], ["sitting", "standing", "walking"], 200, None, "its labels or window length differ from this split's"),
    (["s1", "s2"], SAME, 100, None, "its labels or window length differ from this split's"),
])
def test_a_champion_evaluated_on_other_windows_is_rescored_only_where_that_is_fair(
        store, tmp_path, monkeypatch, seen, labels, length, rescored, reason):
    """v1 scored 0.2 on an older split; on today's test windows it is perfect, so a 0.6 challenger
    must not replace it, although 0.6 > 0.2. Where v1 cannot be scored fairly, it is kept too."""
    import numpy as np

    from har.runtime import ModelRuntime
    from serve_helpers import random_windows
    from stages import register

    name = f"har-rescore-{len(seen or [])}-{rescored}-{labels[-1]}-{length}"
    provenance = {"data_hash": "an-older-split.dir", **({"subjects_seen": json.dumps(seen)} if seen else {})}
    registry.register_model(store["model"], name=name, experiment="test", params={}, eval_metrics={"macro_f1": 0.2},
                            export_metrics={"parity": {"passed": True}}, tolerance=0.01, uri=store["uri"],
                            provenance=provenance)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["registry"]["model_name"] = name
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "models").mkdir()
    shutil.copy(store["model"], tmp_path / "models" / "model.onnx")
    windows = tmp_path / "data" / "windows"
    windows.mkdir(parents=True)
    X = random_windows(90)
    # Labels the champion gets right: its own answers, every class present.
    y = ModelRuntime(store["model"]).predict(X).argmax(axis=1)
    assert len(np.unique(y)) == 3
    X = X[:, :length]
    np.savez(windows / "test.npz", X=X, y=y)
    (windows / "meta.json").write_text(json.dumps(
        {"labels": labels, "subjects": {"train": ["s3", "s4"], "val": ["s5"], "test": ["s9"]}}))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps({"macro_f1": 0.6}))
    (tmp_path / "metrics" / "export.json").write_text(json.dumps({"parity": {"passed": True}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])

    register.main()

    decision = json.loads((tmp_path / "logs" / "register.json").read_text())
    assert decision["promoted"] is False and decision["champion_version"] == 1
    assert decision["champion_before"]["macro_f1"] == rescored
    assert any(reason in r for r in decision["reasons"])
    if rescored is None:  # kept, and the record says why it was not compared
        assert any("no macro-F1 comparable with this one: kept" in r for r in decision["reasons"])
    champion = client(store).get_model_version_by_alias(name, "champion")
    assert int(champion.version) == 1 and champion.tags["gate"] == "passed"
    assert client(store).get_model_version(name, str(decision["version"])).tags["gate"] == "failed"
    # The new version records whom it learned from, for the next comparison.
    version = client(store).get_model_version(name, str(decision["version"]))
    assert json.loads(version.tags["subjects_seen"]) == ["s3", "s4", "s5"]


def test_the_retrain_trigger_reads_the_time_since_training_from_the_registry(store, history, tmp_path, monkeypatch,
                                                                            capsys):
    """No --last-trained: the newest registered version is minutes old, so the 24-hour interval holds it back,
    although a model file beside it is days old."""
    import os
    import time

    from stages import retrain

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["registry"].update(tracking_uri=store["uri"], model_name=NAME, model="model.onnx")
    params["monitor"]["retrain"].update(min_severity="critical", min_interval_hours=24, min_new_recordings=0,
                                        service_drift=None, labelled_raw=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "drift.json").write_text(json.dumps({"severity": "critical"}))
    (tmp_path / "model.onnx").write_bytes(b"an old model file")
    three_days_ago = time.time() - 72 * 3600
    os.utime(tmp_path / "model.onnx", (three_days_ago, three_days_ago))
    (tmp_path / "labelled" / "acc_w").mkdir(parents=True)
    (tmp_path / "labelled" / "gyr_w").mkdir()
    shutil.copy(WISDM_DIR / "activities.json", tmp_path / "labelled")
    monkeypatch.chdir(tmp_path)
    assert retrain.main(["--drift", "drift.json", "--labelled-raw", str(tmp_path / "labelled"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "not triggered" in out and "[no] 0.0 h since the last training, policy needs at least 24 h" in out
