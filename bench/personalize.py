"""How long one person's adaptation takes on the CPU, from raw recordings to a stamped ONNX file.

    taskset -c 0 python -m bench.personalize [--subjects 3] [--seconds 60]   # -> metrics/bench_personalize.json

For each of the first test subjects (data/windows/meta.json), `har.personalize.personalise` reads
their WISDM recordings, keeps the first --seconds of each, fuses, windows, embeds, fits and writes the
model (the Keras parity check is left out: it is a check, not the adaptation). The baseline, measured
in the same run: the generic model scoring the same person's full recordings with onnxruntime.
CPU seconds are process time (all threads); run under `taskset -c 0` for one core.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from har.annotations import subject_recordings
from har.config import load_params, resolve_raw, write_json
from har.personalize import personalise, recordings_to_windows
from har.runtime import ModelRuntime
from har.preprocessing import Preprocessing

REPORT = Path("metrics/bench_personalize.json")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    params = load_params()
    model = Path(params["serve"]["model_path"])
    source = resolve_raw(params["paths"]["wisdm"])
    subjects = json.loads(Path("data/windows/meta.json").read_text())["subjects"]["test"][:args.subjects]
    generic = ModelRuntime(model)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for subject in subjects:
            report = personalise(source, subject, Path(folder) / f"{subject}.onnx", params, model_path=model,
                                 keras_path=None, seconds=args.seconds)
            started = time.process_time()  # the baseline: the generic model on the same person's recordings
            recordings, _ = subject_recordings(source, subject, labels=generic.card.labels, data=params["data"])
            preprocessing = Preprocessing.from_card(generic.card)
            generic.predict(recordings_to_windows(recordings, generic.card.labels, preprocessing).X)
            rows.append({"subject": subject, "windows": report["windows"], "adaptation_cpu_s": report["adaptation_cpu_s"],
                         "adaptation_wall_s": report["adaptation_wall_s"],
                         "generic_scoring_cpu_s": round(time.process_time() - started, 3)})
            print(rows[-1], flush=True)
    median = lambda key: round(float(np.median([r[key] for r in rows])), 3)
    write_json(REPORT, {"model_version": generic.card.version, "seconds_per_activity": args.seconds,
                        "subjects": rows, "median_adaptation_cpu_s": median("adaptation_cpu_s"),
                        "median_adaptation_wall_s": median("adaptation_wall_s"),
                        "median_generic_scoring_cpu_s": median("generic_scoring_cpu_s"),
                        "adaptation_over_generic_scoring": round(median("adaptation_cpu_s") / median("generic_scoring_cpu_s"), 2)})
    print(f"adaptation: median {median('adaptation_cpu_s')} s CPU per person at {args.seconds:g} s per activity; "
          f"report in {REPORT}")


if __name__ == "__main__":
    main()
