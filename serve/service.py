"""What every route group shares: the model runtime, its card, the predictor, the per-person models,
metrics and drift (`Service`), and the study store (`StudyStore`), built once per app and handed to
the controllers as the `service` and `store` dependencies.

`Service.score_upload` is the service's adapter of the one scoring path (har/scoring.py: prepare,
then score): an uploaded Garmin pair in, the typed answer out, so every route that takes recordings
(scoring only, or scoring and storing) answers the same thing.
"""
from __future__ import annotations

import functools
import logging
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import anyio.from_thread
import anyio.to_thread
import numpy as np
from litestar.datastructures import UploadFile

from har.answer import Answer
from har.drift import DriftCollector, RunningDriftMonitor, load_reference, reference_path_for
from har.modelfile import ModelCard
from har.preprocessing import Preprocessing
from har.recording import InputError
from har.registry import registry_source
from har.runtime import ModelRuntime, model_file
from har.scoring import EmptyRecording, GarminPair, PreparedRecording, prepare, score
from serve.admission import UploadBudget
from serve.batching import DynamicBatcher
from serve.config import Settings
from serve.logs import note as note_access
from serve.monitoring import Observer, ServiceMetrics
from serve.personal import PersonalModels
from serve.validation import RequestError

log = logging.getLogger("serve")


@dataclass
class GarminUpload:
    """The two workbooks of one Garmin sensor-logger session (multipart form fields)."""

    accelerometer: UploadFile
    gyroscope: UploadFile


@dataclass
class ScoredUpload:
    """An uploaded pair, scored: the answer `/recordings` gives, the recording it came from and the raw bytes."""

    answer: Answer
    prepared: PreparedRecording
    raw: dict[str, bytes]  # "accelerometer" / "gyroscope" -> the uploaded workbook


def score_and_observe(runtime: ModelRuntime, observers: list[Observer], windows: np.ndarray) -> np.ndarray:
    """One model call, then every observer on the same windows, in the caller's worker thread.

    Observers see each model call once (a batch of coalesced requests as one), and their cost
    (the drift histograms bin every sample of every window) stays off the event loop, which
    meanwhile reads and answers other requests.
    """
    probabilities = runtime.predict(windows)
    for observer in observers:
        try:
            observer.observe(windows, probabilities)
        except Exception:  # monitoring must never cost a client its answer; the failure goes to the log
            log.exception("observer %s failed", type(observer).__name__)
    return probabilities


class Predictor:
    """The one prediction path: the batcher for small requests, else a direct call in a worker thread."""

    def __init__(self, score, batcher: DynamicBatcher | None, on_direct_call=None):
        self.score, self.batcher = score, batcher
        self.on_direct_call = on_direct_call  # (requests, windows), as the batcher reports its calls

    def batched(self, windows: np.ndarray, score) -> bool:
        return score is None and self.batcher is not None and len(windows) < self.batcher.max_batch_size

    async def predict(self, windows: np.ndarray, score=None) -> np.ndarray:
        """`score`: a person's model with the same observers (serve/personal.py), called directly; None: the
        generic model, through the batcher for small requests."""
        if self.batched(windows, score):
            return await self.batcher.predict(windows)
        return await anyio.to_thread.run_sync(self.call, windows, score)

    def predict_in_worker(self, windows: np.ndarray, score=None) -> np.ndarray:
        """`predict` for code already running in a worker thread (har.scoring.score of an upload): the batcher
        is awaited on the event loop, a direct call runs right here (no second thread held for it)."""
        if self.batched(windows, score):
            return anyio.from_thread.run(self.batcher.predict, windows)
        return self.call(windows, score)

    def call(self, windows: np.ndarray, score=None) -> np.ndarray:
        probabilities = (score or self.score)(windows)
        if self.on_direct_call is not None:
            self.on_direct_call(1, len(windows))
        return probabilities


