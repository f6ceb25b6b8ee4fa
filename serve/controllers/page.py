"""The page for people at `/`: upload a Garmin recording, see its timeline, quality, drift and the model.

The page itself carries no data and no secret: it is a Jinja template, a stylesheet and one
plain script served from serve/static/ (nothing from a CDN, the service may run offline).
The script asks for the bearer token once, keeps it in the tab's sessionStorage and sends it
on every call to the JSON routes, which keep their guards. Routes that exist for the pages:

- `POST /recordings/files`: a `/recordings` answer in, the files `python -m serve.batch` writes
  for it out (written by `serve.batch.outputs.write_outputs` itself, so the downloads are those files);
- `GET /drift/report`: the drift stage's HTML report (`monitor.report`), where one exists;
- `GET /study` (the study page, serve/templates/study.html.j2 + serve/static/study.js), and for it
  `GET /study/access` (may this token write?) and `GET /study/subjects/{subject}/hours` (the store's
  hour rows, one per hour of every day: the heatmap's cells). Its other data come from the store's
  routes (serve/controllers/subjects.py).
"""
from __future__ import annotations

import hmac
import json
import tempfile
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from litestar.openapi.spec import OpenAPIType, RequestBody, Schema

from serve import contract
from serve.batch.outputs import FILES as BATCH_FILES, write_outputs
from serve.controllers.subjects import SUBJECT, in_store
from serve.service import Service, may_read, token_required
from serve.validation import RequestError

ROOT = Path(__file__).resolve().parent.parent  # serve/: templates/ and static/
# Our own Jinja environment, so that escaping is visibly on for every .j2 template.
TEMPLATES = TemplateConfig(instance=JinjaTemplateEngine.from_environment(Environment(
    loader=FileSystemLoader(ROOT / "templates"), autoescape=select_autoescape(["html", "j2"]))))
SECURED = [{"bearer": []}]
# The page loads its own files only; the browser refuses anything else even if a bug asked for it.
CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


def registry_alias(model_path) -> str | None:
    """The alias of a registry URI (models:/har@champion -> champion); None for a file."""
    text = str(model_path)
    return text.rpartition("@")[2] or None if text.startswith("models:/") and "@" in text else None


def batch_files(answer: dict) -> dict[str, str]:
    """What `python -m serve.batch` writes for this answer, file name -> text."""
    with tempfile.TemporaryDirectory(prefix="har-files-") as folder:
        try:
            write_outputs(Path(folder), answer)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise RequestError(422, f"the body is not a /recordings answer: {type(error).__name__} {error} "
                                    "(expected the JSON that POST /recordings returned)") from None
        return {name: (Path(folder) / name).read_text() for name in BATCH_FILES}


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


def hour_cells(store, subject: str) -> dict:
    """The store's hour rows of a subject as JSON (the heatmap's cells): one per hour of absolute time from
    the first to the last day, with its date, local hour and start, and minutes recorded, not worn,
    uncertain and per activity."""
    from store.days import NOT_WORN, UNCERTAIN, minutes

    zone = store.participant(subject)["timezone"]
    rows = store.hour_rows(subject)
    days = store.days(subject)  # its activities are those of GET /days, in its order
    activities = list(days[0]["minutes_per_activity"]) if days else []
    cells = [{"date": row["date"].isoformat(), "hour": int(row["hour"]), "hour_start": row["hour_start"],
              "recorded_minutes": minutes(row["recorded_s"]), "not_worn_minutes": minutes(row[NOT_WORN]),
              "uncertain_minutes": minutes(row[UNCERTAIN]),
              "minutes_per_activity": {a: minutes(row[a]) for a in activities}}
             for row in rows.to_dict("records")]
    return {"subject": subject, "timezone": zone, "hours": cells}


class PageController(Controller):
    """The page and its two routes (the static files are `STATIC_FILES`)."""

    @get("/", include_in_schema=False, media_type=MediaType.HTML)
    async def page(self, service: Service) -> Template:
        settings = service.settings
        drift_report = settings.drift_report
        return Template(template_name="page.html.j2",
                        context={"alias": registry_alias(settings.model_path), "model_source": str(settings.model_path),
                                 "has_drift_report": drift_report is not None and drift_report.is_file()},
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    @get("/study", include_in_schema=False, media_type=MediaType.HTML)
    async def study(self) -> Template:
        """The study page: participants, their days, a day's recordings (the data from the /subjects routes)."""
        return Template(template_name="study.html.j2", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    @get("/study/access", tags=["study"], guards=[may_read], security=SECURED,
         summary="Whether the bearer token may write (the service's token) or only read (the read-only token)",
         operation_class=contract.documented(responses=contract.errors(401)))
    async def access(self, request: Request, service: Service) -> dict:
        # may_read let the request in with one of the two tokens; the page shows write controls for the first only.
        given = request.headers.get("authorization", "").partition(" ")[2].strip().encode()
        return {"write": service.token is None or hmac.compare_digest(given, service.token.encode())}

    @get("/study/subjects/{subject:str}/hours", tags=["study"], guards=[may_read], security=SECURED,
         summary="A subject's minutes in every local hour of every day (the study page's heatmap)",
         operation_class=contract.documented(responses=contract.errors(400, 401, 404)))
    async def study_hours(self, request: Request, subject: SUBJECT) -> dict:
        return await in_store(request.app.state, hour_cells, subject)

    @post("/recordings/files", tags=["predict"], guards=[token_required], security=SECURED, status_code=200,
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

    @get("/drift/report", tags=["monitoring"], guards=[token_required], security=SECURED, media_type=MediaType.HTML,
         summary="The drift stage's full HTML report, where one exists",
         operation_class=contract.documented(responses=contract.errors(401, 404)))
    async def report(self, service: Service) -> Response:
        drift_report = service.settings.drift_report
        if drift_report is None or not drift_report.is_file():
            raise NotFoundException(f"no drift report at {drift_report} (python -m stages.drift report writes it)")
        return Response(drift_report.read_bytes(), media_type=MediaType.HTML)


STATIC_FILES = create_static_files_router(path="/static", directories=[ROOT / "static"], include_in_schema=False)
