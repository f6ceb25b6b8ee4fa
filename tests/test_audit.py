"""har.audit: the event every data-changing action writes, as a JSON line and as the dict the store keeps."""
import hashlib
import json

import pytest

from har.audit import FIELDS, audit, subject_digest
from har.logs import setup_logging
from log_helpers import documented_fields, one_audit_event, recorded_audit


@pytest.fixture(autouse=True)
def restored_root_logger():
    """setup_logging changes the root logger; the tests after these see it as it was."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_an_erasure_event_holds_a_hash_of_the_id_and_never_the_id(capsys):
    setup_logging("json")
    with recorded_audit() as events:
        returned = audit("store.erasure", actor="token:admin", subject_hash=subject_digest("1603"),
                         counts={"recordings": 2, "windows": 480})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    written = json.loads(line)
    assert "1603" not in line and "1603" not in json.dumps(returned)
    assert returned["subject_hash"] == hashlib.sha256(b"har-subject:1603").hexdigest() != subject_digest("1604")
    assert one_audit_event(events, "store.erasure", subject=None, counts={"recordings": 2, "windows": 480})
    # The line a log pipeline reads and the dict the store writes to its table say the same.
    assert {k: written[k] for k in returned} == returned
    assert (written["logger"], written["message"], written["level"]) == ("audit", "audit", "info")
    assert list(returned) == list(FIELDS) and set(FIELDS) <= set(documented_fields("The audit event"))


def test_an_audit_event_is_written_whatever_the_log_level(capsys):
    setup_logging("json", level="error")
    audit("store.ingest", actor="token:study", subject="1603", counts={"recordings": 1})
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["action"] == "store.ingest"


@pytest.mark.parametrize("call, refused", [
    (dict(action="store.delete", actor="cli:root"), "'store.delete' is not one of"),
    (dict(action="store.erasure", actor="cli:root", subject="1603", subject_hash="ab"), "not both"),
    (dict(action="store.ingest", actor="cli:root", counts={"recordings": 1.5}), "whole numbers"),
    (dict(action="store.ingest", actor="cli:root", counts={"recordings": True}), "whole numbers"),
    (dict(action="store.ingest", actor="cli:root", level="critical"), r"extra fields \['level'\]"),
])
def test_malformed_events_are_refused_before_anything_is_written(call, refused):
    with recorded_audit() as events, pytest.raises(ValueError, match=refused):
        audit(call.pop("action"), **call)
    assert events == []
