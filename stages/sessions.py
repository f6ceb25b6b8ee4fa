"""sessions stage: generated study sessions of unseen people, scored as a researcher would, against their truth.

    python -m stages.sessions                  # the DVC stage: metrics/sessions.json, plots/sessions.{csv,png}
    python -m stages.sessions generate OUT [--split test | --subjects 1604,1605] [--participants N] [--days D]
                                           [--sessions-per-day K] [--timezone ZONE] [--first-day YYYY-MM-DD]
                                           [--nonwear-minutes 35 ...] [--recordings-per-session R]
                                           [--max-recording-s S] [--skip-s S] [--seed N] [--fused] [--no-midnight]

`generate` writes a study with known truth (har/study.py: Garmin workbook pairs, or with --fused the
fused tables `python -m serve.batch` reads, under OUT/recordings; the truth per second and per local
day under OUT/truth and OUT/days.csv) from the labelled subjects of a split (data/windows/meta.json)
or the subjects named, read from data.raw (WISDM, labelled sessions or a long table).

The stage: one session per validation and per test subject (all their recordings in a seeded order,
`sessions.nonwear_minutes` of the real Garmin hour's desk stillness between two of them), written as
workbooks and scored through the one scoring path the service uses (har/scoring.py: `prepare`, then
`score` with the ONNX runtime), then compared with the truth second by second (har.study). Again for
each test subject's per-person model (har.personalize's `personalise`, fitted on the first
`sessions.personal_seconds` of each recording, scored on sessions built from the rest, one window
later), with the generic model's figures on the same sessions beside it. The timeline settings that
matter for minutes (switch probability, abstention threshold) are compared on the validation sessions;
the test sessions only report. See docs/sessions.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from har.config import load_params, resolve_raw, write_json
from har.modelfile import ModelCard
from har.preprocessing import Preprocessing
from har.runtime import ModelRuntime
from har.scoring import GarminPair, PreparedRecording, prepare, remembered, score
from har.study import StudyPlan, compare_session, generate_study, read_truth, study_figures
from har.wear import WearRule

MODEL = Path("models/model.onnx")
METRICS = Path("metrics/sessions.json")
PLOT_CSV, PLOT_PNG = Path("plots/sessions.csv"), Path("plots/sessions.png")
META = Path("data/windows/meta.json")


def split_subjects(split: str) -> list[str]:
    import json

    return list(json.loads(META.read_text())["subjects"][split])


def garmin_hour(params: dict) -> tuple[Path, Path]:
    """The real non-wear hour: the first production session's workbook pair."""
    folder = resolve_raw(params["paths"]["garmin"])
    session = params["production"]["sessions"][0]
    return folder / f"{session}-accelerometer_data.xlsx", folder / f"{session}-gyroscope_data.xlsx"


def plan_from(settings: dict, **overrides) -> StudyPlan:
    keys = ("timezone", "first_day", "seed", "midnight")
    return StudyPlan(**{k: settings[k] for k in keys if k in settings},
                     nonwear_minutes=tuple(float(m) for m in settings["nonwear_minutes"]), **overrides)


# ---------------------------------------------------------------- scoring, the service's own path

@dataclasses.dataclass
class Scored:
    """A session prepared once, and its model asked once (`predict` remembers its answer for the worn windows),
    so that it can be answered under each timeline setting compared."""

    session: str
    subject: str
    prepared: PreparedRecording
    predict: object  # har.scoring.remembered(runtime.predict)
    truth: np.ndarray


