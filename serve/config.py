"""The service's settings: the `serve` section of params.yaml (composed from conf/serve/), plus overrides."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from har.config import load_params
from har.wear import WearRule

MB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    model_path: Path = Path("models/model.onnx")
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 1  # onnxruntime intra-op threads of the one session in this process
    max_body_bytes: int = 8 * MB  # JSON prediction requests
    max_upload_bytes: int = 32 * MB  # /recordings: both workbooks together
    max_windows_per_request: int = 512
    batching: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 0.5
    token_env: str = "HAR_SERVE_TOKEN"
    token_file: str | None = None
    timezone: str | None = None  # wall-clock zone of uploaded Garmin exports (data.timezone)
    tracking_uri: str | None = None  # MLflow, for a models:/ model_path (registry.tracking_uri)
    wear: WearRule = WearRule()  # non-wear detection of uploaded recordings (params `wear`)
    drift_report: Path | None = Path("reports/drift.html")  # the drift stage's HTML report (monitor.report)
    personal_dir: Path | None = Path("models/personal")  # <subject>.onnx per person (serve/personal.py)
    personal_cache_size: int = 8  # per-person onnxruntime sessions kept loaded
    read_token_env: str = "HAR_SERVE_READ_TOKEN"  # an optional token that may only read the study store's routes
    store_url: str | None = None  # the study store (params `store.url`; --store): opened on its first use
    store_blob_root: Path | None = None
    store_timezone: str = "UTC"  # a new participant's zone when the upload names none
    min_worn_hours: float | None = None  # the valid-day rule (store.min_worn_hours); None: the store's default
    # Admission of recording uploads (serve/admission.py), the `serve.recordings` params; None: unbounded.
    memory_budget_bytes: int | None = 1024 * MB
    memory_per_uploaded_byte: float = 22.0
    max_waiting_uploads: int = 16
    upload_wait_timeout_s: float = 30.0
    upload_retry_after_s: int = 5
    # Live streams from watches (serve/streaming.py), the `serve.stream` params.
    stream_journal: Path = Path("data/streams/journal.db")  # acknowledged batches, durable before the ack
    max_streams: int = 500  # open streams in this process; one more is closed with 1013 (try again later)
    max_buffered_samples: int = 20000  # samples a stream may hold unfused (one sensor ahead of the other)
    stream_silent_s: float = 30.0  # a connection with no message for this long is closed (4408)
    stream_send_timeout_s: float = 10.0  # a client that does not read its acks for this long is closed (4410)
    stream_idle_s: float = 300.0  # a stream without a connection for this long becomes a recording
    stream_store_every_s: float = 60.0  # how often an open stream's decided windows go to the study store
    stream_broker: str | None = None  # a Redis URL: batches go through Redis Streams (docs/streaming.md)

    @classmethod
    def from_params(cls, params: dict, **overrides) -> "Settings":
        serve = params.get("serve", {})
        batching = serve.get("batching", {})
        personal = serve.get("personal", {})
        store = params.get("store", {})
        personal_dir = personal.get("models_dir", cls.personal_dir)  # null in params: no per-person models
        recordings = serve.get("recordings", {})
        budget_mb = recordings.get("memory_budget_mb", cls.memory_budget_bytes / MB)  # null: no budget
        values = dict(
            model_path=Path(serve.get("model_path", cls.model_path)),
            host=serve.get("host", cls.host),
            port=int(serve.get("port", cls.port)),
            threads=int(serve.get("threads", cls.threads)),
            max_body_bytes=int(float(serve.get("max_body_mb", cls.max_body_bytes / MB)) * MB),
            max_upload_bytes=int(float(serve.get("max_upload_mb", cls.max_upload_bytes / MB)) * MB),
            max_windows_per_request=int(serve.get("max_windows_per_request", cls.max_windows_per_request)),
            batching=bool(batching.get("enabled", cls.batching)),
            max_batch_size=int(batching.get("max_batch_size", cls.max_batch_size)),
            max_wait_ms=float(batching.get("max_wait_ms", cls.max_wait_ms)),
            token_env=serve.get("token_env", cls.token_env),
            token_file=serve.get("token_file", cls.token_file),
            timezone=params.get("data", {}).get("timezone"),
            tracking_uri=params.get("registry", {}).get("tracking_uri"),
            wear=WearRule.from_params(params.get("wear")),
            drift_report=Path(params.get("monitor", {}).get("report", cls.drift_report)),
            personal_dir=Path(personal_dir) if personal_dir else None,
            personal_cache_size=int(personal.get("cache_size", cls.personal_cache_size)),
            read_token_env=serve.get("read_token_env", cls.read_token_env),
            store_url=store.get("url"),
            store_blob_root=Path(store["blob_root"]) if store.get("blob_root") else None,
            store_timezone=store.get("timezone", cls.store_timezone),
            min_worn_hours=None if store.get("min_worn_hours") is None else float(store["min_worn_hours"]),
            memory_budget_bytes=None if budget_mb is None else int(float(budget_mb) * MB),
            memory_per_uploaded_byte=float(recordings.get("memory_per_uploaded_byte", cls.memory_per_uploaded_byte)),
            max_waiting_uploads=int(recordings.get("max_waiting", cls.max_waiting_uploads)),
            upload_wait_timeout_s=float(recordings.get("wait_timeout_s", cls.upload_wait_timeout_s)),
            upload_retry_after_s=int(recordings.get("retry_after_s", cls.upload_retry_after_s)),
        )
        stream = serve.get("stream", {})
        values.update(
            stream_journal=Path(stream.get("journal", cls.stream_journal)),
            max_streams=int(stream.get("max_streams", cls.max_streams)),
            max_buffered_samples=int(stream.get("max_buffered_samples", cls.max_buffered_samples)),
            stream_silent_s=float(stream.get("silent_s", cls.stream_silent_s)),
            stream_send_timeout_s=float(stream.get("send_timeout_s", cls.stream_send_timeout_s)),
            stream_idle_s=float(stream.get("idle_s", cls.stream_idle_s)),
            stream_store_every_s=float(stream.get("store_every_s", cls.stream_store_every_s)),
            stream_broker=stream.get("broker", cls.stream_broker),
        )
        return replace(cls(**values), **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def load(cls, params_path: str | Path = "params.yaml", **overrides) -> "Settings":
        return cls.from_params(load_params(params_path), **overrides)
