"""The Litestar application: routes, authentication, limits, metrics, and the prediction path.

Every route that scores windows goes through `Predictor.predict`, which batches (or not) and
runs `score_and_observe` in a worker thread: the one onnxruntime session, then each observer.
"""
from __future__ import annotations

import functools
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio.to_thread
import numpy as np
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, OpenAPIType, Schema, SecurityScheme
from litestar.params import Body, Parameter

from har.drift import DriftCollector, RunningDriftMonitor, load_reference, recording_drift, reference_path_for
from har.recording import InputError
from har.registry import registry_source
from serve import contract
from serve.batching import DynamicBatcher
from serve.config import Settings
from serve.logs import install as install_request_log, note as note_access
from serve.monitoring import Observer, ServiceMetrics
from serve.page import TEMPLATES, page_handlers
from serve.personal import PersonalModels, answered_by, check_subject
from har.runtime import ModelRuntime, model_file
from serve.security import bearer_guard, require_token
from har.timeline import STATES, garmin_windows, recording_answer, recording_preprocessing
from serve.validation import (RequestError, parse_predict, parse_predict_npy, parse_predict_octets,
                              parse_v2_infer, v2_binary_outputs)
from serve.wire import JSON, NPY, OCTET_STREAM, SHAPE_HEADER, V2_HEADER_LENGTH, encode_bytes_tensor, v2_message

log = logging.getLogger("serve")
SECURED = [{"bearer": []}]
V2_OUTPUTS = ("probabilities", "label")


@dataclass
class GarminUpload:
    """The two workbooks of one Garmin sensor-logger session (multipart form fields)."""

    accelerometer: UploadFile
    gyroscope: UploadFile


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

    async def predict(self, windows: np.ndarray, score=None) -> np.ndarray:
        """`score`: a person's model with the same observers (serve/personal.py), called directly; None: the
        generic model, through the batcher for small requests."""
        if score is None and self.batcher is not None and len(windows) < self.batcher.max_batch_size:
            return await self.batcher.predict(windows)
        probabilities = await anyio.to_thread.run_sync(score or self.score, windows)
        if self.on_direct_call is not None:
            self.on_direct_call(1, len(windows))
        return probabilities


def _media_type(request: Request) -> str:
    """The body's media type without parameters (JSON when the client sent none)."""
    return request.headers.get("content-type", JSON).split(";")[0].strip().lower()


