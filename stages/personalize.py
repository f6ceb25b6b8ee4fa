"""Personal models: the generic model adapted to one person, and the stage that measures what it gains.

    python -m stages.personalize --session FOLDER_OR_TABLE --subject ID --out models/personal/ID.onnx [--register]
    python -m stages.personalize --evaluate      # the DVC stage: metrics/personalize.json, plots/personalize.csv

--session is a folder of labelled sessions (Garmin pairs + <session>-annotations.csv, har/annotations.py),
a WISDM-layout folder, or a long table; only --subject's recordings are used. The personal model is the
generic ONNX graph with its last layer refitted (har/personalize.py), stamped with the generic metadata
plus subject, generic version, calibration hash and seconds per class, and written only when it agrees
with Keras (the generic body, the new head) within serve.export.parity_atol.

--evaluate: for each test subject, the first N seconds of each recording calibrate and the rest, one
window length later, is scored, for N in personalize.seconds; generic and personal macro-F1 side by
side. The candidate methods are compared on the validation subjects first (personalize.candidates).
"""
from __future__ import annotations

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # Keras parity, as in the export stage
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from sklearn.metrics import f1_score

from har.annotations import subject_recordings
from har.config import load_params, write_json
from har.logs import add_log_arguments, setup_logging
from har.personalize import (Head, LabelledWindows, calibration_hash, calibration_split, embed, fit_head, generic_head, metadata_of,
                             personal_metadata, prototype_probabilities, recordings_to_windows, seconds_per_class,
                             write_head)
from har.windows import window_step
from har.modelfile import read_card, stamp
from har.runtime import ModelRuntime
from har.scoring import Preprocessing
from stages.export import parity, parity_sample

METRICS = Path("metrics/personalize.json")
PLOT = Path("plots/personalize.csv")
KERAS_MODEL = Path("models/model.keras")
MIN_SECONDS_ADVISED = 30  # per class; below it the worst test subject lost up to 0.08 macro-F1


def subject_macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes the subject's scored windows hold (a subject may lack an activity)."""
    return float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))


def uses_residual(settings: dict) -> bool:
    return settings["method"] == "head" and settings.get("residual_l2") is not None


def features_for(f: np.ndarray, generic: Head, settings: dict) -> np.ndarray:
    """[h, u] when the method fits the residual, else h alone."""
    return f if uses_residual(settings) else f[:, :generic.embedding]


def adapt(generic: Head, f: np.ndarray, y: np.ndarray, settings: dict) -> Head:
    """The person's head from features f = [h, u] (generic_head(model, f.shape[1]) as `generic`)."""
    if settings["method"] not in ("head", "generic"):
        raise ValueError(f"personalize.method must be 'head' or 'generic', got {settings['method']!r}")
    if settings["method"] == "generic" or len(y) == 0:
        return generic
    start = generic if uses_residual(settings) else Head(generic.weights[:generic.embedding], generic.bias,
                                                          generic.scale, generic.embedding)
    return fit_head(features_for(f, generic, settings), y, start, l2=float(settings["l2"]),
                    residual_l2=settings.get("residual_l2"), max_iter=int(settings["max_iter"]))


# ---------------------------------------------------------------- one person

def keras_parity(keras_path: Path, head: Head, X: np.ndarray, onnx_probs: np.ndarray, atol: float) -> dict:
    """Keras's generic body (the inputs of the last two Dense layers: h, then u) with the new head,
    against onnxruntime."""
    import keras

    model = keras.models.load_model(keras_path, compile=False)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    outputs = [dense[-1].input] + ([dense[-2].input] if head.embedding < len(head.weights) else [])
    predicted = keras.Model(model.inputs, outputs).predict(X, batch_size=256, verbose=0)
    f = np.concatenate([np.asarray(o) for o in (predicted if isinstance(predicted, list) else [predicted])], axis=1)
    return parity(head.probabilities(f).astype(np.float32), onnx_probs, atol)


