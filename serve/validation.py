"""Request bodies -> float32 window arrays, or an error that names the offending position.

Decoding is typed (msgspec), so a string or a boolean where a number belongs is caught with
its path; shapes and finiteness are checked on the array. Only on the error path do we walk
the nested lists to locate the problem, so valid requests stay fast. Messages name positions
and types but never echo values: sensor data does not belong in error logs.
"""
from __future__ import annotations

import gc
import json
import math
import re
from contextlib import contextmanager

import msgspec
import numpy as np


class RequestError(ValueError):
    """A client mistake: the HTTP status to answer with and a message naming the position."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    windows: list[list[list[float]]]
    subject: str | None = None  # whose windows (serve/personal.py reads it)


class V2Tensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: msgspec.Raw  # flat (row-major) or nested: the protocol allows both, decoded once we know which
    parameters: dict | None = None


class V2RequestedOutput(msgspec.Struct):
    name: str
    parameters: dict | None = None


class V2InferRequest(msgspec.Struct):
    inputs: list[V2Tensor]
    id: str | None = None
    parameters: dict | None = None
    outputs: list[V2RequestedOutput] | None = None


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


def _check_finite(windows: np.ndarray, position) -> None:
    """Values that JSON carries but float32 cannot (beyond +-3.4e38) become infinite on conversion."""
    bad = ~np.isfinite(windows)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise RequestError(422, f"{position(index)}: outside the float32 range (expected a finite number)")


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
def parse_predict(body: bytes, *, length: int, channels: list[str], max_windows: int) -> np.ndarray:
    """`{"windows": [[[ax, ay, az, gx, gy, gz] x length] x n]}` -> float32 [n, length, channels]."""
    request = _decode(body, PredictRequest)
    _check_count(len(request.windows), max_windows, "windows")
    windows = _as_windows(request.windows, length, channels, "windows")
    _check_finite(windows, lambda ix: "windows" + "".join(f"[{i}]" for i in ix))
    return windows


@_collector_paused()
def parse_v2_infer(body: bytes, *, input_name: str, length: int, channels: list[str],
                   max_windows: int) -> tuple[np.ndarray, V2InferRequest]:
    """An Open Inference Protocol (KServe v2) infer request -> float32 windows and the request itself."""
    request = _decode(body, V2InferRequest)
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