def safe_filename(name: str | None, fallback: str) -> str:
    """An uploaded file's base name, reduced to harmless characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").name).lstrip(".")
    return name or fallback


@dataclass
class Service:
    settings: Settings
    runtime: ModelRuntime
    model_path: object  # a file, or models:/<name>@<alias>
    registry: dict | None  # {"uri", "name", "version"} for a registry model, else None
    metrics: ServiceMetrics
    drift: RunningDriftMonitor | None
    reference_path: Path
    predictor: Predictor
    batcher: DynamicBatcher | None
    personal: PersonalModels
    observers: list[Observer]
    upload_budget: UploadBudget  # admission of recording uploads (serve/admission.py)
    ready: bool = False

    @classmethod
    def build(cls, settings: Settings, *, runtime: ModelRuntime | None = None,
              observers: list[Observer] | None = None) -> "Service":
        model_path = model_file(settings.model_path, settings.tracking_uri)  # a file, or models:/har@champion
        runtime = runtime or ModelRuntime(model_path, threads=settings.threads)
        card = runtime.card
        metrics = ServiceMetrics(card)
        # Live drift: what requests carry, against the reference shipped beside the model (if any).
        reference_path = reference_path_for(model_path)
        drift = (RunningDriftMonitor(load_reference(reference_path), labels=card.labels)
                 if reference_path.exists() else None)
        if drift is not None:
            metrics.registry.register(DriftCollector(drift))
        observers_all = [metrics, *([drift] if drift else []), *(observers or [])]
        observed = functools.partial(score_and_observe, runtime, observers_all)
        batcher = (DynamicBatcher(observed, max_batch_size=settings.max_batch_size,
                                  max_wait_s=settings.max_wait_ms / 1000.0, on_batch=metrics.on_batch)
                   if settings.batching else None)
        personal = PersonalModels(settings.personal_dir, card, cache_size=settings.personal_cache_size,
                                  threads=settings.threads)
        return cls(settings=settings, runtime=runtime, model_path=model_path,
                   registry=registry_source(model_path), metrics=metrics, drift=drift, reference_path=reference_path,
                   predictor=Predictor(observed, batcher, on_direct_call=metrics.on_batch), batcher=batcher,
                   personal=personal, observers=observers_all,
                   upload_budget=UploadBudget.from_settings(settings, metrics.admission))

    @property
    def card(self) -> ModelCard:
        return self.runtime.card

    async def person_for(self, subject: str | None) -> tuple[ModelRuntime | None, object]:
        """A person's model and its scorer (with the service's observers), or (None, None): the generic model."""
        note_access(subject=subject)  # on the access event even when the request fails after this
        if subject is None:  # most requests: no thread hop on the hot path
            return None, None
        person = await anyio.to_thread.run_sync(self.personal.runtime_for, subject)
        return person, (functools.partial(score_and_observe, person, self.observers) if person else None)

    def predictions(self, probabilities: np.ndarray) -> list[dict]:
        labels = self.card.labels
        best = probabilities.argmax(axis=1)
        return [{"label": labels[b], "confidence": float(p[b]), "probabilities": dict(zip(labels, p.tolist()))}
                for b, p in zip(best, probabilities)]

    async def score_upload(self, data: GarminUpload, subject: str | None) -> ScoredUpload:
        """An uploaded workbook pair -> the `/recordings` answer, scored by the person's model if there is one."""
        person, person_score = await self.person_for(subject)
        uploads = {"accelerometer": data.accelerometer, "gyroscope": data.gyroscope}
        names = {name: safe_filename(upload.filename, f"{name}.xlsx") for name, upload in uploads.items()}
        raw = {name: await upload.read() for name, upload in uploads.items()}
        with tempfile.TemporaryDirectory(prefix="har-upload-") as folder:
            paths = {}
            for name, filename in names.items():
                paths[name] = Path(folder) / name / filename  # one folder each: the two names may be equal
                paths[name].parent.mkdir()
                paths[name].write_bytes(raw[name])
            # The recording is named after the uploaded accelerometer file, as the pipeline names it.
            source = GarminPair(paths["accelerometer"], paths["gyroscope"], timezone=self.settings.timezone)
            try:
                prepared = await anyio.to_thread.run_sync(
                    prepare, source, Preprocessing.from_card(self.card), self.settings.wear)
            except InputError as error:  # name the upload, not our temporary path
                name = next((n for n, p in paths.items() if str(p) == error.file), "upload")
                located = InputError(f"{name} ({names.get(name, '?')})", error.problem, row=error.row,
                                     column=error.column, expected=error.expected)
                raise RequestError(422, str(located)) from None
        card = (person or self.runtime).card
        # The live drift monitor's reference: this recording alone against it (the page shows it).
        reference = self.drift.reference if self.drift is not None else None
        try:
            answer = await anyio.to_thread.run_sync(functools.partial(
                score, prepared, functools.partial(self.predictor.predict_in_worker, score=person_score), card,
                self.settings.wear, reference=reference, subject=subject, personal=person is not None))
        except EmptyRecording as error:
            raise RequestError(422, str(error)) from None
        if self.drift is not None:  # windows in non-wear episodes are counted, never compared
            self.drift.observe_not_worn(prepared.not_worn_windows)
        note_access(windows=len(prepared.worn_windows), model=card.name, model_version=card.version,
                    personal=person is not None)
        return ScoredUpload(answer, prepared, raw)

    async def start(self) -> None:
        if self.batcher is not None:
            await self.batcher.start()
        self.ready = True
        card = self.card
        log.info("serving model %s version %s (sha256 %s…) with %d labels; batching %s",
                 card.name, card.version, card.sha256[:12], len(card.labels), "on" if self.batcher else "off")

    async def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()


class StudyStore:
    """The service's study store (store/), opened (and migrated) on first use, once per process; handed to the
    controllers as the `store` dependency. `call` runs a store method in a worker thread (the database is
    blocking I/O) and answers its refusals as HTTP statuses."""

    def __init__(self, settings: Settings):
        self.settings, self._store, self._lock = settings, None, threading.Lock()

    def get(self):
        with self._lock:
            if self._store is None:
                from store import Store

                s = self.settings
                rule = {} if s.min_worn_hours is None else {"min_worn_hours": s.min_worn_hours}  # else the store's
                self._store = Store.open(s.store_url, blob_root=s.store_blob_root, personal_models_dir=s.personal_dir,
                                         default_timezone=s.store_timezone, **rule)
            return self._store

    async def call(self, method, *args, **kwargs):
        """`method(store, *args, **kwargs)` in a worker thread; NotFound is 404, the store's other refusals 422."""
        from store import NotFound, StoreError

        try:
            return await anyio.to_thread.run_sync(lambda: method(self.get(), *args, **kwargs))
        except NotFound as error:
            raise RequestError(404, str(error)) from None
        except StoreError as error:
            raise RequestError(422, str(error)) from None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
