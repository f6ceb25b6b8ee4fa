"""Helpers for tests of the logs: the documented fields, JSON lines read back, audit events caught.

The study store's ingest, erasure and re-score tests use `recorded_audit` and `one_audit_event`:

    with recorded_audit() as events:
        store.erase(subject="1603", actor="token:admin")
    event = one_audit_event(events, "store.erasure", subject_hash=subject_digest("1603"))
    assert event["counts"] == {"recordings": 2}
"""
from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path

from har.audit import FIELDS, LOGGER

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def documented_fields(heading: str) -> list[str]:
    """The field names (first column, in backticks) of the table under `### <heading>` in docs/operations.md."""
    text = OPERATIONS.read_text()
    start = text.index(f"### {heading}\n")
    section = text[start:].split("\n#", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)


def json_lines(text: str) -> list[dict]:
    """Every line of a log as a JSON object; fails naming the first line that is not one."""
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"log line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(event, dict), f"log line {number} is not an object: {line[:300]!r}"
        events.append(event)
    return events


def access_event(log_path: Path, request_id: str, timeout_s: float = 10.0) -> dict:
    """The access event of request `request_id` in a running service's JSON log (written just after the
    answer was sent, so it may arrive a moment after the client has its answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in json_lines(log_path.read_text())
                 if e.get("logger") == "serve.access" and e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"expected one access event for request {request_id}, got {found}"
            return found[0]
        time.sleep(0.05)


class _Caught(logging.Filter):
    """A filter, not a handler: a command's own log set-up (dictConfig) drops the audit logger's handlers."""

    def __init__(self, events: list):
        super().__init__()
        self.events = events

    def filter(self, record: logging.LogRecord) -> bool:
        # structlog hands the standard library the event dict itself as the record's message.
        if isinstance(record.msg, dict) and record.msg.get("event") == "audit":
            self.events.append({k: v for k, v in record.msg.items() if k != "event"})
        return True


@contextmanager
def recorded_audit():
    """The audit events written inside the block, as audit() built them (plus time, level, logger)."""
    events: list[dict] = []
    logger, caught = logging.getLogger(LOGGER), _Caught(events)
    level = logger.level
    logger.addFilter(caught)
    logger.setLevel(logging.INFO)
    try:
        yield events
    finally:
        logger.removeFilter(caught)
        logger.setLevel(level)


def one_audit_event(events: list[dict], action: str, **expected) -> dict:
    """The single event of `action` with the `expected` values among `events` (fails on none or several),
    checked for every documented field."""
    matching = [e for e in events if e.get("action") == action and all(e.get(k) == v for k, v in expected.items())]
    assert len(matching) == 1, f"expected one {action!r} audit event with {expected}, got {len(matching)}: {events}"
    event = matching[0]
    documented = documented_fields("The audit event")
    missing = [f for f in (*FIELDS, "time", "level", "logger") if f not in event]
    assert not missing, f"audit event {event} lacks {missing}"
    assert set(FIELDS) <= set(documented), f"docs/operations.md's audit table lacks {set(FIELDS) - set(documented)}"
    assert event["logger"] == LOGGER and event["level"] == "info"
    return event
