"""Request ids and the one access event per request (the log setup itself is har/logs.py).

`install(app)` wraps the whole Litestar application (outside its router, so that an unknown path, a
refused method and a 500 are covered too) in `RequestLog`, which for every HTTP request:

- takes the client's `X-Request-ID` when it is a sane token (`REQUEST_ID`: 1-64 letters, digits,
  `.`, `_`, `-`), else makes one (32 hex digits); a refused one is never logged;
- binds it as `request_id` onto every log line written while the request is handled (a 500's
  traceback included: the app's error handler logs inside this context), and returns it in the
  response's `X-Request-ID` header;
- writes one `access` event on the `serve.access` logger when the answer has been sent: method,
  route template (never the raw path, which may carry a query), status, duration, and what the
  handler noted with `note()`: windows scored, model and version, whether a personal model
  answered, the subject. Never the token, the body or sample values.
"""
from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

import structlog

from har.logs import event_logger

HEADER = "X-Request-ID"
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
ACCESS_LOGGER = "serve.access"
# What a handler may add to its request's access event (docs/operations.md documents each).
NOTED = ("windows", "model", "model_version", "personal", "subject")

_noted: contextvars.ContextVar[dict | None] = contextvars.ContextVar("har_access_noted", default=None)
access_log = event_logger(ACCESS_LOGGER)


def access_enabled() -> bool:
    return logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if REQUEST_ID.fullmatch(candidate) else new_request_id()
    return new_request_id()


def new_request_id() -> str:
    return uuid.uuid4().hex


def note(*, windows: int | None = None, model: str | None = None, model_version: str | None = None,
         personal: bool | None = None, subject: str | None = None) -> None:
    """Add what this request scored to its access event (no-op outside a request). Windows add up."""
    noted = _noted.get()
    if noted is None:
        return
    if windows is not None:
        noted["windows"] = noted.get("windows", 0) + int(windows)
    for key, value in (("model", model), ("model_version", model_version), ("personal", personal),
                       ("subject", subject)):
        if value is not None:
            noted[key] = value


class RequestLog:
    """ASGI middleware: request id in, on the log lines, out in the header; one access event per request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers") or [])
        header = (HEADER.lower().encode(), request_id.encode())
        started, status, noted = time.perf_counter(), {"code": 500}, {}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        token = _noted.set(noted)
        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    if access_enabled():  # off with `--no-access-log`: the logger's level is raised above info
                        access_log.info("access", method=scope["method"],
                                        route=scope.get("path_template") or "unmatched", status=status["code"],
                                        duration_ms=round((time.perf_counter() - started) * 1000, 3),
                                        **{key: noted[key] for key in NOTED if key in noted})
        finally:
            _noted.reset(token)


def install(app):
    """Wrap a Litestar app's request handling (router and exception handling) in RequestLog; returns the app.

    Outside Litestar's middleware list on purpose: that list runs only for a matched route."""
    app.asgi_handler = RequestLog(app.asgi_handler)
    return app
