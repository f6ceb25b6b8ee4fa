"""The OpenAPI contract of the routes: request bodies as enforced, and every status a route answers.

Litestar documents what it can see in a handler's signature; the handlers that decode their own
bodies (JSON, raw float32, .npy, the v2 binary extension) and the refusals raised by guards and
validators are invisible to it. `documented(...)` fills that in, so that a client generated from
/schema/openapi.json (or a fuzzer reading it, tests/test_serve_contract.py) sees the real service.
"""
from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, RequestBody, Schema

from har.subject import SUBJECT_PATTERN
from serve.wire import JSON, NPY, OCTET_STREAM, SHAPE_HEADER, V2_HEADER_LENGTH

FLOAT32_MAX = 3.4028234663852886e38  # JSON numbers beyond float32 cannot be scored

ERROR = Schema(type=OpenAPIType.OBJECT, required=["status_code", "detail"], properties={
    "status_code": Schema(type=OpenAPIType.INTEGER), "detail": Schema(type=OpenAPIType.STRING), "extra": Schema()})
V2_ERROR = Schema(type=OpenAPIType.OBJECT, required=["error"], properties={"error": Schema(type=OpenAPIType.STRING)},
                  description="The Open Inference Protocol's error body")
BINARY = Schema(type=OpenAPIType.STRING, format="binary")
SUBJECT_ID = Schema(type=OpenAPIType.STRING, pattern=SUBJECT_PATTERN, description=(
    "whose windows: scored by that person's model (serve/personal.py) if there is one, else by the generic model"))

REASONS = {400: "Body is not valid JSON, or not a well-formed multipart form",
           401: "Missing or wrong bearer token", 403: "The read-only token may not write",
           404: "No such model or resource",
           413: "Body or window count over the configured limits",
           415: "Content-Type is not one the route accepts",
           422: "Well-formed but invalid: the message names the position and what was expected",
           503: "Not ready yet (model loading or shutting down)"}


def array(items: Schema, min_items: int | None = None, max_items: int | None = None, **extra) -> Schema:
    return Schema(type=OpenAPIType.ARRAY, items=items, min_items=min_items, max_items=max_items, **extra)


def finite_number() -> Schema:
    return Schema(type=OpenAPIType.NUMBER, minimum=-FLOAT32_MAX, maximum=FLOAT32_MAX)


def windows_schema(length: int, channels: list[str], limit: int, description: str = "") -> Schema:
    """[1..limit][length][channels] finite float32 numbers."""
    sample = array(finite_number(), len(channels), len(channels))
    return array(array(sample, length, length), 1, limit, description=description)


def json_content(schema: Schema) -> dict:
    return {JSON: OpenAPIMediaType(schema=schema)}


def errors(*statuses: int, v2: bool = False) -> dict[str, OpenAPIResponse]:
    return {str(s): OpenAPIResponse(description=REASONS[s], content=json_content(V2_ERROR if v2 else ERROR))
            for s in statuses}


def documented(*, body: RequestBody | None = None, responses: dict[str, OpenAPIResponse] | None = None,
               model_name: str | None = None) -> type[Operation]:
    """An Operation class that sets the request body, adds or replaces responses, and (`model_name`)
    names the one model the `{name}` path parameter can take (any other answers 404)."""

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = body
            self.responses = {**(self.responses or {}), **(responses or {})}
            for parameter in self.parameters or []:
                if model_name is not None and parameter.name == "name" and parameter.param_in == "path":
                    parameter.schema = Schema(type=OpenAPIType.STRING, enum=[model_name])

    return Documented


def predict_body(length: int, channels: list[str], limit: int, units) -> RequestBody:
    shape = f"[n <= {limit}][{length} samples][{', '.join(channels)}]"
    json_schema = Schema(type=OpenAPIType.OBJECT, required=["windows"], additional_properties=False, properties={
        "windows": windows_schema(length, channels, limit, f"windows {shape}, SI units {units}"),
        "subject": SUBJECT_ID})
    return RequestBody(required=True, description=(
        f"Windows {shape} as JSON; as raw little-endian float32 in C order ({OCTET_STREAM}, shape in the "
        f"{SHAPE_HEADER} header, e.g. '64,{length},{len(channels)}'); or as a .npy file of float32 ({NPY})."),
        content={JSON: OpenAPIMediaType(schema=json_schema), OCTET_STREAM: OpenAPIMediaType(schema=BINARY),
                 NPY: OpenAPIMediaType(schema=BINARY)})


