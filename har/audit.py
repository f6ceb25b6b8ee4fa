"""The audit trail: one event for each action that changes data or which model answers.

    from har.audit import audit, local_actor, subject_digest

    audit("registry.promote", actor=local_actor(), model="har-wisdm_hand", version=7)
    audit("store.erasure", actor="token:admin", subject_hash=subject_digest("1603"), counts={"recordings": 4})

Each call writes one event (message `audit`) on the `audit` logger, through the process's log setup
(har/logs.py: a JSON line in production), and returns it, so that a caller with a database (the study
store) writes the same event into its own audit table. No HTTP here: the registry, the stages and the
store all call it. docs/operations.md documents every field.
"""
from __future__ import annotations

import getpass
import hashlib

from har.logs import event_logger

LOGGER = "audit"
# Every event has these keys (None where they do not apply), in this order; `extra` keys follow.
FIELDS = ("action", "actor", "subject", "subject_hash", "model", "version", "counts")
ACTIONS = ("registry.register", "registry.promote", "registry.rollback", "retrain.trigger",
           "store.ingest", "store.erasure", "store.rescore")

_log = event_logger(LOGGER)


def audit(action: str, *, actor: str, subject: str | None = None, subject_hash: str | None = None,
          model: str | None = None, version: str | int | None = None, counts: dict[str, int] | None = None,
          **extra) -> dict:
    """Write one audit event and return it (a JSON-ready dict: FIELDS, then `extra`).

    action        what was done, one of ACTIONS (e.g. "registry.promote", "store.erasure").
    actor         who: the kind of credential that asked ("token:<kind>" for an HTTP token,
                  `local_actor()` = "cli:<os user>" for a command line or a DVC stage).
    subject       the subject id the action concerns (ingest, re-score, a personal model), or None.
    subject_hash  instead of `subject` where the id itself must not be kept (erasure):
                  `subject_digest(subject)`. Giving both is refused.
    model         registered model name, or the served model's name.
    version       the model version concerned (the new champion on promote and rollback).
    counts        how many of what, e.g. {"recordings": 3, "windows": 1200}; numbers only.
    extra         further JSON-ready facts (e.g. champion_before, reason, run_id); never tokens,
                  sample values or a subject id beside a subject_hash.
    """
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r} is not one of {list(ACTIONS)}")
    if subject is not None and subject_hash is not None:
        raise ValueError("audit: give subject or subject_hash, not both (an erasure keeps the hash only)")
    if counts is not None and not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        raise ValueError(f"audit counts must be whole numbers, got {counts!r}")
    clash = sorted(set(extra) & {*FIELDS, "time", "level", "logger", "message", "request_id"})
    if clash:
        raise ValueError(f"audit: extra fields {clash} would overwrite documented ones")
    event = {"action": action, "actor": actor, "subject": subject, "subject_hash": subject_hash, "model": model,
             "version": None if version is None else str(version), "counts": counts, **extra}
    _log.info("audit", **event)
    return event


def subject_digest(subject: str) -> str:
    """The hex SHA-256 of "har-subject:<id>": the same id always gives the same digest, so an erasure can
    be matched to a later question about that id, while the event itself holds no id. (The study store's
    audit rows use the same digest.)"""
    return hashlib.sha256(f"har-subject:{subject}".encode()).hexdigest()


def local_actor() -> str:
    """"cli:<user>" for whoever runs this process (a command line, a DVC stage)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        user = "unknown"
    return f"cli:{user}"
