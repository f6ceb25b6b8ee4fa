"""scripts/reproduce_check.py's verdict: which outputs of a rerun differ from the committed dvc.lock.

The script itself reruns the pipeline (minutes); here its comparison runs on a small git repository
whose lock and tracked metrics file a "rerun" changed.
"""
import importlib.util
import subprocess

import yaml

from serve_helpers import ROOT

spec = importlib.util.spec_from_file_location("reproduce_check", ROOT / "scripts" / "reproduce_check.py")
reproduce_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce_check)


def lock(model_md5: str, metrics_md5: str) -> str:
    return yaml.safe_dump({"schema": "2.0", "stages": {
        "window": {"outs": [{"path": "data/windows", "md5": "w.dir"}]},
        "train": {"outs": [{"path": "models/model.keras", "md5": model_md5},
                           {"path": "metrics/train.json", "md5": metrics_md5}]}}})


def test_a_changed_output_or_tracked_file_is_reported_and_the_rest_is_same(tmp_path):
    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train.json").write_text('{"best_epoch": 3}\n')
    (tmp_path / "README.md").write_text("figures\n")
    (tmp_path / "dvc.lock").write_text(lock("aaa", "bbb"))
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "run")
    committed = (tmp_path / "dvc.lock").read_text()

    # The rerun gave the same files: every row the same, nothing else changed.
    rows = reproduce_check.compare(tmp_path, committed, {"train"})
    assert rows == [("metrics/train.json", "bbb", "bbb"), ("models/model.keras", "aaa", "aaa")]

    # Another model and a tracked file that no stage lists as an output (a README the pipeline rewrote).
    (tmp_path / "dvc.lock").write_text(lock("ccc", "bbb"))
    (tmp_path / "README.md").write_text("other figures\n")
    rows = reproduce_check.compare(tmp_path, committed, {"train"})
    assert [row for row in rows if row[1] != row[2]] == [
        ("models/model.keras", "aaa", "ccc"), ("git: README.md", "committed", "changed"),
        ("git: dvc.lock", "committed", "changed")]
    # Stages not rerun are not compared (their outputs were checked out, not reproduced).
    assert not any(path == "data/windows" for path, _, _ in rows)
