"""The README's picture of a scored recording: docs/img/timeline.png.

Run from the repository root, after `dvc repro` (it needs models/model.onnx):

    python scripts/readme_figures.py [--model models/model.onnx] [--session 2025-03-23-15-23-10]

The recording goes the one scoring path (har/scoring.py: `prepare`, then `score` with one
onnxruntime call), so the picture is what `POST /recordings` and `python -m serve.batch` answer for
the same Garmin pair. Top: the label of every episode over the
recording's time, one row per label; bottom: the model's confidence per window.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the repository's packages are importable

from har.config import load_params  # noqa: E402
from har.runtime import ModelRuntime  # noqa: E402
from har.preprocessing import Preprocessing  # noqa: E402
from har.scoring import GarminPair, prepare, score  # noqa: E402
from har.wear import WearRule  # noqa: E402

STATE_COLOURS = {"not_worn": "#9e9e9e", "uncertain": "#d9d9d9"}  # grey: what is not an activity


def score_recording(model: Path, accelerometer: Path, gyroscope: Path, session: str, timezone: str | None,
                    wear_rule: WearRule) -> dict:
    runtime = ModelRuntime(model, threads=1)
    prepared = prepare(GarminPair(accelerometer, gyroscope, timezone=timezone, recording_id=session),
                       Preprocessing.from_card(runtime.card), wear_rule)
    return score(prepared, runtime.predict, runtime.card, wear_rule).to_builtins()


def draw_timeline(answer: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    episodes = answer["episodes"]
    # Rows: the labels that occur, most minutes at the top.
    minutes = {}
    for episode in episodes:
        minutes[episode["label"]] = minutes.get(episode["label"], 0.0) + episode["duration_s"] / 60
    labels = sorted(minutes, key=minutes.get)
    colours = plt.get_cmap("tab10")
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 1.2 + 0.32 * len(labels) + 1.4), sharex=True,
                                         gridspec_kw={"height_ratios": [max(len(labels), 2), 2]})
    for row, label in enumerate(labels):
        spans = [(e["start_s"] / 60, (e["end_s"] - e["start_s"]) / 60) for e in episodes if e["label"] == label]
        top.broken_barh(spans, (row - 0.4, 0.8), color=STATE_COLOURS.get(label, colours(row % 10)),
                        hatch="//" if label == "uncertain" else None)
    top.set_yticks(range(len(labels)), [f"{label} ({minutes[label]:.1f} min)" for label in labels])
    recording = answer["recording"]
    top.set_title(f"{recording['id']}: {answer['windows']} windows, {answer['covered_minutes']} min, "
                  f"model {answer['model']['name']} {answer['model']['version']}", fontsize="medium")
    timeline = answer["timeline"]
    scored = [w for w in timeline if w["confidence"] is not None]  # not-worn windows have no confidence
    bottom.plot([w["start_s"] / 60 for w in scored], [w["confidence"] for w in scored], ".", markersize=2)
    if answer.get("abstain_threshold"):
        bottom.axhline(answer["abstain_threshold"], color="black", linewidth=0.6, linestyle="--")
    start = recording.get("start_time")
    bottom.set(ylabel="confidence", ylim=(0, 1.05),
               xlabel=f"minutes since {start[:16].replace('T', ' ')}" if start else "minutes since the start")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv=None) -> None:
    params = load_params(ROOT / "params.yaml")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / params["serve"]["model_path"])
    parser.add_argument("--garmin", type=Path, default=ROOT / params["paths"]["garmin"],
                        help="folder of Garmin workbook pairs (default: paths.garmin)")
    parser.add_argument("--session", default=params["production"]["sessions"][0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "timeline.png")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"{args.model}: no such model; run `dvc repro export` (or `dvc pull`) first")
    answer = score_recording(args.model, args.garmin / f"{args.session}-accelerometer_data.xlsx",
                             args.garmin / f"{args.session}-gyroscope_data.xlsx", args.session,
                             params["data"].get("timezone"), WearRule.from_params(params.get("wear")))
    draw_timeline(answer, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
