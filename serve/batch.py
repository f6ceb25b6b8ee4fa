"""Batch scoring: a folder of recordings in, an activity timeline per recording out.

    python -m serve.batch INPUT_FOLDER OUTPUT_FOLDER [--model models/model.onnx | models:/<name>@champion]
                          [--subject ID]   # that person's model (serve.personal.models_dir/ID.onnx) if there is one

INPUT_FOLDER holds Garmin workbook pairs (`<session>-accelerometer_data.xlsx` +
`<session>-gyroscope_data.xlsx`) and/or fused tables (`<recording>.parquet` with columns t, ax..gz,
beside an index.csv with wall-clock start times and a quality.json with the fusion settings, as
`stages.fuse` writes them; also one level down, as in data/fused/garmin/<session>/).
Each recording goes through the service's own path: `har.timeline.garmin_windows` (the
pipeline's reader, fusion and windowing with the model's preprocessing), one `ModelRuntime`
call, `har.timeline.recording_answer`; so OUTPUT_FOLDER/<recording>/recording.json is what
`POST /recordings` answers for the same pair (with the recording's drift when the model's
drift_reference.json lies beside it). Beside it: timeline.csv, episodes.csv and
minutes_per_activity.csv; OUTPUT_FOLDER/summary.json lists what was scored and what was
skipped and why.

Exit status: 0 when every recording was scored, 1 when any was skipped (or none was found),
2 when the model cannot be loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from har.config import load_params, write_json
from har.drift import load_reference, recording_drift, reference_path_for
from har.fusion import CHANNELS
from har.garmin import find_garmin_pairs
from har.logs import add_log_arguments, event_logger, setup_logging
from har.wear import WearRule
from serve.config import Settings
from har.modelfile import ModelFileError
from serve.personal import PersonalModels
from har.runtime import ModelRuntime, model_file
from har.timeline import (RecordingWindows, cut_recording, garmin_windows, recording_answer, recording_preprocessing,
                            worn_probabilities)
from serve.validation import RequestError

log = event_logger("serve.batch")
# Files that belong to a fused folder (stages.fuse writes them) but are not recordings themselves.
FUSED_FOLDER_FILES = {"index.csv", "quality.json"}


@dataclass
class Job:
    """One recording to score: a Garmin pair, or a fused table with what stages.fuse recorded beside it."""

    name: str
    sources: list[Path]
    kind: str  # "garmin" | "fused"
    start_time: str | None = None  # fused tables: from index.csv (a pair's workbooks carry their own)
    fusion: dict | None = None  # fused tables: the entry of quality.json


def fused_index(folder: Path) -> tuple[dict, dict]:
    """Start times (index.csv) and fusion reports (quality.json) by recording, where stages.fuse wrote them."""
    start_times, fusion = {}, {}
    if (folder / "index.csv").is_file():
        index = pd.read_csv(folder / "index.csv", dtype={"recording": str, "file": str, "start_time": str})
        start_times = {Path(row.file).stem: row.start_time for row in index.itertuples() if isinstance(row.start_time, str)}
    if (folder / "quality.json").is_file():
        fusion = {entry["recording"]: entry for entry in json.loads((folder / "quality.json").read_text())}
    return start_times, fusion


def find_jobs(folder: Path) -> tuple[list[Job], list[dict]]:
    """Every recording in `folder` and in its fused session folders (`<session>/index.csv`, as stages.fuse
    writes them), and a skip record for everything else: nothing is passed over silently."""
    pairs, unpaired = find_garmin_pairs(folder)
    jobs = [Job(acc.name.removesuffix("-accelerometer_data.xlsx"), [acc, gyr], "garmin") for acc, gyr in pairs]
    skipped = [{"source": item["file"], "reason": item["reason"]} for item in unpaired]
    claimed = {p for job in jobs for p in job.sources} | {folder / item["file"] for item in unpaired}
    sessions = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "index.csv").is_file())
    for fused_folder in [folder, *sessions]:
        start_times, fusion = fused_index(fused_folder)
        claimed |= {fused_folder / name for name in FUSED_FOLDER_FILES}
        for path in sorted(fused_folder.glob("*.parquet")):
            claimed.add(path)
            first = next((job for job in jobs if job.name == path.stem), None)
            if first is not None:  # one output folder per recording: the first source found wins
                skipped.append({"source": str(path.relative_to(folder)), "reason": f"recording {path.stem} is "
                                f"scored from {first.sources[0].relative_to(folder)}"})
            else:
                jobs.append(Job(path.stem, [path], "fused", start_times.get(path.stem), fusion.get(path.stem)))
    for path in sorted(p for f in [folder, *sessions] for p in f.iterdir()):
        if not path.name.startswith(".") and path not in claimed and path not in sessions:
            skipped.append({"source": str(path.relative_to(folder)),
                            "reason": "not a recording (expected <session>-accelerometer_data.xlsx + "
                                      "<session>-gyroscope_data.xlsx pairs, fused .parquet tables, or the "
                                      "<session>/ folders of stages.fuse)"})
    return jobs, skipped


def fused_windows(path: Path, preprocessing: dict, fusion: dict | None, wear_rule: WearRule, *,
                  start_time: str | None) -> RecordingWindows:
    """A fused table cut into the model's windows and marked worn or not; refused when it was fused with
    other settings than the model's."""
    table = pd.read_parquet(path)
    missing = [c for c in ["t", *CHANNELS] if c not in table.columns]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {missing} (expected t, {', '.join(CHANNELS)})")
    step = float(np.median(np.diff(table["t"].to_numpy()))) if len(table) > 1 else float("nan")
    target_hz = float(preprocessing["target_hz"])
    if not np.isclose(step * target_hz, 1.0, rtol=1e-3):
        raise ValueError(f"{path.name}: sampled every {step:.6g} s, the model expects {target_hz:g} Hz "
                         f"(a step of {1 / target_hz:.6g} s)")
    for key in ("target_hz", "lowpass_hz"):  # quality.json records both; a mismatch would be training/serving skew
        if fusion and key in fusion and not np.isclose(float(fusion[key]), float(preprocessing[key])):
            raise ValueError(f"{path.name}: fused with {key} {fusion[key]} (quality.json), the model expects "
                             f"{preprocessing[key]}")
    fusion = fusion or {}
    quality = {**fusion, "samples_written": fusion.get("samples_written", int(len(table))),
               "fused_seconds": fusion.get("fused_seconds", round(len(table) / target_hz, 3)),
               "segments": fusion.get("segments")}
    return cut_recording(table, quality, preprocessing, wear_rule, recording_id=path.stem, start_time=start_time)


