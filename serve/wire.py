"""The binary wire formats, shared by the service and serve/client.py.

- `/predict` takes `application/octet-stream` (raw little-endian float32, C order, shape in the
  `X-Windows-Shape` header) or `application/x-npy` (what `np.save` writes) besides JSON.
- `/v2/models/{name}/infer` speaks the Open Inference Protocol's binary data extension: a JSON
  header of `Inference-Header-Content-Length` bytes, then each binary tensor's raw bytes in the
  order of the header's tensors, each sized by its `parameters.binary_data_size`. FP32 travels as
  little-endian float32, BYTES as a 4-byte little-endian length before each element.
"""
from __future__ import annotations

import json
import struct

import numpy as np

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
NPY = "application/x-npy"
SHAPE_HEADER = "X-Windows-Shape"
V2_HEADER_LENGTH = "Inference-Header-Content-Length"
FLOAT32 = np.dtype("<f4")


def media_type(headers) -> str:
    """The body's media type without parameters (JSON when the client sent none)."""
    return headers.get("content-type", JSON).split(";")[0].strip().lower()


def encode_bytes_tensor(items: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in items))


def decode_bytes_tensor(raw: bytes | memoryview) -> list[str]:
    items, at = [], 0
    while at < len(raw):
        (size,) = struct.unpack_from("<I", raw, at)
        items.append(bytes(raw[at + 4:at + 4 + size]).decode())
        at += 4 + size
    return items


def v2_message(header: dict, blobs: list[bytes]) -> tuple[bytes, int]:
    """A binary-extension body: the JSON header, then the blobs; returns (body, header length)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([head, *blobs]), len(head)


def v2_tensors(header: dict, binary: bytes | memoryview, key: str = "outputs") -> dict:
    """name -> array (FP32) or list of str (BYTES), from the header's JSON data or the binary part."""
    tensors, at = {}, 0
    for tensor in header[key]:
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = tensor["data"]
        else:
            raw, at = binary[at:at + size], at + size
            data = (decode_bytes_tensor(raw) if tensor["datatype"] == "BYTES"
                    else np.frombuffer(raw, dtype=FLOAT32))
        tensors[tensor["name"]] = (data if tensor["datatype"] == "BYTES"
                                   else np.asarray(data, dtype=np.float32).reshape(tensor["shape"]))
    return tensors
