"""A Python client for the service, so that nobody hand-writes the binary protocol.

    from serve.client import HarClient

    with HarClient("http://127.0.0.1:8000", token=os.environ["HAR_SERVE_TOKEN"]) as client:
        result = client.predict(windows)            # float32 [n, 200, 6], sent as raw float32
        result.labels, result.probabilities         # list of n labels, float32 [n, classes]
        timeline = client.recording("acc.xlsx", "gyr.xlsx")   # the /recordings answer (timeline, episodes)
        stored, created = client.ingest("p01", "acc.xlsx", "gyr.xlsx")   # scored and kept in the study store

A 503 (the service's upload budget is taken, or it is not ready yet) is retried up to `retries` times,
after the server's Retry-After, doubled for each refusal before, plus up to as much again at random
(so a burst of refused clients does not come back all at once). So are a 502 or 504 from a load
balancer and a connection dropped without an answer (a replica killed mid-request), from 1 s: every
request this client sends may be sent twice (scoring has no side effect; an ingest is stored once by
its content, and a second one answers 200 with the stored recording). Every other answer is
returned or raised at once.

The request encoders (`predict_request`, `v2_request`) and `parse_v2_response` are plain functions
over arrays and bytes, so a benchmark or another HTTP stack can reuse them without this class.
Needs only httpx and numpy (not the server's dependencies).
"""
from __future__ import annotations

import email.utils
import io
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from serve.wire import FLOAT32, JSON, NPY, OCTET_STREAM, SHAPE_HEADER, V2_HEADER_LENGTH, v2_message, v2_tensors

REQUEST_ID_HEADER = "X-Request-ID"  # the service logs it on the request's lines and echoes it (serve/logs.py)


@dataclass
class Predictions:
    labels: list[str]  # the most probable class of each window
    probabilities: np.ndarray  # float32 [n, classes], columns in the order of `classes`
    classes: list[str]


def _windows(windows) -> np.ndarray:
    windows = np.asarray(windows)
    if windows.ndim != 3:
        raise ValueError(f"windows must be [n, samples, channels], got shape {windows.shape}")
    return np.ascontiguousarray(windows, dtype=FLOAT32)


def predict_request(windows, media_type: str = OCTET_STREAM) -> tuple[dict, bytes]:
    """(headers, body) of a /predict request: raw float32 (default), .npy, or JSON."""
    windows = _windows(windows)
    if media_type == OCTET_STREAM:
        return {"Content-Type": OCTET_STREAM, SHAPE_HEADER: ",".join(map(str, windows.shape))}, windows.tobytes()
    if media_type == NPY:
        buffer = io.BytesIO()
        np.save(buffer, windows)
        return {"Content-Type": NPY}, buffer.getvalue()
    if media_type == JSON:
        return {"Content-Type": JSON}, json.dumps({"windows": windows.tolist()}).encode()
    raise ValueError(f"media_type must be one of {[OCTET_STREAM, NPY, JSON]}, got {media_type!r}")


def v2_request(windows, *, input_name: str = "windows", binary: bool = True) -> tuple[dict, bytes]:
    """(headers, body) of an Open Inference Protocol infer request; binary: input and outputs as raw bytes."""
    windows = _windows(windows)
    tensor = {"name": input_name, "datatype": "FP32", "shape": list(windows.shape)}
    if not binary:
        return {"Content-Type": JSON}, json.dumps({"inputs": [{**tensor, "data": windows.ravel().tolist()}]}).encode()
    tensor["parameters"] = {"binary_data_size": windows.nbytes}
    body, header_length = v2_message({"inputs": [tensor], "parameters": {"binary_data_output": True}},
                                     [windows.tobytes()])
    return {"Content-Type": OCTET_STREAM, V2_HEADER_LENGTH: str(header_length)}, body


def parse_v2_response(headers, body: bytes) -> dict:
    """name -> output (FP32 as an array, BYTES as a list of str), whether the answer is JSON or binary."""
    header_length = headers.get(V2_HEADER_LENGTH)
    if header_length is None:
        return v2_tensors(json.loads(body), b"")
    size = int(header_length)
    return v2_tensors(json.loads(body[:size]), memoryview(body)[size:])


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds: delay-seconds or an HTTP date (RFC 9110 10.2.3); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def retry_delay(retry_after: str | None, attempt: int, *, first_s: float = 1.0, max_s: float = 60.0,
                jitter=random.random) -> float:
    """Seconds to sleep before retry number `attempt` (0 first): the server's Retry-After (else `first_s`)
    doubled for every refusal before, plus up to as much again at random; at most `max_s`. Never sooner
    than the server asked; backing off further while it keeps refusing lets a queue that drains slower
    than it said catch up."""
    base = retry_after_seconds(retry_after)
    base = first_s if base is None else base
    return min(max_s, base * 2 ** attempt * (1.0 + jitter()))


