"""Live streams from watches: the WebSocket protocol's messages, the journal that makes an acknowledgement durable,
and the streams of this process (`StreamHub`), each a `har.live.LiveRecording` fed in sequence order.

    client                                      server
    hello {stream, timezone?, labels}     ->
                                          <-    ready {stream, acked, labels}     (resume: send from acked + 1)
    batch {seq, sensor, unit, time_ms,    ->    journal (fsync) ... then
           offsets_ms, x, y, z}           <-    ack {seq}
                                          <-    provisional {start_s, time, label}   (each window, once its samples are in)
                                          <-    label {window, start_s, time, label}   (each window, once final)
    close                                 ->    the rest decided, the recording stored
                                          <-    closed {recording}, then close code 1000

JSON text frames, or the same fields as msgpack in binary frames (the server answers in the framing of the
hello). The schema and the close codes are in docs/streaming.md. A batch is checked whole before anything
is kept (a malformed, out-of-order or wrong-unit batch closes the connection and leaves no trace); an
accepted batch is appended to the journal (SQLite, synchronous=FULL) and only then acknowledged, so a
SIGKILL loses nothing acknowledged: the next start replays the journal. A stream's decided windows go to the
study store every `stream_store_every_s`, and as one recording when it closes or has had no connection for
`stream_idle_s`. The answer is made by har.answer.answer_for, as an upload's.

A stream is scored by a `Watch`, whichever process holds it: `StreamHub` here (the embedded default), or a scoring
process reading Redis Streams (serve/stream_broker.py, with `serve.stream.broker` set).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
import msgspec
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from har.answer import answer_for
from har.live import LiveError, SensorBatch, for_model, fused_table
from har.recording import ACC_TO_SI, GYR_TO_SI, to_si
from har.timeline import NOT_WORN, UNCERTAIN, wall_clock
from har.windows import window_spans

log = logging.getLogger("serve")

# Close codes: the standard ones, and 4000 + the HTTP status that says the same.
CLOSE_CODES = {"normal": 1000, "going_away": 1001, "too_many_streams": 1013, "malformed": 4400,
               "unauthorized": 4401, "forbidden": 4403, "silent": 4408, "out_of_order": 4409, "slow": 4410,
               "wrong_unit": 4422, "buffer_full": 4429}
SENSORS = {"accelerometer": ("acc", ACC_TO_SI), "gyroscope": ("gyr", GYR_TO_SI)}
STREAM_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


# ---------------------------------------------------------------- the protocol

class Hello(msgspec.Struct, tag="hello", forbid_unknown_fields=True):
    stream: str  # the client's name for this stream (a resume uses it again)
    timezone: str | None = None  # the participant's IANA zone, for a new participant (default store.timezone)
    labels: int = 0  # final labels the client already has (a resume sends the rest)
    provisional: bool = True  # also each window's provisional label, as soon as its samples are in


class Batch(msgspec.Struct, tag="batch", forbid_unknown_fields=True):
    seq: int  # 1, 2, 3, ... over the stream, both sensors together
    sensor: str  # "accelerometer" | "gyroscope"
    unit: str  # the values' unit: m/s^2, g, milli-g (accelerometer); rad/s, deg/s (gyroscope)
    time_ms: int  # the batch's start, ms since the Unix epoch (UTC)
    offsets_ms: list[float]  # each sample's time after the start, >= 0
    x: list[float]
    y: list[float]
    z: list[float]


class Close(msgspec.Struct, tag="close", forbid_unknown_fields=True):
    pass


ClientMessage = Hello | Batch | Close
JSON_DECODER = msgspec.json.Decoder(ClientMessage)
MSGPACK_DECODER = msgspec.msgpack.Decoder(ClientMessage)


class Refusal(Exception):
    """A message the stream cannot take: the close code's name and a reason the client can read."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message[:120]  # a close frame's reason holds 123 bytes

    @property
    def code(self) -> int:
        return CLOSE_CODES[self.reason]


def decode(data: str | bytes):
    """A client message from a text (JSON) or binary (msgpack) frame."""
    try:
        return JSON_DECODER.decode(data) if isinstance(data, str) else MSGPACK_DECODER.decode(data)
    except msgspec.ValidationError as error:
        raise Refusal("malformed", f"malformed message: {error}") from None
    except msgspec.DecodeError as error:
        raise Refusal("malformed", f"not {'JSON' if isinstance(data, str) else 'msgpack'}: {error}") from None


