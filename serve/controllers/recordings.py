"""Recordings in, answers out: `POST /recordings` (a Garmin workbook pair in, its activity timeline out; scored,
not stored) and `POST /recordings/files` (a `/recordings` answer in, the files `python -m serve.batch` writes for
it out, so the page's downloads are those files)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

from litestar import Controller, Request, post
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import OpenAPIType, RequestBody, Schema
from litestar.params import Body, Parameter

from serve import admission, contract
from serve.batch.outputs import FILES, write_outputs
from serve.security import token_required
from serve.service import GarminUpload, Service
from serve.validation import RequestError

SECURED = [{"bearer": []}]


class RecordingsController(Controller):
    """The upload. Its limit (serve.max_upload_mb) is set by the app on the router around it."""

    tags = ["predict"]
    guards = [token_required]
    security = SECURED

    @post("/recordings", status_code=200, **admission.ADMITTED,
          summary="Activity timeline of an uploaded Garmin accelerometer + gyroscope workbook pair",
          operation_class=contract.documented(responses={**contract.errors(400, 401, 413, 415, 422),
                                                         **admission.RESPONSES}))
    async def score(self, service: Service,
                    data: Annotated[GarminUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
                    subject: Annotated[str | None, Parameter(pattern=contract.SUBJECT_PATTERN, description=(
                        "whose recording: scored by that person's model if there is one"))] = None) -> dict:
        return (await service.score_upload(data, subject)).answer.to_builtins()


def batch_files(answer: dict) -> dict[str, str]:
    """What `python -m serve.batch` writes for this answer (its JSON form), file name -> text."""
    with tempfile.TemporaryDirectory(prefix="har-files-") as folder:
        try:
            write_outputs(Path(folder), answer)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise RequestError(422, f"the body is not a /recordings answer: {type(error).__name__} {error} "
                                    "(expected the JSON that POST /recordings returned)") from None
        return {name: (Path(folder) / name).read_text() for name in FILES}


# What POST /recordings answered: its tables are what the files are written from.
ANSWER_BODY = RequestBody(required=True, description="The JSON answer of POST /recordings, as it was returned",
                          content=contract.json_content(Schema(
                              type=OpenAPIType.OBJECT, required=["timeline", "episodes", "minutes_per_activity",
                                                                 "uncertain_minutes", "not_worn_minutes"],
                              properties={"timeline": Schema(type=OpenAPIType.ARRAY),
                                          "episodes": Schema(type=OpenAPIType.ARRAY),
                                          "minutes_per_activity": Schema(type=OpenAPIType.OBJECT),
                                          "uncertain_minutes": Schema(type=OpenAPIType.NUMBER),
                                          "not_worn_minutes": Schema(type=OpenAPIType.NUMBER)})))


class FilesController(Controller):
    """An answer's files, under the service's ordinary body limit (serve.max_body_mb)."""

    tags = ["predict"]
    guards = [token_required]
    security = SECURED

    @post("/recordings/files", status_code=200,
          summary="The JSON and CSV files `python -m serve.batch` writes, for a /recordings answer",
          operation_class=contract.documented(body=ANSWER_BODY, responses=contract.errors(400, 401, 413, 422)))
    async def files(self, request: Request) -> dict:
        try:
            answer = json.loads(await request.body())
        except ValueError as error:
            raise RequestError(400, f"the body is not JSON ({error})") from None
        if not isinstance(answer, dict):
            raise RequestError(422, "the body is not a /recordings answer (expected a JSON object)")
        return batch_files(answer)
