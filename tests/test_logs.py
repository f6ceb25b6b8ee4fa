"""The service's logs as a log pipeline reads them: the real `python -m serve` over real HTTP, its output read back.

One session of the service (start-up, requests that succeed, a 4xx, a 500, shutdown): every line is a
JSON object with the documented fields, each request has exactly one access event, request ids go
from the client to the log and back, hostile ids are replaced, and the token appears nowhere. The text
format is read on a pseudo-terminal.
"""
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from datetime import datetime

import httpx
import pytest
from onnx import TensorProto, helper

from har.modelfile import stamp
from log_helpers import ANSI, documented_fields, json_lines
from serve.client import HarClient, ServiceError
from serve_helpers import BOUND, ROOT, TOKEN, random_windows, start_server, stop_server, tiny_graph, tiny_metadata

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRONG_TOKEN = "wrong-token-but-long-enough-0123"
GENERATED = re.compile(r"[0-9a-f]{32}")
LEVELS = {"debug", "info", "warning", "error", "critical"}


def two_window_model(path):
    """The tiny model, except that its graph only runs on exactly 2 windows: any other count fails inside
    onnxruntime, the service's one real way to a 500 (an error it did not expect)."""
    graph = tiny_graph()
    graph.graph.initializer.append(helper.make_tensor("two", TensorProto.INT64, [2], [2, 6]))
    graph.graph.node[0].output[0] = "mean_any"
    graph.graph.node.insert(1, helper.make_node("Reshape", ["mean_any", "two"], ["mean"]))
    path.write_bytes(stamp(graph, tiny_metadata()))
    return path


def raw_request(url: str, header_value: bytes) -> tuple[int, str]:
    """GET /health with an X-Request-ID that no HTTP client library would send (control characters):
    (status, the X-Request-ID answered)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + header_value
                     + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    request_id = re.search(r"(?im)^x-request-id: (\S+)", head)
    return int(head.split()[1]), request_id.group(1) if request_id else ""


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One service session, its requests (what was sent, what came back) and its whole log, after shutdown."""
    folder = tmp_path_factory.mktemp("logs")
    log_path = folder / "service.log"
    env_format = os.environ.pop("HAR_LOG_FORMAT", None)  # the default for a non-terminal is under test
    try:
        process, url = start_server(two_window_model(folder / "model.onnx"), log_path, "--batching", "off")
    finally:
        if env_format is not None:
            os.environ["HAR_LOG_FORMAT"] = env_format
    sent = {}  # name -> (response or (status, id), the id sent or None)
    try:
        two = {"windows": random_windows(2).tolist()}
        with httpx.Client(base_url=url, timeout=30) as http:
            sent["health"] = (http.get("/health", headers={"X-Request-ID": "probe-1.a_B"}), "probe-1.a_B")
            sent["predict"] = (http.post("/predict", json=two, headers={**AUTH, "X-Request-ID": "ok-7"}), "ok-7")
            sent["subject"] = (http.post("/predict?subject=s042", json=two, headers=AUTH), None)
            sent["unprocessable"] = (http.post("/predict", json={"windows": [[1.0]]},
                                               headers={**AUTH, "X-Request-ID": "bad-1"}), "bad-1")
            sent["no_token"] = (http.post("/predict", json=two), None)
            sent["unknown_path"] = (http.get("/no/such/page?token=" + TOKEN), None)
            sent["crash"] = (http.post("/predict", json={"windows": random_windows(3).tolist()},
                                       headers={**AUTH, "X-Request-ID": "boom-3"}), "boom-3")
            for name, hostile in (("too_long", "a" * 65), ("spaces", "two words"),
                                  ("json_breaking", 'x","level":"critical')):
                sent[name] = (http.get("/health", headers={"X-Request-ID": hostile}), hostile)
        sent["tab"] = (raw_request(url, b"evil\tid"), "evil\tid")  # HTTP allows a tab in a header's value
        # Other control characters: uvicorn's parser refuses the request (400) before the app sees it.
        refused_by_parser = raw_request(url, b"evil\x01id\x7f")
        with HarClient(url, token=WRONG_TOKEN) as client, pytest.raises(ServiceError) as refused:
            client.predict(random_windows(2))
        with HarClient(url, token=TOKEN) as client:
            client.predict(random_windows(2))
    finally:
        stop_server(process)
    return {"sent": sent, "client_error": refused.value, "text": log_path.read_text(), "requests": len(sent) + 2,
            "refused_by_parser": refused_by_parser}


def answered_id(answer) -> str:
    return answer[1] if isinstance(answer, tuple) else answer.headers["x-request-id"]


def status_of(answer) -> int:
    return answer[0] if isinstance(answer, tuple) else answer.status_code


def test_every_line_is_json_with_the_documented_fields(session):
    events = json_lines(session["text"])
    for event in events:
        assert {"time", "level", "logger", "message"} <= set(event), event
        assert event["level"] in LEVELS and datetime.fromisoformat(event["time"].replace("Z", "+00:00")).tzinfo
    messages = [e["message"] for e in events]
    assert any(m.startswith("serving model har version tiny0001") for m in messages)  # start-up
    assert any(m.startswith("Uvicorn running on") for m in messages)  # uvicorn's own lines, same format
    assert messages[-1].startswith("Finished server process")  # shutdown


