"""Benchmark: read + fuse the real one-hour Garmin pair.

    python bench/fuse.py [--runs 5]

Prints median wall times and writes metrics/bench_fuse.json. Baselines measured in the same
run: reading both workbooks with openpyxl (what the thesis code used) and with
pandas.read_excel on calamine; the ratio says how much faster our whole read + fuse is.

Also the whole stage as DVC and batch scoring run it, `python -m stages.fuse garmin SESSION` in
a fresh process (in a scratch folder, so the repository's outputs stay untouched), against
`python -c pass` (the interpreter alone) and `python -c "import stages.fuse"` (start-up and
imports): what the process costs beyond reading and fusing.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openpyxl  # noqa: E402
import pandas as pd  # noqa: E402

from timing import median_seconds, report  # noqa: E402

from har.config import load_params, resolve_raw  # noqa: E402
from har.fusion import fuse_recording  # noqa: E402
from har.garmin import find_garmin_pairs, read_garmin_pair  # noqa: E402


def whole_process(params: dict, session: str, runs: int) -> dict:
    """Median wall seconds of fresh processes: the interpreter, the stage's imports, the whole stage."""
    with tempfile.TemporaryDirectory() as scratch:
        params = {**params, "paths": {**params["paths"], "garmin": str(resolve_raw(ROOT / params["paths"]["garmin"]))}}
        (Path(scratch) / "params.yaml").write_text(yaml.safe_dump(params))
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}

        def run(*args):
            return lambda: subprocess.run([sys.executable, *args], cwd=scratch, env=env, check=True,
                                          stdout=subprocess.DEVNULL)

        return {"python_startup_median_s": round(median_seconds(run("-c", "pass"), runs), 3),
                "stage_imports_median_s": round(median_seconds(run("-c", "import stages.fuse"), runs), 3),
                "stage_whole_process_median_s": round(median_seconds(run("-m", "stages.fuse", "garmin", session), runs), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    params = load_params(ROOT / "params.yaml")
    data = params["data"]
    acc, gyr = find_garmin_pairs(resolve_raw(ROOT / params["paths"]["garmin"]))[0][0]  # the first pair

    def read_and_fuse():
        fused, _ = fuse_recording(read_garmin_pair(acc, gyr), target_hz=data["target_hz"],
                                  max_gap_s=data["max_gap_s"], lowpass_hz=data["lowpass_hz"])
        return fused

    process = whole_process(params, acc.name.removesuffix("-accelerometer_data.xlsx"), runs)
    samples = len(read_and_fuse())  # warm-up, and the size of the output
    ours = median_seconds(read_and_fuse, runs)
    openpyxl_read = median_seconds(lambda: [list(openpyxl.load_workbook(p, read_only=True).active.iter_rows(values_only=True))
                                            for p in (acc, gyr)], runs)
    pandas_calamine = median_seconds(lambda: [pd.read_excel(p, engine="calamine") for p in (acc, gyr)], runs)
    result = {
        "runs": runs,
        "read_and_fuse_median_s": round(ours, 3),
        "fused_samples": samples,
        "fused_samples_per_s": round(samples / ours),
        "baseline_openpyxl_read_only_median_s": round(openpyxl_read, 3),
        "baseline_pandas_calamine_read_only_median_s": round(pandas_calamine, 3),
        "speedup_vs_openpyxl_read_only": round(openpyxl_read / ours, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **process,
        "stage_process_over_read_and_fuse": round(process["stage_whole_process_median_s"] / ours, 2),
    }
    report(result, "fuse")


if __name__ == "__main__":
    main()