def _safe_filename(name: str | None, fallback: str) -> str:
    """An uploaded file's base name, reduced to harmless characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").name).lstrip(".")
    return name or fallback


def _error_response(request: Request, status_code: int, message: str) -> Response:
    # The Open Inference Protocol's error body is {"error": ...}; the other routes use Litestar's shape.
    if request.url.path.startswith("/v2/"):
        content = {"error": message}
    else:
        content = {"status_code": status_code, "detail": message}
    return Response(content, status_code=status_code, media_type=MediaType.JSON)


def create_app(settings: Settings, *, token: str | None, insecure: bool = False, runtime: ModelRuntime | None = None,
               observers: list[Observer] | None = None, extra_route_handlers: list | None = None) -> Litestar:
    """The service for `settings.model_path` (or a given runtime).

    `token` None is refused unless `insecure` (local try-outs only). `observers` receive every
    scored batch; `extra_route_handlers` add routes (a drift monitor's `GET /drift`, say).
    """
    require_token(token, insecure=insecure, host=settings.host, env_var=settings.token_env)
    model_path = model_file(settings.model_path, settings.tracking_uri)  # a file, or models:/har@champion
    registry = registry_source(model_path)  # {"uri", "name", "version"} for models:/..., else None
    runtime = runtime or ModelRuntime(model_path, threads=settings.threads)
    card = runtime.card
    metrics = ServiceMetrics(card)
    # Live drift: what requests carry, against the reference shipped beside the model (if any).
    reference_path = reference_path_for(model_path)
    drift = RunningDriftMonitor(load_reference(reference_path), labels=card.labels) if reference_path.exists() else None
    if drift is not None:
        metrics.registry.register(DriftCollector(drift))
    observers_all = [metrics, *([drift] if drift else []), *(observers or [])]
    score = functools.partial(score_and_observe, runtime, observers_all)
    batcher = DynamicBatcher(score, max_batch_size=settings.max_batch_size,
                             max_wait_s=settings.max_wait_ms / 1000.0, on_batch=metrics.on_batch) if settings.batching else None
    predictor = Predictor(score, batcher, on_direct_call=metrics.on_batch)
    personal = PersonalModels(settings.personal_dir, card, cache_size=settings.personal_cache_size,
                              threads=settings.threads)

    async def person_for(subject: str | None) -> tuple[ModelRuntime | None, object]:
        """A person's model and its scorer (with the service's observers), or (None, None): the generic model."""
        note_access(subject=subject)  # on the access event even when the request fails after this
        if subject is None:  # most requests: no thread hop on the hot path
            return None, None
        person = await anyio.to_thread.run_sync(personal.runtime_for, subject)
        return person, (functools.partial(score_and_observe, person, observers_all) if person else None)
    guard = bearer_guard(token)
    length, channels, limit = card.window_length, card.channels, settings.max_windows_per_request
    input_name = card.input_contract.get("input", "windows")
    preprocessing = recording_preprocessing(card)
    state = {"ready": False}

    def predictions(probabilities: np.ndarray) -> list[dict]:
        best = probabilities.argmax(axis=1)
        return [{"label": card.labels[b], "confidence": float(p[b]), "probabilities": dict(zip(card.labels, p.tolist()))}
                for b, p in zip(best, probabilities)]

    def model_or_404(name: str) -> None:
        if name != card.name:
            raise NotFoundException(f"unknown model {name!r}; this server serves {card.name!r}")

    @get("/health", tags=["health"], summary="Alive")
    async def health() -> dict:
        return {"status": "alive"}

    @get("/ready", tags=["health"], summary="Model loaded, checksum verified, batcher running",
         operation_class=contract.documented(responses={"503": contract.status_response(
             "Not ready yet", status=Schema(type=OpenAPIType.STRING, enum=["not ready"]))}))
    async def ready() -> Response:
        if not state["ready"]:
            return Response({"status": "not ready"}, status_code=503)
        return Response({"status": "ready", "model": card.name, "version": card.version, "sha256": card.sha256})

    @get("/model", tags=["model"], summary="Model name, version, labels, input contract and test metrics")
    async def model() -> dict:
        # A recording's timeline may say more than the model's labels: what the two states mean, and when.
        timeline = {"labels": [*card.labels, *STATES], "states": STATES, "abstain_threshold": card.abstain_threshold,
                    "wear_rule": settings.wear.describe()}
        return {**card.describe(), "registry": registry, "timeline": timeline,
                "serving": {"threads": settings.threads, "batching": settings.batching,
                                               "max_batch_size": settings.max_batch_size,
                                               "max_wait_ms": settings.max_wait_ms,
                                               "max_windows_per_request": limit}}

    @post("/predict", tags=["predict"], guards=[guard], security=SECURED, status_code=200,
          summary="Label and probabilities for each window",
          operation_class=contract.documented(
              body=contract.predict_body(length, channels, limit, card.input_contract.get("units")),
              responses=contract.errors(400, 401, 413, 415, 422)))
    async def predict(request: Request,
                      subject: Annotated[str | None, Parameter(pattern=contract.SUBJECT_PATTERN, description=(
                          "whose windows (binary bodies; JSON bodies may carry a subject field)"))] = None) -> dict:
        media_type = _media_type(request)
        body, limits = await request.body(), dict(length=length, channels=channels, max_windows=limit)
        if media_type == JSON:
            windows, in_body = parse_predict(body, **limits)
            if in_body is not None and subject is not None and in_body != subject:
                raise RequestError(422, f"subject {in_body!r} in the body and {subject!r} in the query: name one")
            subject = check_subject(in_body) if in_body is not None else subject
        elif media_type == OCTET_STREAM:
            windows = parse_predict_octets(body, request.headers.get(SHAPE_HEADER), **limits)
        elif media_type == NPY:
            windows = parse_predict_npy(body, **limits)
        else:
            raise RequestError(415, f"Content-Type {media_type!r} is not one of {[JSON, OCTET_STREAM, NPY]}")
        person, score = await person_for(subject)
        probabilities = await predictor.predict(windows, score)
        scored_by = (person or runtime).card
        note_access(windows=len(windows), model=scored_by.name, model_version=scored_by.version,
                    personal=person is not None)
        return {**answered_by(scored_by, subject, person is not None), "predictions": predictions(probabilities)}

    @get("/v2", tags=["open inference protocol"], summary="Server metadata")
    async def v2_server() -> dict:
        return {"name": "har-serve", "version": "1", "extensions": []}

    @get("/v2/health/live", tags=["open inference protocol"], summary="Server live")
    async def v2_live() -> dict:
        return {"live": True}

    @get("/v2/health/ready", tags=["open inference protocol"], summary="Server ready",
         operation_class=contract.documented(responses={"503": contract.status_response(
             "Not ready yet", ready=Schema(type=OpenAPIType.BOOLEAN))}))
    async def v2_ready() -> Response:
        return Response({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @get("/v2/models/{name:str}", tags=["open inference protocol"], summary="Model metadata",
         operation_class=contract.documented(responses=contract.errors(400, 404, v2=True), model_name=card.name))
    async def v2_model(name: str) -> dict:
        model_or_404(name)
        return {"name": card.name, "versions": [card.version], "platform": "onnxruntime_onnx",
                "inputs": [{"name": input_name, "datatype": "FP32", "shape": [-1, length, len(channels)]}],
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(card.labels)]},
                            {"name": "label", "datatype": "BYTES", "shape": [-1]}],
                "parameters": {"labels": card.labels, "channels": channels}}

    @get("/v2/models/{name:str}/ready", tags=["open inference protocol"], summary="Model ready",
         operation_class=contract.documented(responses={
             **contract.errors(400, 404, v2=True), "503": contract.status_response(
                 "Not ready yet", name=Schema(type=OpenAPIType.STRING), ready=Schema(type=OpenAPIType.BOOLEAN))},
             model_name=card.name))
    async def v2_model_ready(name: str) -> Response:
        model_or_404(name)
        return Response({"name": card.name, "ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @post("/v2/models/{name:str}/infer", tags=["open inference protocol"], guards=[guard], security=SECURED,
          status_code=200, summary="Inference (Open Inference Protocol / KServe v2; JSON or binary data extension)",
          operation_class=contract.documented(
              body=contract.v2_infer_body(input_name, length, channels, limit),
              responses={"200": contract.v2_infer_ok(), **contract.errors(400, 401, 404, 413, 415, 422, v2=True)},
              model_name=card.name))
    async def v2_infer(name: str, request: Request) -> Response:
        model_or_404(name)
        media_type = _media_type(request)
        if media_type not in (JSON, OCTET_STREAM):
            raise RequestError(415, f"Content-Type {media_type!r} is not one of {[JSON, OCTET_STREAM]}")
        windows, infer = parse_v2_infer(await request.body(), input_name=input_name, length=length,
                                        channels=channels, max_windows=limit,
                                        header_length=request.headers.get(V2_HEADER_LENGTH))
        wanted = v2_binary_outputs(infer, V2_OUTPUTS)
        unknown = [o for o in wanted if o not in V2_OUTPUTS]
        if unknown:
            raise RequestError(422, f"outputs names {unknown}; this model has {list(V2_OUTPUTS)}")
        probabilities = await predictor.predict(windows)
        note_access(windows=len(windows), model=card.name, model_version=card.version, personal=False)
        labels = [card.labels[i] for i in probabilities.argmax(axis=1)]
        values = {"probabilities": ("FP32", list(probabilities.shape), probabilities),
                  "label": ("BYTES", [len(probabilities)], labels)}
        outputs, blobs = [], []
        for output, binary in wanted.items():
            datatype, shape, data = values[output]
            tensor = {"name": output, "datatype": datatype, "shape": shape}
            if binary:
                blobs.append(encode_bytes_tensor(data) if datatype == "BYTES" else data.astype("<f4").tobytes())
                tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
            else:
                tensor["data"] = data.ravel().tolist() if datatype == "FP32" else data
            outputs.append(tensor)
        response = {"model_name": card.name, "model_version": card.version, "outputs": outputs}
        if isinstance(infer.id, str):
            response["id"] = infer.id
        if not blobs:
            return Response(response, media_type=MediaType.JSON)
        body, header_length = v2_message(response, blobs)
        return Response(body, media_type=OCTET_STREAM, headers={V2_HEADER_LENGTH: str(header_length)})

    @post("/recordings", tags=["predict"], guards=[guard], security=SECURED, status_code=200,
          request_max_body_size=settings.max_upload_bytes,
          summary="Activity timeline of an uploaded Garmin accelerometer + gyroscope workbook pair",
          operation_class=contract.documented(responses=contract.errors(400, 401, 413, 415, 422)))
    async def recordings(data: Annotated[GarminUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
                         subject: Annotated[str | None, Parameter(pattern=contract.SUBJECT_PATTERN, description=(
                             "whose recording: scored by that person's model if there is one"))] = None) -> dict:
        person, score = await person_for(subject)
        uploads = {"accelerometer": data.accelerometer, "gyroscope": data.gyroscope}
        names = {field: _safe_filename(upload.filename, f"{field}.xlsx") for field, upload in uploads.items()}
        with tempfile.TemporaryDirectory(prefix="har-upload-") as folder:
            paths = {}
            for field, name in names.items():
                paths[field] = Path(folder) / field / name  # one folder each: the two names may be equal
                paths[field].parent.mkdir()
                paths[field].write_bytes(await uploads[field].read())
            try:  # the recording is named after the uploaded accelerometer file, as the pipeline names it
                scored = await anyio.to_thread.run_sync(lambda: garmin_windows(
                    paths["accelerometer"], paths["gyroscope"], preprocessing, settings.wear,
                    timezone=settings.timezone))
            except InputError as error:  # name the upload, not our temporary path
                field = next((f for f, p in paths.items() if str(p) == error.file), "upload")
                located = InputError(f"{field} ({names.get(field, '?')})", error.problem, row=error.row,
                                     column=error.column, expected=error.expected)
                raise RequestError(422, str(located)) from None
        if len(scored.windows) == 0:
            raise RequestError(422, f"the recording holds no complete {length}-sample window of fused data "
                                    f"({scored.quality['fused_seconds']} s fused)")
        # Windows in non-wear episodes are never scored: they get no activity, and no drift statistic sees them.
        worn = scored.windows[scored.worn]
        scored_by = (person or runtime).card
        probabilities = (await predictor.predict(worn, score) if len(worn)
                         else np.empty((0, len(card.labels)), np.float32))
        not_worn = int(len(scored.windows) - len(worn))
        if drift is not None:
            drift.observe_not_worn(not_worn)
        answer = recording_answer(scored_by, scored, probabilities, settings.wear, subject=subject,
                                  personal=person is not None)
        note_access(windows=len(worn), model=scored_by.name, model_version=scored_by.version,
                    personal=person is not None)
        if drift is not None:  # this recording alone against the training reference (the page shows it)
            answer["drift"] = await anyio.to_thread.run_sync(lambda: recording_drift(
                drift.reference, worn, probabilities, card.labels, not_worn=not_worn))
        return answer

    @get("/drift", tags=["monitoring"], guards=[guard], security=SECURED,
         summary="Drift of the windows received so far against the model's training reference",
         operation_class=contract.documented(responses=contract.errors(401, 404)))
    async def drift_summary() -> dict:
        if drift is None:
            raise NotFoundException(f"no drift reference beside the model ({reference_path.name} next to {model_path.name})")
        return drift.summary()

    @get("/metrics", tags=["monitoring"], summary="Prometheus exposition", media_type="text/plain; version=0.0.4")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def request_error(request: Request, error: RequestError) -> Response:
        return _error_response(request, error.status_code, error.message)

    def http_error(request: Request, error: HTTPException) -> Response:
        detail = error.detail
        if error.status_code == 413:  # Litestar's body-size refusal: say what the limit is
            limit = settings.max_upload_bytes if request.url.path == "/recordings" else settings.max_body_bytes
            detail = f"request body exceeds {limit} bytes (serve.max_body_mb / serve.max_upload_mb)"
        response = _error_response(request, error.status_code, detail)
        response.headers.update(error.headers or {})
        if error.extra and not request.url.path.startswith("/v2/"):
            response.content["extra"] = error.extra
        return response

    def unexpected_error(request: Request, error: Exception) -> Response:
        # The traceback goes to the log (it holds code locations, not request data); the client gets no details.
        log.error("unhandled %s on %s %s", type(error).__name__, request.method, request.scope.get("path_template"),
                  exc_info=error)
        return _error_response(request, 500, "internal server error")

    async def start() -> None:
        if batcher is not None:
            await batcher.start()
        state["ready"] = True
        log.info("serving model %s version %s (sha256 %s…) with %d labels; batching %s",
                 card.name, card.version, card.sha256[:12], len(card.labels), "on" if batcher else "off")

    async def stop() -> None:
        state["ready"] = False
        if batcher is not None:
            await batcher.stop()

    return install_request_log(Litestar(  # request ids and the access event around everything (serve/logs.py)
        route_handlers=[health, ready, model, predict, v2_server, v2_live, v2_ready, v2_model, v2_model_ready,
                        v2_infer, recordings, drift_summary, prometheus, *(extra_route_handlers or []),
                        *page_handlers(guard, model_path=settings.model_path, drift_report=settings.drift_report)],
        template_config=TEMPLATES,
        on_startup=[start],
        on_shutdown=[stop],
        middleware=[metrics.middleware],
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={RequestError: request_error, HTTPException: http_error, Exception: unexpected_error},
        logging_config=None,  # logging is set up by whoever runs the app (serve/__main__.py, uvicorn)
        openapi_config=OpenAPIConfig(title="Wrist activity recognition", version=card.version, path="/schema",
                                     components=Components(security_schemes={
                                         "bearer": SecurityScheme(type="http", scheme="bearer")})),
        debug=False,
    ))
