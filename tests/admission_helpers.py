"""Helpers for the tests of upload admission (serve/admission.py) against a live `python -m serve`: its
admission metrics, a request that holds the budget, and multipart bodies written by hand (for clients,
like urllib, that have no encoder of their own)."""
from __future__ import annotations

import http.client
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serve_helpers import TOKEN


def scrape(url: str) -> dict:
    """(sample name, labels) -> value of every har_admission_* sample on the service's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name.startswith("har_admission")}


def metric(url: str, name: str, **labels) -> float:
    return scrape(url)[(name, tuple(sorted(labels.items())))]


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def headers_only(url: str, content_length: int, timeout_s: float = 10.0, path: str = "/recordings") -> http.client.HTTPConnection:
    """A POST whose headers announce `content_length` bytes of which none is sent (yet), on a kept-alive connection."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    connection.putrequest("POST", path)
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.putheader("Content-Type", "multipart/form-data; boundary=b0undary")
    connection.putheader("Content-Length", str(content_length))
    connection.endheaders()
    return connection


@contextmanager
def budget_held(url: str, content_length: int):
    """An admitted upload that holds `content_length` bytes' charge of the budget until the block ends: its body
    never comes. Afterwards the budget is empty again."""
    connection = headers_only(url, content_length)
    wait_for(lambda: metric(url, "har_admission_in_flight_bytes") > 0)
    try:
        yield connection
    finally:
        connection.close()  # the body read fails, the answer is never sent: the budget is released regardless
        wait_for(lambda: metric(url, "har_admission_in_flight_bytes") == 0)


def multipart(files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data body with one file per field: name -> (filename, content)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n"
             for name, (filename, content) in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
