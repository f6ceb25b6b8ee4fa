"""A watch's live stream: WebSocket `/subjects/{subject}/stream` (the protocol: serve/streaming.py, docs/streaming.md),
and what the study page draws of a participant's open streams: `GET /subjects/{subject}/live`.

The service's token may stream; the read-only token may not (the connection is accepted, then closed with 4403
and the reason, so that a client reads why; without a token: 4401). Each connection is one stream's hello,
then its batches in sequence order, each acknowledged once journaled; labels come back as windows are final,
each preceded by a provisional one. The streams are this process's (serve/streaming.py's StreamHub) or, with
`serve.stream.broker` set, Redis Streams' (serve/stream_broker.py's BrokerHub): the route is the same.

A browser cannot put the bearer token on a WebSocket's handshake, so the page does not stream: it reads
`GET /subjects/{subject}/live` (either token) every second and draws the timeline filling in (serve/static/live.js).
"""
from __future__ import annotations

import asyncio

from litestar import WebSocket, get, websocket

from har.subject import check_subject
from serve import contract
from serve.controllers.subjects import OBJECT, SUBJECT, ok
from serve.security import Caller, may_read
from serve.streaming import CLOSE_CODES, Batch, Close, Hello, Hub, Refusal, close_quietly, decode, send_message


def refusal_of(caller: Caller) -> Refusal | None:
    """The service's token may stream. A guard's refusal would end the handshake with a bare HTTP 403 (Litestar
    closes an unaccepted WebSocket); a close code after it carries the reason a client can read."""
    if caller is Caller.SERVICE:
        return None
    if caller is Caller.READER:
        return Refusal("forbidden", "the read-only token may not stream: use the service's token")
    return Refusal("unauthorized", "missing bearer token" if caller is Caller.MISSING else "invalid bearer token")


async def receive(socket: WebSocket, timeout_s: float) -> str | bytes | None:
    """The next frame's text or bytes; None when the client went away."""
    try:
        message = await asyncio.wait_for(socket.receive(), timeout_s)
    except asyncio.TimeoutError:
        raise Refusal("silent", f"no message for {timeout_s:g} s (serve.stream.silent_s)") from None
    if message["type"] == "websocket.disconnect":
        return None
    return message.get("text") if message.get("text") is not None else message.get("bytes")


@websocket("/subjects/{subject:str}/stream")
async def stream(socket: WebSocket, subject: str, streams: Hub) -> None:
    await socket.accept()
    settings, session = streams.settings, None
    try:
        refusal = refusal_of(socket.user)
        if refusal is not None:
            raise refusal
        try:
            check_subject(subject)
        except ValueError as error:
            raise Refusal("malformed", str(error)) from None
        frame = await receive(socket, settings.stream_silent_s)
        if frame is None:
            return
        hello = decode(frame)
        if not isinstance(hello, Hello):
            raise Refusal("malformed", "the first message must be a hello")
        session = await streams.open(subject, hello, socket, binary=isinstance(frame, bytes))
        await streams.ready(session, hello)  # then the final labels the client missed while it was away
        while True:
            frame = await receive(socket, settings.stream_silent_s)
            if frame is None:
                streams.metrics.closes.labels("dropped").inc()
                return
            message = decode(frame)
            if isinstance(message, Close):
                stored = await streams.finish(session)
                session = None
                await send_message(socket, {"type": "closed", "recording": stored}, isinstance(frame, bytes))
                streams.metrics.closes.labels("normal").inc()
                await close_quietly(socket, CLOSE_CODES["normal"], "stream stored")
                return
            if not isinstance(message, Batch):
                raise Refusal("malformed", "expected a batch or close after the hello")
            await streams.accept(session, message)
            if session.socket is not socket:  # closed meanwhile (a slow client, or replaced)
                return
            await send_message(socket, {"type": "ack", "seq": message.seq}, session.binary)
    except Refusal as refusal:
        streams.metrics.closes.labels(refusal.reason).inc()
        await close_quietly(socket, refusal.code, refusal.message)
    except Exception as error:  # the connection went while we wrote to it
        if type(error).__name__ not in ("WebSocketDisconnect", "ClientDisconnected"):
            raise
        streams.metrics.closes.labels("dropped").inc()
    finally:
        if session is not None:
            streams.disconnected(session, socket)


@get("/subjects/{subject:str}/live", guards=[may_read], tags=["subjects"], security=[{"bearer": []}],
     summary="A participant's open live streams: final labels as episodes, and the provisional ones after them",
     operation_class=contract.documented(responses={
         **ok("{subject, streams: [{stream, start_time, window_s, windows, episodes, provisional, connected}]}; "
              "no open stream: an empty list", OBJECT), **contract.errors(400, 401)}))
async def live(streams: Hub, subject: SUBJECT) -> dict:
    return {"subject": subject, "streams": await streams.live(subject)}
