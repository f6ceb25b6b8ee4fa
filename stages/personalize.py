"""Personal models: the generic model adapted to one person, and the stage that measures what it gains.

    python -m stages.personalize --session FOLDER_OR_TABLE --subject ID --out models/personal/ID.onnx [--register]
    python -m stages.personalize --evaluate      # the DVC stage: metrics/personalize.json, plots/personalize.csv

--session is a folder of labelled sessions (Garmin pairs + <session>-annotations.csv, har/annotations.py),
a WISDM-layout folder, or a long table; only --subject's recordings are used. The personal model is the
generic ONNX graph with its last layer refitted (har/personalize.py `personalise`), stamped with the generic metadata
plus subject, generic version, calibration hash and seconds per class, and written only when it agrees
with Keras (the generic body, the new head) within serve.export.parity_atol.

--evaluate: for each test subject, the first N seconds of each recording calibrate and the rest, one
window length later, is scored, for N in personalize.seconds; generic and personal macro-F1 side by
side. The candidate methods are compared on the validation subjects first (personalize.candidates;
har/personal_evaluation.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd

from har.config import load_params, write_json
from har.logs import add_log_arguments, setup_logging
from har.modelfile import read_card
from har.personal_evaluation import gains
from har.personalize import MIN_SECONDS_ADVISED, embed, generic_head, personalise

GENERIC = Path("models/model.onnx")
METRICS = Path("metrics/personalize.json")
PLOT = Path("plots/personalize.csv")
KERAS_MODEL = Path("models/model.keras")


def register(report: dict, params: dict) -> dict:
    from har.registry import register_personal_model, tracking_uri

    registry = params["registry"]
    return register_personal_model(report["out"], name=f"{registry['model_name']}-{report['subject']}",
                                   experiment=registry["experiment"], uri=tracking_uri(registry["tracking_uri"]),
                                   tags={k: report[k] for k in ("subject", "generic_model_version", "calibration_hash",
                                                                "model_version", "sha256")},
                                   generic_name=registry["model_name"])


# ---------------------------------------------------------------- the stage: what personalisation gains

def evaluate(params: dict) -> dict:
    from stages.window import load_split

    settings = params["personalize"]
    model = onnx.load(GENERIC)
    card = read_card(GENERIC.read_bytes(), str(GENERIC))
    window_s = card.window_length / float(card.input_contract["target_hz"])
    embedded = {}
    for name in ("val", "test"):
        with load_split(name) as split:
            arrays = {k: split[k] for k in ("X", "y", "subject", "recording", "start_t")}
        p, h = embed(model, arrays.pop("X"), threads=int(settings["threads"]))
        embedded[name] = (arrays, h, p)
    generic = generic_head(model, h.shape[1])

    report, fit_cpu = gains(embedded, generic, settings, window_s)
    print(f"personalize: fit {np.median(fit_cpu):.3f} s CPU per test subject (median, max {np.max(fit_cpu):.3f} s)")
    return {"model_version": card.version, **report}


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
