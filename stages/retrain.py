"""Retraining trigger: drift, time since the last training and new labelled data decide; DVC retrains.

    python -m stages.retrain --dry-run     # print the decision and why, change nothing
    python -m stages.retrain               # when triggered: `dvc exp run` (register gate included)
    python -m stages.retrain --service-drift http://127.0.0.1:8000/drift --dry-run

The policy (params.yaml `monitor.retrain`) needs all three: drift at least `min_severity`
(metrics/drift.json, and the service's live summary when given), at least `min_interval_hours`
since the newest registered model version, and at least `min_new_recordings` labelled
recordings that the last training did not see. Drift alone does not retrain: without new
labels the same data would give the same model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from har.annotations import annotation_activities, find_labelled_sessions, session_folders, session_recording_id
from har.audit import audit, local_actor
from har.config import load_params, resolve_raw
from har.drift import SEVERITIES, worst
from har.labelled import find_wisdm_pairs, read_long_table, wisdm_recording_id
from har.logs import add_log_arguments, setup_logging

KNOWN_INDEX = Path("data/fused/labelled/index.csv")
REGISTER_LOG = Path("logs/register.json")  # the register stage's decision (stages/register.py)


def retrain_decision(severity: str, hours_since_training: float | None, new_recordings: int,
                     policy: dict) -> tuple[bool, list[str]]:
    """Whether to retrain, with one reason per condition (all must hold)."""
    drift_ok = SEVERITIES.index(severity) >= SEVERITIES.index(policy["min_severity"])
    interval_ok = hours_since_training is None or hours_since_training >= policy["min_interval_hours"]
    data_ok = new_recordings >= policy["min_new_recordings"]
    since = "never trained" if hours_since_training is None else f"{hours_since_training:.1f} h since the last training"
    reasons = [
        f"[{'yes' if drift_ok else 'no'}] drift severity {severity}, policy needs at least {policy['min_severity']}",
        f"[{'yes' if interval_ok else 'no'}] {since}, policy needs at least {policy['min_interval_hours']} h",
        f"[{'yes' if data_ok else 'no'}] {new_recordings} new labelled recordings, policy needs at least "
        f"{policy['min_new_recordings']}",
    ]
    return drift_ok and interval_ok and data_ok, reasons


# ---------------------------------------------------------------- the inputs, read at the edge

def service_severity(location: str, token_env: str) -> tuple[str, str]:
    """(severity, note) from the service's GET /drift JSON, a file path or an http(s) URL."""
    if location.startswith(("http://", "https://")):
        import httpx

        token = os.environ.get(token_env, "")
        response = httpx.get(location, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)
        response.raise_for_status()
        summary = response.json()
    else:
        summary = json.loads(Path(location).read_text())
    if "severity" not in summary:
        raise ValueError(f"{location}: no `severity` in the drift summary (expected the service's GET /drift JSON)")
    if summary.get("enough_data") is False:
        return "none", f"service: {summary.get('windows', 0)} windows, too few to judge"
    return summary["severity"], f"service: {summary['severity']} over {summary.get('windows', '?')} windows"


def labelled_recording_ids(data: dict, raw) -> set[str]:
    """The recording ids the configured labelled source holds (the ids the fuse stage gives them)."""
    root = resolve_raw(raw)
    if data["source"] == "wisdm":
        pairs, _ = find_wisdm_pairs(root, activities=list(data["labels"]))
        return {wisdm_recording_id(p) for p in pairs}
    if data["source"] == "long_table":
        return {r.recording_id for r in read_long_table(root, data["long_table"]) if r.activity in data["labels"]}
    if data["source"] == "sessions":  # one recording per annotated interval, counted from the CSVs alone
        return {session_recording_id(s["session"], row, activity)
                for _, folder in session_folders(root) for s in find_labelled_sessions(folder)[0]
                for row, activity in annotation_activities(s["annotations"]) if activity in data["labels"]}
    raise ValueError(f"data.source must be 'wisdm', 'long_table' or 'sessions', got {data['source']!r}")


def known_recording_ids(index_path: Path) -> set[str]:
    """The recordings the last training was built from (the fuse stage's index); none if never fused."""
    if not index_path.exists():
        return set()
    return set(pd.read_csv(index_path, dtype=str)["recording"])