def sensor_batch(batch: Batch) -> SensorBatch:
    """The batch in SI units, or a Refusal naming what is wrong with it."""
    if batch.sensor not in SENSORS:
        raise Refusal("malformed", f"seq {batch.seq}: sensor {batch.sensor!r}, expected one of {sorted(SENSORS)}")
    name, units = SENSORS[batch.sensor]
    if batch.unit not in units:
        raise Refusal("wrong_unit", f"seq {batch.seq}: {batch.sensor} in {batch.unit!r}, expected one of {sorted(units)}")
    n = len(batch.offsets_ms)
    if not (len(batch.x) == len(batch.y) == len(batch.z) == n) or n == 0:
        raise Refusal("malformed", f"seq {batch.seq}: {n} offsets and {len(batch.x)}, {len(batch.y)}, {len(batch.z)} "
                                   "values; expected one value per offset on each axis, at least one")
    values = to_si(np.column_stack([batch.x, batch.y, batch.z]).astype(np.float64), batch.unit, units)
    return SensorBatch(name, int(batch.time_ms) * 1_000_000, np.asarray(batch.offsets_ms, np.float64), values)


# ---------------------------------------------------------------- the journal

class Journal:
    """Accepted batches on disk before they are acknowledged: an SQLite file in WAL mode with synchronous=FULL,
    written by one thread that commits whatever has queued up at once (one fsync for many streams' batches)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS streams (subject TEXT, stream TEXT, timezone TEXT, "
                        "PRIMARY KEY (subject, stream))")
        self.db.execute("CREATE TABLE IF NOT EXISTS batches (subject TEXT, stream TEXT, seq INTEGER, batch BLOB, "
                        "PRIMARY KEY (subject, stream, seq))")
        self.lock = threading.Lock()
        self.queue: list[tuple] = []
        self.wake = threading.Condition(self.lock)
        self.running = True
        self.writer = threading.Thread(target=self._write, name="stream-journal", daemon=True)
        self.writer.start()

    def _write(self) -> None:
        while True:
            with self.wake:
                while not self.queue and self.running:
                    self.wake.wait()
                if not self.queue and not self.running:
                    return
                work, self.queue = self.queue, []
            try:
                self.db.execute("BEGIN")
                for statement, args, _ in work:
                    self.db.execute(statement, args)
                self.db.execute("COMMIT")
                error = None
            except sqlite3.Error as exc:  # nothing of this group is acknowledged
                self.db.execute("ROLLBACK") if self.db.in_transaction else None
                error = exc
            for _, _, done in work:
                done(error)

    async def run(self, statement: str, args: tuple) -> None:
        """The statement committed (fsynced) with whatever else is queued."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(error):
            loop.call_soon_threadsafe(lambda: future.done() or (future.set_exception(error) if error
                                                                 else future.set_result(None)))

        with self.wake:
            self.queue.append((statement, args, done))
            self.wake.notify()
        await future

    async def append(self, subject: str, stream: str, seq: int, batch: bytes) -> None:
        await self.run("INSERT OR IGNORE INTO batches VALUES (?, ?, ?, ?)", (subject, stream, seq, batch))

    async def open(self, subject: str, stream: str, timezone: str | None) -> None:
        await self.run("INSERT OR IGNORE INTO streams VALUES (?, ?, ?)", (subject, stream, timezone))

    async def forget(self, subject: str, stream: str) -> None:
        await self.run("DELETE FROM batches WHERE subject = ? AND stream = ?", (subject, stream))
        await self.run("DELETE FROM streams WHERE subject = ? AND stream = ?", (subject, stream))

    def streams(self) -> list[tuple[str, str, str | None]]:
        with self.lock:
            return self.db.execute("SELECT subject, stream, timezone FROM streams").fetchall()

    def batches(self, subject: str, stream: str) -> list[bytes]:
        with self.lock:
            return [row[0] for row in self.db.execute(
                "SELECT batch FROM batches WHERE subject = ? AND stream = ? ORDER BY seq", (subject, stream))]

    def close(self) -> None:
        with self.wake:
            self.running = False
            self.wake.notify()
        self.writer.join(timeout=10)
        self.db.close()


# ---------------------------------------------------------------- metrics

class StreamMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.open = Gauge("har_streams_open", "Live streams held by this process (connected or awaiting a resume)",
                          registry=r)
        self.connected = Gauge("har_streams_connected", "Live streams with a connection now", registry=r)
        self.buffered = Gauge("har_stream_buffered_samples", "Samples held unfused, all streams together", registry=r)
        self.batches = Counter("har_stream_batches", "Batches received: accepted (journaled and acknowledged) or "
                               "duplicate (acknowledged again, ignored)", ["outcome"], registry=r)
        self.windows = Counter("har_stream_windows", "Windows whose final label was given", registry=r)
        self.provisional = Counter("har_stream_provisional_labels", "Provisional labels given (each window's model "
                                   "label as soon as its samples are in)", registry=r)
        self.closes = Counter("har_stream_closes", "Stream connections closed, by reason (docs/streaming.md: normal, "
                              "dropped by the client, or a refusal)", ["reason"], registry=r)
        self.stored = Counter("har_stream_recordings_stored", "Writes of live streams' recordings to the study store",
                              registry=r)
        for outcome in ("accepted", "duplicate"):
            self.batches.labels(outcome)
        for reason in [*CLOSE_CODES, "dropped"]:
            self.closes.labels(reason)


# ---------------------------------------------------------------- one watch's stream, scored

def stream_content_hash(subject: str, stream: str) -> str:
    """The store's key of a live stream's recording: one recording per stream, however long it grows."""
    return hashlib.sha256(f"stream\0{subject}\0{stream}".encode()).hexdigest()


FUSED_ROW = np.dtype([("t", "<f8"), ("values", "<f4", (6,))])
LABEL_ROW = np.dtype([("start_s", "<f8"), ("label", "<u2")])


class Watch:
    """One watch's stream scored as its batches come, in whichever process holds it (this one's StreamHub, or a
    scoring process of serve/stream_broker.py): the live recording (har/live.py), the model (the person's or the
    generic one), and on disk what grows with the stream (its fused rows, decided windows and final labels; the
    store's recording is made of them), so that what it holds in memory does not grow with the stream's length."""

    def __init__(self, subject: str, stream: str, timezone: str, card, score, personal: bool, folder: Path,
                 settings, predictor):
        self.subject, self.stream, self.timezone, self.card = subject, stream, timezone, card
        self.score, self.personal, self.settings, self.predictor = score, personal, settings, predictor
        self.live = for_model(card, settings.wear, recording_id=stream, timezone=timezone)
        key = stream_content_hash(subject, stream)
        self.files = {kind: folder / f"{key}.{kind}" for kind in ("fused", "windows", "labels")}
        folder.mkdir(parents=True, exist_ok=True)
        for path in self.files.values():
            path.unlink(missing_ok=True)  # rebuilt from the journal
        self.names = [*card.labels, UNCERTAIN, NOT_WORN]  # a label's index in the labels file
        self.window_row = np.dtype([("start_s", "<f8"), ("worn", "?"), ("p", "<f8", (len(card.labels),))])
        self.dtype = np.dtype(np.float32)  # of the model's probabilities (kept exactly, as float64 on disk)
        self.given = 0  # final labels given
        self.last_final_s = -np.inf
        self.provisional: dict[float, str] = {}  # provisional labels of windows after the last final one
        self.clock = None
        self.lock = asyncio.Lock()

    async def feed(self, batch: SensorBatch | None) -> list[dict]:
        """A batch into the live recording (None: it ended); the windows it completed scored; the label messages
        now due, provisional and final, in order."""
        async with self.lock:
            live = self.live
            step = live.add if batch is not None else (lambda _: live.close())
            windows = await anyio.to_thread.run_sync(lambda: (step(batch), live.to_score())[1])
            if len(windows):
                probabilities = await self.predictor.predict(windows, score=self.score)
                self.dtype = probabilities.dtype
                live.scored(probabilities)
            final, provisional = live.labels(), live.provisional_labels()
            await anyio.to_thread.run_sync(self._spill, final)
            return self._messages(provisional, final)

    def _spill(self, final: list[dict]) -> None:
        t, values = self.live.take_fused()
        if len(t):
            rows = np.empty(len(t), FUSED_ROW)
            rows["t"], rows["values"] = t, values
            append_rows(self.files["fused"], rows)
        start_s, worn, probabilities = self.live.take_decided()
        if len(start_s):
            rows = np.zeros(len(start_s), self.window_row)
            rows["start_s"], rows["worn"] = start_s, worn
            rows["p"][worn] = probabilities
            append_rows(self.files["windows"], rows)
        if final:
            rows = np.empty(len(final), LABEL_ROW)
            rows["start_s"] = [e["start_s"] for e in final]
            rows["label"] = [self.names.index(e["label"]) for e in final]
            append_rows(self.files["labels"], rows)

    def _messages(self, provisional: list[dict], final: list[dict]) -> list[dict]:
        if self.clock is None and self.live.start_time is not None:
            self.clock = wall_clock(self.live.start_time)
        messages = []
        for entry in provisional:
            if entry["start_s"] > self.last_final_s:
                self.provisional[entry["start_s"]] = entry["label"]
                messages.append({"type": "provisional", **self._label(entry["start_s"], entry["label"])})
        for entry in final:
            messages.append({"type": "label", "window": self.given, **self._label(entry["start_s"], entry["label"])})
            self.given += 1
            self.last_final_s = entry["start_s"]
        if final:
            self.provisional = {s: label for s, label in self.provisional.items() if s > self.last_final_s}
        return messages

    def _label(self, start_s: float, label: str) -> dict:
        return {"start_s": round(start_s, 3), "time": self.clock(start_s), "label": label}

    def final_labels(self, since: int = 0) -> list[dict]:
        """The final label messages from window `since` on (what a resuming client missed), from the labels file."""
        rows = read_rows(self.files["labels"], LABEL_ROW)[since:]
        return [{"type": "label", "window": since + i, **self._label(float(row["start_s"]), self.names[row["label"]])}
                for i, row in enumerate(rows)]

    def view(self) -> dict:
        """What the study page draws of it (`live_view`)."""
        rows = read_rows(self.files["labels"], LABEL_ROW)
        final = [(float(row["start_s"]), self.names[row["label"]]) for row in rows]
        return live_view(self.stream, self.live.start_time, self.live.p.window_s, final, sorted(self.provisional.items()))

    async def store(self, study) -> dict:
        """The decided windows as the participant's recording (har.answer.answer_for, then the store's ingest;
        one recording per stream, replaced as it grows)."""
        from serve.controllers.subjects import WRITER

        async with self.lock:
            fused, windows = await anyio.to_thread.run_sync(
                lambda: (read_rows(self.files["fused"], FUSED_ROW), read_rows(self.files["windows"], self.window_row)))
            prepared = self.live.prepared(fused_table(fused["t"], fused["values"]), windows["start_s"], windows["worn"])
        probabilities = windows["p"][windows["worn"]].astype(self.dtype)
        answer = answer_for(prepared, probabilities, self.card, self.settings.wear, subject=self.subject,
                            personal=self.personal).to_builtins()
        stored, _ = await study.call(lambda s: s.ingest(
            self.subject, content_hash=stream_content_hash(self.subject, self.stream), fused=prepared.fused,
            answer=answer, timezone=None, actor=WRITER, replace=True))
        return {k: v for k, v in stored.items() if k != "answer"}

    def forget(self) -> None:
        for path in self.files.values():
            path.unlink(missing_ok=True)


