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

The stage: per validation and per test subject one session of all their recordings in a seeded order
(`sessions.nonwear_minutes` of the real Garmin hour's desk stillness between two of them) and one
`varied` session (a seeded part of their recordings cut to seeded lengths: activities that change in
composition and length), written as workbooks and scored through the one scoring path the service uses
(har/scoring.py: `prepare`, then `score` with the ONNX runtime), then compared with the truth second by
second and per local day (har.study: the minutes estimate, its 90 % interval's coverage of activity-days,
the counted minutes). Again for each test subject's per-person model (har.personalize's `personalise`,
fitted on the first `sessions.personal_seconds` of each recording, scored on sessions built from the
rest, one window later), with the generic model's figures on the same sessions beside it. And every
minutes estimator measured (har/minutes.py: counts, probability sums at each switch probability, PACC,
EMQ) on the validation and test sessions of both designs; the model's own estimator was chosen on the
validation subjects by stages/evaluate.py. See docs/sessions.md.
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
from har.minutes import (MinutesEstimator, adjusted, confusion_shares, counts, emq, minutes_error, sums,
                         window_shares)
from har.modelfile import ModelCard
from har.preprocessing import Preprocessing
from har.runtime import ModelRuntime
from har.scoring import GarminPair, PreparedRecording, prepare, remembered, score
from har.smoothing import smooth
from har.study import StudyPlan, compare_session, generate_study, read_truth, study_figures, truth_dates
from har.wear import WearRule
from har.windows import window_spans

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
    overrides.setdefault("nonwear_minutes", tuple(float(m) for m in settings["nonwear_minutes"]))
    return StudyPlan(**{k: settings[k] for k in keys if k in settings}, **overrides)


# ---------------------------------------------------------------- scoring, the service's own path

@dataclasses.dataclass
class Scored:
    """A session prepared once, and its model asked once (`predict` remembers its answer for the worn windows),
    so that it can be answered by several models' cards and measured by several minutes estimators."""

    session: str
    subject: str
    prepared: PreparedRecording
    predict: object  # har.scoring.remembered(runtime.predict)
    truth: np.ndarray
    dates: np.ndarray  # the local date of each second of the truth
    labels: tuple  # the model's activities

    def arrays(self) -> dict:
        """The worn windows' calibrated probabilities, start times, owned seconds and true class (the truth at the
        middle of the span each owns; -1 in true non-wear), and the true seconds per activity."""
        p = self.prepared
        spans = window_spans(p.start_s, p.preprocessing.window_s)[p.worn]
        middle = np.clip(((spans[:, 0] + spans[:, 1]) / 2).astype(int), 0, len(self.truth) - 1)
        labels = list(self.labels)
        y = np.array([labels.index(t) if t in labels else -1 for t in self.truth[middle]], dtype=np.int64)
        true = np.array([np.sum(self.truth == a) for a in labels], float)
        return {"probabilities": np.asarray(self.predict(p.worn_windows), np.float64), "start_s": p.start_s[p.worn],
                "seconds": spans[:, 1] - spans[:, 0], "y": y, "true_s": true, "step_s": p.preprocessing.step_s}


def score_study(study: Path, manifest: dict, runtimes: dict, params: dict) -> list[Scored]:
    """Each session read from its workbooks and scored by its runtime (runtimes[subject], else runtimes[None])."""
    wear_rule = WearRule.from_params(params.get("wear"))
    timezone = manifest["plan"]["timezone"]
    scored = []
    for entry in manifest["sessions"]:
        runtime = runtimes.get(entry["subject"]) or runtimes[None]
        name = entry["session"]
        pair = GarminPair(study / "recordings" / f"{name}-accelerometer_data.xlsx",
                          study / "recordings" / f"{name}-gyroscope_data.xlsx", timezone=timezone, recording_id=name)
        prepared = prepare(pair, Preprocessing.from_card(runtime.card), wear_rule)
        predict = remembered(runtime.predict)
        if len(prepared.worn_windows):
            predict(prepared.worn_windows)  # the model's time is spent here, once per session
        truth, summary = read_truth(study, name)
        scored.append(Scored(name, entry["subject"], prepared, predict, truth, truth_dates(summary, timezone),
                             tuple(runtime.card.labels)))
    return scored


def figures(sessions: list[Scored], card_of, params: dict, *, personal: bool = False) -> dict:
    """Every session answered with the card `card_of(subject)`, pooled against the truth (har.study.study_figures):
    the estimate's minutes error, the counted minutes', the 90 % interval's coverage of activity-days..."""
    wear_rule = WearRule.from_params(params.get("wear"))
    comparisons = [compare_session(s.truth, score(s.prepared, s.predict, card_of(s.subject), wear_rule,
                                                  subject=s.subject, personal=personal),
                                   card_of(s.subject).labels, s.dates)
                   for s in sessions]
    return study_figures(comparisons, card_of(sessions[0].subject).labels)


