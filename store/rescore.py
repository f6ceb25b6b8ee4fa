"""Re-scoring stored recordings with another model, from their fused blobs: no raw upload needed.

Each stored recording's fused table goes the one scoring path (har/scoring.py: prepare with the
model's own preprocessing, then score) and its answer is stored as a new scoring beside the old
ones; days then follow the newest scoring. A recording the model already scored is skipped (the
unique constraint on recording + model sha256 decides).
"""
from __future__ import annotations

from har.answer import fusion_report
from har.audit import audit, local_actor
from har.preprocessing import Preprocessing
from har.runtime import ModelRuntime
from har.scoring import FusedTable, prepare, score
from har.wear import WearRule


def rescore(store, runtime: ModelRuntime, wear_rule: WearRule, *, subject: str | None = None,
            actor: str | None = None) -> dict:
    """Score every stored recording (of `subject`, or all) with `runtime`'s model; counts of scored and skipped."""
    card = runtime.card
    preprocessing = Preprocessing.from_card(card)
    counts = {"scored": 0, "already_scored": 0}
    for owner, row in store.stored_recordings():
        if subject is not None and owner != subject:
            continue
        if store.has_scoring(row.content_hash, card.sha256):
            counts["already_scored"] += 1
            continue
        # row.quality is the stored answer's `recording` entry: its start time and fusion report
        source = FusedTable(store.fused(row.id), row.name, row.quality.get("start_time"), fusion_report(row.quality))
        answer = score(prepare(source, preprocessing, wear_rule), runtime.predict, card, wear_rule, subject=owner)
        counts["scored" if store.add_scoring(row.id, answer.to_builtins()) else "already_scored"] += 1
    audit("store.rescore", actor=actor or local_actor(), subject=subject, model=card.name, version=card.version,
          counts=counts)
    return counts
