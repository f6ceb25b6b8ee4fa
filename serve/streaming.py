"""Live streams from watches: the WebSocket protocol's messages, the journal that makes an acknowledgement durable,
and the streams of this process (`StreamHub`), each a `har.live.LiveRecording` fed in sequence order.

    client                                      server
    hello {stream, timezone?, labels}     ->
                                          <-    ready {stream, acked, labels}     (resume: send from acked + 1)
    batch {seq, sensor, unit, time_ms,    ->    journal (fsync) ... then
           offsets_ms, x, y, z}           <-    ack {seq}
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
from har.live import LiveError, LiveRecording, SensorBatch, fused_table
from har.preprocessing import Preprocessing
from har.recording import ACC_TO_SI, GYR_TO_SI, to_si
from har.timeline import wall_clock

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
        self.closes = Counter("har_stream_closes", "Stream connections closed, by reason (docs/streaming.md: normal, "
                              "dropped by the client, or a refusal)", ["reason"], registry=r)
        self.stored = Counter("har_stream_recordings_stored", "Writes of live streams' recordings to the study store",
                              registry=r)
        for outcome in ("accepted", "duplicate"):
            self.batches.labels(outcome)
        for reason in [*CLOSE_CODES, "dropped"]:
            self.closes.labels(reason)


# ---------------------------------------------------------------- the streams

def stream_content_hash(subject: str, stream: str) -> str:
    """The store's key of a live stream's recording: one recording per stream, however long it grows."""
    return hashlib.sha256(f"stream\0{subject}\0{stream}".encode()).hexdigest()


@dataclass
class Session:
    subject: str
    stream: str
    timezone: str
    live: LiveRecording
    card: object
    score: object  # a person's scorer, or None: the generic model
    personal: bool
    spill: Path  # the fused rows so far (the store keeps the fused table)
    last_seq: int = 0
    labels: list[dict] = field(default_factory=list)  # every final label given, in order
    socket: object = None
    binary: bool = False
    disconnected_at: float = field(default_factory=time.monotonic)
    stored_at: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


FUSED_ROW = np.dtype([("t", "<f8"), ("values", "<f4", (6,))])


class StreamHub:
    """This process's live streams: opened by a hello, fed batch by batch, stored, finished."""

    def __init__(self, settings, service, store):
        self.settings, self.service, self.store = settings, service, store
        self.metrics = StreamMetrics(service.metrics.registry)
        self.sessions: dict[tuple[str, str], Session] = {}
        self.journal: Journal | None = None
        self.task: asyncio.Task | None = None
        self.metrics.open.set_function(lambda: len(self.sessions))
        self.metrics.connected.set_function(lambda: sum(s.socket is not None for s in self.sessions.values()))
        self.metrics.buffered.set_function(lambda: sum(s.live.buffered_samples for s in list(self.sessions.values())))

    async def start(self) -> None:
        self.journal = await anyio.to_thread.run_sync(Journal, Path(self.settings.stream_journal))
        for subject, stream, timezone in self.journal.streams():  # what was acknowledged before a crash
            session = await self._session(subject, stream, timezone)
            for raw in self.journal.batches(subject, stream):
                batch = MSGPACK_DECODER.decode(raw)
                await self._feed(session, sensor_batch(batch))
                session.last_seq = batch.seq
            log.info("stream %s of %s recovered from the journal: %d batches, %d labels", stream, subject,
                     session.last_seq, len(session.labels))
        self.task = asyncio.get_running_loop().create_task(self._housekeeping())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for session in list(self.sessions.values()):  # stored as far as decided; the journal resumes them
            if session.live.decided_windows:
                await self._store(session)
        if self.journal is not None:
            self.journal.close()

    async def _session(self, subject: str, stream: str, timezone: str | None) -> Session:
        service = self.service
        person, person_score = await service.person_for(subject)
        card = (person or service.runtime).card
        zone = timezone or self.settings.store_timezone
        live = LiveRecording(Preprocessing.from_card(card), self.settings.wear, recording_id=stream,
                             labels=card.labels, switch_probability=card.switch_probability,
                             threshold=card.abstain_threshold, timezone=zone)
        spill = Path(self.settings.stream_journal).parent / f"{stream_content_hash(subject, stream)}.fused"
        spill.unlink(missing_ok=True)  # rebuilt from the journal
        session = Session(subject, stream, zone, live, card, person_score, person is not None, spill)
        self.sessions[(subject, stream)] = session
        return session

    async def open(self, subject: str, hello: Hello, socket, binary: bool) -> Session:
        if not re.match(STREAM_ID, hello.stream):
            raise Refusal("malformed", f"stream {hello.stream[:40]!r}: expected 1-64 letters, digits, '.', '_', '-'")
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
        session.socket, session.binary = socket, binary
        return session

    async def accept(self, session: Session, batch: Batch) -> bool:
        """A batch in sequence order: checked, journaled, fed. False for a duplicate (acknowledged again)."""
        if batch.seq <= session.last_seq:
            self.metrics.batches.labels("duplicate").inc()
            return False
        if batch.seq != session.last_seq + 1:
            raise Refusal("out_of_order", f"seq {batch.seq} after {session.last_seq}: expected {session.last_seq + 1}"
                                          " (resume from the last acknowledged one)")
        converted = sensor_batch(batch)
        try:
            session.live.check(converted)
        except LiveError as error:
            raise Refusal("out_of_order" if "time goes backwards" in str(error) or "before the recording" in str(error)
                          else "malformed", f"seq {batch.seq}: {error}") from None
        if session.live.buffered_samples + len(batch.offsets_ms) > self.settings.max_buffered_samples:
            raise Refusal("buffer_full", f"{session.live.buffered_samples} samples held unfused (serve.stream."
                                         "max_buffered_samples): is one sensor far ahead of the other?")
        await self.journal.append(session.subject, session.stream, batch.seq, msgspec.msgpack.encode(batch))
        session.last_seq = batch.seq
        self.metrics.batches.labels("accepted").inc()
        await self._feed(session, converted)
        return True

    async def _feed(self, session: Session, batch: SensorBatch | None) -> None:
        """Into the live recording (None: it ended), then the windows it decided scored and their labels sent."""
        async with session.lock:
            live = session.live
            step = live.add if batch is not None else (lambda _: live.close())
            windows, fused = await anyio.to_thread.run_sync(lambda: (step(batch), live.to_score(), live.take_fused())[1:])
            if len(fused[0]):
                await anyio.to_thread.run_sync(append_rows, session.spill, *fused)
            if len(windows):
                live.scored(await self.service.predictor.predict(windows, score=session.score))
            labels = live.labels()
        if labels:
            clock = wall_clock(live.start_time)
            first = len(session.labels)
            new = [{"type": "label", "window": first + i, "start_s": round(e["start_s"], 3),
                    "time": clock(e["start_s"]), "label": e["label"]} for i, e in enumerate(labels)]
            session.labels += new
            self.metrics.windows.inc(len(new))
            for message in new:
                await self.send(session, message)

    async def send(self, session: Session, message: dict) -> None:
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

    async def finish(self, session: Session) -> dict | None:
        """The stream ended: everything decided, stored as one recording, the journal's copy dropped."""
        await self._feed(session, None)
        stored = await self._store(session) if session.live.decided_windows else None
        await self.journal.forget(session.subject, session.stream)
        session.spill.unlink(missing_ok=True)
        self.sessions.pop((session.subject, session.stream), None)
        return stored

    async def _store(self, session: Session) -> dict:
        """The decided windows as the participant's recording (har.answer.answer_for, then the store's ingest)."""
        from serve.controllers.subjects import WRITER

        t, values = await anyio.to_thread.run_sync(read_rows, session.spill)
        prepared, probabilities = session.live.prepared(fused_table(t, values))
        answer = answer_for(prepared, probabilities, session.card, self.settings.wear, subject=session.subject,
                            personal=session.personal).to_builtins()
        stored, _ = await self.store.call(lambda study: study.ingest(
            session.subject, content_hash=stream_content_hash(session.subject, session.stream),
            fused=prepared.fused, answer=answer, timezone=None, actor=WRITER, replace=True))
        session.stored_at = time.monotonic()
        self.metrics.stored.inc()
        return {k: v for k, v in stored.items() if k != "answer"}

    def disconnected(self, session: Session, socket) -> None:
        if session.socket is socket:
            session.socket = None
            session.disconnected_at = time.monotonic()

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
                          and session.live.decided_windows):
                        await self._store(session)
                except Exception:
                    log.exception("stream %s of %s: housekeeping failed", session.stream, session.subject)


def append_rows(path: Path, t: np.ndarray, values: np.ndarray) -> None:
    rows = np.empty(len(t), FUSED_ROW)
    rows["t"], rows["values"] = t, values
    with open(path, "ab") as f:
        rows.tofile(f)


def read_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = np.fromfile(path, FUSED_ROW) if path.exists() else np.empty(0, FUSED_ROW)
    return rows["t"], rows["values"]


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