def score_study(study: Path, manifest: dict, runtimes: dict, params: dict) -> dict[str, list[Scored]]:
    """Each session read from its workbooks and scored by its runtime (runtimes[subject], else runtimes[None])."""
    wear_rule = WearRule.from_params(params.get("wear"))
    scored: dict[str, list[Scored]] = {}
    for entry in manifest["sessions"]:
        runtime = runtimes.get(entry["subject"]) or runtimes[None]
        name = entry["session"]
        pair = GarminPair(study / "recordings" / f"{name}-accelerometer_data.xlsx",
                          study / "recordings" / f"{name}-gyroscope_data.xlsx",
                          timezone=manifest["plan"]["timezone"], recording_id=name)
        prepared = prepare(pair, Preprocessing.from_card(runtime.card), wear_rule)
        predict = remembered(runtime.predict)
        if len(prepared.worn_windows):
            predict(prepared.worn_windows)  # the model's time is spent here, once per session
        truth, _ = read_truth(study, name)
        scored.setdefault(entry["subject"], []).append(Scored(name, entry["subject"], prepared, predict, truth))
    return scored


def with_timeline(card: ModelCard, switch_probability: float, threshold: float) -> ModelCard:
    """The same model with other timeline settings (what export would stamp into its calibration)."""
    calibration = {**card.calibration, "threshold": threshold if not switch_probability else
                   card.calibration.get("threshold"),
                   "smoothing": {"switch_probability": switch_probability, "threshold": threshold}}
    return dataclasses.replace(card, calibration=calibration)


def figures(sessions: list[Scored], card_of, params: dict, *, personal: bool = False) -> dict:
    """Every session answered with the card `card_of(subject)` (its timeline settings), pooled against the truth."""
    wear_rule = WearRule.from_params(params.get("wear"))
    comparisons = [compare_session(s.truth, score(s.prepared, s.predict, card_of(s.subject), wear_rule,
                                                  subject=s.subject, personal=personal),
                                   card_of(s.subject).labels)
                   for s in sessions]
    return study_figures(comparisons, card_of(sessions[0].subject).labels)


def headline(result: dict) -> dict:
    """The figures without the per-activity minutes table (kept once, beside the main result)."""
    return {k: v for k, v in result.items() if k != "minutes"}


def timeline_candidates(card: ModelCard, sessions: list[Scored], params: dict) -> dict:
    """Minutes error and the accuracy of given seconds on the validation sessions for each switch probability and
    abstention threshold; the chosen pair: the lowest minutes error whose given seconds reach the target accuracy."""
    settings = params["sessions"]
    target = float(params["calibration"]["target_accuracy"])
    rows = []
    for s in settings["switch_probabilities"]:
        for threshold in settings["thresholds"]:
            variant = with_timeline(card, float(s), float(threshold))
            result = figures(sessions, lambda _: variant, params)
            rows.append({"switch_probability": float(s), "threshold": float(threshold),
                         "minutes_error": result["minutes_error"], "coverage": result["coverage"],
                         "given_accuracy": result["given_accuracy"], "macro_f1": result["macro_f1"]})
    reaching = [r for r in rows if (r["given_accuracy"] or 0) >= target] or rows
    chosen = min(reaching, key=lambda r: (r["minutes_error"], -r["threshold"], r["switch_probability"]))
    return {"target_accuracy": target, "candidates": rows, "chosen": chosen}


# ---------------------------------------------------------------- per-person models

def personal_runtimes(subjects: list[str], params: dict, folder: Path) -> dict[str, ModelRuntime]:
    """Each subject's model fitted on the first personal_seconds of each recording (har.personalize's
    `personalise`: the head refit, stamped, checked against the numpy head), loaded by the service's loader."""
    from har.personalize import personalise

    seconds = float(params["sessions"]["personal_seconds"])
    runtimes = {}
    for subject in subjects:
        out = folder / f"{subject}.onnx"
        report = personalise(resolve_raw(params["data"]["raw"]), subject, out, params, model_path=MODEL,
                             keras_path=None, seconds=seconds)
        if not report["written"]:
            raise SystemExit(f"sessions: the personal model of {subject} failed its parity check: {report['parity']}")
        runtimes[subject] = ModelRuntime(out)
    return runtimes


# ---------------------------------------------------------------- the stage

