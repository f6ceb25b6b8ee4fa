"""train stage: the CNN-BiLSTM on the training subjects, early-stopped on the validation subjects.

Writes models/model.keras (normalisation inside), models/model.json (labels in output order and
the input contract), metrics/train.json and dvclive/ (per-epoch loss, accuracy, val macro-F1).
Training is deterministic (har/training.py `make_deterministic`), so every file here is the same to
the bit for the same params and data; the wall-clock time goes to logs/train.json, which no stage
tracks, since a duration would make the outputs differ between runs.
"""
from __future__ import annotations

import os

from stages.window import load_meta, load_split
from har.config import load_params, write_json
from har.fusion import CHANNELS
from har.numerics import setting as numerics_setting
from har.training import save_model, train_model

MODEL = "models/model.keras"
TIMING_LOG = "logs/train.json"  # git-ignored: how long this run took, for people, not for dvc.lock


def model_card(labels: list[str], window_length: int, target_hz: float, summary: dict) -> dict:
    """models/model.json: what the exported model expects and returns."""
    return {
        "labels": labels,
        "window_length": window_length,
        "target_hz": target_hz,
        "channels": CHANNELS,
        "units": {"acc": "m/s^2", "gyr": "rad/s"},
        "train": {k: summary[k] for k in ("epochs_run", "best_epoch", "best_val_macro_f1")},
    }


def main() -> None:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    params = load_params()
    meta = load_meta()
    labels = meta["labels"]
    train, val = load_split("train"), load_split("val")
    print(f"training on {len(train['y'])} windows of {len(meta['subjects']['train'])} subjects, "
          f"early stopping on {len(val['y'])} windows of {len(meta['subjects']['val'])} validation subjects")

    # dvcyaml=None: the plots are declared in dvc.yaml by hand; save_dvc_exp=False: `dvc exp run`
    # already records experiments, and a plain `python -m stages.train` should not create one.
    live = Live("dvclive", dvcyaml=None, save_dvc_exp=False)
    model, summary = train_model(train["X"], train["y"], val["X"], val["y"], n_classes=len(labels),
                                 model_params=params["model"], train_params=params["train"],
                                 extra_callbacks=[DVCLiveCallback(live=live)])
    os.makedirs("models", exist_ok=True)
    save_model(model, MODEL)
    card = model_card(labels, int(train["X"].shape[1]), float(meta["target_hz"]), summary)
    write_json("models/model.json", card)
    # Which kernels ran (har/numerics.py), so a lock made another way says so; no CPU model, no timing.
    write_json("metrics/train.json", {**card["train"], "numerics": numerics_setting()})
    write_json(TIMING_LOG, {"train_seconds": summary["train_seconds"], "epochs_run": summary["epochs_run"],
                            "threads": params["train"].get("threads"),
                            "deterministic": params["train"].get("deterministic", True)})
    print(f"best epoch {summary['best_epoch']} of {summary['epochs_run']}: val macro-F1 "
          f"{summary['best_val_macro_f1']:.3f}; {summary['train_seconds']:.0f} s")


if __name__ == "__main__":
    main()
