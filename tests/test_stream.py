"""Live streams against a real `python -m serve`: a generated study session (real activity, a desk minute) streamed
as a watch sends it, in a jittered order, gives POST /recordings' timeline; a dropped connection and a SIGKILL of
the server lose nothing acknowledged; refusals close with their code and leave no trace; /metrics counts them."""
from __future__ import annotations

import copy
import signal
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest
from websockets.sync.client import connect

from browser_helpers import write_params
from conftest import GARMIN_ACC, GARMIN_GYR, ROOT, WISDM_DIR
from har.config import load_params
from har.modelfile import stamp
from har.study import StudyPlan, generate_study
from serve.client import StreamClosed, garmin_batches, stream_batches
from serve_helpers import LABELS, TOKEN, start_server, stop_server, tiny_graph, tiny_metadata

READ_TOKEN = "read-only-token-0123456789abcdef"
CALIBRATION = {"threshold": 0.5, "smoothing": {"switch_probability": 0.01, "threshold": 0.8}}
SUBJECT = "W001"


def generated_session(folder: Path, name: str = "") -> tuple[tuple[Path, Path], Path, dict]:
    """A generated study session's workbook pair (four recordings of real activity, a minute on a desk), the tiny
    model with a smoother and an abstention threshold, and params for a service on them whose store and journal are
    in `folder` (under `name`)."""
    plan = StudyPlan(days=1, sessions_per_day=1, first_day="2025-03-27", midnight=False, seed=3,
                     recordings_per_session=4, max_recording_s=90.0, nonwear_minutes=(1.0,))
    session = generate_study(folder / "study", WISDM_DIR, ["1604"], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR),
                             plan=plan)["sessions"][0]["session"]
    pair = (folder / "study" / "recordings" / f"{session}-accelerometer_data.xlsx",
            folder / "study" / "recordings" / f"{session}-gyroscope_data.xlsx")
    model = folder / "model.onnx"
    model.write_bytes(stamp(tiny_graph(), tiny_metadata(calibration=CALIBRATION)))
    return pair, model, service_params(folder / name)


def service_params(folder: Path) -> dict:
    """params for a service whose study store and stream journal are in `folder`; the desk minute not worn."""
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["store"].update({"url": f"sqlite:///{folder / 'study.db'}", "blob_root": str(folder / "blobs")})
    params["wear"]["min_duration_min"] = 0.5  # the session's desk minute is not worn
    params["serve"]["personal"]["models_dir"] = str(folder / "personal")
    params["serve"]["stream"].update({"journal": str(folder / "streams" / "journal.db"), "store_every_s": 2})
    return params


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    pair, model, params = generated_session(folder)
    params["serve"]["stream"].update({"silent_s": 5, "max_buffered_samples": 5000})
    return {"folder": folder, "pair": pair, "model": model, "params": write_params(folder / "params.yaml", params)}


def start(setup, name, port=None):
    import os

    os.environ["HAR_SERVE_READ_TOKEN"] = READ_TOKEN
    try:
        return start_server(setup["model"], setup["folder"] / f"{name}.log", "--params", str(setup["params"]),
                            port=port)
    finally:
        del os.environ["HAR_SERVE_READ_TOKEN"]


