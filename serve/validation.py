"""Request bodies -> float32 window arrays, or an error that names the offending position.

Decoding is typed (msgspec), so a string or a boolean where a number belongs is caught with
its path; shapes and finiteness are checked on the array. Only on the error path do we walk
the nested lists to locate the problem, so valid requests stay fast. Messages name positions
and types but never echo values: sensor data does not belong in error logs.
"""
from __future__ import annotations

import gc
import io
import json
import math
import re
from contextlib import contextmanager

import msgspec
import numpy as np

from serve.wire import FLOAT32, OCTET_STREAM


class RequestError(ValueError):
    """A client mistake: the HTTP status to answer with and a message naming the position."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    windows: list[list[list[float]]]
    subject: str | msgspec.UnsetType = msgspec.UNSET  # whose windows (serve/personal.py); null is refused


class V2Tensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    # flat (row-major) or nested: the protocol allows both, decoded once we know which; absent when the
    # tensor travels in binary after the JSON header (parameters.binary_data_size)
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    parameters: dict | msgspec.UnsetType = msgspec.UNSET  # optional, but an object when present (not null)


class V2RequestedOutput(msgspec.Struct):
    name: str
    parameters: dict | msgspec.UnsetType = msgspec.UNSET


class V2InferRequest(msgspec.Struct):
    inputs: list[V2Tensor]
    id: str | msgspec.UnsetType = msgspec.UNSET
    parameters: dict | msgspec.UnsetType = msgspec.UNSET
    outputs: list[V2RequestedOutput] | msgspec.UnsetType = msgspec.UNSET


V2_FLOAT_TYPES = ("FP32", "FP64")
_MSGSPEC_PATH = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _located(error: msgspec.ValidationError, prefix: str) -> str:
    """msgspec's "Expected `float`, got `str` - at `$.windows[3][17][2]`" -> "windows[3][17][2]: expected a number, got str"."""
    match = _MSGSPEC_PATH.match(str(error))
    problem = match["problem"].replace("`float`", "a number").replace("`", "")
    path = (prefix + (match["path"] or "")).lstrip(".") or "body"
    return f"{path}: {problem[:1].lower()}{problem[1:]}"


def _first_non_finite(value, path: str = ""):
    """Path of the first NaN or infinity in parsed JSON, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_non_finite(item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]")
        if found is not None:
            return found
    return None


def _decode(body: bytes, type_, prefix: str = ""):
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as error:
        raise RequestError(422, _located(error, prefix)) from None
    except msgspec.DecodeError as error:
        # JSON has no NaN or Infinity, but many clients (Python's json among them) write them.
        try:
            position = _first_non_finite(json.loads(body))
        except (ValueError, RecursionError):
            position = None
        if position is not None:
            raise RequestError(422, f"{(prefix + position).lstrip('.')}: NaN or infinity (expected a finite number)") from None
        raise RequestError(400, f"body is not valid JSON ({error})") from None


def _shape_problem(windows: list, length: int, channels: list[str], prefix: str) -> str:
    """Where nested windows depart from [n, length, channels]."""
    for i, window in enumerate(windows):
        if len(window) != length:
            return f"{prefix}[{i}] has {len(window)} samples, expected {length}"
        for j, sample in enumerate(window):
            if len(sample) != len(channels):
                return (f"{prefix}[{i}][{j}] has {len(sample)} values, expected {len(channels)} "
                        f"({', '.join(channels)})")
    return f"{prefix} is not a list of [{length}][{len(channels)}] windows"


def _check_count(n: int, max_windows: int, where: str) -> None:
    if n == 0:
        raise RequestError(422, f"{where} is empty: send at least one window")
    if n > max_windows:
        raise RequestError(413, f"{where} holds {n} windows; at most {max_windows} per request")


def _as_windows(nested: list, length: int, channels: list[str], prefix: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported by _check_finite, with its position
            windows = np.asarray(nested, dtype=np.float32)
    except ValueError:  # ragged
        windows = None
    if windows is None or windows.shape[1:] != (length, len(channels)):
        raise RequestError(422, _shape_problem(nested, length, channels, prefix))
    return windows


def _check_finite(windows: np.ndarray, position, problem: str = "outside the float32 range") -> None:
    """Values that JSON carries but float32 cannot (beyond +-3.4e38) become infinite on conversion;
    binary bodies can carry NaN and infinity themselves."""
    if not np.isfinite(windows).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(windows))[0])
        raise RequestError(422, f"{position(index)}: {problem} (expected a finite number)")


@contextmanager
def _collector_paused():
    """Decode without the cyclic garbage collector.

    A batch of 64 windows decodes into about 13,000 small lists; that burst of allocations sets off
    full collections that walk the whole heap, which showed as a long tail in the p99 of 64-window
    requests (bench/serve.py). The lists
    hold only floats and die by reference counting once converted, so the collector has nothing to
    find in them. Decoding never awaits, so no other request runs meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@_collector_paused()
