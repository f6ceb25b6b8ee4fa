"""Live streams beyond one process, on Redis Streams: `serve.stream.broker` set to a Redis URL (docs/streaming.md).

The service (`python -m serve`, any number of them) is then the gateway: it checks a watch's batches, appends them
to Redis and acknowledges each once Redis has it, and relays the labels back; the scoring processes
(`python -m serve.stream_broker`, any number of them) hold the watches and score them with the same `Watch` as the
embedded mode (serve/streaming.py). Everything goes through Redis' own mechanisms:

    har:stream:watches              a stream with one entry per watch, read by the consumer group `scorers`: the
                                    process that reads an entry holds that watch; the entry stays pending (XPENDING)
                                    until the watch is finished, and its holder renews it (XCLAIM) every
                                    RENEW_S; a process that stops renewing (killed) has its entries taken over by
                                    another one (XAUTOCLAIM after --claim-after-s), which replays the watch.
    har:stream:w:<key>:in           the watch's batches, entry ID <seq>-0 (the ID refuses a duplicate: XADD with an
                                    ID at or below the last one fails), and <seq>-1 for its close
    har:stream:w:<key>:info         subject, stream, zone; each sensor's first and last batch start (the order a
                                    gateway checks); the start time and window length (the study page's live view)
    har:stream:w:<key>:final        final label messages, entry ID 0-<window + 1> (a replay after a takeover gives
                                    the same IDs, which Redis refuses: the gateway relays each once); 1-0: closed
    har:stream:w:<key>:prov         provisional label messages, entry ID 0-<the window's first tick + 1>
    har:stream:subject:<subject>    the subject's open watches (a set)

An acknowledgement means Redis has the batch: run Redis with `appendonly yes` and `appendfsync always` for one that
survives Redis itself (tests/test_stream_broker.py starts it so). A watch's batches stay in Redis until it is
finished (closed, or idle for `serve.stream.idle_s`), as the embedded mode's journal keeps them.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from har.live import SENSORS, BatchOrder
from serve.streaming import (MSGPACK_DECODER, Batch, Hello, Hub, Refusal, Watch, check_seq, check_stream_name, checked,
                             close_quietly, live_view, open_watch, send_message, sensor_batch, stream_content_hash)

log = logging.getLogger("serve")

PREFIX = "har:stream:"
WATCHES = PREFIX + "watches"
GROUP = "scorers"
RENEW_S = 1.0  # a holder renews its watches' entries this often
CLOSED_ID = b"1-0"  # the final stream's last entry: the watch is finished, its recording stored
KEEP_FINISHED_S = 600  # a finished watch's labels stay this long (a gateway relays the close)


def watch_keys(key: str) -> dict[str, str]:
    return {part: f"{PREFIX}w:{key}:{part}" for part in ("in", "info", "final", "prov")}


def subject_key(subject: str) -> str:
    return f"{PREFIX}subject:{subject}"


# A new watch is announced once: its info written and one entry for the consumer group, atomically. A name used
# again after the watch finished starts a new watch (its old labels, if still there, go).
ANNOUNCE = """
if redis.call('HSETNX', KEYS[1], 'subject', ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'stream', ARGV[2], 'timezone', ARGV[3])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('XADD', KEYS[4], '*', 'watch', ARGV[4])
return 1
"""

# A batch appended under its sequence number, and the order the gateway checks updated with it, atomically; 0 when
# the ID is taken (a duplicate: acknowledged again, ignored).
APPEND = """
local added = redis.pcall('XADD', KEYS[1], ARGV[1] .. '-0', 'b', ARGV[4])
if type(added) == 'table' and added.err then return 0 end
redis.call('HSET', KEYS[2], 'last_' .. ARGV[2], ARGV[3])
redis.call('HSETNX', KEYS[2], 'first_' .. ARGV[2], ARGV[3])
return 1
"""

# The holder's renewal: each entry still pending with this consumer has its idle time reset (XCLAIM ... JUSTID);
# the answer is the entries it still holds (another process may have claimed one after a long pause).
RENEW = """
local held = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    table.insert(held, ARGV[i])
  end
