"""The fuse and window stages under DVC, in a throwaway copy of the repository.

The copy is fed a small generated long table (`data=long_table`), so the test exercises the
real dvc.yaml, the real Hydra composition and the real stage scripts in seconds.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, SHARED_DATA

from har.recording import InputError

BIN = Path(sys.executable).parent


def project_copy(destination: Path) -> Path:
    """Tracked and new (not ignored) files of the working tree: what a fresh clone would hold."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def make_long_table(path: Path, subjects=6, seconds=20, hz=50):
    rng = np.random.default_rng(0)
    parts = []
    for s in range(subjects):
        for activity, freq in [("nail_biting", 3.0), ("sitting", 0.0)]:
            t = np.arange(seconds * hz) / hz
            wave = np.sin(2 * np.pi * freq * t) + rng.normal(0, 0.05, len(t))
            parts.append(pd.DataFrame({"timestamp": t, "Ax": wave, "Ay": 0.0, "Az": 9.81, "Gx": wave, "Gy": 0.0, "Gz": 0.0,
                                       "activity": activity, "subject": f"p{s}"}))
    pd.concat(parts).to_csv(path, index=False)


@pytest.mark.slow
def test_dvc_repro_status_clean_window_change_and_one_stage_per_session(tmp_path):
    repo = project_copy(tmp_path / "repo")
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)  # ../shared beside the copy, as beside a clone
    table = tmp_path / "labelled.csv"
    make_long_table(table)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    compose = [str(BIN / "python"), "-m", "stages.compose_params", "data=long_table", f"data.raw={table}"]
    run(compose, repo, env)
    run(["git", "init", "-q"], repo, env)

    out = run(["dvc", "repro", "window"], repo, env)
    assert "Running stage 'fuse_labelled'" in out and "Running stage 'window'" in out
    assert "fuse_garmin" not in out  # not upstream of window
    assert "Data and pipelines are up to date" in run(["dvc", "status", "window"], repo, env)
    assert "Running stage" not in run(["dvc", "repro", "window"], repo, env)  # a second repro does nothing

    counts = yaml.safe_load((repo / "metrics" / "windows.json").read_text())
    assert counts["train"]["subjects"] + counts["val"]["subjects"] + counts["test"]["subjects"] == 6
    splits = {s: set(np.load(repo / "data" / "windows" / f"{s}.npz")["subject"]) for s in ("train", "val", "test")}
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"] or splits["val"] & splits["test"])

    run([*compose, "window.overlap=0.25"], repo, env)
    status = run(["dvc", "status", "window"], repo, env)
    assert "window:" in status and "fuse_labelled" not in status
    out = run(["dvc", "repro", "window"], repo, env)
    assert "Running stage 'window'" in out and "Running stage 'fuse_labelled'" not in out
    assert yaml.safe_load((repo / "metrics" / "windows.json").read_text())["train"]["windows"] < counts["train"]["windows"]

    # Each production session is its own cached stage (foreach over production.sessions).
    session = yaml.safe_load((repo / "params.yaml").read_text())["production"]["sessions"][0]
    out = run(["dvc", "repro", "fuse_garmin"], repo, env)
    assert f"Running stage 'fuse_garmin@{session}'" in out
    report = yaml.safe_load((repo / "metrics" / "fuse_garmin" / f"{session}.json").read_text())
    assert report["recordings"] == 1 and report["samples_written"] == report["recording"]["samples_written"]
    assert (repo / "data" / "fused" / "garmin" / session / f"{session}.parquet").exists()
    assert "Running stage" not in run(["dvc", "repro", "fuse_garmin"], repo, env)


def test_fuse_stage_with_on_error_skip_writes_the_good_pair_and_names_the_broken_file(tmp_path, monkeypatch):
    from conftest import WISDM_DIR

    from stages import fuse

    raw = tmp_path / "wisdm"
    for sensor in ("acc", "gyr"):
        (raw / f"{sensor}_w").mkdir(parents=True)
        (raw / f"{sensor}_w" / f"003_{sensor}_w_1600_D.parquet").symlink_to(
            WISDM_DIR / f"{sensor}_w" / f"003_{sensor}_w_1600_D.parquet")
    shutil.copy(WISDM_DIR / "activities.json", raw)
    broken = raw / "acc_w" / "021_acc_w_1601_D.parquet"
    broken.write_bytes(b"PAR1 cut short")
    (raw / "gyr_w" / "021_gyr_w_1601_D.parquet").symlink_to(WISDM_DIR / "gyr_w" / "021_gyr_w_1601_D.parquet")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(raw=str(raw), on_error="skip")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)

    fuse.main("labelled")

    report = yaml.safe_load((tmp_path / "metrics" / "fuse_labelled.json").read_text())
    assert report["recordings"] == 1 and report["files_skipped"] == 1
    assert report["skipped"] == [{"file": str(broken), "reason": f"{broken}: cannot be read as parquet (ArrowInvalid) "
                                  "(expected a parquet file with x, y, z)"}]
    index = pd.read_csv(tmp_path / "data" / "fused" / "labelled" / "index.csv")
    assert index["recording"].tolist() == ["1600_sitting"]
    fused = pd.read_parquet(tmp_path / "data" / "fused" / "labelled" / "1600_sitting.parquet")
    assert len(fused) == index["samples"][0] == report["samples_written"] > 0

    params["data"]["on_error"] = "raise"  # the default: the broken file stops the stage, named
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(InputError, match="021_acc_w_1601_D.parquet: cannot be read as parquet"):
        fuse.main("labelled")
