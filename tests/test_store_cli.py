"""`python -m store`: re-scoring the stored fused tables with another model (old scorings kept, days follow the
new one), erasure from the command line, upgrade of an empty database; on SQLite and on PostgreSQL."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from har.preprocessing import Preprocessing
from har.runtime import ModelRuntime
from har.scoring import FusedTable, prepare, score
from har.wear import WearRule
from serve_helpers import ROOT, write_tiny_model
from store_db import postgres_server, store, store_url  # noqa: F401  (fixtures)


def fused_minutes(minutes: float, seed: int = 0) -> pd.DataFrame:
    """A fused table at 50 Hz: moving, so that every window is worn and scored."""
    n = int(minutes * 60 * 50)
    rng = np.random.default_rng(seed)
    table = pd.DataFrame((rng.normal(size=(n, 6)) * 3).astype(np.float32), columns=["ax", "ay", "az", "gx", "gy", "gz"])
    table.insert(0, "t", np.arange(n) / 50.0)
    return table


def scored_answer(model, fused: pd.DataFrame, start_time: str) -> dict:
    """What the service answers for this fused table with this model (the one scoring path, har/scoring.py)."""
    runtime, rule = ModelRuntime(model), WearRule()
    quality = {"samples_written": len(fused), "fused_seconds": len(fused) / 50.0, "segments": 1}
    prepared = prepare(FusedTable(fused, "r1", start_time, quality), Preprocessing.from_card(runtime.card), rule)
    return score(prepared, runtime.predict, runtime.card, rule, subject="p1").to_builtins()


def run_store(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "store", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def params_for(tmp_path, store_url) -> str:
    """params.yaml with this test's store, blobs and personal models."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["store"].update(url=store_url, blob_root=str(tmp_path / "blobs"))
    params["serve"]["personal"]["models_dir"] = str(tmp_path / "personal")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return str(tmp_path / "params.yaml")


def test_rescore_keeps_the_old_scoring_and_days_follow_the_new_one(store, store_url, tmp_path):
    first = write_tiny_model(tmp_path / "first.onnx")
    champion = write_tiny_model(tmp_path / "champion.onnx", model_version="tiny0002",
                                labels=["typing", "clapping", "sitting"])  # same weights, classes renamed
    fused = fused_minutes(10)
    answer = scored_answer(first, fused, "2025-06-10T10:00:00")
    rec, _ = store.ingest("p1", content_hash="raw", fused=fused, answer=answer, timezone="UTC")
    before = store.days("p1")[0]["minutes_per_activity"]
    done = run_store("--params", params_for(tmp_path, store_url), "rescore", "--model", str(champion))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"scored": 1, "completed": 0, "already_scored": 0}
    stored = store.recording("p1", rec["id"])
    assert [s["version"] for s in stored["scorings"]] == ["tiny0001", "tiny0002"]
    expected = scored_answer(champion, fused, "2025-06-10T10:00:00")  # from the blob, exactly as from the upload
    assert stored["answer"]["minutes_per_activity"] == expected["minutes_per_activity"]
    after = store.days("p1")[0]["minutes_per_activity"]
    assert after["typing"] == pytest.approx(before["sitting"], abs=1e-3)  # the renamed classes moved with it
    again = run_store("--params", params_for(tmp_path, store_url), "rescore", "--model", str(champion))
    assert json.loads(again.stdout) == {"scored": 0, "completed": 0, "already_scored": 1}


def test_rescore_completes_a_scoring_stored_before_the_minutes_estimate(store, store_url, tmp_path):
    """A scoring without its minutes basis (stored before revision 0003) gives its counted minutes and no interval;
    `rescore` with the same model puts the estimate and its interval in its place."""
    model = write_tiny_model(tmp_path / "model.onnx", calibration={"minutes": {
        "method": "pcc", "switch_probability": 0.0, "interval_scale": 3.0, "coverage": 0.9}})
    fused = fused_minutes(10)
    answer = scored_answer(model, fused, "2025-06-10T10:00:00")
    old = {k: v for k, v in answer.items() if k not in ("minutes_basis", "minutes_interval_90", "minutes_estimate")}
    old["minutes_per_activity"] = old["counted_minutes_per_activity"]
    store.ingest("p1", content_hash="raw", fused=fused, answer=old, timezone="UTC")
    (day,) = store.days("p1")
    assert day["minutes_per_activity"] == answer["counted_minutes_per_activity"]
    assert day["unestimated_minutes"] == day["worn_minutes"] > 0
    assert set(day["minutes_interval_90"].values()) == {None}
    done = run_store("--params", params_for(tmp_path, store_url), "rescore", "--model", str(model))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"scored": 0, "completed": 1, "already_scored": 0}
    (day,) = store.days("p1")
    assert day["minutes_per_activity"] == pytest.approx(answer["minutes_per_activity"], abs=2e-3)
    assert day["minutes_interval_90"] == {a: pytest.approx(b, abs=2e-3) for a, b in answer["minutes_interval_90"].items()}
    assert day["unestimated_minutes"] == 0.0 and day["counted_minutes_per_activity"] == answer["counted_minutes_per_activity"]
    assert store.recording("p1", 1)["answer"]["minutes_basis"]["shares"] == answer["minutes_basis"]["shares"]
    again = run_store("--params", params_for(tmp_path, store_url), "rescore", "--model", str(model))
    assert json.loads(again.stdout) == {"scored": 0, "completed": 0, "already_scored": 1}


def test_erase_and_upgrade_from_the_command_line(store, store_url, tmp_path):
    from store_helpers import answer, fused

    store.ingest("p1", content_hash="a", fused=fused(60), timezone="UTC",
                 answer=answer("2025-06-10T10:00:00", [("sitting", 0, 600)]))
    params = params_for(tmp_path, store_url)
    assert run_store("--params", params, "upgrade").returncode == 0  # already at head: nothing to do
    erased = run_store("--params", params, "erase", "p1")
    assert erased.returncode == 0, erased.stderr
    assert {k: v for k, v in json.loads(erased.stdout).items() if k != "at"} == {
        "episodes": 1, "scorings": 1, "recordings": 1, "participants": 1, "blobs": 1, "personal_models": 0}
    missing = run_store("--params", params, "erase", "p1")
    assert missing.returncode == 1 and "no subject 'p1'" in missing.stderr
    bad = run_store("--params", params, "erase", "../p1")
    assert bad.returncode == 2 and "not a subject id" in bad.stderr