def headline(result: dict) -> dict:
    """The figures without the per-activity minutes table (kept once, beside the main result)."""
    return {k: v for k, v in result.items() if k != "minutes"}


# ---------------------------------------------------------------- the minutes estimators compared

def candidate_estimates(session: dict, card: ModelCard, switch_probabilities: list[float],
                        confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Seconds per activity of one session (its `Scored.arrays`) by each estimator measured:
    `uniform` an equal share of the worn time for every activity (no model: what a balanced design rewards);
    `counted` the timeline's confident labels (the answer's counted minutes, the reference); `argmax` every worn
    window's top activity of the timeline's posteriors (uncertain ones included); `pcc_<s>` probability sums over
    the HMM posteriors at switch probability s (0: the calibrated probabilities); `acc` the counts of each window's
    top calibrated class and `pacc` the sums at 0, each adjusted by its confusion matrix (`confusion`: hard and
    soft, measured on other validation people); `emq` the priors re-estimated for the session."""
    p, start, seconds, step = session["probabilities"], session["start_s"], session["seconds"], session["step_s"]
    k = p.shape[1]
    timeline = smooth(p, start, step, card.switch_probability) if card.switch_probability else p
    top = timeline.argmax(axis=1) if len(timeline) else np.zeros(0, np.int64)
    confident = np.where(timeline.max(axis=1) >= card.abstain_threshold, top, -1) if len(timeline) else top
    result = {"uniform": np.full(k, seconds.sum() / k), "counted": counts(confident, seconds, k),
              "argmax": counts(top, seconds, k)}
    for s in switch_probabilities:
        result[f"pcc_{s:g}"] = sums(window_shares(p, start, step, float(s)), seconds)[0]
    hard, soft = confusion
    result["acc"] = adjusted(counts(p.argmax(axis=1) if len(p) else np.zeros(0, np.int64), seconds, k), hard)
    result["pacc"] = adjusted(sums(p, seconds)[0], soft)
    result["emq"] = emq(p, seconds)
    return result


def compare_estimators(designs: dict[str, list[Scored]], card: ModelCard, params: dict,
                       confusion_of) -> dict[str, dict]:
    """Each estimator's minutes error (and worst session) per design: name -> design -> figures.
    `confusion_of(subject)`: the confusion matrices ACC and PACC adjust a subject's counts and sums by."""
    switch = [float(s) for s in params["minutes"]["switch_probabilities"]]
    table: dict[str, dict] = {}
    for design, sessions in designs.items():
        arrays = [s.arrays() for s in sessions]
        estimates = [candidate_estimates(a, card, switch, confusion_of(s.subject)) for a, s in zip(arrays, sessions)]
        for name in estimates[0]:
            per_session = [np.abs(e[name] - a["true_s"]).sum() / max(a["true_s"].sum(), 1e-9)
                           for e, a in zip(estimates, arrays)]
            table.setdefault(name, {})[design] = {
                "minutes_error": round(minutes_error([e[name] for e in estimates], [a["true_s"] for a in arrays]), 4),
                "session_minutes_error_max": round(float(max(per_session)), 4)}
    return table