def live_view(stream: str, start_time: str | None, window_s: float, final: list[tuple[float, str]],
              provisional: list[tuple[float, str]]) -> dict:
    """A live stream as the study page draws it (GET /subjects/{subject}/live): its final labels as episodes, then
    its provisional ones (after the last final one) as episodes of their own: runs of equal labels, each window
    owning the time until the next one starts (har.windows.window_spans, over both together, so they tile)."""
    labels = final + [entry for entry in provisional if not final or entry[0] > final[-1][0]]
    spans = window_spans(np.array([start for start, _ in labels], dtype=np.float64), window_s)
    parts: dict[str, list[dict]] = {"episodes": [], "provisional": []}
    for i, ((start, end), (_, label)) in enumerate(zip(spans, labels)):
        runs = parts["episodes" if i < len(final) else "provisional"]
        if runs and runs[-1]["label"] == label and np.isclose(runs[-1]["end_s"], start):
            runs[-1]["end_s"] = float(end)
        else:
            runs.append({"label": label, "start_s": float(start), "end_s": float(end)})
    for run in parts["episodes"] + parts["provisional"]:
        run["start_s"], run["end_s"] = round(run["start_s"], 3), round(run["end_s"], 3)
    return {"stream": stream, "start_time": start_time, "window_s": window_s, "windows": len(final), **parts}


async def open_watch(service, settings, subject: str, stream: str, timezone: str | None, folder: Path) -> Watch:
    """A watch scored by the subject's own model if they have one, else the service's."""
    person, person_score = await service.person_for(subject)
    card = (person or service.runtime).card
    return Watch(subject, stream, timezone or settings.store_timezone, card, person_score, person is not None,
                 folder, settings, service.predictor)


def append_rows(path: Path, rows: np.ndarray) -> None:
    with open(path, "ab") as f:
        rows.tofile(f)


