"""Prometheus metrics and the observer hook every prediction passes through.

Observers are the extension point for monitoring: each gets every batch of windows the
service scored and the probabilities it answered with, whichever route they came from
(`/predict`, `/v2/.../infer`, `/recordings`). `PredictionMetrics` is one; a drift monitor
is meant to be another, added through `create_app(observers=[...])` together with its own
route (e.g. `GET /drift`) through `create_app(extra_route_handlers=[...])`.
Observers run in the worker thread of each model call, right after it, once per call (a batch
of coalesced requests is one call), possibly in several threads at once: they must be thread-safe.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from har.modelfile import ModelCard

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
REFUSAL_REASONS = ("queue_full", "timeout", "too_large")  # serve/admission.py
RECENT_WINDOWS = 1000  # the mean-confidence gauge covers this many most recent windows


class Observer(Protocol):
    def observe(self, windows: np.ndarray, probabilities: np.ndarray) -> None:
        """Called once per model call: windows float32 [n, length, 6], probabilities [n, labels]."""


class AdmissionMetrics:
    """The upload admission budget (serve/admission.py): what it holds, who waits, who is refused."""

    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.budget = Gauge("har_admission_budget_bytes", "Memory budget for recording uploads in flight "
                            "(serve.recordings.memory_budget_mb; 0: unbounded)", registry=r)
        self.in_flight = Gauge("har_admission_in_flight_bytes", "Memory charged to the recording uploads being "
                               "scored now (upload bytes x serve.recordings.memory_per_uploaded_byte)", registry=r)
        self.waiting = Gauge("har_admission_waiting", "Recording uploads waiting for room in the budget", registry=r)
        self.admitted = Counter("har_admission_admitted", "Recording uploads admitted (at once or after a wait)",
                                registry=r)
        self.waits = Counter("har_admission_waits", "Recording uploads that had to wait (admitted or not)", registry=r)
        self.wait_seconds = Histogram("har_admission_wait_seconds", "How long uploads that had to wait waited",
                                      buckets=WAIT_BUCKETS, registry=r)
        self.refusals = Counter("har_admission_refusals", "Recording uploads refused before their body was read: "
                                "queue_full and timeout (503 + Retry-After), too_large (413)", ["reason"], registry=r)
        for reason in REFUSAL_REASONS:  # every reason present from the start, so rates exist before the first
            self.refusals.labels(reason)


class ServiceMetrics:
    """The service's metrics, in a registry of its own (one app, one registry; tests build many apps)."""

    def __init__(self, card: ModelCard):
        self.registry = CollectorRegistry()
        self.labels = card.labels
        r = self.registry
        self.requests = Counter("har_http_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("har_http_request_duration_seconds", "HTTP request latency, first byte in to last byte out",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.windows = Counter("har_windows_predicted", "Windows scored, by predicted label", ["label"], registry=r)
        self.confidence = Histogram("har_prediction_confidence", "Top-1 probability of each scored window "
                                    "(mean = rate(_sum) / rate(_count))", buckets=CONFIDENCE_BUCKETS, registry=r)
        self.confidence_mean = Gauge("har_prediction_confidence_mean",
                                     f"Mean top-1 probability over the last {RECENT_WINDOWS} scored windows", registry=r)
        self.model_batch = Histogram("har_model_batch_windows", "Windows per onnxruntime call (dynamic batching)",
                                     buckets=BATCH_BUCKETS, registry=r)
        self.batched_requests = Histogram("har_model_batch_requests", "Requests coalesced into one onnxruntime call",
                                          buckets=BATCH_BUCKETS, registry=r)
        Info("har_model", "The model being served", registry=r).info(
            {"name": card.name, "version": card.version, "git_commit": card.git_commit or "",
             "data_hash": card.data_hash or "", "sha256": card.sha256})
        self.admission = AdmissionMetrics(r)
        for label in self.labels:  # every label present from the start, so rates exist before the first hit
            self.windows.labels(label)
        self._recent = np.full(RECENT_WINDOWS, np.nan)
        self._recent_next = 0
        self._lock = threading.Lock()

    def observe(self, windows: np.ndarray, probabilities: np.ndarray) -> None:
        """Observer: windows per label and confidence."""
        if len(probabilities) == 0:
            return
        counts = np.bincount(probabilities.argmax(axis=1), minlength=len(self.labels))
        for label, count in zip(self.labels, counts):
            if count:
                self.windows.labels(label).inc(int(count))
        confidence = probabilities.max(axis=1).astype(np.float64)
        for value in confidence:
            self.confidence.observe(value)
        recent = confidence[-RECENT_WINDOWS:]
        with self._lock:  # direct model calls may observe from several threads at once
            index = (self._recent_next + np.arange(len(recent))) % RECENT_WINDOWS
            self._recent[index] = recent
            self._recent_next = int((index[-1] + 1) % RECENT_WINDOWS)
            self.confidence_mean.set(float(np.nanmean(self._recent)))

    def on_batch(self, requests: int, windows: int) -> None:
        self.batched_requests.observe(requests)
        self.model_batch.observe(windows)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app):
        """ASGI middleware: count and time every HTTP request by its route template (bounded label values)."""

        async def timed(scope, receive, send):
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started, status = time.perf_counter(), {"code": 500}

            async def send_and_record(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_and_record)
            finally:
                labels = (scope.get("path_template") or "unmatched", scope["method"], str(status["code"]))
                self.requests.labels(*labels).inc()
                self.latency.labels(*labels).observe(time.perf_counter() - started)

        return timed
