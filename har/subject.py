"""Subject ids: the pseudonymous name of a participant, the same rule wherever one comes in.

The service's routes (their OpenAPI pattern and the per-person model lookup), the batch scorer's
folder per subject and the store's command line all check an id here before they use it, because
it becomes a file name (a personal model's `<subject>.onnx`) and a key in the study store.
"""
from __future__ import annotations

import re

SUBJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SUBJECT = re.compile(SUBJECT_PATTERN)


class SubjectIdError(ValueError):
    """Not a subject id; the message says what one looks like."""


def check_subject(subject: str) -> str:
    """`subject` when it is a subject id, else SubjectIdError."""
    if not SUBJECT.match(subject):
        raise SubjectIdError(f"subject {subject[:70]!r} is not a subject id (expected 1-64 letters, digits, "
                             f"'_', '-' or '.', starting with a letter or digit)")
    return subject