def read_rows(path: Path, dtype: np.dtype) -> np.ndarray:
    return np.fromfile(path, dtype) if path.exists() else np.empty(0, dtype)


# ---------------------------------------------------------------- this process's streams

@dataclass
class Session:
    """A watch held by this process, and its connection (None between connections)."""

    watch: Watch
    last_seq: int = 0
    socket: object = None
    binary: bool = False
    provisional: bool = True  # the client wants provisional labels (its hello)
    disconnected_at: float = field(default_factory=time.monotonic)
    stored_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, str]:
        return self.watch.subject, self.watch.stream


class Hub:
    """Live streams as the WebSocket route and the study page's live view see them (serve/controllers/stream.py):
    start, stop; open (a hello), ready, accept (a batch), finish (a close), disconnected; live (the page's view).
    `StreamHub` holds them in this process (the embedded default); serve/stream_broker.py's `BrokerHub` passes them
    through Redis Streams to scoring processes. A session has the connection's `socket` and `binary` framing."""

    def __init__(self, settings, service, store):
        self.settings, self.service, self.store = settings, service, store
        self.metrics = StreamMetrics(service.metrics.registry)

    async def send(self, session, message: dict) -> None:
        """A message to the session's client; one that does not read it within send_timeout_s is closed (4410)."""
        socket = session.socket
        if socket is None:
            return
        try:
            await asyncio.wait_for(send_message(socket, message, session.binary), self.settings.stream_send_timeout_s)
        except asyncio.TimeoutError:
            session.socket = None
            self.metrics.closes.labels("slow").inc()
            await close_quietly(socket, CLOSE_CODES["slow"], "slow client: not reading its acknowledgements")
        except Exception:  # the connection went; the receive loop notices it
            session.socket = None