def hours_since_last_training(registry: dict, model_path: Path, now: datetime) -> float | None:
    """From the newest registered version of the model; else the model file's age; None if neither exists."""
    from har.registry import tracking_uri

    uri = tracking_uri(registry["tracking_uri"])
    newest = None
    # Never create an empty SQLite registry just to look into it.
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists():
        from har.registry import connect

        versions = connect(uri).search_model_versions(f"name='{registry['model_name']}'")
        if versions:
            newest = datetime.fromtimestamp(max(v.creation_timestamp for v in versions) / 1000, timezone.utc)
    if newest is None and model_path.exists():
        newest = datetime.fromtimestamp(model_path.stat().st_mtime, timezone.utc)
    return None if newest is None else (now - newest).total_seconds() / 3600


def experiment_command(data: dict, labelled_raw: str) -> list[str]:
    """`dvc exp run`, pointing data.raw at the new labelled data when it lives elsewhere.

    The pipeline then fuses, windows, trains, evaluates, exports and registers; register is the gate.
    """
    command = ["dvc", "exp", "run"]
    if str(labelled_raw) != str(data["raw"]):
        command += ["-S", f"data.raw={labelled_raw}"]
    return command


def main(argv=None, run=subprocess.run) -> int:
    params = load_params()
    policy, data = params["monitor"]["retrain"], params["data"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the decision and why; run nothing")
    parser.add_argument("--drift", default="metrics/drift.json", help="the drift stage's report")
    parser.add_argument("--service-drift", default=policy.get("service_drift"),
                        help="the service's GET /drift JSON: a file or an http(s) URL")
    parser.add_argument("--labelled-raw", default=policy.get("labelled_raw") or data["raw"],
                        help="where the labelled data, new recordings included, is (same format as data.raw)")
    parser.add_argument("--known-index", default=str(KNOWN_INDEX), help="the recordings the last training used")
    parser.add_argument("--last-trained", help="ISO time of the last training (default: newest registry version)")
    add_log_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)

    now = datetime.now(timezone.utc)
    drift_path = Path(args.drift)
    if not drift_path.exists():
        raise SystemExit(f"retrain: {drift_path} not found (run `dvc repro drift` first)")
    severities = [json.loads(drift_path.read_text())["severity"]]
    notes = [f"{drift_path}: {severities[0]}"]
    if args.service_drift:
        severity, note = service_severity(args.service_drift, policy["service_token_env"])
        severities.append(severity)
        notes.append(note)
    if args.last_trained:
        last = datetime.fromisoformat(args.last_trained)
        hours = (now - (last if last.tzinfo else last.replace(tzinfo=timezone.utc))).total_seconds() / 3600
    else:
        hours = hours_since_last_training(params["registry"], Path(params["registry"]["model"]), now)
    new = labelled_recording_ids(data, args.labelled_raw) - known_recording_ids(Path(args.known_index))

    triggered, reasons = retrain_decision(worst(severities), hours, len(new), policy)
    command = experiment_command(data, args.labelled_raw)
    print(f"retrain: {'TRIGGERED' if triggered else 'not triggered'} ({'; '.join(notes)})")
    for reason in reasons:
        print("  " + reason)
    if not triggered:
        return 0
    if args.dry_run:
        print("dry run: would run `" + " ".join(command) + "`, then report the register gate's decision")
        return 0
    print("running `" + " ".join(command) + "`", flush=True)
    audit("retrain.trigger", actor=local_actor(), model=params["registry"]["model_name"],
          counts={"new_recordings": len(new)}, severity=worst(severities), command=" ".join(command))
    before = REGISTER_LOG.stat().st_mtime_ns if REGISTER_LOG.exists() else None
    result = run(command)
    if result.returncode != 0:
        print(f"retrain: `{' '.join(command)}` failed with exit code {result.returncode}", file=sys.stderr)
        return result.returncode
    if not REGISTER_LOG.exists() or REGISTER_LOG.stat().st_mtime_ns == before:
        print("register gate: did not run (the experiment produced no new model)")
    else:
        decision = json.loads(REGISTER_LOG.read_text())
        print(f"register gate: v{decision['version']} {'promoted' if decision['promoted'] else 'not promoted'}: "
              + "; ".join(decision["reasons"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