@pytest.fixture(scope="module")
def server(setup):
    process, url = start(setup, "server")
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def uploaded(setup, server):
    """POST /recordings of the same pair: the timeline to match."""
    acc, gyr = setup["pair"]
    with open(acc, "rb") as a, open(gyr, "rb") as g:
        answer = httpx.post(server + "/recordings", files={"accelerometer": a, "gyroscope": g},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def jittered(batches: list[dict], seed: int, jitter_ms: float = 800.0) -> list[dict]:
    """Each sensor's batches in their order, the two interleaved by start plus a random delay; seq renumbered."""
    rng = np.random.default_rng(seed)
    keyed = []
    for sensor in ("accelerometer", "gyroscope"):
        mine = [b for b in batches if b["sensor"] == sensor]
        arrival = np.maximum.accumulate([b["time_ms"] + rng.uniform(0, jitter_ms) for b in mine])
        keyed += [(a, sensor, i, b) for i, (a, b) in enumerate(zip(arrival, mine))]
    return [{**b, "seq": seq} for seq, (*_, b) in enumerate(sorted(keyed, key=lambda k: k[:3]), start=1)]


def timeline(labels):
    return [(e["start_s"], e["label"]) for e in labels]


def test_a_streamed_session_gives_the_uploads_timeline_and_becomes_a_stored_recording(setup, server, uploaded):
    batches = jittered(garmin_batches(*setup["pair"]), seed=1)
    order = []
    streamed = stream_batches(server, SUBJECT, batches, stream="watch-a", token=TOKEN, speed=None,
                              on_label=lambda m: order.append((m["type"], m["start_s"])))
    assert timeline(streamed.labels) == [(e["start_s"], e["label"]) for e in uploaded["timeline"]]
    assert {"not_worn", *LABELS[:1]} & {e["label"] for e in streamed.labels}
    # each window's provisional label came first (the model's label as soon as its samples were in), then its final one
    assert [e["start_s"] for e in streamed.provisional] == [e["start_s"] for e in streamed.labels]
    assert all(order.index(("provisional", s)) < order.index(("label", s)) for s, _ in timeline(streamed.labels))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    stored = httpx.get(f"{server}/subjects/{SUBJECT}/recordings/{streamed.recording['id']}", headers=auth).json()
    assert [(e["label"], e["start_s"]) for e in stored["answer"]["episodes"]] == \
        [(e["label"], e["start_s"]) for e in uploaded["episodes"]]
    days = httpx.get(f"{server}/subjects/{SUBJECT}/days", headers=auth).json()
    assert sum(d["recorded_minutes"] for d in days) > 0


def test_msgpack_frames_and_a_dropped_connection_lose_nothing(setup, server, uploaded):
    batches = jittered(garmin_batches(*setup["pair"]), seed=2)
    streamed = stream_batches(server, "W002", batches, stream="watch-b", token=TOKEN, speed=None, binary=True,
                              drop_after=len(batches) // 3)
    assert streamed.reconnects == 1
    assert timeline(streamed.labels) == [(e["start_s"], e["label"]) for e in uploaded["timeline"]]


def test_a_sigkilled_server_loses_no_acknowledged_batch(setup, uploaded):
    process, url = start(setup, "killed")
    batches = jittered(garmin_batches(*setup["pair"]), seed=3)
    half = len(batches) // 2
    ws = url.replace("http://", "ws://") + "/subjects/W003/stream"
    with connect(ws, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as socket:
        socket.send(msgspec.json.encode({"type": "hello", "stream": "watch-c"}).decode())
        assert msgspec.json.decode(socket.recv(timeout=30))["acked"] == 0
        acked = 0
        for batch in batches[:half]:
            socket.send(msgspec.json.encode(batch).decode())
        while acked < half:
            message = msgspec.json.decode(socket.recv(timeout=60))
            acked = message["seq"] if message["type"] == "ack" else acked
        process.send_signal(signal.SIGKILL)  # every batch sent was acknowledged, none is lost
        process.wait(timeout=30)
    port = int(url.rsplit(":", 1)[1])
    process, url = start(setup, "restarted", port=port)
    try:
        # recovered from the journal: the study page's view of it (read-only token) has what was decided so far
        (view,) = httpx.get(f"{url}/subjects/W003/live", headers={"Authorization": f"Bearer {READ_TOKEN}"}).json()[
            "streams"]
        assert view["stream"] == "watch-c" and not view["connected"] and view["windows"] > 0
        covered = sum(e["end_s"] - e["start_s"] for e in view["episodes"])
        assert view["episodes"][0]["start_s"] == 0 and covered > 0.9 * view["windows"] * 2.0  # 2-s window steps
        streamed = stream_batches(url, "W003", batches, stream="watch-c", token=TOKEN, speed=None)
        assert httpx.get(f"{url}/subjects/W003/live", headers={"Authorization": f"Bearer {TOKEN}"}).json() == \
            {"subject": "W003", "streams": []}  # closed: a recording now
    finally:
        stop_server(process)
    assert timeline(streamed.labels) == [(e["start_s"], e["label"]) for e in uploaded["timeline"]]


def refused(server, token, messages) -> tuple[int, str]:
    with connect(server.replace("http://", "ws://") + "/subjects/W004/stream",
                 additional_headers={"Authorization": f"Bearer {token}"}) as socket:
        try:
            for message in messages:
                socket.send(message)
            while True:
                socket.recv(timeout=30)
        except Exception:
            pass
        return socket.close_code, socket.close_reason


def test_refusals_close_with_their_code_and_leave_no_trace(setup, server):
    batches = garmin_batches(*setup["pair"])[:4]
    hello = msgspec.json.encode({"type": "hello", "stream": "watch-d"}).decode()
    as_json = [msgspec.json.encode(b).decode() for b in batches]
    assert refused(server, READ_TOKEN, [hello])[0] == 4403
    assert refused(server, "not-the-token-0123456789", [hello])[0] == 4401
    assert refused(server, TOKEN, [hello, "{not json"])[0] == 4400
    wrong_unit = msgspec.json.encode({**batches[0], "unit": "deg/s"}).decode()
    code, reason = refused(server, TOKEN, [hello, wrong_unit])
    assert code == 4422 and "accelerometer in 'deg/s'" in reason
    code, reason = refused(server, TOKEN, [hello, as_json[0], as_json[2]])
    assert code == 4409 and "expected 2" in reason
    with connect(server.replace("http://", "ws://") + "/subjects/W004/stream",
                 additional_headers={"Authorization": f"Bearer {TOKEN}"}) as socket:
        socket.send(hello)
        assert msgspec.json.decode(socket.recv(timeout=30))["acked"] == 1  # only the good batch was kept
    with pytest.raises(StreamClosed) as closed:
        stream_batches(server, "W005", [{**batches[0], "offsets_ms": [-5.0] * len(batches[0]["x"])}],
                       stream="watch-e", token=TOKEN, speed=None)
    assert closed.value.code == 4400 and "offsets" in closed.value.reason
    scrape = httpx.get(server + "/metrics").text
    for reason in ("forbidden", "unauthorized", "malformed", "wrong_unit", "out_of_order"):
        line = next(line for line in scrape.splitlines() if line.startswith(f'har_stream_closes_total{{reason="{reason}"}}'))
        assert float(line.split()[-1]) >= 1, line
