"""Re-scoring stored recordings with another model, from their fused blobs: no raw upload needed.

Each stored recording's fused table goes the one scoring path (har/scoring.py: prepare with the
model's own preprocessing, then score) and its answer is stored as a new scoring beside the old
ones; days then follow the newest scoring. A recording the model already scored is skipped (the
unique constraint on recording + model sha256 decides), unless that scoring was stored before answers
carried their minutes basis (store revision 0003): then the same model's answer completes it in place,
and its days get the estimate and its interval instead of the counted minutes.
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
    """Score every stored recording (of `subject`, or all) with `runtime`'s model; counts of scored, completed (a
    scoring of this model stored without its minutes basis) and skipped."""
    card = runtime.card
    preprocessing = Preprocessing.from_card(card)
    counts = {"scored": 0, "completed": 0, "already_scored": 0}
    for owner, row in store.stored_recordings():
        if subject is not None and owner != subject:
            continue
        state = store.scoring_state(row.id, card.sha256)
        if state == "complete":
            counts["already_scored"] += 1
            continue
        # row.quality is the stored answer's `recording` entry: its start time and fusion report
        source = FusedTable(store.fused(row.id), row.name, row.quality.get("start_time"), fusion_report(row.quality))
        answer = score(prepare(source, preprocessing, wear_rule), runtime.predict, card, wear_rule,
                       subject=owner).to_builtins()
        if state == "without_basis":
            counts["completed" if store.complete_scoring(row.id, answer) else "already_scored"] += 1
        else:
            counts["scored" if store.add_scoring(row.id, answer) else "already_scored"] += 1
    audit("store.rescore", actor=actor or local_actor(), subject=subject, model=card.name, version=card.version,
          counts=counts)
    return counts
