"""The Open Inference Protocol (KServe v2): server and model metadata, readiness, and inference in JSON
or with the binary data extension."""
from __future__ import annotations

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import OpenAPIType, Schema

from har.modelfile import ModelCard
from serve import contract
from serve.logs import note as note_access
from serve.security import token_required
from serve.service import Service
from serve.validation import RequestError, parse_v2_infer, v2_binary_outputs
from serve.wire import JSON, OCTET_STREAM, V2_HEADER_LENGTH, encode_bytes_tensor, media_type, v2_message

SECURED = [{"bearer": []}]
V2_OUTPUTS = ("probabilities", "label")


def model_or_404(card: ModelCard, name: str) -> None:
    if name != card.name:
        raise NotFoundException(f"unknown model {name!r}; this server serves {card.name!r}")


def v2_controller(card: ModelCard, max_windows: int) -> type[Controller]:
    """The controller for this model: the OpenAPI document names it and states its tensor shapes."""
    length, channels = card.window_length, card.channels
    input_name = card.input_contract.get("input", "windows")

    class V2Controller(Controller):
        path = "/v2"
        tags = ["open inference protocol"]

        @get("/", summary="Server metadata")
        async def server(self) -> dict:
            return {"name": "har-serve", "version": "1", "extensions": []}

        @get("/health/live", summary="Server live")
        async def live(self) -> dict:
            return {"live": True}

        @get("/health/ready", summary="Server ready", operation_class=contract.documented(responses={
            "503": contract.status_response("Not ready yet", ready=Schema(type=OpenAPIType.BOOLEAN))}))
        async def ready(self, service: Service) -> Response:
            return Response({"ready": service.ready}, status_code=200 if service.ready else 503)

        @get("/models/{name:str}", summary="Model metadata",
             operation_class=contract.documented(responses=contract.errors(400, 404, v2=True), model_name=card.name))
        async def model(self, name: str) -> dict:
            model_or_404(card, name)
            return {"name": card.name, "versions": [card.version], "platform": "onnxruntime_onnx",
                    "inputs": [{"name": input_name, "datatype": "FP32", "shape": [-1, length, len(channels)]}],
                    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(card.labels)]},
                                {"name": "label", "datatype": "BYTES", "shape": [-1]}],
                    "parameters": {"labels": card.labels, "channels": channels}}

        @get("/models/{name:str}/ready", summary="Model ready", operation_class=contract.documented(responses={
            **contract.errors(400, 404, v2=True), "503": contract.status_response(
                "Not ready yet", name=Schema(type=OpenAPIType.STRING), ready=Schema(type=OpenAPIType.BOOLEAN))},
            model_name=card.name))
        async def model_ready(self, name: str, service: Service) -> Response:
            model_or_404(card, name)
            return Response({"name": card.name, "ready": service.ready}, status_code=200 if service.ready else 503)

        @post("/models/{name:str}/infer", guards=[token_required], security=SECURED, status_code=200,
              summary="Inference (Open Inference Protocol / KServe v2; JSON or binary data extension)",
              operation_class=contract.documented(
                  body=contract.v2_infer_body(input_name, length, channels, max_windows),
                  responses={"200": contract.v2_infer_ok(), **contract.errors(400, 401, 404, 413, 415, 422, v2=True)},
                  model_name=card.name))
        async def infer(self, name: str, request: Request, service: Service) -> Response:
            model_or_404(card, name)
            kind = media_type(request.headers)
            if kind not in (JSON, OCTET_STREAM):
                raise RequestError(415, f"Content-Type {kind!r} is not one of {[JSON, OCTET_STREAM]}")
            windows, infer = parse_v2_infer(await request.body(), input_name=input_name, length=length,
                                            channels=channels, max_windows=max_windows,
                                            header_length=request.headers.get(V2_HEADER_LENGTH))
            wanted = v2_binary_outputs(infer, V2_OUTPUTS)
            unknown = [o for o in wanted if o not in V2_OUTPUTS]
            if unknown:
                raise RequestError(422, f"outputs names {unknown}; this model has {list(V2_OUTPUTS)}")
            probabilities = await service.predictor.predict(windows)
            note_access(windows=len(windows), model=card.name, model_version=card.version, personal=False)
            labels = [card.labels[i] for i in probabilities.argmax(axis=1)]
            values = {"probabilities": ("FP32", list(probabilities.shape), probabilities),
                      "label": ("BYTES", [len(probabilities)], labels)}
            outputs, blobs = [], []
            for output, binary in wanted.items():
                datatype, shape, data = values[output]
                tensor = {"name": output, "datatype": datatype, "shape": shape}
                if binary:
                    blobs.append(encode_bytes_tensor(data) if datatype == "BYTES" else data.astype("<f4").tobytes())
                    tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
                else:
                    tensor["data"] = data.ravel().tolist() if datatype == "FP32" else data
                outputs.append(tensor)
            response = {"model_name": card.name, "model_version": card.version, "outputs": outputs}
            if isinstance(infer.id, str):
                response["id"] = infer.id
            if not blobs:
                return Response(response, media_type=MediaType.JSON)
            body, header_length = v2_message(response, blobs)
            return Response(body, media_type=OCTET_STREAM, headers={V2_HEADER_LENGTH: str(header_length)})

    return V2Controller