class StreamHub(Hub):
    """This process's live streams (the embedded default): opened by a hello, fed batch by batch, stored, finished."""

    def __init__(self, settings, service, store):
        super().__init__(settings, service, store)
        self.sessions: dict[tuple[str, str], Session] = {}
        self.journal: Journal | None = None
        self.task: asyncio.Task | None = None
        self.folder = Path(settings.stream_journal).parent
        self.metrics.open.set_function(lambda: len(self.sessions))
        self.metrics.connected.set_function(lambda: sum(s.socket is not None for s in self.sessions.values()))
        self.metrics.buffered.set_function(
            lambda: sum(s.watch.live.buffered_samples for s in list(self.sessions.values())))

    async def start(self) -> None:
        self.journal = await anyio.to_thread.run_sync(Journal, Path(self.settings.stream_journal))
        for subject, stream, timezone in self.journal.streams():  # what was acknowledged before a crash
            session = await self._session(subject, stream, timezone)
            session.watch.live.provisional = False  # labels of the past: the final ones are sent on resume
            for raw in self.journal.batches(subject, stream):
                batch = MSGPACK_DECODER.decode(raw)
                await session.watch.feed(sensor_batch(batch))
                session.last_seq = batch.seq
            session.watch.live.provisional = True
            log.info("stream %s of %s recovered from the journal: %d batches, %d labels", stream, subject,
                     session.last_seq, session.watch.given)
        self.task = asyncio.get_running_loop().create_task(self._housekeeping())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for session in list(self.sessions.values()):  # stored as far as decided; the journal resumes them
            if session.watch.live.decided_windows:
                await self._store(session)
        if self.journal is not None:
            self.journal.close()

    async def _session(self, subject: str, stream: str, timezone: str | None) -> Session:
        watch = await open_watch(self.service, self.settings, subject, stream, timezone, self.folder)
        session = self.sessions[(subject, stream)] = Session(watch)
        return session

    async def open(self, subject: str, hello: Hello, socket, binary: bool) -> Session:
        check_stream_name(hello.stream)
        session = self.sessions.get((subject, hello.stream))
        if session is None:
            if len(self.sessions) >= self.settings.max_streams:
                raise Refusal("too_many_streams", f"this process holds {self.settings.max_streams} streams "
                                                  "(serve.stream.max_streams): try again later")
            await self.journal.open(subject, hello.stream, hello.timezone)
            session = await self._session(subject, hello.stream, hello.timezone)
        elif session.socket is not None:  # the watch reconnected before the old connection was noticed gone
            old, session.socket = session.socket, None
            await close_quietly(old, 1000, "replaced by a newer connection of the same stream")
        session.socket, session.binary, session.provisional = socket, binary, hello.provisional
        session.watch.live.provisional = hello.provisional
        return session

    async def ready(self, session: Session, hello: Hello) -> None:
        """The `ready` answer to a hello, then the final labels the client has not got yet."""
        watch = session.watch
        await send_message(session.socket, {"type": "ready", "stream": watch.stream, "acked": session.last_seq,
                                             "labels": watch.given}, session.binary)
        for label in await anyio.to_thread.run_sync(watch.final_labels, hello.labels):
            await self.send(session, label)

    async def accept(self, session: Session, batch: Batch) -> bool:
        """A batch in sequence order: checked, journaled, fed. False for a duplicate (acknowledged again)."""
        if batch.seq <= session.last_seq:
            self.metrics.batches.labels("duplicate").inc()
            return False
        check_seq(batch.seq, session.last_seq)
        converted = sensor_batch(batch)
        live = session.watch.live
        checked(live.check, converted, batch.seq)
        if live.buffered_samples + len(batch.offsets_ms) > self.settings.max_buffered_samples:
            raise Refusal("buffer_full", f"{live.buffered_samples} samples held unfused (serve.stream."
                                         "max_buffered_samples): is one sensor far ahead of the other?")
        await self.journal.append(*session.key, batch.seq, msgspec.msgpack.encode(batch))
        session.last_seq = batch.seq
        self.metrics.batches.labels("accepted").inc()
        await self._feed(session, converted)
        return True

    async def _feed(self, session: Session, batch: SensorBatch | None) -> None:
        for message in await session.watch.feed(batch):
            (self.metrics.windows if message["type"] == "label" else self.metrics.provisional).inc()
            if message["type"] == "label" or session.provisional:
                await self.send(session, message)

    async def finish(self, session: Session) -> dict | None:
        """The stream ended: everything decided, stored as one recording, the journal's copy dropped."""
        await self._feed(session, None)
        stored = await self._store(session) if session.watch.live.decided_windows else None
        await self.journal.forget(*session.key)
        session.watch.forget()
        self.sessions.pop(session.key, None)
        return stored

    async def _store(self, session: Session) -> dict:
        stored = await session.watch.store(self.store)
        session.stored_at = time.monotonic()
        self.metrics.stored.inc()
        return stored

    def disconnected(self, session: Session, socket) -> None:
        if session.socket is socket:
            session.socket = None
            session.disconnected_at = time.monotonic()

    async def live(self, subject: str) -> list[dict]:
        """The subject's open streams as the study page draws them (GET /subjects/{subject}/live)."""
        sessions = [s for s in list(self.sessions.values()) if s.watch.subject == subject]
        views = [await anyio.to_thread.run_sync(s.watch.view) for s in sessions]
        return [{**view, "connected": s.socket is not None} for s, view in zip(sessions, views)]

    async def _housekeeping(self) -> None:
        """Every second: idle streams become recordings; open ones go to the store every stream_store_every_s."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                try:
                    if session.socket is None and now - session.disconnected_at > self.settings.stream_idle_s:
                        await self.finish(session)
                    elif (now - session.stored_at > self.settings.stream_store_every_s
                          and session.watch.live.decided_windows):
                        await self._store(session)
                except Exception:
                    log.exception("stream %s of %s: housekeeping failed", session.watch.stream, session.watch.subject)


def check_stream_name(stream: str) -> None:
    if not re.match(STREAM_ID, stream):
        raise Refusal("malformed", f"stream {stream[:40]!r}: expected 1-64 letters, digits, '.', '_', '-'")


def check_seq(seq: int, last_seq: int) -> None:
    if seq != last_seq + 1:
        raise Refusal("out_of_order", f"seq {seq} after {last_seq}: expected {last_seq + 1} (resume from the last "
                                      "acknowledged one)")


def checked(check, batch: SensorBatch, seq: int) -> None:
    """`check(batch)` (har.live's order and value checks), its LiveError as the Refusal a client reads."""
    try:
        check(batch)
    except LiveError as error:
        raise Refusal("out_of_order" if "time goes backwards" in str(error) or "before the recording" in str(error)
                      else "malformed", f"seq {seq}: {error}") from None


async def send_message(socket, message: dict, binary: bool) -> None:
    if binary:
        await socket.send_bytes(msgspec.msgpack.encode(message))
    else:
        await socket.send_text(msgspec.json.encode(message).decode())


async def close_quietly(socket, code: int, reason: str) -> None:
    try:
        await socket.close(code=code, reason=reason[:120])
    except Exception:  # already gone
        pass
