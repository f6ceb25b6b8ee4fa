"""Benchmark: batch scoring (`python -m serve.batch`) of the real one-hour Garmin pair, one process, one thread.

    python bench/batch.py [--runs 3] [--model models/model.onnx]

Times `serve.batch.run` end to end (read, fuse, window, score, write the four outputs) on a
folder holding the raw workbook pair, and, in the same run, on a folder holding the same
recording as a fused table (what `stages.fuse` leaves in data/fused/garmin): the ratio says
what fusing once in the pipeline saves every later scoring. The model alone is timed on the
recording's windows. Writes metrics/bench_batch.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from timing import median_seconds, report  # noqa: E402

from har.config import load_params, resolve_raw  # noqa: E402
from har.fusion import fuse_recording  # noqa: E402
from har.garmin import find_garmin_pairs, read_garmin_pair  # noqa: E402
from har.wear import WearRule  # noqa: E402
from serve.batch import run  # noqa: E402
from har.runtime import ModelRuntime  # noqa: E402
from har.timeline import cut_recording, recording_preprocessing  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="models/model.onnx", help="relative to the project root")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    runtime = ModelRuntime(ROOT / args.model, threads=1)
    acc, gyr = find_garmin_pairs(resolve_raw(ROOT / params["paths"]["garmin"]))[0][0]  # the first pair

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        raw, fused, out = Path(tmp, "raw"), Path(tmp, "fused"), Path(tmp, "out")
        raw.mkdir(), fused.mkdir()
        (raw / acc.name).symlink_to(acc)
        (raw / gyr.name).symlink_to(gyr)
        preprocessing = recording_preprocessing(runtime.card)
        wear_rule = WearRule.from_params(params.get("wear"))
        # The fused table as stages.fuse writes it (the same reader and fusion the service uses).
        recording = read_garmin_pair(acc, gyr)
        table, quality = fuse_recording(recording, target_hz=preprocessing["target_hz"],
                                        max_gap_s=preprocessing["max_gap_s"], lowpass_hz=preprocessing["lowpass_hz"])
        table.to_parquet(fused / f"{recording.recording_id}.parquet")
        pd.DataFrame([{"recording": recording.recording_id, "file": f"{recording.recording_id}.parquet",
                       "start_time": recording.start_time}]).to_csv(fused / "index.csv", index=False)
        scored = cut_recording(table, quality, preprocessing, wear_rule, recording_id=recording.recording_id,
                               start_time=recording.start_time)

        from_raw = median_seconds(lambda: run(raw, out, runtime, wear_rule=wear_rule), args.runs)
        from_fused = median_seconds(lambda: run(fused, out, runtime, wear_rule=wear_rule), args.runs)
        model_only = median_seconds(lambda: runtime.predict(scored.windows), args.runs)
        answer = json.loads(next(out.glob("*/recording.json")).read_text())
        sizes = {"raw_pair_mb": round((acc.stat().st_size + gyr.stat().st_size) / 1e6, 2),
                 "fused_table_mb": round(sum(f.stat().st_size for f in fused.glob("*.parquet")) / 1e6, 2),
                 "outputs_mb": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6, 2)}

    result = {
        "runs": args.runs,
        "model": {"source": args.model, "version": runtime.card.version, "labels": len(runtime.card.labels)},
        "recording": {"id": recording.recording_id, "minutes": answer["covered_minutes"],
                      "windows": answer["windows"], **sizes},
        "onnxruntime_threads": 1,
        "raw_pair_median_s": round(from_raw, 3),
        "fused_table_median_s": round(from_fused, 3),
        "model_only_median_s": round(model_only, 3),
        "raw_over_fused": round(from_raw / from_fused, 2),
        "model_share_of_raw": round(model_only / from_raw, 3),
        "raw_recordings_per_core_hour": round(3600 / from_raw),
        "fused_recordings_per_core_hour": round(3600 / from_fused),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    report(result, "batch")


if __name__ == "__main__":
    main()
