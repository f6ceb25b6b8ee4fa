"""Benchmark: read + fuse the real one-hour Garmin pair.

    python bench/fuse.py [--runs 5]

Prints median wall times and writes metrics/bench_fuse.json. Baselines measured in the same
run: reading both workbooks with openpyxl (what the thesis code used) and with
pandas.read_excel on calamine; the ratio says how much faster our whole read + fuse is.
"""
from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openpyxl  # noqa: E402
import pandas as pd  # noqa: E402

from timing import median_seconds  # noqa: E402

from har.config import load_params, resolve_raw, write_json  # noqa: E402
from har.fusion import fuse_recording  # noqa: E402
from har.garmin import find_garmin_pairs, read_garmin_pair  # noqa: E402


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
    }
    for key, value in result.items():
        print(f"{key:45s} {value}")
    write_json(ROOT / "metrics" / "bench_fuse.json", result)


if __name__ == "__main__":
    main()
