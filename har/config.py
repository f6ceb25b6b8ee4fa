"""Reading the composed parameters (params.yaml) and locating the raw data."""
from __future__ import annotations

import json
from pathlib import Path

import yaml


def load_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml as composed from conf/ by DVC's Hydra integration."""
    with open(path) as f:
        return yaml.safe_load(f)


def resolve_raw(path: str | Path) -> Path:
    """A raw-data path as given, or, if relative and missing, found beside an enclosing directory.

    Queued DVC experiments run in a copy under .dvc/tmp/exps/<name>, where `../shared/data`
    points nowhere; searching upwards finds the same folder beside the real checkout.
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    for parent in Path.cwd().resolve().parents:
        candidate = parent / path
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"raw data {path} not found from {Path.cwd()} or any parent directory")


def write_json(path: str | Path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