def personalise(session: Path, subject: str, out: Path, params: dict, *, model_path: Path,
                keras_path: Path | None, seconds: float | None = None) -> dict:
    """Adapt, stamp, check parity; write `out` only when parity holds. Returns the report."""
    settings = params["personalize"]
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    data = model_path.read_bytes()
    card = read_card(data, str(model_path))  # the generic model, checksum verified
    model = onnx.load_from_string(data)
    recordings, read_report = subject_recordings(session, subject, labels=card.labels, data=params["data"])
    preprocessing = Preprocessing.from_card(card)
    windows = recordings_to_windows(recordings, card.labels, preprocessing)
    window_s = card.window_length / preprocessing.target_hz
    if seconds:  # only the first `seconds` of each recording (the personalize stage's calibration data)
        first, _ = calibration_split(windows.recording, windows.start_t, seconds=seconds, window_s=window_s)
        windows = LabelledWindows(*(getattr(windows, k)[first] for k in ("X", "y", "recording", "start_t")))
    if len(windows.y) == 0:
        raise SystemExit(f"personalize: {session} holds no complete {card.window_length}-sample window for "
                         f"subject {subject!r}")
    _, f = embed(model, windows.X, threads=int(settings["threads"]))
    generic = generic_head(model, f.shape[1])
    head = adapt(generic, f, windows.y, settings)
    step_s = window_step(card.window_length, preprocessing.overlap) / preprocessing.target_hz
    seconds = seconds_per_class(windows.y, card.labels, window_s, step_s)
    metadata = personal_metadata(
        {**metadata_of(model), "generic_sha256": card.sha256}, subject=subject, head=head,
        calibration=calibration_hash(windows.X, windows.y), seconds=seconds,
        method={k: settings.get(k) for k in ("method", "l2", "residual_l2", "max_iter")})
    personal = stamp(write_head(model, head), metadata)
    adapt_cpu, adapt_wall = time.process_time() - started_cpu, time.perf_counter() - started_wall

    sample = parity_sample(windows.X, int(params["serve"]["export"]["parity_max_windows"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    candidate = out.with_name(out.name + ".partial")
    candidate.write_bytes(personal)
    try:
        runtime = ModelRuntime(candidate)  # the service's loader: checksum and contract verified
        onnx_probs = runtime.predict(sample)
    finally:
        candidate.unlink()
    atol = float(params["serve"]["export"]["parity_atol"])
    _, f_sample = embed(model, sample)
    checks = {"numpy_head": parity(head.probabilities(features_for(f_sample, head, settings)).astype(np.float32),
                                   onnx_probs, atol)}
    if keras_path is not None and keras_path.exists():
        checks["keras"] = keras_parity(keras_path, head, sample, onnx_probs, atol)
    passed = all(c["passed"] for c in checks.values())
    if passed:
        out.write_bytes(personal)
    changed = np.flatnonzero(np.any(head.weights != generic.weights[:len(head.weights)], axis=0) | (head.bias != generic.bias))
    return {"subject": subject, "out": str(out), "written": passed, "model_name": runtime.card.name,
            "model_version": runtime.card.version, "sha256": runtime.card.sha256,
            "generic_model_version": card.version, "calibration_hash": metadata["calibration_hash"],
            "windows": int(len(windows.y)), "seconds_per_class": seconds,
            "classes_adapted": [card.labels[i] for i in changed],
            "adaptation_cpu_s": round(adapt_cpu, 3), "adaptation_wall_s": round(adapt_wall, 3),
            "read": read_report, "parity": checks}


def register(report: dict, params: dict) -> dict:
    from har.registry import register_personal_model, tracking_uri

    registry = params["registry"]
    return register_personal_model(report["out"], name=f"{registry['model_name']}-{report['subject']}",
                                   experiment=registry["experiment"], uri=tracking_uri(registry["tracking_uri"]),
                                   tags={k: report[k] for k in ("subject", "generic_model_version", "calibration_hash",
                                                                "model_version", "sha256")},
                                   generic_name=registry["model_name"])


# ---------------------------------------------------------------- the stage: what personalisation gains

def subject_scores(h: np.ndarray, p: np.ndarray, windows, generic: Head, seconds: float, window_s: float,
                   adapt_fn) -> tuple[float, float, int, int]:
    """(generic macro-F1, personal macro-F1, calibration windows, scored windows) of one subject at `seconds`."""
    calib, scored = calibration_split(windows["recording"], windows["start_t"], seconds=seconds, window_s=window_s)
    y = windows["y"]
    personal_p = adapt_fn(h[calib], y[calib], h[scored], p[scored])
    return (subject_macro_f1(y[scored], p[scored].argmax(1)), subject_macro_f1(y[scored], personal_p.argmax(1)),
            int(calib.sum()), int(scored.sum()))


def head_adapter(generic: Head, settings: dict):
    def adapt_fn(f_calib, y_calib, f, p):
        return adapt(generic, f_calib, y_calib, settings).probabilities(features_for(f, generic, settings))
    return adapt_fn


def prototype_adapter(blend: float):
    def adapt_fn(h_calib, y_calib, h, p):
        return p if len(y_calib) == 0 else prototype_probabilities(h_calib, y_calib, h, p, blend=blend)
    return adapt_fn


def compare(split: dict, h: np.ndarray, p: np.ndarray, generic: Head, seconds: float, window_s: float,
            adapt_fn) -> dict:
    """Generic and personal macro-F1 per subject of a split, their means and the worst subject's change."""
    per_subject = {}
    for subject in sorted(set(split["subject"])):
        mine = split["subject"] == subject
        g, q, n_calib, n_scored = subject_scores(h[mine], p[mine], {k: split[k][mine] for k in ("y", "recording", "start_t")},
                                                 generic, seconds, window_s, adapt_fn)
        per_subject[str(subject)] = {"generic": round(g, 4), "personal": round(q, 4), "calibration_windows": n_calib,
                                     "scored_windows": n_scored}
    generic_f1 = np.mean([s["generic"] for s in per_subject.values()])
    personal_f1 = np.mean([s["personal"] for s in per_subject.values()])
    return {"generic_macro_f1": round(float(generic_f1), 4), "personal_macro_f1": round(float(personal_f1), 4),
            "gain": round(float(personal_f1 - generic_f1), 4),
            "worst_change": round(min(s["personal"] - s["generic"] for s in per_subject.values()), 4),
            "subjects": per_subject}


def evaluate(params: dict) -> dict:
    from stages.window import load_split

    settings = params["personalize"]
    model = onnx.load("models/model.onnx")
    card = read_card(Path("models/model.onnx").read_bytes(), "models/model.onnx")
    window_s = card.window_length / float(card.input_contract["target_hz"])
    embedded = {}
    for name in ("val", "test"):
        with load_split(name) as split:
            arrays = {k: split[k] for k in ("X", "y", "subject", "recording", "start_t")}
        p, h = embed(model, arrays.pop("X"), threads=int(settings["threads"]))
        embedded[name] = (arrays, h, p)
    generic = generic_head(model, h.shape[1])

    candidates = {}
    arrays, h, p = embedded["val"]
    for l2, residual_l2 in settings["candidates"]["head"]:
        adapter = head_adapter(generic, {**settings, "method": "head", "l2": l2, "residual_l2": residual_l2})
        name = f"head_l2_{l2:g}" + (f"_residual_l2_{residual_l2:g}" if residual_l2 is not None else "")
        candidates[name] = compare(arrays, h, p, generic, settings["select_seconds"], window_s, adapter)
    for blend in settings["candidates"]["prototype_blend"]:
        candidates[f"prototypes_blend_{blend:g}"] = compare(arrays, h[:, :generic.embedding], p, generic,
                                                            settings["select_seconds"], window_s, prototype_adapter(blend))
    for result in candidates.values():
        result.pop("subjects")

    arrays, h, p = embedded["test"]
    adapter = head_adapter(generic, settings)
    by_seconds = {str(n): compare(arrays, h, p, generic, float(n), window_s, adapter) for n in settings["seconds"]}

    # Adaptation time of the fit alone, per test subject at select_seconds, on this process's CPU time:
    # printed, not reported (a duration in metrics/personalize.json would change dvc.lock on every run;
    # bench/personalize.py measures it).
    fit_cpu = []
    for subject in sorted(set(arrays["subject"])):
        mine = arrays["subject"] == subject
        calib, _ = calibration_split(arrays["recording"][mine], arrays["start_t"][mine],
                                     seconds=settings["select_seconds"], window_s=window_s)
        started = time.process_time()
        adapt(generic, h[mine][calib], arrays["y"][mine][calib], settings)
        fit_cpu.append(time.process_time() - started)
    print(f"personalize: fit {np.median(fit_cpu):.3f} s CPU per test subject (median, max {np.max(fit_cpu):.3f} s)")
    chosen = max(candidates, key=lambda name: candidates[name]["gain"])
    return {"model_version": card.version,
            "method": {k: settings.get(k) for k in ("method", "l2", "residual_l2", "max_iter")},
            "validation_best": chosen,
            "window_s": window_s, "gap_s": window_s,
            "validation_candidates_at_seconds": settings["select_seconds"], "validation": candidates,
            "test": by_seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.personalize", description=__doc__.splitlines()[0])
    parser.add_argument("--session", type=Path, help="labelled sessions folder, WISDM-layout folder or long table")
    parser.add_argument("--subject", help="whose recordings to use; the personal model's subject id")
    parser.add_argument("--out", type=Path, help="the personal ONNX model to write (default: "
                        "<serve.personal.models_dir>/<subject>.onnx)")
    parser.add_argument("--model", type=Path, help="the generic ONNX model (default: serve.model_path)")
    parser.add_argument("--keras", type=Path, default=KERAS_MODEL, help="the generic Keras model, for the parity check")
    parser.add_argument("--seconds", type=float, help="use only the first SECONDS of each recording (default: all)")
    parser.add_argument("--register", action="store_true", help="register as <registry.model_name>-<subject> in MLflow")
    parser.add_argument("--evaluate", action="store_true", help="the DVC stage: metrics/personalize.json")
    add_log_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)  # --register's audit events go to stderr
    params = load_params()

    if args.evaluate:
        report = evaluate(params)
        write_json(METRICS, report)
        PLOT.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"seconds_per_activity": int(n), "generic": r["generic_macro_f1"], "personal": r["personal_macro_f1"]}
                      for n, r in report["test"].items()]).to_csv(PLOT, index=False)
        for n, r in report["test"].items():
            print(f"{n:>4} s per activity: generic {r['generic_macro_f1']:.3f}, personal {r['personal_macro_f1']:.3f} "
                  f"(worst subject {r['worst_change']:+.3f})")
        return 0

    if not (args.session and args.subject):
        parser.error("give --session and --subject (or --evaluate)")
    out = args.out or Path(params["serve"]["personal"]["models_dir"]) / f"{args.subject}.onnx"
    report = personalise(args.session, str(args.subject), out, params,
                         model_path=args.model or Path(params["serve"]["model_path"]), keras_path=args.keras,
                         seconds=args.seconds)
    if report["written"] and args.register:
        report["registry"] = register(report, params)
    write_json(out.with_suffix(".json"), report)
    short = {label: s for label, s in report["seconds_per_class"].items() if s < MIN_SECONDS_ADVISED}
    if short:  # measured: at 15 s per activity the worst test subject lost 0.08 macro-F1 (metrics/personalize.json)
        print(f"personalize: warning: under {MIN_SECONDS_ADVISED} s of {short}; at 15 s per activity some people "
              f"lose accuracy (docs/personalisation.md)", file=sys.stderr)
    verdicts = ", ".join(f"{k} max |dp| {c['max_abs_diff']:.1e}" for k, c in report["parity"].items())
    print(f"personalize: {report['model_name']} v{report['model_version']} from {report['windows']} windows "
          f"({report['adaptation_cpu_s']} s CPU); parity {verdicts}; "
          f"{'written to ' + str(out) if report['written'] else 'parity FAILED, not written'}")
    return 0 if report["written"] else 1


if __name__ == "__main__":
    sys.exit(main())
