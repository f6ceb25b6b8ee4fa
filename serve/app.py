"""The Litestar application: the route groups of serve/controllers/, the shared service, error handling.

`create_app` checks the token rules, builds the `Service` (serve/service.py: the model runtime,
predictor, per-person models, metrics, drift) and the `StudyStore` once, and hands them to every
handler as the `service` and `store` dependencies. Who is calling is found once per request
(serve.security.authentication); the routes' guards read it. Every route that scores windows goes
through `Service.predictor`; every route that takes a recording through `Service.score_upload`.
"""
from __future__ import annotations

import logging

from litestar import Litestar, MediaType, Request, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from har.runtime import ModelRuntime
from serve.config import Settings
from serve.logs import install as install_request_log
from serve.controllers.health import HealthController
from serve.controllers.monitoring import MonitoringController
from serve.controllers.page import STATIC_FILES, TEMPLATES, PageController
from serve.controllers.predict import predict_controller
from serve.controllers.recordings import FilesController, RecordingsController
from serve.controllers.stream import live, stream
from serve.controllers.study import StudyController
from serve.controllers.subjects import SubjectsController
from serve.controllers.v2 import v2_controller
from serve.monitoring import Observer
from serve.security import authentication, check_tokens
from serve.service import Service, StudyStore
from serve.stream_broker import BrokerHub
from serve.streaming import StreamHub
from serve.validation import RequestError

log = logging.getLogger("serve")


def route_handlers(service: Service) -> list:
    """Every route group of the service. The two whose OpenAPI document states the served model's window shape
    are made for it; the routes that take recordings sit on a router with the upload limit."""
    card, settings = service.card, service.settings
    limit = settings.max_windows_per_request
    uploads = Router("/", route_handlers=[RecordingsController, SubjectsController],
                     request_max_body_size=settings.max_upload_bytes)
    return [HealthController, predict_controller(card, limit), v2_controller(card, limit), uploads,
            FilesController, StudyController, MonitoringController, PageController, STATIC_FILES, stream, live]


def _error_response(request: Request, status_code: int, message: str) -> Response:
    # The Open Inference Protocol's error body is {"error": ...}; the other routes use Litestar's shape.
    if request.url.path.startswith("/v2/"):
        content = {"error": message}
    else:
        content = {"status_code": status_code, "detail": message}
    return Response(content, status_code=status_code, media_type=MediaType.JSON)


def create_app(settings: Settings, *, token: str | None, insecure: bool = False, runtime: ModelRuntime | None = None,
               observers: list[Observer] | None = None, extra_route_handlers: list | None = None,
               read_token: str | None = None) -> Litestar:
    """The service for `settings.model_path` (or a given runtime).

    `token` None is refused unless `insecure` (local try-outs only); `read_token` may only read the study
    store's routes, and must differ from `token` (serve.security.check_tokens). `observers` receive every
    scored batch; `extra_route_handlers` add routes (a drift monitor's `GET /drift`, say).
    """
    check_tokens(token, read_token, insecure=insecure, host=settings.host, env_var=settings.token_env,
                 read_env_var=settings.read_token_env)
    service = Service.build(settings, runtime=runtime, observers=observers)
    study = StudyStore(settings)
    # Live streams from watches: this process's (serve/streaming.py), or through Redis Streams (serve/stream_broker.py).
    streams = (BrokerHub if settings.stream_broker else StreamHub)(settings, service, study)

    def request_error(request: Request, error: RequestError) -> Response:
        return _error_response(request, error.status_code, error.message)

    def http_error(request: Request, error: HTTPException) -> Response:
        detail = error.detail
        if error.status_code == 413 and "route_handler" in request.scope:  # Litestar's body-size refusal
            # The matched route's own limit (an upload route's controller sets serve.max_upload_mb).
            limit = request.route_handler.resolve_request_max_body_size() or settings.max_body_bytes
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

    return install_request_log(Litestar(  # request ids and the access event around everything (serve/logs.py)
        route_handlers=[*route_handlers(service), *(extra_route_handlers or [])],
        state=State({"service": service}),  # serve/admission.py's hook finds the upload budget there
        dependencies={"service": Provide(lambda: service, sync_to_thread=False),
                      "store": Provide(lambda: study, sync_to_thread=False),
                      "streams": Provide(lambda: streams, sync_to_thread=False)},
        template_config=TEMPLATES,
        on_startup=[service.start, streams.start],
        on_shutdown=[streams.stop, service.stop, study.close],
        middleware=[service.metrics.middleware, authentication(token, read_token)],
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={RequestError: request_error, HTTPException: http_error, Exception: unexpected_error},
        logging_config=None,  # logging is set up by whoever runs the app (serve/__main__.py, uvicorn)
        openapi_config=OpenAPIConfig(title="Wrist activity recognition", version=service.card.version, path="/schema",
                                     components=Components(security_schemes={
                                         "bearer": SecurityScheme(type="http", scheme="bearer")})),
        debug=False,
    ))