def v2_infer_body(input_name: str, length: int, channels: list[str], limit: int) -> RequestBody:
    per_window = length * len(channels)
    tensor = Schema(type=OpenAPIType.OBJECT, required=["name", "shape", "datatype", "data"], properties={
        "name": Schema(type=OpenAPIType.STRING, enum=[input_name]),
        "shape": Schema(type=OpenAPIType.ARRAY, min_items=3, max_items=3, prefix_items=[
            Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=limit), Schema(type=OpenAPIType.INTEGER, enum=[length]),
            Schema(type=OpenAPIType.INTEGER, enum=[len(channels)])]),
        "datatype": Schema(type=OpenAPIType.STRING, enum=["FP32", "FP64"]),
        "data": Schema(one_of=[array(finite_number(), per_window, per_window * limit, description="flat, row-major"),
                               windows_schema(length, channels, limit, "nested")],
                       description="shape[0] * shape[1] * shape[2] values"),
        "parameters": Schema(type=OpenAPIType.OBJECT)})
    output = Schema(type=OpenAPIType.OBJECT, required=["name"], properties={
        "name": Schema(type=OpenAPIType.STRING, enum=["probabilities", "label"]),
        "parameters": Schema(type=OpenAPIType.OBJECT, properties={"binary_data": Schema(type=OpenAPIType.BOOLEAN)})})
    request = Schema(type=OpenAPIType.OBJECT, required=["inputs"], properties={
        "id": Schema(type=OpenAPIType.STRING),
        "inputs": array(tensor, 1, 1),
        "outputs": array(output),
        "parameters": Schema(type=OpenAPIType.OBJECT, properties={"binary_data_output": Schema(type=OpenAPIType.BOOLEAN)})})
    return RequestBody(required=True, description=(
        f"One FP32 input named {input_name!r}, shape [n, {length}, {len(channels)}], data flat (row-major) or "
        f"nested. Binary data extension ({OCTET_STREAM}): the JSON header (the input without data, with "
        f"parameters.binary_data_size) of {V2_HEADER_LENGTH} bytes, then the tensor as little-endian float32."),
        content={JSON: OpenAPIMediaType(schema=request), OCTET_STREAM: OpenAPIMediaType(schema=BINARY)})


def v2_infer_ok() -> OpenAPIResponse:
    tensor = Schema(type=OpenAPIType.OBJECT, required=["name", "datatype", "shape"], properties={
        "name": Schema(type=OpenAPIType.STRING), "datatype": Schema(type=OpenAPIType.STRING, enum=["FP32", "BYTES"]),
        "shape": array(Schema(type=OpenAPIType.INTEGER)), "data": array(Schema()),
        "parameters": Schema(type=OpenAPIType.OBJECT)})
    answer = Schema(type=OpenAPIType.OBJECT, required=["model_name", "model_version", "outputs"], properties={
        "model_name": Schema(type=OpenAPIType.STRING), "model_version": Schema(type=OpenAPIType.STRING),
        "id": Schema(type=OpenAPIType.STRING), "outputs": array(tensor)})
    return OpenAPIResponse(
        description=f"Outputs in JSON; with binary outputs requested, {OCTET_STREAM}: the JSON header of "
                    f"{V2_HEADER_LENGTH} bytes, then each binary output",
        content={JSON: OpenAPIMediaType(schema=answer), OCTET_STREAM: OpenAPIMediaType(schema=BINARY)},
        headers={V2_HEADER_LENGTH: OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), required=False,
                                                 description="bytes of JSON before the binary outputs")})


def status_response(description: str, **properties: Schema) -> OpenAPIResponse:
    return OpenAPIResponse(description=description, content=json_content(
        Schema(type=OpenAPIType.OBJECT, required=list(properties), properties=properties)))
