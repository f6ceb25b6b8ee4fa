"""The summary ./setup.sh prints after `dvc repro`."""
import json
import runpy

from conftest import ROOT


def test_summary_shows_model_baseline_drift_and_registry(tmp_path, monkeypatch, capsys):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "eval.json").write_text(json.dumps({"macro_f1": 0.71234, "accuracy": 0.7}))
    (metrics / "baseline.json").write_text(json.dumps({"macro_f1": 0.65}))
    (metrics / "drift.json").write_text(json.dumps({"severity": "critical", "control": {"severity": "none"}}))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "register.json").write_text(json.dumps({"model_name": "har", "version": 3, "promoted": True}))
    (metrics / "windows.json").write_text(json.dumps({"quality": {"min_motion_ratio": 0.5, "excluded_subjects": ["1637", "1640"]}}))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "scripts" / "summary.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "CNN-BiLSTM                  0.7123" in out and "baseline (random forest)    0.65" in out
    assert "production recordings             critical" in out and "har v3, promoted to champion" in out
    assert "(no wrist motion)       1637, 1640" in out
    assert "ONNX parity (max |p_keras - p_onnx|)       -" in out  # missing files show as '-', not a crash


def test_summary_says_when_the_wrist_motion_check_is_off(tmp_path, monkeypatch, capsys):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "windows.json").write_text(json.dumps({"quality": {"min_motion_ratio": None,
                                                                               "excluded_subjects": []}}))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "scripts" / "summary.py"), run_name="__main__")
    assert "(no wrist motion)       check off" in capsys.readouterr().out
