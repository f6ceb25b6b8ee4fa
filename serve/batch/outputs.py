"""What a batch run writes for a recording: recording.json, three CSV tables, and done.json last.

minutes_per_activity.csv gives the answer's one shape of minutes (har/minutes.py): the estimate, its 90 %
interval and the counted minutes per activity.

`write_outputs` takes an answer in its JSON form (har.answer.Answer.to_builtins), so the page's
`POST /recordings/files` writes the very files of a `/recordings` answer a client sends back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

DONE = "done.json"  # written last in a recording's output folder: its presence means the rest is complete
FILES = ("recording.json", "timeline.csv", "episodes.csv", "minutes_per_activity.csv")  # beside done.json


def replace_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename: a task run twice (its worker declared dead while still
    running) or killed mid-write never leaves a half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_outputs(folder: Path, result: dict) -> None:
    """recording.json (the whole answer) and the three tables as CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    replace_text(folder / "recording.json", json.dumps(result, indent=2) + "\n")  # as har.config.write_json writes
    replace_text(folder / "timeline.csv", pd.DataFrame(
        result["timeline"], columns=["start_s", "time", "label", "activity", "confidence"]).to_csv(index=False))
    replace_text(folder / "episodes.csv", pd.DataFrame(
        result["episodes"], columns=["label", "start_s", "end_s", "duration_s", "start_time", "end_time", "windows",
                                     "mean_confidence"]).to_csv(index=False))
    replace_text(folder / "minutes_per_activity.csv", minutes_table(result).to_csv(index=False))


def minutes_table(result: dict) -> pd.DataFrame:
    """Per activity the estimated minutes, their 90 % interval and the counted minutes; then the two states. Each
    of the two columns `minutes` and `counted_minutes` adds up to the covered time: the estimate shares the
    uncertain time out among the activities (its `uncertain` row is 0), the count keeps it apart."""
    interval = result.get("minutes_interval_90") or {}
    counted = result.get("counted_minutes_per_activity", result["minutes_per_activity"])
    rows = [{"label": a, "minutes": m, "minutes_low": (interval.get(a) or [None, None])[0],
             "minutes_high": (interval.get(a) or [None, None])[1], "counted_minutes": counted.get(a)}
            for a, m in result["minutes_per_activity"].items()]
    rows += [{"label": "uncertain", "minutes": 0.0, "counted_minutes": result["uncertain_minutes"]},
             {"label": "not_worn", "minutes": result["not_worn_minutes"], "counted_minutes": result["not_worn_minutes"]}]
    return pd.DataFrame(rows, columns=["label", "minutes", "minutes_low", "minutes_high", "counted_minutes"])


def source_state(sources: list[Path], input_folder: Path) -> list[dict]:
    """What the done marker remembers of a recording's sources: a re-exported file (new size or time) is
    scored again, as make and rsync would judge it, without reading the file."""
    return [{"path": str(p.relative_to(input_folder)), "bytes": (s := p.stat()).st_size, "mtime_ns": s.st_mtime_ns}
            for p in sources]


def done_marker(model_sha256: str, subject: str | None, sources: list[Path], input_folder: Path) -> dict:
    return {"model_sha256": model_sha256, "subject": subject, "sources": source_state(sources, input_folder)}


def write_done(folder: Path, marker: dict) -> None:
    replace_text(folder / DONE, json.dumps(marker, indent=2) + "\n")


def is_done(folder: Path, marker: dict) -> bool:
    """Scored before by this model from these very sources (done.json is written after everything else)."""
    try:
        return json.loads((folder / DONE).read_text()) == marker
    except (OSError, ValueError):  # no marker, or one cut short: not done
        return False