class ServiceError(RuntimeError):
    """The service's refusal: its HTTP status, message and request id (quote it: the service's log has it)."""

    def __init__(self, status_code: int, message: str, request_id: str | None = None):
        super().__init__(f"HTTP {status_code}: {message}" + (f" (request id {request_id})" if request_id else ""))
        self.status_code, self.message, self.request_id = status_code, message, request_id


def _with_request_id(request: httpx.Request) -> None:
    """Every request carries an X-Request-ID of its own (a caller's own header is kept)."""
    request.headers.setdefault(REQUEST_ID_HEADER, uuid.uuid4().hex)


RETRIED = (502, 503, 504)  # busy, or a load balancer whose replica failed or timed out: worth another try
DROPPED = (httpx.NetworkError, httpx.RemoteProtocolError)  # the connection went without an answer (not a timeout)


class HarClient:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 120.0, model: str = "har",
                 retries: int = 5, max_retry_wait_s: float = 60.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout,
                                 event_hooks={"request": [_with_request_id]})
        self.model = model
        self.retries, self.max_retry_wait_s = retries, max_retry_wait_s
        self.answered: Counter[int] = Counter()  # HTTP status of every attempt, retried ones included
        self.dropped: Counter[str] = Counter()  # attempts whose connection went without an answer, by error
        self._classes: list[str] | None = None

    def __enter__(self) -> "HarClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _checked(self, response: httpx.Response, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        if response.status_code not in ok:
            try:
                body = response.json()
                message = body.get("detail") or body.get("error") or response.text
            except ValueError:
                message = response.text
            raise ServiceError(response.status_code, message, response.headers.get(REQUEST_ID_HEADER)
                               or response.request.headers.get(REQUEST_ID_HEADER))
        return response

    def _retrying(self, send) -> httpx.Response:
        """`send()` (a fresh request each time: an upload's files are reopened) until it is answered with anything
        but RETRIED, at most 1 + `retries` times; a dropped connection's error is raised after the last."""
        for attempt in range(self.retries + 1):
            try:
                response = send()
            except DROPPED as error:
                self.dropped[type(error).__name__] += 1
                if attempt == self.retries:
                    raise
                time.sleep(retry_delay(None, attempt, max_s=self.max_retry_wait_s))
                continue
            self.answered[response.status_code] += 1
            if response.status_code not in RETRIED or attempt == self.retries:
                return response
            time.sleep(retry_delay(response.headers.get("retry-after"), attempt, max_s=self.max_retry_wait_s))
        raise AssertionError("unreachable")

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = self._checked(self.http.get("/model")).json()["labels"]
        return self._classes

    def predict(self, windows, *, media_type: str = OCTET_STREAM) -> Predictions:
        """POST /predict: labels and probabilities of float32 [n, samples, channels] windows."""
        headers, body = predict_request(windows, media_type)
        answer = self._checked(self._retrying(lambda: self.http.post("/predict", content=body, headers=headers)))
        answer = answer.json()["predictions"]
        classes = list(answer[0]["probabilities"]) if answer else self.classes
        probabilities = np.array([[p["probabilities"][c] for c in classes] for p in answer], dtype=np.float32)
        return Predictions([p["label"] for p in answer], probabilities.reshape(len(answer), len(classes)), classes)

    def infer(self, windows, *, binary: bool = True, input_name: str = "windows") -> Predictions:
        """POST /v2/models/{model}/infer (Open Inference Protocol), binary data extension by default."""
        headers, body = v2_request(windows, input_name=input_name, binary=binary)
        response = self._checked(self._retrying(
            lambda: self.http.post(f"/v2/models/{self.model}/infer", content=body, headers=headers)))
        outputs = parse_v2_response(response.headers, response.content)
        return Predictions(outputs["label"], outputs["probabilities"], self.classes)

    def _post_pair(self, path: str, accelerometer: str | Path, gyroscope: str | Path, params: dict | None = None):
        def post() -> httpx.Response:
            with open(accelerometer, "rb") as acc, open(gyroscope, "rb") as gyr:
                files = {"accelerometer": (Path(accelerometer).name, acc), "gyroscope": (Path(gyroscope).name, gyr)}
                return self.http.post(path, files=files, params=params)

        return self._retrying(post)

    def recording(self, accelerometer: str | Path, gyroscope: str | Path) -> dict:
        """POST /recordings: the activity timeline of a Garmin accelerometer + gyroscope workbook pair."""
        return self._checked(self._post_pair("/recordings", accelerometer, gyroscope)).json()

    def ingest(self, subject: str, accelerometer: str | Path, gyroscope: str | Path, *,
               timezone: str | None = None) -> tuple[dict, bool]:
        """POST /subjects/{subject}/recordings: the pair scored and stored; (the stored recording, created). created
        is False when the store already held this content scored by this model (a retry whose first attempt was
        stored before its answer was lost, say): it is stored once either way."""
        params = {"timezone": timezone} if timezone else None
        response = self._checked(self._post_pair(f"/subjects/{subject}/recordings", accelerometer, gyroscope, params),
                                 ok=(200, 201))
        return response.json(), response.status_code == 201