def validation_confusions(sessions: list[Scored], n_classes: int):
    """ACC's and PACC's confusion matrices (of the top class, of the probabilities): for a validation subject,
    measured on the other validation subjects' sessions (leave one person out); for anyone else, on all of them."""
    arrays = {s.subject: s.arrays() for s in sessions}

    def matrix(subjects) -> tuple[np.ndarray, np.ndarray]:
        parts = [arrays[s] for s in subjects]
        y = np.concatenate([a["y"] for a in parts])
        known = y >= 0
        p = np.concatenate([a["probabilities"] for a in parts])[known]
        seconds = np.concatenate([a["seconds"] for a in parts])[known]
        return (confusion_shares(y[known], np.eye(n_classes)[p.argmax(axis=1)], seconds, n_classes),
                confusion_shares(y[known], p, seconds, n_classes))

    everyone = matrix(list(arrays))
    others = {subject: matrix([s for s in arrays if s != subject]) for subject in arrays}
    return lambda subject: others.get(subject, everyone)


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
    varied = settings["varied"]
    varied_plan = {"recordings_per_session": int(varied["recordings_per_session"]),
                   "piece_seconds": tuple(float(x) for x in varied["piece_seconds"]),
                   "nonwear_minutes": tuple(float(m) for m in varied["nonwear_minutes"])}
    timings = {}

    def scored(name: str, subjects: list[str], runtimes: dict, **overrides) -> list[Scored]:
        started = time.perf_counter()
        folder = work / name
        manifest = generate_study(folder, source, subjects, labels=card.labels, data=params["data"], garmin=hour,
                                  plan=plan_from(settings, participants=len(subjects), **overrides))
        timings[f"generate_{name}_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        result = score_study(folder, manifest, runtimes, params)
        timings[f"score_{name}_s"] = round(time.perf_counter() - started, 1)
        return result

    val_subjects, test_subjects = split_subjects("val"), split_subjects("test")
    generic = {None: runtime}
    val, val_varied = scored("val", val_subjects, generic), scored("val_varied", val_subjects, generic, **varied_plan)
    test, test_varied = scored("test", test_subjects, generic), scored("test_varied", test_subjects, generic,
                                                                        **varied_plan)
    rest = scored("rest", test_subjects, generic, skip_s=float(settings["personal_seconds"]) + window_s)
    started = time.perf_counter()
    personal = personal_runtimes(test_subjects, params, work / "personal")
    timings["personalise_s"] = round(time.perf_counter() - started, 1)
    # The same windows (the same workbooks, read once), answered by each subject's own model.
    rest_personal = [dataclasses.replace(s, predict=remembered(personal[s.subject].predict)) for s in rest]
    personal_cards = {s: r.card for s, r in personal.items()}
    own = lambda subject: personal_cards[subject]
    shipped = figures(test, lambda _: card, params)
    started = time.perf_counter()
    confusion_of = validation_confusions(val, len(card.labels))
    candidates = {"validation": compare_estimators({"balanced": val, "varied": val_varied}, card, params, confusion_of),
                  "test": compare_estimators({"balanced": test, "varied": test_varied}, card, params, confusion_of)}
    timings["estimators_s"] = round(time.perf_counter() - started, 1)
    return {
        "model_version": card.version,
        "plan": {"sessions_per_subject": 1, "nonwear_minutes": list(settings["nonwear_minutes"]),
                 "timezone": settings["timezone"], "seed": settings["seed"],
                 "personal_seconds": settings["personal_seconds"], "window_s": window_s,
                 "varied": {k: list(v) if isinstance(v, tuple) else v for k, v in varied_plan.items()}},
        "shipped_timeline": {"switch_probability": card.switch_probability, "threshold": card.abstain_threshold},
        "estimator": MinutesEstimator.from_card(card).describe(),
        "validation": {"balanced": headline(figures(val, lambda _: card, params)),
                       "varied": headline(figures(val_varied, lambda _: card, params))},
        "test": {"generic": headline(shipped), "varied": headline(figures(test_varied, lambda _: card, params)),
                 "minutes": shipped["minutes"]},
        "personal": {"subjects": test_subjects,
                     "generic": headline(figures(rest, lambda _: card, params)),
                     "personal": headline(figures(rest_personal, own, params, personal=True))},
        "estimators": {name: {split: rows[name] for split, rows in candidates.items()}
                       for name in candidates["test"]},
        "seconds": timings,
    }


def write_plot(report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = report["test"]["minutes"]
    table = pd.DataFrame([{"activity": a, "true": m["true"], "reported": m["reported"], "low": m["low"],
                           "high": m["high"], "counted": m["counted"]} for a, m in minutes.items()])
    PLOT_CSV.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(PLOT_CSV, index=False)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.2))
    y = np.arange(len(table))
    ax.barh(y - 0.27, table["true"], height=0.27, label="true")
    below, above = table["reported"] - table["low"], table["high"] - table["reported"]
    ax.barh(y, table["reported"], height=0.27, xerr=[below, above], capsize=2,
            label="estimated, with the sessions' 90 % intervals added up")
    ax.barh(y + 0.27, table["counted"], height=0.27, label="counted (confident labels)")
    ax.set_yticks(y, table["activity"])
    ax.invert_yaxis()
    ax.set_xlabel("minutes, test subjects' generated sessions (generic model)")
    ax.set_title(f"Minutes per activity: error {report['test']['generic']['minutes_error']:.2f} of the true minutes "
                 f"(counted {report['test']['generic']['counted_minutes_error']:.2f})")
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
    g, v, p = report["test"]["generic"], report["test"]["varied"], report["personal"]
    print(f"sessions: test subjects, generic model: minutes error {g['minutes_error']:.3f} (counted "
          f"{g['counted_minutes_error']:.3f}; worst session {g['session_minutes_error_max']:.3f}), varied sessions "
          f"{v['minutes_error']:.3f} (counted {v['counted_minutes_error']:.3f}); 90 % intervals hold "
          f"{g['interval_coverage']} and {v['interval_coverage']} of activity-days; not worn "
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
