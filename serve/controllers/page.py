"""The pages for people: `/` (upload a Garmin recording, see its timeline, quality, drift and the model) and
`/study` (participants, their days, a day's recordings).

A page itself carries no data and no secret: it is a Jinja template, a stylesheet and plain scripts
served from serve/static/ (nothing from a CDN, the service may run offline). The script asks for the
bearer token once, keeps it in the tab's sessionStorage and sends it on every call to the JSON routes,
which keep their guards. The data come from those routes: `POST /recordings` and `POST /recordings/files`
(serve/controllers/recordings.py), `GET /drift/report` (serve/controllers/monitoring.py), the store's
routes (serve/controllers/subjects.py) and the study page's own two (serve/controllers/study.py).
"""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Controller, MediaType, get
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from serve.service import Service

ROOT = Path(__file__).resolve().parent.parent  # serve/: templates/ and static/
# Our own Jinja environment, so that escaping is visibly on for every .j2 template.
TEMPLATES = TemplateConfig(instance=JinjaTemplateEngine.from_environment(Environment(
    loader=FileSystemLoader(ROOT / "templates"), autoescape=select_autoescape(["html", "j2"]))))
# The page loads its own files only; the browser refuses anything else even if a bug asked for it.
CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


def registry_alias(model_path) -> str | None:
    """The alias of a registry URI (models:/har@champion -> champion); None for a file."""
    text = str(model_path)
    return text.rpartition("@")[2] or None if text.startswith("models:/") and "@" in text else None


class PageController(Controller):
    """The two pages (the static files are `STATIC_FILES`)."""

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


STATIC_FILES = create_static_files_router(path="/static", directories=[ROOT / "static"], include_in_schema=False)