def parse_predict(body: bytes, *, length: int, channels: list[str],
                  max_windows: int) -> tuple[np.ndarray, str | None]:
    """`{"windows": [[[ax, ay, az, gx, gy, gz] x length] x n], "subject": ...}` -> float32 [n, length, channels]
    and the subject (None when absent)."""
    request = _decode(body, PredictRequest)
    _check_count(len(request.windows), max_windows, "windows")
    windows = _as_windows(request.windows, length, channels, "windows")
    _check_finite(windows, lambda ix: "windows" + "".join(f"[{i}]" for i in ix))
    return windows, (None if request.subject is msgspec.UNSET else request.subject)


@_collector_paused()
def parse_v2_infer(body: bytes, *, input_name: str, length: int, channels: list[str], max_windows: int,
                   header_length: str | None = None) -> tuple[np.ndarray, V2InferRequest]:
    """An Open Inference Protocol (KServe v2) infer request -> float32 windows and the request itself.

    With `header_length` (the Inference-Header-Content-Length header) the body is the binary data
    extension's: that many bytes of JSON, then the input tensor as raw little-endian FP32."""
    header, binary = split_v2_binary(body, header_length)
    request = _decode(header, V2InferRequest)
    if len(request.inputs) != 1:
        raise RequestError(422, f"inputs holds {len(request.inputs)} tensors; the model takes one, {input_name!r}")
    tensor, where = request.inputs[0], "inputs[0]"
    if tensor.name != input_name:
        raise RequestError(422, f"{where}.name is {tensor.name!r}, expected {input_name!r}")
    if tensor.datatype not in V2_FLOAT_TYPES:
        raise RequestError(422, f"{where}.datatype is {tensor.datatype!r}, expected one of {list(V2_FLOAT_TYPES)}")
    if len(tensor.shape) != 3 or tensor.shape[1:] != [length, len(channels)] or tensor.shape[0] < 0:
        raise RequestError(422, f"{where}.shape is {tensor.shape}, expected [n, {length}, {len(channels)}]")
    n = tensor.shape[0]
    _check_count(n, max_windows, f"{where}.shape[0]")
    if tensor.data is msgspec.UNSET:
        return _v2_binary_input(tensor, binary, length=length, channels=channels, max_windows=max_windows), request
    if len(binary):
        raise RequestError(422, f"{where} carries JSON data and {len(binary)} bytes follow the JSON header; "
                                "send the tensor one way (binary: omit data, set parameters.binary_data_size)")

    raw = bytes(tensor.data)
    nested = raw.lstrip()[1:].lstrip().startswith(b"[")
    per_window = length * len(channels)

    def flat_position(index: int) -> str:
        window, rest = divmod(index, per_window)
        sample, channel = divmod(rest, len(channels))
        return f"{where}.data[{index}] (window {window}, sample {sample}, channel {channels[channel]})"

    if nested:
        data = _decode(raw, list[list[list[float]]], f"{where}.data")
        if len(data) != n:
            raise RequestError(422, f"{where}.data holds {len(data)} windows but {where}.shape[0] is {n}")
        windows = _as_windows(data, length, channels, f"{where}.data")
        _check_finite(windows, lambda ix: f"{where}.data" + "".join(f"[{i}]" for i in ix))
        return windows, request

    try:
        data = msgspec.json.decode(raw, type=list[float])
    except msgspec.ValidationError as error:
        index = re.search(r"`\$\[(\d+)\]`", str(error))
        problem = _located(error, "").split(": ", 1)[-1]
        raise RequestError(422, f"{flat_position(int(index[1])) if index else where + '.data'}: {problem}") from None
    if len(data) != n * per_window:
        raise RequestError(422, f"{where}.data holds {len(data)} values; shape {tensor.shape} needs {n * per_window}")
    with np.errstate(over="ignore"):
        windows = np.asarray(data, dtype=np.float32).reshape(n, length, len(channels))
    _check_finite(windows, lambda ix: flat_position(int(np.ravel_multi_index(ix, windows.shape))))
    return windows, request


# --- binary bodies ------------------------------------------------------------------------------------
# Raw little-endian float32 is what the model eats: decoded with np.frombuffer (no copy, no parsing),
# then held to the same rules as JSON (shape, count, finite values), with errors naming the position.



