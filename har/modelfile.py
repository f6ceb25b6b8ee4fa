"""The ONNX model file's metadata and checksum: written by `stages/export.py`, checked by the service.

Metadata lives in the ONNX `metadata_props` (string key -> string value; JSON for structured
values), so the model file is self-describing: labels in output order, the input contract,
how raw recordings become windows, provenance and test metrics.

Checksum: `sha256` is the SHA-256 of the serialized model *without* the `sha256` entry. The
exporter serializes the model, hashes it and then adds the entry; the service removes the entry
from what it read, serializes again and compares. ONNX protobufs have no maps or unknown fields,
so that round trip reproduces the exporter's bytes exactly; any change to a weight, a node or a
metadata value (a label, say) changes the hash.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import onnx

CHECKSUM_KEY = "sha256"
JSON_KEYS = ("labels", "input_contract", "preprocessing", "metrics", "calibration")
REQUIRED_KEYS = ("labels", "input_contract", "model_name", "model_version", CHECKSUM_KEY)


class ModelFileError(ValueError):
    """A model file the service must not serve: unreadable, incomplete metadata, or a checksum mismatch."""


@dataclass(frozen=True)
class ModelCard:
    """What the service knows about its model, all of it read from the model file."""

    name: str
    version: str
    labels: list[str]
    input_contract: dict  # input/output names, window_length, target_hz, channels, units
    preprocessing: dict  # how raw recordings become windows: target_hz, max_gap_s, lowpass_hz, overlap...
    metrics: dict  # test metrics of the exported model
    git_commit: str | None
    data_hash: str | None
    sha256: str
    calibration: dict = field(default_factory=dict)  # temperature (inside the graph) and abstention threshold

    @property
    def switch_probability(self) -> float:
        """The timeline smoother's switch probability between consecutive windows (0: timelines are not smoothed)."""
        return float((self.calibration.get("smoothing") or {}).get("switch_probability") or 0.0)

    @property
    def abstain_threshold(self) -> float:
        """Timeline windows whose top-1 probability is below this are `uncertain`: on the smoother's posteriors when
        timelines are smoothed (each threshold was chosen on what it judges). 0: an uncalibrated model never abstains."""
        if self.switch_probability:
            return float(self.calibration["smoothing"]["threshold"])
        return float(self.calibration.get("threshold") or 0.0)

    def identity(self) -> dict:
        """Which model answered: every answer carries this (the sha256 tells two builds of one version apart;
        the study store keeps one scoring per recording and model sha256)."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @property
    def window_length(self) -> int:
        return int(self.input_contract["window_length"])

    @property
    def channels(self) -> list[str]:
        return list(self.input_contract["channels"])

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "labels": self.labels,
                "input_contract": self.input_contract, "preprocessing": self.preprocessing,
                "metrics": self.metrics, "calibration": self.calibration, "git_commit": self.git_commit,
                "data_hash": self.data_hash, "sha256": self.sha256}


def _without_checksum(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [p for p in copy.metadata_props if p.key != CHECKSUM_KEY]
    del copy.metadata_props[:]
    copy.metadata_props.extend(kept)
    return copy


def model_checksum(model: onnx.ModelProto) -> str:
    return hashlib.sha256(_without_checksum(model).SerializeToString()).hexdigest()


def stamp(model: onnx.ModelProto, metadata: dict) -> bytes:
    """The model's bytes with `metadata` (str, or JSON-encoded values) and its checksum attached."""
    stamped = onnx.ModelProto()
    stamped.CopyFrom(model)
    del stamped.metadata_props[:]
    for key, value in metadata.items():
        if key == CHECKSUM_KEY:
            raise ValueError(f"metadata key {CHECKSUM_KEY!r} is reserved for the checksum")
        text = value if isinstance(value, str) else json.dumps(value)
        stamped.metadata_props.add(key=key, value=text)
    stamped.metadata_props.add(key=CHECKSUM_KEY, value=model_checksum(stamped))
    return stamped.SerializeToString()


def read_card(data: bytes, source: str = "model") -> ModelCard:
    """Parse and verify a model file's bytes; raise ModelFileError unless it may be served."""
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise ModelFileError(f"{source}: not an ONNX model ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    missing = [k for k in REQUIRED_KEYS if k not in props]
    if missing:
        raise ModelFileError(f"{source}: metadata is missing {missing} (expected a model written by stages/export.py)")
    actual = model_checksum(model)
    if actual != props[CHECKSUM_KEY]:
        raise ModelFileError(f"{source}: checksum mismatch: metadata says {props[CHECKSUM_KEY]}, "
                             f"the file hashes to {actual}; the model was changed after export")
    try:
        values = {k: json.loads(props[k]) if k in JSON_KEYS else props[k] for k in props}
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{source}: metadata value is not valid JSON ({exc})") from None
    return ModelCard(name=values["model_name"], version=values["model_version"], labels=list(values["labels"]),
                     input_contract=values["input_contract"], preprocessing=values.get("preprocessing", {}),
                     metrics=values.get("metrics", {}), git_commit=values.get("git_commit"),
                     data_hash=values.get("data_hash"), sha256=props[CHECKSUM_KEY],
                     calibration=values.get("calibration", {}))