# ---------------------------------------------------------------- live streams (docs/streaming.md)

def garmin_batches(accelerometer: str | Path, gyroscope: str | Path, *, timezone: str | None = None) -> list[dict]:
    """A Garmin workbook pair as a watch streams it: one batch message per workbook row (about 250 ms), in the
    export's own units, both sensors in the order of their start times. `timezone`: the zone of the export's
    wall-clock times (default: read as UTC)."""
    import pandas as pd

    from har.garmin import SENSORS, read_sensor_rows

    names = {"acc": "accelerometer", "gyr": "gyroscope"}
    messages = []
    for sensor, path in (("acc", accelerometer), ("gyr", gyroscope)):
        starts, row, offsets_ms, values, _ = read_sensor_rows(path, sensor)
        local = pd.DatetimeIndex(starts)
        utc = local.tz_localize(timezone).tz_convert("UTC").tz_localize(None) if timezone else local
        start_ms = (utc.asi8 // 1_000_000).astype(np.int64)
        bounds = [0, *(np.flatnonzero(np.diff(row)) + 1).tolist(), len(row)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            messages.append({"type": "batch", "sensor": names[sensor], "unit": SENSORS[sensor][1],
                             "time_ms": int(start_ms[row[a]]), "offsets_ms": offsets_ms[a:b].tolist(),
                             "x": values[a:b, 0].tolist(), "y": values[a:b, 1].tolist(), "z": values[a:b, 2].tolist()})
    order = sorted(range(len(messages)), key=lambda i: (messages[i]["time_ms"], messages[i]["sensor"]))
    return [{**messages[i], "seq": seq} for seq, i in enumerate(order, start=1)]


class StreamClosed(RuntimeError):
    """The server closed the stream with a refusal: its close code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"stream closed with {code}: {reason}")
        self.code, self.reason = code, reason


@dataclass
class Streamed:
    labels: list[dict]  # every window's final label, in order ("label" messages)
    recording: dict | None  # what the study store keeps of it (None: no complete window)
    reconnects: int
    provisional: list[dict] = field(default_factory=list)  # "provisional" messages: a window's label before its final one


def stream_batches(url: str, subject: str, batches: list[dict], *, stream: str, token: str | None = None,
                   speed: float | None = 1.0, binary: bool = False, timezone: str | None = None,
                   max_unacked: int = 64, retries: int = 10, on_label=None, provisional: bool = True,
                   drop_after: int | None = None) -> Streamed:
    """Send `batches` (messages with seq 1, 2, ...) over WebSocket /subjects/{subject}/stream, at `speed` times
    real time (None: as fast as acknowledgements come), then close; labels arrive meanwhile. A dropped connection
    is resumed: reconnect, hello, and send again from the last acknowledged seq (the server ignores duplicates).
    A refusal (a 4xxx close) is raised as StreamClosed. `on_label(message)` is called with each label message as it
    comes: "provisional" ones (a window's model label as soon as its samples are in; `provisional=False` asks for
    none) and each window's final "label", which replaces it. `drop_after`: drop the connection once, after that
    many acknowledgements (a test of resume)."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    import msgspec

    ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + f"/subjects/{subject}/stream"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    encode = msgspec.msgpack.encode if binary else (lambda m: msgspec.json.encode(m).decode())
    decode = msgspec.msgpack.decode if binary else msgspec.json.decode
    labels: list[dict] = []
    early: list[dict] = []  # provisional labels
    acked, reconnects, started = 0, 0, None
    first_time = batches[0]["time_ms"] if batches else 0

    def handle(message: dict) -> dict | None:
        nonlocal acked
        if message["type"] == "ack":
            acked = max(acked, message["seq"])
        elif message["type"] == "label" and message["window"] == len(labels) or message["type"] == "provisional":
            (labels if message["type"] == "label" else early).append(message)
            if on_label is not None:
                on_label(message)
        return message

    for attempt in range(retries + 1):
        try:
            with connect(ws_url, additional_headers=headers, max_size=2 ** 24, open_timeout=30) as socket:
                socket.send(encode({"type": "hello", "stream": stream, "labels": len(labels), "provisional": provisional,
                                    **({"timezone": timezone} if timezone else {})}))
                ready = decode(socket.recv(timeout=60))
                if ready.get("type") != "ready":
                    raise StreamClosed(1002, f"expected ready, got {ready}")
                acked = ready["acked"]
                at = acked
                while at < len(batches) or acked < len(batches):
                    if at < len(batches) and at - acked < max_unacked:
                        batch = batches[at]
                        if speed:
                            started = started or (time.monotonic() - (batch["time_ms"] - first_time) / 1000 / speed)
                            wait = started + (batch["time_ms"] - first_time) / 1000 / speed - time.monotonic()
                            if wait > 0:
                                time.sleep(wait)
                        socket.send(encode(batch))
                        at += 1
                        timeout = 0
                    else:
                        timeout = 60
                    try:
                        while True:
                            handle(decode(socket.recv(timeout=timeout)))
                            timeout = 0
                    except TimeoutError:
                        pass
                    if drop_after is not None and acked >= drop_after:
                        drop_after = None
                        raise ConnectionResetError("dropped on purpose (drop_after)")
                socket.send(encode({"type": "close"}))
                while True:
                    message = handle(decode(socket.recv(timeout=600)))
                    if message["type"] == "closed":
                        return Streamed(labels, message["recording"], reconnects, early)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            if 4000 <= code < 5000 or code == 1013 and attempt == retries:
                raise StreamClosed(code, closed.rcvd.reason if closed.rcvd else "") from None
        except (OSError, InvalidStatus, TimeoutError):
            if attempt == retries:
                raise
        reconnects += 1
        time.sleep(min(5.0, 0.2 * 2 ** min(attempt, 5)))
    raise RuntimeError("unreachable")


def stream_folder(url: str, subject: str, folder: str | Path, *, token: str | None = None, speed: float | None = 1.0,
                  timezone: str | None = None, binary: bool = False) -> dict[str, Streamed]:
    """Every Garmin pair of `folder` streamed one after another (each its own stream, named after its session)."""
    from har.garmin import find_garmin_pairs

    pairs, _ = find_garmin_pairs(folder)
    return {Path(acc).name.removesuffix("-accelerometer_data.xlsx"): stream_batches(
        url, subject, garmin_batches(acc, gyr, timezone=timezone), token=token, speed=speed, binary=binary,
        stream=Path(acc).name.removesuffix("-accelerometer_data.xlsx"), timezone=timezone) for acc, gyr in pairs}


def main(argv=None) -> int:
    """python -m serve.client stream URL SUBJECT FOLDER [--speed 10] [--timezone Europe/Berlin] [--msgpack]"""
    import argparse
    import os

    parser = argparse.ArgumentParser(prog="python -m serve.client", description="stream Garmin recordings as a watch")
    parser.add_argument("command", choices=["stream"])
    parser.add_argument("url")
    parser.add_argument("subject")
    parser.add_argument("folder", help="a folder of <session>-accelerometer_data.xlsx / -gyroscope_data.xlsx pairs")
    parser.add_argument("--speed", type=float, default=1.0, help="times real time (0: as fast as acknowledged)")
    parser.add_argument("--timezone", help="the zone of the workbooks' wall-clock times (default UTC)")
    parser.add_argument("--msgpack", action="store_true", help="binary frames instead of JSON")
    args = parser.parse_args(argv)
    done = stream_folder(args.url, args.subject, args.folder, token=os.environ.get("HAR_SERVE_TOKEN"),
                         speed=args.speed or None, timezone=args.timezone, binary=args.msgpack)
    for name, streamed in done.items():
        print(json.dumps({"stream": name, "windows": len(streamed.labels), "reconnects": streamed.reconnects,
                          "recording": streamed.recording}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
