"""Re-scoring stored recordings with another model, from their fused blobs: no raw upload needed.

Each stored recording's fused table is cut into windows again with the model's own preprocessing
(har.timeline.cut_recording), scored, answered (har.timeline.recording_answer) and stored as a new
scoring beside the old ones; days then follow the newest scoring. A recording the model already
scored is skipped (the unique constraint on recording + model sha256 decides).
"""
from __future__ import annotations

from har.audit import audit, local_actor
from har.runtime import ModelRuntime
from har.timeline import cut_recording, recording_answer, recording_preprocessing, worn_probabilities
from har.wear import WearRule


def fusion_report(stored: dict) -> dict:
    """The fusion report recording_answer reads, rebuilt from the answer's `recording` entry the store keeps."""
    summary = stored.get("quality") or {}
    return {"samples_written": stored["fused_samples"], "fused_seconds": stored["fused_seconds"],
            "segments": stored["segments"], **{s: summary[s] for s in ("acc", "gyr") if isinstance(summary.get(s), dict)}}


def rescore(store, runtime: ModelRuntime, wear_rule: WearRule, *, subject: str | None = None,
            actor: str | None = None) -> dict:
    """Score every stored recording (of `subject`, or all) with `runtime`'s model; counts of scored and skipped."""
    card = runtime.card
    preprocessing = recording_preprocessing(card)
    counts = {"scored": 0, "already_scored": 0}
    for owner, row in store.stored_recordings():
        if subject is not None and owner != subject:
            continue
        if store.has_scoring(row.content_hash, card.sha256):
            counts["already_scored"] += 1
            continue
        quality = fusion_report(row.quality)
        scored = cut_recording(store.fused(row.id), quality, preprocessing, wear_rule, recording_id=row.name,
                               start_time=row.quality.get("start_time"))
        probabilities = worn_probabilities(runtime.predict, scored, len(card.labels))
        answer = recording_answer(card, scored, probabilities, wear_rule, subject=owner, personal=False)
        counts["scored" if store.add_scoring(row.id, answer) else "already_scored"] += 1
    audit("store.rescore", actor=actor or local_actor(), subject=subject, model=card.name, version=card.version,
          counts=counts)
    return counts