def _parse_shape(text: str | None, where: str) -> tuple[int, ...]:
    if text is None:
        raise RequestError(422, f"{where} is missing: an {OCTET_STREAM} body needs its shape, e.g. '64,200,6'")
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise RequestError(422, f"{where} is {text[:40]!r}, expected comma-separated integers like '64,200,6'") from None


def _binary_windows(body: bytes | memoryview, offset: int, shape: tuple[int, ...], *, length: int,
                    channels: list[str], max_windows: int, where: str) -> np.ndarray:
    """float32 [n, length, channels] viewing `body` from `offset`, after checking shape, count, bytes and finiteness."""
    if len(shape) != 3 or shape[1:] != (length, len(channels)) or shape[0] < 0:
        raise RequestError(422, f"{where} shape is {list(shape)}, expected [n, {length}, {len(channels)}]")
    _check_count(shape[0], max_windows, f"{where} shape[0]")
    expected = shape[0] * length * len(channels) * FLOAT32.itemsize
    if len(body) - offset != expected:
        raise RequestError(422, f"{where} holds {len(body) - offset} bytes of data; shape {list(shape)} of "
                                f"little-endian float32 needs exactly {expected}")
    windows = np.frombuffer(body, dtype=FLOAT32, count=expected // FLOAT32.itemsize, offset=offset).reshape(shape)
    _check_finite(windows, lambda ix: f"{where} window {ix[0]}, sample {ix[1]}, channel {channels[ix[2]]}",
                  "NaN or infinity")
    return windows


def parse_predict_octets(body: bytes, shape_header: str | None, *, length: int, channels: list[str],
                         max_windows: int) -> np.ndarray:
    """`application/octet-stream`: raw little-endian float32, C order, shape in the X-Windows-Shape header."""
    shape = _parse_shape(shape_header, "X-Windows-Shape header")
    return _binary_windows(body, 0, shape, length=length, channels=channels, max_windows=max_windows, where="body")


def parse_predict_npy(body: bytes, *, length: int, channels: list[str], max_windows: int) -> np.ndarray:
    """`application/x-npy`: one array as `np.save` writes it; little-endian float32, C order."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        header = read_header(stream, max_header_size=10_000)
    except (ValueError, SyntaxError, EOFError) as error:
        raise RequestError(422, f"body is not a .npy array ({error})") from None
    shape, fortran_order, dtype = header
    if dtype != FLOAT32 or fortran_order:
        raise RequestError(422, f".npy array is {dtype}{' (Fortran order)' if fortran_order else ''}, "
                                "expected little-endian float32 in C order (np.save(f, x.astype('<f4')))")
    return _binary_windows(body, stream.tell(), shape, length=length, channels=channels, max_windows=max_windows,
                           where=".npy array")


def split_v2_binary(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The binary data extension: a JSON header of `Inference-Header-Content-Length` bytes, then the tensors."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 < size <= len(body):
        raise RequestError(422, f"Inference-Header-Content-Length is {header_length[:20]!r}; expected the JSON "
                                f"header's byte count, between 1 and the body's {len(body)} bytes")
    return body[:size], memoryview(body)[size:]


def _v2_binary_input(tensor: V2Tensor, binary: memoryview, *, length: int, channels: list[str],
                     max_windows: int) -> np.ndarray:
    where = "inputs[0]"
    size = (tensor.parameters or {}).get("binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise RequestError(422, f"{where} has no data and no integer parameters.binary_data_size: send the tensor "
                                "in JSON (data) or in binary (binary_data_size, after Inference-Header-Content-Length)")
    if tensor.datatype != "FP32":
        raise RequestError(422, f"{where}.datatype is {tensor.datatype!r}; binary tensors must be 'FP32'")
    if size != len(binary):
        raise RequestError(422, f"{where}.parameters.binary_data_size is {size} but {len(binary)} bytes follow "
                                "the JSON header")
    return _binary_windows(binary, 0, tuple(tensor.shape), length=length, channels=channels,
                           max_windows=max_windows, where=f"{where} binary data")


def _flag(parameters, key: str, where: str, default: bool = False) -> bool:
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"{where}.{key} is {type(value).__name__}, expected true or false")
    return value


def v2_binary_outputs(request: V2InferRequest, names: tuple[str, ...]) -> dict[str, bool]:
    """Output name -> whether to send it in binary: parameters.binary_data_output asks for every
    output in binary, an output's own parameters.binary_data overrides it; no outputs: all of `names`."""
    every = _flag(request.parameters, "binary_data_output", "parameters")
    if not request.outputs:
        return dict.fromkeys(names, every)
    return {o.name: _flag(o.parameters, "binary_data", f"outputs[{i}].parameters", every)
            for i, o in enumerate(request.outputs)}
