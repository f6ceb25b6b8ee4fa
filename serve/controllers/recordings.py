"""`POST /recordings`: a Garmin workbook pair in, its activity timeline out (scored, not stored)."""
from __future__ import annotations

from typing import Annotated

from litestar import Controller, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter

from serve import admission, contract
from serve.service import GarminUpload, Service, token_required

SECURED = [{"bearer": []}]


def recordings_controller(max_upload_bytes: int) -> type[Controller]:
    """The controller with this service's upload limit (serve.max_upload_mb) on its body."""

    class RecordingsController(Controller):
        tags = ["predict"]
        guards = [token_required]
        security = SECURED
        request_max_body_size = max_upload_bytes

        @post("/recordings", status_code=200, **admission.ADMITTED,
              summary="Activity timeline of an uploaded Garmin accelerometer + gyroscope workbook pair",
              operation_class=contract.documented(responses={**contract.errors(400, 401, 413, 415, 422),
                                                             **admission.RESPONSES}))
        async def score(self, service: Service,
                        data: Annotated[GarminUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
                        subject: Annotated[str | None, Parameter(pattern=contract.SUBJECT_PATTERN, description=(
                            "whose recording: scored by that person's model if there is one"))] = None) -> dict:
            return (await service.score_upload(data, subject)).answer.to_builtins()

    return RecordingsController
