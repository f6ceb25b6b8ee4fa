"""The study store over HTTP: a participant's recordings stored and scored, their days and hours, erasure.

    POST   /subjects/{subject}/recordings        the /recordings pair, scored and stored (201; 200 when stored)
    GET    /subjects                             everyone: recordings, first and last day, valid days
    GET    /subjects/{subject}/days?from=&to=    one object per local day (CSV with Accept: text/csv, or days.csv)
    GET    /subjects/{subject}/hours             the 24-hour profile: all days, weekdays, weekend days
    GET    /subjects/{subject}/recordings        the stored recordings and their scorings
    GET    /subjects/{subject}/recordings/{id}   one of them, with its newest scoring's answer
    DELETE /subjects/{subject}                   erase everything of the person; the counts

Writes need the service's token; the optional read-only token ($HAR_SERVE_READ_TOKEN) may read only
(403 on writes). The store itself (store/) has no HTTP; it opens on the first request that needs it.
"""
from __future__ import annotations

from datetime import date
from typing import Annotated

from litestar import Controller, HttpMethod, Request, Response, delete, get, post, route
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Schema
from litestar.params import Body, Parameter

from serve import admission, contract
from serve.security import may_read, token_required
from serve.service import GarminUpload, Service, StudyStore
from store.identity import content_hash

SECURED = [{"bearer": []}]
WRITER = "token:service"  # the audit trail's actor for writes: only the service's token may write here
CSV = "text/csv"
SUBJECT = Annotated[str, Parameter(pattern=contract.SUBJECT_PATTERN, description="pseudonymous subject id")]
OBJECT, LIST = Schema(type=OpenAPIType.OBJECT), Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT))


def ok(description: str, schema: Schema = OBJECT, *, csv: bool = False) -> dict:
    content = {"application/json": OpenAPIMediaType(schema=schema)}
    if csv:
        content[CSV] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
    return {"200": OpenAPIResponse(description=description, content=content)}


def days_csv(study, subject: str, date_from, date_to) -> str:
    from store.collate import days_csv  # imported on first use: the service starts without the store's packages

    return days_csv(study, subject, date_from, date_to)


class SubjectsController(Controller):
    """The store's routes. Its upload limit (serve.max_upload_mb) is set by the app on the router around it."""

    path = "/subjects"
    tags = ["study"]
    security = SECURED

    @post("/{subject:str}/recordings", guards=[token_required], status_code=201, **admission.ADMITTED,
          summary="Store a Garmin workbook pair for a subject: scored by their model (else the generic one)",
          operation_class=contract.documented(responses={
              **ok("The same content scored by the same model was already stored: the stored recording"),
              "201": OpenAPIResponse(description="Stored: id, start, end, local days and the /recordings answer",
                                     content=contract.json_content(OBJECT)),
              **contract.errors(400, 401, 403, 413, 415, 422), **admission.RESPONSES}))
    async def ingest(self, service: Service, store: StudyStore, subject: SUBJECT,
                     data: Annotated[GarminUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
                     timezone: Annotated[str | None, Parameter(max_length=64, description=(
                         "the participant's IANA time zone, for a new participant (default store.timezone)"))]
                     = None) -> Response:
        scored = await service.score_upload(data, subject)
        digest = content_hash(scored.raw["accelerometer"], scored.raw["gyroscope"])
        stored, created = await store.call(lambda study: study.ingest(
            subject, content_hash=digest, fused=scored.prepared.fused, answer=scored.answer.to_builtins(),
            timezone=timezone, actor=WRITER))
        return Response(stored, status_code=201 if created else 200)

    @route("/{subject:str}/recordings", http_method=HttpMethod.OPTIONS, include_in_schema=False, status_code=204,
           response_headers={"Allow": "GET, OPTIONS, POST"})
    async def allowed_on_recordings(self) -> None:
        # Litestar 2 answers OPTIONS on a path with two handlers with the first one's method only
        # (litestar-org/litestar#4169, fixed in 3): say both here. A controller's handlers register in
        # name order (dir()), and this one must come before the GET and the POST so that it is the path's one.
        return None

    @get("/", guards=[may_read], summary="Every subject: recordings, first and last day, days and valid days",
         operation_class=contract.documented(responses={**ok("The subjects", LIST), **contract.errors(401)}))
    async def subjects(self, store: StudyStore) -> list[dict]:
        return await store.call(lambda study: study.subjects())

    @get("/{subject:str}/days", guards=[may_read], summary="One entry per local day (JSON, or CSV by Accept)",
         operation_class=contract.documented(responses={
             **ok("The days from the first to the last recorded one, within from..to", LIST, csv=True),
             **contract.errors(400, 401, 404)}))
    async def days(self, request: Request, store: StudyStore, subject: SUBJECT,
                   date_from: Annotated[date | None, Parameter(query="from", description="first day, YYYY-MM-DD")]
                   = None,
                   date_to: Annotated[date | None, Parameter(query="to", description="last day, YYYY-MM-DD")]
                   = None) -> Response:
        if CSV in request.headers.get("accept", ""):
            return Response(await store.call(days_csv, subject, date_from, date_to), media_type=CSV)
        return Response(await store.call(lambda study: study.days(subject, date_from, date_to)))

    @get("/{subject:str}/days.csv", guards=[may_read], media_type=CSV, summary="The days as CSV",
         operation_class=contract.documented(responses=contract.errors(400, 401, 404)))
    async def days_as_csv(self, store: StudyStore, subject: SUBJECT,
                          date_from: Annotated[date | None, Parameter(query="from")] = None,
                          date_to: Annotated[date | None, Parameter(query="to")] = None) -> Response:
        return Response(await store.call(days_csv, subject, date_from, date_to), media_type=CSV)

    @get("/{subject:str}/hours", guards=[may_read],
         summary="24-hour profile per activity and of wear: all days, weekdays, weekend days",
         operation_class=contract.documented(responses={**ok("The profiles"), **contract.errors(400, 401, 404)}))
    async def hours(self, store: StudyStore, subject: SUBJECT) -> dict:
        return await store.call(lambda study: study.hours(subject))

    @get("/{subject:str}/recordings", guards=[may_read], summary="The subject's stored recordings",
         operation_class=contract.documented(responses={**ok("The recordings", LIST),
                                                        **contract.errors(400, 401, 404)}))
    async def recordings(self, store: StudyStore, subject: SUBJECT) -> list[dict]:
        return await store.call(lambda study: study.recordings(subject))

    @get("/{subject:str}/recordings/{recording_id:int}", guards=[may_read],
         summary="A stored recording with its scorings and the newest scoring's answer",
         operation_class=contract.documented(responses={**ok("The recording"), **contract.errors(400, 401, 404)}))
    async def recording(self, store: StudyStore, subject: SUBJECT, recording_id: int) -> dict:
        return await store.call(lambda study: study.recording(subject, recording_id))

    @delete("/{subject:str}", guards=[token_required], status_code=200,
            summary="Erase every row, blob and personal model of a subject; an audit row keeps the counts",
            operation_class=contract.documented(responses={**ok("What was removed"),
                                                           **contract.errors(400, 401, 403, 404)}))
    async def erase(self, store: StudyStore, subject: SUBJECT) -> dict:
        return await store.call(lambda study: study.erase(subject, actor=WRITER))