def write_outputs(folder: Path, result: dict) -> None:
    """recording.json (the whole answer) and the three tables as CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "recording.json", result)
    pd.DataFrame(result["timeline"], columns=["start_s", "time", "label", "activity", "confidence"]).to_csv(
        folder / "timeline.csv", index=False)
    pd.DataFrame(result["episodes"], columns=["label", "start_s", "end_s", "duration_s", "start_time", "end_time",
                                              "windows", "mean_confidence"]).to_csv(folder / "episodes.csv", index=False)
    # Activities first, then the two states, so the file adds up to the covered time.
    minutes = [*result["minutes_per_activity"].items(), ("uncertain", result["uncertain_minutes"]),
               ("not_worn", result["not_worn_minutes"])]
    pd.DataFrame(minutes, columns=["label", "minutes"]).to_csv(folder / "minutes_per_activity.csv", index=False)


def run(input_folder: Path, output_folder: Path, runtime: ModelRuntime, *, timezone: str | None = None,
        wear_rule: WearRule = WearRule(), drift_reference: dict | None = None,
        subject: str | None = None, personal: bool = False) -> dict:
    """Score every recording in `input_folder` into `output_folder`; returns the summary (also summary.json).

    With the model's `drift_reference`, each answer carries the recording's drift, as the service's does;
    `subject` and `personal` say whose model `runtime` is, in every answer. Progress: one log event
    per recording (`scored` or `skipped`) on the serve.batch logger, and one `done`."""
    preprocessing = recording_preprocessing(runtime.card)
    jobs, skipped = find_jobs(input_folder)
    scored = []
    for number, job in enumerate(jobs, 1):
        started = time.perf_counter()
        try:
            if job.kind == "garmin":
                scored_windows = garmin_windows(*job.sources, preprocessing, wear_rule, timezone=timezone,
                                                recording_id=job.name)
            else:
                scored_windows = fused_windows(job.sources[0], preprocessing, job.fusion, wear_rule,
                                               start_time=job.start_time)
            if len(scored_windows.windows) == 0:  # the service's words for the same refusal
                raise ValueError(f"the recording holds no complete {preprocessing['window_length']}-sample window of "
                                 f"fused data ({scored_windows.quality['fused_seconds']} s fused)")
        except (ValueError, OSError) as error:  # InputError is a ValueError: it names file, row and column
            skipped.append({"source": ", ".join(str(p.relative_to(input_folder)) for p in job.sources),
                            "reason": str(error)})
            log.warning("skipped", recording=job.name, kind=job.kind, number=number, of=len(jobs), reason=str(error))
            continue
        probabilities = worn_probabilities(runtime.predict, scored_windows, len(runtime.card.labels))
        result = recording_answer(runtime.card, scored_windows, probabilities, wear_rule, subject=subject,
                                  personal=personal)
        if drift_reference is not None:
            result["drift"] = recording_drift(drift_reference, scored_windows.windows[scored_windows.worn], probabilities,
                                              runtime.card.labels, not_worn=int((~scored_windows.worn).sum()))
        write_outputs(output_folder / job.name, result)
        # What the recording mostly was, states included: a watch left on a desk is mostly not_worn.
        top = max([*result["minutes_per_activity"].items(), ("uncertain", result["uncertain_minutes"]),
                   ("not_worn", result["not_worn_minutes"])], key=lambda item: item[1])
        scored.append({"recording": job.name, "sources": [str(p.relative_to(input_folder)) for p in job.sources],
                       "windows": result["windows"],
                       "covered_minutes": result["covered_minutes"], "most_minutes": top[0],
                       "output": str(output_folder / job.name)})
        log.info("scored", recording=job.name, kind=job.kind, number=number, of=len(jobs), windows=result["windows"],
                 covered_minutes=result["covered_minutes"], mostly=top[0],
                 seconds=round(time.perf_counter() - started, 1))
    summary = {"input": str(input_folder), "model": {"name": runtime.card.name, "version": runtime.card.version,
                                                     "sha256": runtime.card.sha256, "subject": subject,
                                                     "personal": personal},
               "scored": scored, "skipped": skipped}
    write_json(output_folder / "summary.json", summary)
    log.info("done", scored=len(scored), skipped=len(skipped), summary=str(output_folder / "summary.json"))
    return summary


def load_runtime(model: str, params: dict, threads: int) -> tuple[ModelRuntime, dict | None]:
    """A file path, or a registry URI (models:/<name>@<alias>) fetched through har.registry; and the drift
    reference shipped beside it (None without one)."""
    path = model_file(model, params.get("registry", {}).get("tracking_uri"))
    reference = reference_path_for(path)
    return ModelRuntime(path, threads=threads), load_reference(reference) if reference.exists() else None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serve.batch", description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="folder of Garmin workbook pairs and/or fused .parquet tables")
    parser.add_argument("output", type=Path, help="folder for <recording>/... and summary.json (created)")
    parser.add_argument("--params", default="params.yaml", help="composed parameters (default: params.yaml)")
    parser.add_argument("--model", help="ONNX file or models:/<name>@<alias> (default: serve.model_path)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: serve.threads)")
    parser.add_argument("--timezone", help="wall-clock zone of the Garmin exports (default: data.timezone)")
    parser.add_argument("--subject", help="whose recordings: scored by that person's model if there is one "
                                          "(serve.personal.models_dir/<subject>.onnx), else by the generic model")
    add_log_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    params = load_params(args.params)
    settings = Settings.from_params(params, threads=args.threads, timezone=args.timezone)
    if not args.input.is_dir():
        log.error(f"serve.batch: {args.input} is not a folder")
        return 2
    try:
        runtime, reference = load_runtime(args.model or str(settings.model_path), params, settings.threads)
    except (ModelFileError, FileNotFoundError, OSError, ValueError) as error:
        log.error(f"serve.batch: cannot load the model: {error}")
        return 2
    try:
        person = PersonalModels(settings.personal_dir, runtime.card, cache_size=1,
                                threads=settings.threads).runtime_for(args.subject)
    except RequestError as error:
        log.error(f"serve.batch: {error.message}")
        return 2
    summary = run(args.input, args.output, person or runtime, timezone=settings.timezone, wear_rule=settings.wear,
                  drift_reference=reference, subject=args.subject, personal=person is not None)
    return 0 if summary["scored"] and not summary["skipped"] else 1


if __name__ == "__main__":
    sys.exit(main())
