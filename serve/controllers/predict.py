"""`POST /predict`: windows in (JSON, raw float32 or .npy), a label and probabilities per window out."""
from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, post
from litestar.params import Parameter

from har.modelfile import ModelCard
from serve import contract
from serve.logs import note as note_access
from serve.personal import answered_by, check_subject
from serve.security import token_required
from serve.service import Service
from serve.validation import RequestError, parse_predict, parse_predict_npy, parse_predict_octets
from serve.wire import JSON, NPY, OCTET_STREAM, SHAPE_HEADER, media_type

SECURED = [{"bearer": []}]


def predict_controller(card: ModelCard, max_windows: int) -> type[Controller]:
    """The controller for this model: its OpenAPI body states the model's window shape and the window limit."""
    length, channels = card.window_length, card.channels

    class PredictController(Controller):
        tags = ["predict"]
        guards = [token_required]
        security = SECURED

        @post("/predict", status_code=200, summary="Label and probabilities for each window",
              operation_class=contract.documented(
                  body=contract.predict_body(length, channels, max_windows, card.input_contract.get("units")),
                  responses=contract.errors(400, 401, 413, 415, 422)))
        async def predict(self, request: Request, service: Service,
                          subject: Annotated[str | None, Parameter(pattern=contract.SUBJECT_PATTERN, description=(
                              "whose windows (binary bodies; JSON bodies may carry a subject field)"))] = None) -> dict:
            kind = media_type(request.headers)
            body, limits = await request.body(), dict(length=length, channels=channels, max_windows=max_windows)
            if kind == JSON:
                windows, in_body = parse_predict(body, **limits)
                if in_body is not None and subject is not None and in_body != subject:
                    raise RequestError(422, f"subject {in_body!r} in the body and {subject!r} in the query: name one")
                subject = check_subject(in_body) if in_body is not None else subject
            elif kind == OCTET_STREAM:
                windows = parse_predict_octets(body, request.headers.get(SHAPE_HEADER), **limits)
            elif kind == NPY:
                windows = parse_predict_npy(body, **limits)
            else:
                raise RequestError(415, f"Content-Type {kind!r} is not one of {[JSON, OCTET_STREAM, NPY]}")
            person, score = await service.person_for(subject)
            probabilities = await service.predictor.predict(windows, score)
            scored_by = (person or service.runtime).card
            note_access(windows=len(windows), model=scored_by.name, model_version=scored_by.version,
                        personal=person is not None)
            return {**answered_by(scored_by, subject, person is not None),
                    "predictions": service.predictions(probabilities)}

    return PredictController