def test_one_access_event_per_request_with_the_documented_fields(session):
    events = json_lines(session["text"])
    accesses = [e for e in events if e["logger"] == "serve.access"]
    documented = set(documented_fields("The access event"))
    assert len(accesses) == session["requests"] + 1  # and the /health start_server polled until it answered
    always = {"time", "level", "logger", "message", "request_id", "method", "route", "status", "duration_ms"}
    for access in accesses:
        assert always <= set(access) <= documented, access
        assert access["duration_ms"] >= 0 and "?" not in access["route"]
    by_id = {a["request_id"]: a for a in accesses}
    sent = session["sent"]
    assert len(by_id) == len(accesses)  # ids are unique per request
    ok = by_id["ok-7"]
    assert (ok["method"], ok["route"], ok["status"]) == ("POST", "/predict", 200)
    assert (ok["windows"], ok["model"], ok["model_version"], ok["personal"]) == (2, "har", "tiny0001", False)
    subject = by_id[answered_id(sent["subject"][0])]
    assert (subject["subject"], subject["personal"], subject["windows"]) == ("s042", False, 2)
    assert by_id["bad-1"]["status"] == 422 and "windows" not in by_id["bad-1"]
    assert by_id[answered_id(sent["no_token"][0])]["status"] == 401
    assert by_id[answered_id(sent["unknown_path"][0])]["route"] == "unmatched"  # never the raw path
    assert by_id["boom-3"]["status"] == 500


def test_request_ids_come_back_and_are_on_that_requests_lines(session):
    events = json_lines(session["text"])
    sent = session["sent"]
    for name in ("health", "predict", "unprocessable", "crash"):
        response, request_id = sent[name]
        assert response.headers["x-request-id"] == request_id, name
    for name in ("subject", "no_token", "unknown_path"):
        assert GENERATED.fullmatch(answered_id(sent[name][0])), name  # none sent: one made
    # The 500's traceback is logged under its request's id, besides its access event.
    crash = [e for e in events if e.get("request_id") == "boom-3"]
    assert [e["logger"] for e in crash] == ["serve", "serve.access"]
    assert crash[0]["level"] == "error" and "Traceback" in crash[0]["exception"] and "Reshape" in crash[0]["exception"]
    assert session["sent"]["crash"][0].json() == {"status_code": 500, "detail": "internal server error"}
    # Lines written outside any request carry no request id.
    assert all("request_id" not in e for e in events if e["logger"].startswith("uvicorn"))


def test_the_client_sends_an_id_and_its_error_quotes_it(session):
    error = session["client_error"]
    assert error.status_code == 401 and GENERATED.fullmatch(error.request_id)
    assert f"(request id {error.request_id})" in str(error)
    logged = [e for e in json_lines(session["text"]) if e.get("request_id") == error.request_id]
    assert [(e["route"], e["status"]) for e in logged] == [("/predict", 401)]


def test_a_hostile_request_id_is_replaced_and_never_logged(session):
    text = session["text"]
    for name in ("too_long", "spaces", "json_breaking", "tab"):
        answer, hostile = session["sent"][name]
        assert status_of(answer) == 200, name
        assert GENERATED.fullmatch(answered_id(answer)), name
        assert hostile not in text and hostile.encode("unicode_escape").decode() not in text, name
    assert "a" * 65 not in text and "evil" not in text and "two words" not in text
    assert session["refused_by_parser"] == (400, "")


def test_the_token_is_in_no_line(session):
    assert TOKEN not in session["text"] and WRONG_TOKEN not in session["text"]
    assert "Bearer" not in session["text"]


def test_no_access_log_leaves_the_other_lines(tmp_path):
    from serve_helpers import write_tiny_model

    process, url = start_server(write_tiny_model(tmp_path / "model.onnx"), tmp_path / "quiet.log", "--no-access-log",
                                "--log-format", "json")
    try:
        assert httpx.get(url + "/health", timeout=10).status_code == 200
    finally:
        stop_server(process)
    events = json_lines((tmp_path / "quiet.log").read_text())
    assert events and not [e for e in events if e["logger"] == "serve.access"]
    assert events[-1]["message"].startswith("Finished server process")


def test_on_a_terminal_the_lines_are_readable_text(tmp_path):
    """No --log-format, stdout and stderr on a pseudo-terminal: text, one event a line, no JSON."""
    from serve_helpers import write_tiny_model

    model = write_tiny_model(tmp_path / "model.onnx")
    primary, secondary = pty.openpty()
    env = {**{k: v for k, v in os.environ.items() if k != "HAR_LOG_FORMAT"}, "HAR_SERVE_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "serve", "--model", str(model), "--host", "127.0.0.1",
                                "--port", "0"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=secondary,
                               stderr=secondary)
    os.close(secondary)
    output = b""

    def read_until(pattern: re.Pattern, timeout_s: float = 60):
        nonlocal output
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = pattern.search(ANSI.sub("", output.decode(errors="replace")).encode())
            if found:
                return found
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    output += os.read(primary, 65536)
                except OSError:  # the process closed the terminal
                    break
        raise AssertionError(f"no {pattern.pattern!r} on the terminal within {timeout_s} s: {output[-2000:]!r}")

    try:
        port = int(read_until(BOUND).group(1))
        assert httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-Request-ID": "tty-1"},
                         timeout=10).status_code == 200
        read_until(re.compile(rb"access.*tty-1"))
    finally:
        stop_server(process)
        read_until(re.compile(rb"Finished server process"), timeout_s=10)
        os.close(primary)
    lines = [line for line in ANSI.sub("", output.decode()).splitlines() if line.strip()]
    assert not [line for line in lines if line.lstrip().startswith("{")]
    access = next(line for line in lines if "tty-1" in line)
    # "<time> [info     ] access   [serve.access] method=GET route=/health status=200 duration_ms=0.9 request_id=tty-1"
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z \[info\s*\] access\s+\[serve\.access\] ", access), access
    assert "route=/health" in access and "status=200" in access and "request_id=tty-1" in access
    assert any("Uvicorn running on http://127.0.0.1:" in line for line in lines)
