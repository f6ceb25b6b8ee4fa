"""What the study store recognises a recording by: the content hash of its raw pair.

The service hashes an upload with it before storing, the batch scorer a workbook pair or a fused
table (with its start time), so a recording stored once is recognised however it comes again.
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def content_hash(accelerometer: bytes | str | Path, gyroscope: bytes | str | Path) -> str:
    """sha256 over a raw pair (bytes or paths): each part's length, then its bytes, so the boundary is unambiguous."""
    digest = hashlib.sha256()
    for part in (accelerometer, gyroscope):
        data = part if isinstance(part, bytes) else Path(part).read_bytes()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
