"""Binary tensors over the real server: /predict raw float32 and .npy, the Open Inference Protocol's
binary data extension, all through serve/client.py, and the refusals of malformed binary bodies."""
import io
import json

import httpx
import numpy as np
import pytest
import yaml

from har.config import load_params
from serve.client import HarClient, ServiceError, parse_v2_response, predict_request, v2_request
from har.runtime import ModelRuntime
from serve.wire import NPY, OCTET_STREAM, V2_HEADER_LENGTH, decode_bytes_tensor, encode_bytes_tensor
from serve_helpers import LABELS, ROOT, TOKEN, random_windows, start_server, stop_server, write_tiny_model

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_WINDOWS = 8


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="module")
def url(model_path, tmp_path_factory):
    params = load_params(ROOT / "params.yaml")
    params["serve"].update(max_windows_per_request=MAX_WINDOWS)
    folder = tmp_path_factory.mktemp("binary")
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    process, url = start_server(model_path, folder / "server.log", "--params", str(folder / "params.yaml"))
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def client(url):
    with HarClient(url, token=TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        yield http


@pytest.mark.parametrize("media_type", [OCTET_STREAM, NPY, "application/json"])
def test_predict_in_every_body_format_gives_the_models_probabilities(client, model_path, media_type):
    windows = random_windows(5, seed=1)
    expected = ModelRuntime(model_path).predict(windows)
    result = client.predict(windows, media_type=media_type)
    assert result.classes == LABELS
    assert result.labels == [LABELS[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_v2_infer_binary_and_json_agree_with_the_model(client, model_path, binary):
    windows = random_windows(4, seed=2)
    expected = ModelRuntime(model_path).predict(windows)
    result = client.infer(windows, binary=binary)
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-6)
    assert result.labels == [LABELS[i] for i in expected.argmax(1)]


def test_v2_binary_response_follows_the_extension(http):
    """Header length, per-output binary_data_size and the raw bytes after the JSON header all agree."""
    windows = random_windows(3, seed=3)
    headers, body = v2_request(windows)
    header = json.loads(body[:int(headers[V2_HEADER_LENGTH])])
    header["outputs"] = [{"name": "probabilities", "parameters": {"binary_data": True}},
                         {"name": "label", "parameters": {"binary_data": False}}]
    head = json.dumps(header).encode()
    response = http.post("/v2/models/har/infer", content=head + windows.tobytes(),
                         headers={**headers, V2_HEADER_LENGTH: str(len(head))})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OCTET_STREAM
    size = int(response.headers[V2_HEADER_LENGTH])
    outputs = {o["name"]: o for o in json.loads(response.content[:size])["outputs"]}
    assert outputs["probabilities"]["parameters"]["binary_data_size"] == 3 * len(LABELS) * 4
    assert len(response.content) == size + 3 * len(LABELS) * 4
    assert "data" not in outputs["probabilities"] and len(outputs["label"]["data"]) == 3
    assert parse_v2_response(response.headers, response.content)["probabilities"].shape == (3, len(LABELS))


def test_bytes_tensors_round_trip():
    labels = ["typing", "", "clapping ünïcode"]
    assert decode_bytes_tensor(encode_bytes_tensor(labels)) == labels


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


WINDOW_BYTES = 200 * 6 * 4
with_nan = random_windows(2)
with_nan[1, 17, 4] = np.nan


@pytest.mark.parametrize("headers, body, status, detail", [
    ({"Content-Type": OCTET_STREAM, "X-Windows-Shape": "2,200,6"}, b"\0" * (2 * WINDOW_BYTES - 4), 422,
     f"body holds {2 * WINDOW_BYTES - 4} bytes of data; shape [2, 200, 6] of little-endian float32 needs exactly {2 * WINDOW_BYTES}"),
    ({"Content-Type": OCTET_STREAM}, b"\0" * WINDOW_BYTES, 422, "X-Windows-Shape header is missing"),
    ({"Content-Type": OCTET_STREAM, "X-Windows-Shape": "1,100,12"}, b"\0" * WINDOW_BYTES, 422,
     "body shape is [1, 100, 12], expected [n, 200, 6]"),
    ({"Content-Type": OCTET_STREAM, "X-Windows-Shape": "2,200,6"}, with_nan.tobytes(), 422,
     "body window 1, sample 17, channel gy: NaN or infinity (expected a finite number)"),
    ({"Content-Type": OCTET_STREAM, "X-Windows-Shape": "9,200,6"}, b"\0" * 9 * WINDOW_BYTES, 413,
     f"at most {MAX_WINDOWS} per request"),
    ({"Content-Type": OCTET_STREAM, "X-Windows-Shape": "0,200,6"}, b"", 422, "send at least one window"),
    ({"Content-Type": NPY}, _npy(random_windows(1).astype(">f4")), 422, "expected little-endian float32 in C order"),
    ({"Content-Type": NPY}, _npy(random_windows(1).astype(np.float64)), 422, "expected little-endian float32"),
    ({"Content-Type": NPY}, b"not an npy", 422, "body is not a .npy array"),
    ({"Content-Type": NPY}, _npy(random_windows(2))[:-1], 422, "needs exactly"),
    ({"Content-Type": "text/csv"}, b"1,2,3", 415, "Content-Type 'text/csv' is not one of"),
])
def test_malformed_binary_predict_bodies_get_a_located_error(http, headers, body, status, detail):
    response = http.post("/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def _v2_body(windows, size_delta=0, header_length_delta=0, **tensor):
    head = json.dumps({"inputs": [{"name": "windows", "datatype": "FP32", "shape": list(windows.shape),
                                   "parameters": {"binary_data_size": windows.nbytes + size_delta}, **tensor}]}).encode()
    return head + windows.tobytes(), {V2_HEADER_LENGTH: str(len(head) + header_length_delta)}


@pytest.mark.parametrize("case, detail", [
    (_v2_body(random_windows(2), size_delta=4), f"binary_data_size is {2 * WINDOW_BYTES + 4} but {2 * WINDOW_BYTES} bytes follow"),
    (_v2_body(random_windows(2), header_length_delta=10**9), "Inference-Header-Content-Length is"),
    (_v2_body(random_windows(2), header_length_delta=-5), "body is not valid JSON"),
    (_v2_body(random_windows(2), datatype="FP64"), "binary tensors must be 'FP32'"),
    (_v2_body(with_nan), "window 1, sample 17, channel gy: NaN or infinity"),
    (_v2_body(random_windows(1), data=[0.0] * 1200), "send the tensor one way"),
])
def test_malformed_v2_binary_requests_get_the_protocols_error(http, case, detail):
    body, headers = case
    response = http.post("/v2/models/har/infer", content=body, headers={**headers, "Content-Type": OCTET_STREAM})
    assert response.status_code in (400, 422), response.text
    assert detail in response.json()["error"]


def test_client_raises_the_services_message(url):
    with HarClient(url, token="wrong-token-0123456789") as client:
        with pytest.raises(ServiceError) as refused:
            client.predict(random_windows(1))
    assert refused.value.status_code == 401


def test_request_encoders_describe_their_body():
    windows = random_windows(2)
    headers, body = predict_request(windows)
    assert headers["X-Windows-Shape"] == "2,200,6" and np.array_equal(np.frombuffer(body, "<f4").reshape(2, 200, 6), windows)
    with pytest.raises(ValueError, match=r"\[n, samples, channels\]"):
        predict_request(windows[0])