end
return held
"""


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def fields_of(raw: dict) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def seq_of(entry_id) -> int:
    return int(text(entry_id).split("-")[0])


async def connect(url: str):
    import redis.asyncio

    client = redis.asyncio.from_url(url, decode_responses=False)
    await client.ping()
    return client


# ---------------------------------------------------------------- the gateway (in python -m serve)

class Lead:
    """Samples of one sensor's batches that start after the other sensor's latest batch: what a scoring process
    must hold unfused until the other catches up (the gateway's bound on a stream's buffered samples)."""

    def __init__(self):
        self.ahead: dict[str, deque] = {name: deque() for name in SENSORS}
        self.latest: dict[str, int] = {}

    def samples(self, sensor: str) -> int:
        return sum(n for _, n in self.ahead[sensor])

    def take(self, sensor: str, start_ns: int, n: int) -> None:
        self.latest[sensor] = start_ns
        self.ahead[sensor].append((start_ns, n))
        for other, batches in self.ahead.items():  # the other sensor's batches up to here are no longer ahead
            while other != sensor and batches and batches[0][0] <= start_ns:
                batches.popleft()


@dataclass
class BrokerSession:
    subject: str
    stream: str
    key: str  # stream_content_hash(subject, stream)
    keys: dict[str, str]
    order: BatchOrder
    last_seq: int
    socket: object = None
    binary: bool = False
    provisional: bool = True
    lead: Lead = field(default_factory=Lead)
    final_next: bytes = b"0-0"  # the relay's position in the final labels
    prov_next: bytes = b"0-0"
    last_final_s: float = -1.0
    closing: asyncio.Future | None = None


class BrokerHub(Hub):
    """The gateway's side: serve.streaming's `Hub` (the WebSocket route uses either hub), with Redis in place of the
    journal and of the scoring."""

    def __init__(self, settings, service, store):
        super().__init__(settings, service, store)
        self.sessions: dict[str, BrokerSession] = {}  # by watch key: the watches connected to this gateway
        self.redis = None
        self.scripts: dict = {}
        self.task: asyncio.Task | None = None
        self.metrics.open.set_function(lambda: len(self.sessions))
        self.metrics.connected.set_function(lambda: sum(s.socket is not None for s in self.sessions.values()))
        self.metrics.buffered.set_function(
            lambda: sum(s.lead.samples(n) for s in list(self.sessions.values()) for n in SENSORS))

    async def start(self) -> None:
        self.redis = await connect(self.settings.stream_broker)
        self.scripts = {name: self.redis.register_script(code) for name, code in
                        (("announce", ANNOUNCE), ("append", APPEND))}
        self.task = asyncio.get_running_loop().create_task(self._relay())
        log.info("live streams go through Redis Streams at %s", self.settings.stream_broker.split("@")[-1])

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.redis is not None:
            await self.redis.aclose()

    async def open(self, subject: str, hello: Hello, socket, binary: bool) -> BrokerSession:
        check_stream_name(hello.stream)
        key = stream_content_hash(subject, hello.stream)
        keys = watch_keys(key)
        session = self.sessions.get(key)
        if session is not None and session.socket is not None:
            old, session.socket = session.socket, None
            await close_quietly(old, 1000, "replaced by a newer connection of the same stream")
        elif session is None and len(self.sessions) >= self.settings.max_streams:
            raise Refusal("too_many_streams", f"this process holds {self.settings.max_streams} streams "
                                              "(serve.stream.max_streams): try again later")
        await self.scripts["announce"](keys=[keys["info"], keys["final"], keys["prov"], WATCHES, subject_key(subject)],
                                       args=[subject, hello.stream, hello.timezone or "", key])
        info = fields_of(await self.redis.hgetall(keys["info"]))
        last = await self.redis.xrevrange(keys["in"], count=1)
        order = BatchOrder({s: int(info[f"first_{s}"]) for s in SENSORS if f"first_{s}" in info},
                           {s: int(info[f"last_{s}"]) for s in SENSORS if f"last_{s}" in info})
        session = BrokerSession(subject, hello.stream, key, keys, order, seq_of(last[0][0]) if last else 0)
        session.socket, session.binary, session.provisional = socket, binary, hello.provisional
        return session  # the relay takes it up once `ready` has sent what the client missed

    async def ready(self, session: BrokerSession, hello: Hello) -> None:
        given = [entry for entry in await self.redis.xrange(session.keys["final"]) if entry[0] != CLOSED_ID]
        await send_message(session.socket, {"type": "ready", "stream": session.stream, "acked": session.last_seq,
                                            "labels": len(given)}, session.binary)
        for entry_id, raw in given[hello.labels:]:
            await self._relay_final(session, entry_id, raw)
        if given:
            session.final_next = given[-1][0]
            session.last_final_s = msgspec.msgpack.decode(given[-1][1][b"m"])["start_s"]
        self.sessions[session.key] = session

    async def accept(self, session: BrokerSession, batch: Batch) -> bool:
        if batch.seq <= session.last_seq:
            self.metrics.batches.labels("duplicate").inc()
            return False
        check_seq(batch.seq, session.last_seq)
        converted = sensor_batch(batch)
        checked(session.order.check, converted, batch.seq)
        ahead = session.lead.samples(converted.sensor)
        if ahead + len(batch.offsets_ms) > self.settings.max_buffered_samples:
            raise Refusal("buffer_full", f"{ahead} samples of the {batch.sensor} ahead of the other sensor "
                                         "(serve.stream.max_buffered_samples): is one sensor far ahead of the other?")
        added = await self.scripts["append"](keys=[session.keys["in"], session.keys["info"]],
                                             args=[batch.seq, converted.sensor, converted.start_ns,
                                                   msgspec.msgpack.encode(batch)])
        session.last_seq = batch.seq
        session.order.take(converted)
        session.lead.take(converted.sensor, converted.start_ns, len(batch.offsets_ms))
        self.metrics.batches.labels("accepted" if added else "duplicate").inc()
        return bool(added)

    async def finish(self, session: BrokerSession) -> dict | None:
        """The client closed the stream: its close goes to the scoring process, which stores the recording and
        answers with the final stream's closed entry."""
        session.closing = asyncio.get_running_loop().create_future()
        try:
            await self.redis.xadd(session.keys["in"], {b"close": b"1"}, id=f"{session.last_seq}-1")
        except Exception as error:  # sent before (a close resent after a dropped connection)
            log.info("stream %s of %s: close already sent (%s)", session.stream, session.subject, error)
        try:
            return await asyncio.wait_for(session.closing, 600)
        finally:
            self._forget(session)

    def disconnected(self, session: BrokerSession, socket) -> None:
        if session.socket is socket:
            session.socket = None
            if session.closing is None:
                self._forget(session)

    def _forget(self, session: BrokerSession) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]

    async def live(self, subject: str) -> list[dict]:
        """The subject's open watches as the study page draws them, from Redis (whichever process holds them)."""
        views = []
        for key in sorted(text(k) for k in await self.redis.smembers(subject_key(subject))):
            keys = watch_keys(key)
            info = fields_of(await self.redis.hgetall(keys["info"]))
            if not info:
                continue
            final = [msgspec.msgpack.decode(raw[b"m"]) for entry_id, raw in await self.redis.xrange(keys["final"])
                     if entry_id != CLOSED_ID]
            after = final[-1]["start_s"] if final else -1.0
            provisional = [m for m in (msgspec.msgpack.decode(raw[b"m"]) for _, raw in
                                       reversed(await self.redis.xrevrange(keys["prov"], count=64)))
                           if m["start_s"] > after]
            session = self.sessions.get(key)
            views.append({**live_view(info["stream"], info.get("start_time"), float(info.get("window_s", "nan")),
                                      [(m["start_s"], m["label"]) for m in final],
                                      [(m["start_s"], m["label"]) for m in provisional]),
                          "connected": session is not None and session.socket is not None})
        return views

    async def _relay(self) -> None:
        """The labels of the watches connected here, as the scoring processes give them, to their clients."""
        while True:
            sessions = {}
            for session in list(self.sessions.values()):
                if session.socket is not None or session.closing is not None:
                    sessions[session.keys["final"].encode()] = session
                    if session.provisional and session.closing is None:
                        sessions[session.keys["prov"].encode()] = session
            if not sessions:
                await asyncio.sleep(0.05)
                continue
            positions = {key: (s.final_next if key.endswith(b":final") else s.prov_next) for key, s in sessions.items()}
            try:
                answer = await self.redis.xread(positions, count=512, block=100)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stream relay: reading labels from Redis failed")
                await asyncio.sleep(0.5)
                continue
            for key, entries in answer or []:
                session = sessions[key]
                for entry_id, raw in entries:
                    if key.endswith(b":final"):
                        await self._relay_final(session, entry_id, raw)
                        session.final_next = entry_id
                    else:
                        session.prov_next = entry_id
                        message = msgspec.msgpack.decode(raw[b"m"])
                        if message["start_s"] > session.last_final_s:
                            self.metrics.provisional.inc()
                            await self.send(session, message)

    async def _relay_final(self, session: BrokerSession, entry_id: bytes, raw: dict) -> None:
        if entry_id == CLOSED_ID:
            if session.closing is not None and not session.closing.done():
                session.closing.set_result(msgspec.json.decode(raw[b"recording"]))
            return
        message = msgspec.msgpack.decode(raw[b"m"])
        session.last_final_s = message["start_s"]
        self.metrics.windows.inc()
        await self.send(session, message)