def evaluate(params: dict, work: Path) -> dict:
    settings = params["sessions"]
    runtime = ModelRuntime(MODEL)
    card = runtime.card
    source = resolve_raw(params["data"]["raw"])
    hour = garmin_hour(params)
    window_s = card.window_length / float(card.input_contract["target_hz"])
    timings = {}

    def study(name: str, subjects: list[str], **overrides) -> tuple[Path, dict]:
        started = time.perf_counter()
        folder = work / name
        manifest = generate_study(folder, source, subjects, labels=card.labels, data=params["data"], garmin=hour,
                                  plan=plan_from(settings, participants=len(subjects), **overrides))
        timings[f"generate_{name}_s"] = round(time.perf_counter() - started, 1)
        return folder, manifest

    def scored(folder: Path, manifest: dict, runtimes: dict, name: str) -> list[Scored]:
        started = time.perf_counter()
        result = [s for group in score_study(folder, manifest, runtimes, params).values() for s in group]
        timings[f"score_{name}_s"] = round(time.perf_counter() - started, 1)
        return result

    val_folder, val_manifest = study("val", split_subjects("val"))
    val = scored(val_folder, val_manifest, {None: runtime}, "val")
    choice = timeline_candidates(card, val, params)

    test_subjects = split_subjects("test")
    test_folder, test_manifest = study("test", test_subjects)
    test = scored(test_folder, test_manifest, {None: runtime}, "test")
    chosen_card = with_timeline(card, choice["chosen"]["switch_probability"], choice["chosen"]["threshold"])

    rest_folder, rest_manifest = study("rest", test_subjects, skip_s=float(settings["personal_seconds"]) + window_s)
    started = time.perf_counter()
    personal = personal_runtimes(test_subjects, params, work / "personal")
    timings["personalise_s"] = round(time.perf_counter() - started, 1)
    rest_generic = scored(rest_folder, rest_manifest, {None: runtime}, "rest")
    # The same windows (the same workbooks, read once), answered by each subject's own model.
    rest_personal = [dataclasses.replace(s, predict=remembered(personal[s.subject].predict)) for s in rest_generic]
    personal_cards = {s: r.card for s, r in personal.items()}
    chosen = (choice["chosen"]["switch_probability"], choice["chosen"]["threshold"])
    generic, generic_chosen = (lambda _: card), (lambda _: chosen_card)
    own, own_chosen = (lambda subject: personal_cards[subject]), (lambda subject: with_timeline(personal_cards[subject], *chosen))
    shipped = figures(test, generic, params)
    return {
        "model_version": card.version,
        "plan": {"sessions_per_subject": 1, "nonwear_minutes": list(settings["nonwear_minutes"]),
                 "timezone": settings["timezone"], "seed": settings["seed"],
                 "personal_seconds": settings["personal_seconds"], "window_s": window_s},
        "shipped_timeline": {"switch_probability": card.switch_probability, "threshold": card.abstain_threshold},
        "validation": {"shipped": headline(figures(val, generic, params)), "timeline": choice},
        "test": {"generic": headline(shipped),
                 "generic_chosen_timeline": headline(figures(test, generic_chosen, params)),
                 "minutes": shipped["minutes"]},
        "personal": {"subjects": test_subjects,
                     "generic": headline(figures(rest_generic, generic, params)),
                     "personal": headline(figures(rest_personal, own, params, personal=True)),
                     "generic_chosen_timeline": headline(figures(rest_generic, generic_chosen, params)),
                     "personal_chosen_timeline": headline(figures(rest_personal, own_chosen, params, personal=True))},
        "seconds": timings,
    }


def write_plot(report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = report["test"]["minutes"]
    table = pd.DataFrame([{"activity": a, "true": m["true"], "reported": m["reported"]} for a, m in minutes.items()])
    PLOT_CSV.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(PLOT_CSV, index=False)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(table) + 1.2))
    y = np.arange(len(table))
    ax.barh(y - 0.2, table["true"], height=0.4, label="true")
    ax.barh(y + 0.2, table["reported"], height=0.4, label="reported (generic model)")
    ax.set_yticks(y, table["activity"])
    ax.invert_yaxis()
    ax.set_xlabel("minutes, test subjects' generated sessions")
    ax.set_title(f"Minutes per activity: error {report['test']['generic']['minutes_error']:.2f} of the true minutes")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(PLOT_PNG, dpi=100, metadata={"Software": None})
    plt.close(fig)


