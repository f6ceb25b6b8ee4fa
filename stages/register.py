"""register stage: log the run to MLflow, register the ONNX model, move `champion` only through the gate.

    python -m stages.register    # -> a new registered version (alias challenger), metrics/register.json

The gate: the export's parity check passed (metrics/export.json `parity.passed`) and test macro-F1
(metrics/eval.json `macro_f1`) is not worse than the current champion's by more than
registry.f1_tolerance. A champion evaluated on other windows (another data hash) is first
re-scored on the current test split.

Two records. metrics/register.json (tracked by DVC and git) holds what was submitted: the model's
checksum, its data hash, test macro-F1 and parity verdict, all fixed by the model and its metrics
files, so a fresh clone's `dvc repro` writes the same bytes. The registry's answer (version number,
run id, the champion before and after, promoted or not and why) depends on what the registry held
before (nothing in a fresh clone, dozens of versions on a developer's machine): it goes to the
version's tags and to logs/register.json (git-ignored), never to a file dvc.lock records.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from har.config import load_params, write_json
from har.drift import reference_path_for
from har.evaluation import macro_f1
from har.logs import setup_logging
from har.registry import (RegistryUnreachable, check_reachable, git_commit, load_onnx_from_registry, register_model,
                          tracking_uri)
from har.modelfile import read_card
from har.runtime import ModelRuntime
from stages.window import load_meta, load_split

METRICS = Path("metrics/register.json")
DECISION_LOG = Path("logs/register.json")
SUBMITTED = ("model_name", "model_sha256", "data_hash", "macro_f1", "parity_passed", "tolerance")


def read_metrics(path, required: bool) -> dict:
    path = Path(path)
    if not path.exists():
        if required:
            raise FileNotFoundError(f"{path} not found (expected the evaluate stage's metrics with `macro_f1`)")
        return {}
    return json.loads(path.read_text())


def subjects_seen() -> str | None:
    """The training and validation subjects (a JSON list): whom the model learned from or was chosen on."""
    if not Path("data/windows/meta.json").exists():
        return None
    subjects = load_meta()["subjects"]
    return json.dumps(subjects["train"] + subjects["val"])


def scorer_on_test_split(tracking: str):
    """rescore(model_uri, subjects_seen) -> (macro-F1 on the current test windows, "") with
    onnxruntime as the service runs it, or (None, why) when that would not be a fair score."""
    def rescore(model_uri: str, subjects_seen: list[str] | None) -> tuple[float | None, str]:
        meta, test = load_meta(), load_split("test")
        if subjects_seen is None:
            return None, "the subjects it learned from are not recorded"
        leaked = sorted(set(subjects_seen) & set(meta["subjects"]["test"]))
        if leaked:
            return None, f"it learned from subjects {leaked}, who are in this test split"
        with tempfile.TemporaryDirectory(prefix="har-champion-") as folder:
            runtime = ModelRuntime(load_onnx_from_registry(model_uri, folder, tracking=tracking))
        if list(runtime.card.labels) != meta["labels"] or runtime.card.window_length != test["X"].shape[1]:
            return None, "its labels or window length differ from this split's"
        return macro_f1(test["y"], runtime.predict(test["X"]).argmax(axis=1), len(meta["labels"])), ""

    return rescore


def main() -> None:
    setup_logging()  # the registry's audit events (register, promote) as log lines on stderr
    params = load_params()
    registry = params["registry"]
    # Data hash and checksum as stamped into the model at export, so registry and service agree; the
    # commit it is registered from (a registry tag only) and whether the tree has uncommitted changes.
    card = read_card(Path(registry["model"]).read_bytes(), registry["model"])
    commit, dirty = git_commit()
    try:  # a tracking server that is down: one clear line, before anything is logged
        check_reachable(tracking_uri(registry["tracking_uri"]))
    except RegistryUnreachable as error:
        raise SystemExit(f"register: {error}") from None
    decision = register_model(
        registry["model"], name=registry["model_name"], experiment=registry["experiment"], params=params,
        eval_metrics=read_metrics(registry["eval_metrics"], required=True),
        # A missing export report is not an error here: the gate reads it as "parity unknown" and refuses.
        export_metrics=read_metrics(registry["export_metrics"], required=False),
        tolerance=registry["f1_tolerance"], require_parity=registry["require_parity"],
        uri=tracking_uri(registry["tracking_uri"]), rescore=scorer_on_test_split(tracking_uri(registry["tracking_uri"])),
        provenance={"git_commit": commit, "git_dirty": dirty, "data_hash": card.data_hash,
                    "model_sha256": card.sha256, "subjects_seen": subjects_seen()},
        extra_files=[reference_path_for(registry["model"])], artifact_dirs=registry["artifact_dirs"])
    write_json(METRICS, {key: decision[key] for key in SUBMITTED})
    write_json(DECISION_LOG, decision)
    verdict = "promoted to champion" if decision["promoted"] else f"not promoted (champion stays v{decision['champion_version']})"
    print(f"{decision['model_name']} v{decision['version']}: {verdict}")
    for reason in decision["reasons"]:
        print("  " + reason)


if __name__ == "__main__":
    main()
