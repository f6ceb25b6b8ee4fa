"""Admission of recording uploads: a memory budget, a bounded wait queue, and 503 + Retry-After past them.

Scoring an uploaded recording holds the workbooks, the fused table and the windows in memory at once,
about `memory_per_uploaded_byte` bytes for every byte uploaded (measured by bench/uploads.py,
metrics/bench_uploads.json). Nothing else bounded how many were in flight, so a burst of uploads grew
the process past its container's memory limit and the kernel killed it with every request on it.

Each upload is charged its Content-Length times that factor (the route's body limit when the client
sent no length). Work that fits in `memory_budget_mb` runs; work that does not waits, first come first
served, in a queue of at most `max_waiting` uploads for at most `wait_timeout_s`. A full queue or a wait
that times out is answered 503 with Retry-After, and an upload that could not fit in the whole budget
413; all of them decided before a byte of the body is read or parsed. A waiting upload holds a
connection and nothing else.

Every refusal is an answer the client reads, never a reset connection. An ordinary client (urllib,
requests, curl, a browser) writes its whole body before it reads; a server that answers and then closes
with body bytes unread makes the kernel reset the connection, and the client sees ECONNRESET instead of
the 503. On a kept-alive connection uvicorn discards the rest of the body and keeps the connection; on one
that closes after the answer (urllib always asks for that) `read_body_before_answer`, the server's
outermost ASGI layer (serve/__main__.py), reads the body to its end and throws it away before the answer
goes out, chunk by chunk (uvicorn's 64 KiB read buffer, outside the memory budget). A client that sent
`Expect: 100-continue` on a kept-alive connection is answered without being told to continue, and sends
no body at all.

A route takes part with one line, `**ADMITTED` in its decorator:

    @post("/recordings", ..., **ADMITTED)

`admit_upload` (a before-request hook: after the guards, so an unauthenticated client never takes a
place, and before the body is parsed) charges the budget; `release_after_answer` (route middleware)
gives it back once the answer is sent, whatever happened. The app's one `UploadBudget` is the
service's (`app.state.service.upload_budget`, serve/service.py).
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass

from litestar import MediaType, Request, Response
from litestar.openapi.spec import OpenAPIHeader, OpenAPIResponse, OpenAPIType, Schema

from serve.contract import ERROR, json_content

MiB = 1024 * 1024
SCOPE_KEY = "har_admission"  # where the route middleware keeps what the request was charged


@dataclass
class Refusal:
    status_code: int  # 503: retry later (Retry-After); 413: can never fit
    reason: str  # queue_full, timeout, too_large (the refusals metric's label)
    message: str
    retry_after_s: int | None = None


class UploadBudget:
    """Bytes of recording work in flight, bounded; the rest waits in a bounded FIFO queue or is refused.

    `budget_bytes` None: no bound (every upload is admitted at once; the metrics still count them).
    Runs on the service's event loop: no locks, no awaits between a check and its update.
    """

    def __init__(self, budget_bytes: int | None, *, memory_per_uploaded_byte: float, max_upload_bytes: int,
                 max_waiting: int, wait_timeout_s: float, retry_after_s: int, metrics):
        self.budget_bytes, self.factor, self.max_upload_bytes = budget_bytes, memory_per_uploaded_byte, max_upload_bytes
        self.max_waiting, self.wait_timeout_s, self.retry_after_s = max_waiting, wait_timeout_s, retry_after_s
        self.metrics = metrics  # serve.monitoring.AdmissionMetrics
        self.in_flight = 0  # bytes of memory the admitted uploads are charged
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()
        metrics.budget.set(budget_bytes or 0)

    @classmethod
    def from_settings(cls, settings, metrics) -> "UploadBudget":
        return cls(settings.memory_budget_bytes, memory_per_uploaded_byte=settings.memory_per_uploaded_byte,
                   max_upload_bytes=settings.max_upload_bytes, max_waiting=settings.max_waiting_uploads,
                   wait_timeout_s=settings.upload_wait_timeout_s, retry_after_s=settings.upload_retry_after_s,
                   metrics=metrics)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def cost(self, upload_bytes: int) -> int:
        return int(math.ceil(upload_bytes * self.factor))

    def _limit_words(self) -> str:
        return f"the {self.budget_bytes / MiB:.0f} MiB memory budget for uploads (serve.recordings.memory_budget_mb)"

    async def acquire(self, cost: int) -> Refusal | None:
        """Wait for room for `cost` bytes; None once admitted (then `release(cost)` exactly once), else why not."""
        if self.budget_bytes is None or (not self._waiting and self.in_flight + cost <= self.budget_bytes):
            self._admitted(cost)
            return None
        if cost > self.budget_bytes:
            return self._refused(Refusal(413, "too_large", (
                f"this upload would hold about {cost / MiB:.0f} MiB while it is scored "
                f"({self.factor:g} bytes per byte uploaded), more than all of {self._limit_words()}: "
                f"send a shorter recording")))
        if len(self._waiting) >= self.max_waiting:
            return self._refused(Refusal(503, "queue_full", (
                f"uploads being scored hold {self.in_flight / MiB:.0f} MiB of {self._limit_words()} and "
                f"{len(self._waiting)} more wait (serve.recordings.max_waiting): retry after "
                f"{self.retry_after_s} s"), self.retry_after_s))
        future = asyncio.get_running_loop().create_future()
        entry = (cost, future)
        self._waiting.append(entry)
        self._count_waiting()
        started = time.perf_counter()
        try:
            await asyncio.wait([future], timeout=self.wait_timeout_s)
        except asyncio.CancelledError:  # the request was cancelled while it waited
            if future.done():
                self.release(cost)  # admitted at that very moment: nobody else will give it back
            else:
                self._give_up(entry)
            raise
        finally:
            self.metrics.waits.inc()
            self.metrics.wait_seconds.observe(time.perf_counter() - started)
        if not future.done():
            self._give_up(entry)
            return self._refused(Refusal(503, "timeout", (
                f"waited {self.wait_timeout_s:g} s (serve.recordings.wait_timeout_s) for room in "
                f"{self._limit_words()}: retry after {self.retry_after_s} s"), self.retry_after_s))
        return None

    def release(self, cost: int) -> None:
        self.in_flight -= cost
        self._gauge()
        self._wake()

    def _give_up(self, entry) -> None:
        entry[1].cancel()
        self._waiting.remove(entry)
        self._wake()  # the uploads behind a large one may fit now

    def _wake(self) -> None:
        """Admit waiting uploads in arrival order while the first of them fits."""
        while self._waiting and self.in_flight + self._waiting[0][0] <= self.budget_bytes:
            cost, future = self._waiting.popleft()
            self._admitted(cost)
            future.set_result(None)
        self._count_waiting()

    def _admitted(self, cost: int) -> None:
        self.in_flight += cost
        self.metrics.admitted.inc()
        self._gauge()

    def _refused(self, refusal: Refusal) -> Refusal:
        self.metrics.refusals.labels(refusal.reason).inc()
        return refusal

    def _gauge(self) -> None:
        self.metrics.in_flight.set(self.in_flight)

    def _count_waiting(self) -> None:
        self.metrics.waiting.set(len(self._waiting))


def upload_bytes(request: Request, max_upload_bytes: int) -> int | None:
    """The body's size from Content-Length; the route's limit when absent (chunked); None when over the limit
    or malformed: those the body-size check refuses (413) or the body parser (400), and nothing is scored."""
    length = request.headers.get("content-length")
    if length is None:
        return max_upload_bytes
    try:
        size = int(length)
    except ValueError:
        return None
    return size if 0 <= size <= max_upload_bytes else None


async def admit_upload(request: Request) -> Response | None:
    """Before-request hook: None once the upload is admitted, else the refusal (nothing of the body read)."""
    held = request.scope.get(SCOPE_KEY)
    if held is None:
        raise RuntimeError("admit_upload needs the route middleware release_after_answer: use **ADMITTED")
    budget: UploadBudget = request.app.state.service.upload_budget
    size = upload_bytes(request, budget.max_upload_bytes)
    if size is None:
        return None
    cost = budget.cost(size)
    refusal = await budget.acquire(cost)
    if refusal is None:
        held.update(budget=budget, cost=cost)
        return None
    headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s is not None else {}
    return Response({"status_code": refusal.status_code, "detail": refusal.message}, status_code=refusal.status_code,
                    media_type=MediaType.JSON, headers=headers)


def release_after_answer(app):
    """Route middleware: whatever admit_upload charged goes back to the budget once the answer is sent."""

    async def middleware(scope, receive, send):
        held = scope[SCOPE_KEY] = {}
        try:
            await app(scope, receive, send)
        finally:
            if held:
                held["budget"].release(held["cost"])

    return middleware


ADMITTED = {"middleware": [release_after_answer], "before_request": admit_upload}

RETRY_AFTER = OpenAPIHeader(description="Seconds to wait before retrying", schema=Schema(type=OpenAPIType.INTEGER))
RESPONSES = {  # the admitted routes' refusals, for their OpenAPI operation
    "503": OpenAPIResponse(description="The memory budget for uploads is taken and the wait queue is full, or the "
                                       "wait timed out: retry after Retry-After seconds",
                           headers={"Retry-After": RETRY_AFTER},
                           content=json_content(ERROR)),
}


DRAIN_LIMIT_S = 30.0  # at most this long reading a body nobody needs (nginx's lingering_time): then answer anyway


def _header(scope, name: bytes) -> bytes:
    return b",".join(value for key, value in scope["headers"] if key == name).lower()


def closes_after_answer(scope) -> bool:
    """Whether the server closes the connection once it has answered: the client asked it to (urllib always
    sends `Connection: close`) or speaks HTTP/1.0."""
    return scope.get("http_version") == "1.0" or b"close" in _header(scope, b"connection")


def read_body_before_answer(app):
    """ASGI middleware: on a connection that closes after the answer, an answer that comes before the request
    body was read goes out once the body has been read to its end (and discarded).

    Closing a connection with bytes the client sent still unread makes the kernel answer with a TCP reset,
    which the client reports (ECONNRESET) in place of the answer; urllib, and curl or a browser told to
    close, write their whole body before they read. On a kept-alive connection uvicorn reads and discards
    the rest of the body itself and keeps the connection, so there the answer goes out at once: a client
    that reads early answers (curl, browsers) stops sending, and one that sent `Expect: 100-continue` is
    never told to continue and sends no body at all."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http" or not closes_after_answer(scope):
            await app(scope, receive, send)
            return
        body_ended = False

        async def tracked_receive():
            nonlocal body_ended
            message = await receive()
            body_ended = message["type"] == "http.disconnect" or not message.get("more_body", False)
            return message

        async def send_after_body(message):
            if message["type"] == "http.response.start" and not body_ended:
                try:
                    async with asyncio.timeout(DRAIN_LIMIT_S):
                        while not body_ended:
                            await tracked_receive()
                except TimeoutError:
                    pass  # a client this slow is answered anyway (and may see its connection reset)
            await send(message)

        await app(scope, tracked_receive, send_after_body)

    return middleware