# ---------------------------------------------------------------- a scoring process (python -m serve.stream_broker)

@dataclass
class Held:
    watch: Watch
    entry: bytes  # its entry in the watches stream (pending with this consumer while held)
    key: str
    keys: dict[str, str]
    caught_up_at: bytes  # the last batch when it was taken: until then a replay (no provisional labels)
    last_id: bytes = b"0-0"
    seen: float = field(default_factory=time.monotonic)
    stored_at: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Scorer:
    """One scoring process: takes new watches (while it holds no more than the least busy live process), takes over
    those a dead process held, renews its own, and scores their batches as they come."""

    def __init__(self, settings, service, study, redis, name: str, folder: Path, claim_after_s: float):
        self.settings, self.service, self.study, self.redis = settings, service, study, redis
        self.name, self.folder, self.claim_ms = name, folder, int(claim_after_s * 1000)
        self.held: dict[str, Held] = {}  # by watch key
        self.renew = redis.register_script(RENEW)

    async def run(self) -> None:
        try:
            await self.redis.xgroup_create(WATCHES, GROUP, id="0", mkstream=True)
        except Exception as error:  # BUSYGROUP: another process made it
            if "BUSYGROUP" not in str(error):
                raise
        log.info("scoring process %s: reading %s as a consumer of %s", self.name, WATCHES, GROUP)
        await asyncio.gather(self._assign(), self._read(), self._housekeeping())

    async def _assign(self) -> None:
        renewed = 0.0
        while True:
            try:
                _, claimed, _ = await self.redis.xautoclaim(WATCHES, GROUP, self.name, self.claim_ms, "0-0", count=16)
                for entry_id, raw in claimed:
                    await self._take(entry_id, raw, taken_over=True)
                if await self._least_busy():
                    answer = await self.redis.xreadgroup(GROUP, self.name, {WATCHES: ">"}, count=1)
                    for _, entries in answer or []:
                        for entry_id, raw in entries:
                            await self._take(entry_id, raw, taken_over=False)
                if time.monotonic() - renewed >= RENEW_S and self.held:
                    renewed = time.monotonic()
                    still = {text(e) for e in await self.renew(keys=[WATCHES], args=[
                        GROUP, self.name, *[h.entry for h in self.held.values()]])}
                    for key, held in list(self.held.items()):
                        if text(held.entry) not in still:
                            log.warning("watch %s: taken over by another process", held.watch.stream)
                            self._drop(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scoring process %s: assigning watches failed", self.name)
            await asyncio.sleep(0.2)

    async def _least_busy(self) -> bool:
        """Whether this process holds no more watches than any other live consumer of the group (new watches go to
        the least busy, so that the processes share them)."""
        consumers = await self.redis.xinfo_consumers(WATCHES, GROUP)
        mine, others = 0, []
        for consumer in consumers:
            consumer = {text(k): v for k, v in consumer.items()}
            if text(consumer["name"]) == self.name:
                mine = int(consumer["pending"])
            elif int(consumer["idle"]) < self.claim_ms:
                others.append(int(consumer["pending"]))
        return not others or mine <= min(others)

    async def _take(self, entry_id: bytes, raw: dict, taken_over: bool) -> None:
        key = text(raw[b"watch"])
        if key in self.held:
            return
        keys = watch_keys(key)
        info = fields_of(await self.redis.hgetall(keys["info"]))
        if not info:  # finished before its entry was acknowledged
            await self.redis.xack(WATCHES, GROUP, entry_id)
            return
        watch = await open_watch(self.service, self.settings, info["subject"], info["stream"],
                                 info.get("timezone") or None, self.folder)
        last = await self.redis.xrevrange(keys["in"], count=1)
        held = Held(watch, entry_id, key, keys, last[0][0] if last else b"0-0")
        watch.live.provisional = not last  # a replay gives the labels of the past: final ones only
        self.held[key] = held
        await self.redis.hset(keys["info"], mapping={"window_s": watch.live.p.window_s, "holder": self.name})
        log.info("watch %s of %s: %s by %s (%d batches to replay)", watch.stream, watch.subject,
                 "taken over" if taken_over else "taken", self.name, seq_of(last[0][0]) if last else 0)

    def _drop(self, key: str) -> None:
        held = self.held.pop(key, None)
        if held is not None:
            held.watch.forget()

    async def _read(self) -> None:
        while True:
            if not self.held:
                await asyncio.sleep(0.05)
                continue
            positions = {held.keys["in"]: held.last_id for held in self.held.values()}
            try:
                answer = await self.redis.xread(positions, count=256, block=100)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scoring process %s: reading batches failed", self.name)
                await asyncio.sleep(0.5)
                continue
            by_in = {held.keys["in"]: held for held in self.held.values()}
            await asyncio.gather(*(self._score(by_in[text(key)], entries) for key, entries in answer or []
                                   if text(key) in by_in))

    async def _score(self, held: Held, entries: list) -> None:
        async with held.lock:
            for entry_id, raw in entries:
                if self.held.get(held.key) is not held:
                    return  # finished, or taken over by another process, meanwhile
                held.last_id, held.seen = entry_id, time.monotonic()
                if b"close" in raw:
                    await self._finish(held)
                    return
                batch = MSGPACK_DECODER.decode(raw[b"b"])
                messages = await held.watch.feed(sensor_batch(batch))
                if not held.watch.live.provisional and seq_of(entry_id) >= seq_of(held.caught_up_at):
                    held.watch.live.provisional = True
                await self._publish(held, messages)

    async def _publish(self, held: Held, messages: list[dict]) -> None:
        hz = held.watch.live.p.target_hz
        pipe = self.redis.pipeline(transaction=False)
        for message in messages:
            if message["type"] == "label":
                pipe.xadd(held.keys["final"], {b"m": msgspec.msgpack.encode(message)}, id=f"0-{message['window'] + 1}")
            else:
                pipe.xadd(held.keys["prov"], {b"m": msgspec.msgpack.encode(message)},
                          id=f"0-{round(message['start_s'] * hz) + 1}")
        if held.watch.live.start_time is not None:
            pipe.hsetnx(held.keys["info"], "start_time", held.watch.live.start_time)
        await pipe.execute(raise_on_error=False)  # an ID given before (a replay after a takeover) is refused

    async def _finish(self, held: Held) -> None:
        """Closed (or idle): everything decided, stored as one recording, the watch's batches and entry gone."""
        watch = held.watch
        await self._publish(held, await watch.feed(None))
        stored = await watch.store(self.study) if watch.live.decided_windows else None
        key = held.key
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(held.keys["final"], {b"recording": msgspec.json.encode(stored)}, id=CLOSED_ID)
        pipe.expire(held.keys["final"], KEEP_FINISHED_S)
        pipe.expire(held.keys["prov"], KEEP_FINISHED_S)
        pipe.delete(held.keys["in"], held.keys["info"])
        pipe.srem(subject_key(watch.subject), key)
        pipe.xack(WATCHES, GROUP, held.entry)
        pipe.xdel(WATCHES, held.entry)
        await pipe.execute(raise_on_error=False)
        self._drop(key)
        log.info("watch %s of %s: finished by %s, %d windows", watch.stream, watch.subject, self.name, watch.given)

    async def _housekeeping(self) -> None:
        """Every second: idle watches become recordings; the others go to the store every stream_store_every_s."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for held in list(self.held.values()):
                try:
                    if now - held.seen > self.settings.stream_idle_s:
                        async with held.lock:
                            await self._finish(held)
                    elif now - held.stored_at > self.settings.stream_store_every_s and held.watch.live.decided_windows:
                        await held.watch.store(self.study)
                        held.stored_at = now
                except Exception:
                    log.exception("watch %s: housekeeping failed", held.watch.stream)


def main(argv=None) -> int:
    """python -m serve.stream_broker: one scoring process of live streams on Redis Streams."""
    from har.logs import add_log_arguments, setup_logging
    from serve.__main__ import quiet_onnxruntime
    from serve.config import Settings
    from serve.service import Service, StudyStore

    parser = argparse.ArgumentParser(prog="python -m serve.stream_broker", description=main.__doc__)
    parser.add_argument("--params", default="params.yaml", help="composed parameters (default: params.yaml)")
    parser.add_argument("--model", dest="model_path", help="ONNX model (default: serve.model_path)")
    parser.add_argument("--store", help="study store URL (default: store.url)")
    parser.add_argument("--broker", help="Redis URL (default: serve.stream.broker)")
    parser.add_argument("--name", default=f"{os.uname().nodename}-{os.getpid()}",
                        help="this process's consumer name in the group (default: host and pid)")
    parser.add_argument("--claim-after-s", type=float, default=10.0,
                        help="take over a watch whose holder has not renewed it for this long (default 10)")
    parser.add_argument("--folder", help="where its watches' fused rows and labels are spilled (default: beside "
                                         "serve.stream.journal, a folder per process)")
    add_log_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    quiet_onnxruntime()
    settings = Settings.load(args.params, model_path=args.model_path, store_url=args.store,
                             stream_broker=args.broker)
    if not settings.stream_broker:
        log.error("serve.stream_broker: no broker: give --broker redis://... or serve.stream.broker")
        return 2
    folder = Path(args.folder) if args.folder else Path(settings.stream_journal).parent / f"scorer-{args.name}"

    async def run() -> None:
        service = Service.build(settings)
        await service.start()
        study = StudyStore(settings)
        redis = await connect(settings.stream_broker)
        task = asyncio.ensure_future(Scorer(settings, service, study, redis, args.name, folder,
                                            args.claim_after_s).run())
        for signum in (signal.SIGTERM, signal.SIGINT):  # stop at once: what it held is taken over
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await service.stop()
            study.close()
            await redis.aclose()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