def stage() -> int:
    params = load_params()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sessions-") as work:
        report = evaluate(params, Path(work))
    seconds = report.pop("seconds")
    write_json(METRICS, report)
    write_plot(report)
    g, p = report["test"]["generic"], report["personal"]
    print(f"sessions: test subjects, generic model: minutes error {g['minutes_error']:.3f}, not worn "
          f"{g['reported_not_worn_minutes']:.1f} of {g['true_not_worn_minutes']:.1f} min, worn reported not worn "
          f"{g['worn_reported_not_worn_share']:.2%}, invented in non-wear {g['invented_in_not_worn_minutes']:.2f} min, "
          f"given seconds right {g['given_accuracy']} at coverage {g['coverage']}")
    print(f"sessions: per-person models: minutes error {p['personal']['minutes_error']:.3f} "
          f"(generic on the same sessions {p['generic']['minutes_error']:.3f})")
    print(f"sessions: {time.perf_counter() - started:.0f} s ({seconds})")
    return 0


# ---------------------------------------------------------------- generate: test folders for others

def generate_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.sessions generate",
                                     description="Write a study with known truth (har/study.py).")
    parser.add_argument("out", type=Path, help="folder to write (recordings/, truth/, days.csv, study.json)")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--split", choices=["train", "val", "test"], default="test",
                     help="labelled subjects of this split (data/windows/meta.json; default: test)")
    who.add_argument("--subjects", help="comma-separated subject ids instead of a split")
    parser.add_argument("--source", type=Path, help="labelled data (default: data.raw)")
    parser.add_argument("--participants", type=int, help="default: one per subject")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--sessions-per-day", type=int, default=1)
    parser.add_argument("--timezone", default=StudyPlan.timezone)
    parser.add_argument("--first-day", default=StudyPlan.first_day)
    parser.add_argument("--nonwear-minutes", type=float, nargs="*", default=list(StudyPlan.nonwear_minutes))
    parser.add_argument("--recordings-per-session", type=int, help="default: all of the subject's recordings")
    parser.add_argument("--max-recording-s", type=float, help="at most this much of each recording")
    parser.add_argument("--skip-s", type=float, default=0.0, help="leave out the first seconds of each recording")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fused", action="store_true", help="fused tables instead of workbooks (benchmarks)")
    parser.add_argument("--no-midnight", action="store_true", help="no session across midnight")
    args = parser.parse_args(argv)
    params = load_params()
    subjects = args.subjects.split(",") if args.subjects else split_subjects(args.split)
    plan = StudyPlan(participants=args.participants or len(subjects), days=args.days,
                     sessions_per_day=args.sessions_per_day, timezone=args.timezone, first_day=args.first_day,
                     nonwear_minutes=tuple(args.nonwear_minutes), recordings_per_session=args.recordings_per_session,
                     skip_s=args.skip_s, max_recording_s=args.max_recording_s, midnight=not args.no_midnight,
                     seed=args.seed, output="fused" if args.fused else "garmin")
    data = params["data"]
    started = time.perf_counter()
    manifest = generate_study(args.out, args.source or resolve_raw(data["raw"]), subjects,
                              labels=list(data["labels"]), plan=plan, garmin=garmin_hour(params), data=data,
                              fusion={k: data[k] for k in ("target_hz", "max_gap_s", "lowpass_hz")})
    print(f"wrote {len(manifest['sessions'])} session(s) of {len(manifest['participants'])} participant(s) to "
          f"{args.out} in {time.perf_counter() - started:.1f} s"
          + (f"; left out {len(manifest['recordings_left_out'])} recording(s), see study.json"
             if manifest["recordings_left_out"] else ""))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        return generate_main(argv[1:])
    if argv:
        raise SystemExit(f"usage: python -m stages.sessions [generate OUT ...] (got {argv})")
    return stage()


if __name__ == "__main__":
    sys.exit(main())
