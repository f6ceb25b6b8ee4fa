"""The retraining trigger: the policy as a function, and the command in dry-run (nothing is trained here)."""
import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from conftest import ROOT, WISDM_DIR
from log_helpers import one_audit_event, recorded_audit

from stages import retrain

POLICY = {"min_severity": "critical", "min_interval_hours": 24, "min_new_recordings": 20}


@pytest.mark.parametrize("severity, hours, new, triggered, failing", [
    ("critical", 48.0, 30, True, None),
    ("critical", None, 30, True, None),  # never trained: no interval to wait for
    ("none", 48.0, 30, False, "drift severity none"),
    ("warning", 48.0, 30, False, "drift severity warning"),
    ("critical", 2.0, 30, False, "2.0 h since the last training"),
    ("critical", 48.0, 5, False, "5 new labelled recordings"),
])
def test_policy_needs_drift_time_and_new_labels(severity, hours, new, triggered, failing):
    decided, reasons = retrain.retrain_decision(severity, hours, new, POLICY)
    assert decided is triggered
    assert len(reasons) == 3
    if failing:
        assert [r for r in reasons if r.startswith("[no]")] == [next(r for r in reasons if failing in r)]
    else:
        assert all(r.startswith("[yes]") for r in reasons)


def test_a_warning_is_enough_when_the_policy_says_so():
    assert retrain.retrain_decision("warning", 48.0, 30, {**POLICY, "min_severity": "warning"})[0]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """params.yaml, a drift report, labelled data with 24 recordings of which the last training knew 2."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["monitor"]["retrain"].update(POLICY, service_drift=None, labelled_raw=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    labelled = tmp_path / "labelled"
    for sensor in ("acc", "gyr"):
        (labelled / f"{sensor}_w").mkdir(parents=True)
    shutil.copy(WISDM_DIR / "activities.json", labelled)
    letters = {"D": "sitting", "E": "standing", "F": "typing"}  # all in the configured class set
    for n, (subject, letter) in enumerate((s, l) for s in range(1700, 1708) for l in letters):
        for sensor in ("acc", "gyr"):  # the trigger counts files; it never reads them
            (labelled / f"{sensor}_w" / f"{n:03d}_{sensor}_w_{subject}_{letter}.parquet").touch()
    (tmp_path / "known.csv").write_text("recording,subject\n1700_sitting,1700\n1700_standing,1700\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_trigger(workspace, severity, *extra, runner=None):
    (workspace / "drift.json").write_text(json.dumps({"severity": severity}))
    last = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
    calls = []

    def fake_run(command):
        calls.append(command)
        return type("Completed", (), {"returncode": 0})()

    code = retrain.main(["--drift", "drift.json", "--labelled-raw", str(workspace / "labelled"), "--known-index",
                         "known.csv", "--last-trained", last, *extra], run=runner or fake_run)
    return code, calls


def test_forced_drift_dry_run_says_it_would_retrain_and_runs_nothing(workspace, capsys):
    with recorded_audit() as events:
        code, calls = run_trigger(workspace, "critical", "--dry-run")
    out = capsys.readouterr().out
    assert code == 0 and calls == [] and events == []  # nothing changed: nothing to audit
    assert "TRIGGERED" in out and "22 new labelled recordings" in out
    assert f"would run `dvc exp run -S data.raw={workspace / 'labelled'}`" in out


def test_no_drift_dry_run_does_not_retrain_and_says_why(workspace, capsys):
    code, calls = run_trigger(workspace, "none", "--dry-run")
    out = capsys.readouterr().out
    assert code == 0 and calls == []
    assert "not triggered" in out and "[no] drift severity none" in out
    assert "would run" not in out


def test_the_service_live_summary_counts_when_it_has_enough_windows(workspace, capsys):
    service = workspace / "service_drift.json"
    service.write_text(json.dumps({"severity": "critical", "windows": 900, "enough_data": True}))
    run_trigger(workspace, "none", "--dry-run", "--service-drift", str(service))
    assert "TRIGGERED" in capsys.readouterr().out
    service.write_text(json.dumps({"severity": "critical", "windows": 10, "enough_data": False}))
    run_trigger(workspace, "none", "--dry-run", "--service-drift", str(service))
    out = capsys.readouterr().out
    assert "not triggered" in out and "too few to judge" in out


def test_when_triggered_it_runs_the_experiment_and_reports_the_gate(workspace, capsys):
    def experiment(command):  # stands in for `dvc exp run`, whose register stage writes the decision
        (workspace / "logs").mkdir()
        (workspace / "logs" / "register.json").write_text(json.dumps(
            {"version": 4, "promoted": False, "reasons": ["macro-F1 0.70 is worse than champion v3's 0.80"]}))
        calls.append(command)
        return type("Completed", (), {"returncode": 0})()

    calls = []
    with recorded_audit() as events:
        code, _ = run_trigger(workspace, "critical", runner=experiment)
    assert code == 0
    assert calls == [["dvc", "exp", "run", "-S", f"data.raw={workspace / 'labelled'}"]]
    assert "register gate: v4 not promoted" in capsys.readouterr().out
    one_audit_event(events, "retrain.trigger", severity="critical", counts={"new_recordings": 22},
                    command=" ".join(calls[0]))


def test_a_missing_drift_report_is_named(workspace):
    with pytest.raises(SystemExit, match="nowhere.json not found"):
        retrain.main(["--drift", "nowhere.json", "--dry-run"])


def test_a_failing_experiment_returns_its_exit_code(workspace, capsys):
    def failing(command):
        return type("Completed", (), {"returncode": 3})()

    code, _ = run_trigger(workspace, "critical", runner=failing)
    assert code == 3
    err = capsys.readouterr().err
    assert f"`dvc exp run -S data.raw={workspace / 'labelled'}` failed with exit code 3" in err


def test_without_last_trained_the_model_files_age_counts_when_no_registry_exists(workspace, capsys):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["registry"].update(tracking_uri=f"sqlite:///{workspace / 'no-registry.db'}", model="model.onnx")
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    (workspace / "drift.json").write_text(json.dumps({"severity": "critical"}))
    args = ["--drift", "drift.json", "--labelled-raw", str(workspace / "labelled"), "--known-index", "known.csv",
            "--dry-run"]
    assert retrain.main(args) == 0
    assert "[yes] never trained" in capsys.readouterr().out
    (workspace / "model.onnx").write_bytes(b"a model")
    ten_hours_ago = time.time() - 10 * 3600
    os.utime(workspace / "model.onnx", (ten_hours_ago, ten_hours_ago))
    assert retrain.main(args) == 0
    out = capsys.readouterr().out
    assert "not triggered" in out and "[no] 10.0 h since the last training, policy needs at least 24 h" in out
    assert not (workspace / "no-registry.db").exists()  # looking never creates an empty registry
