"""What the service has seen: drift of the received windows, the drift stage's report, and the Prometheus
exposition."""
from __future__ import annotations

from litestar import Controller, MediaType, Response, get
from litestar.exceptions import NotFoundException

from serve import contract
from serve.security import token_required
from serve.service import Service

SECURED = [{"bearer": []}]


class MonitoringController(Controller):
    tags = ["monitoring"]

    @get("/drift", guards=[token_required], security=SECURED,
         summary="Drift of the windows received so far against the model's training reference",
         operation_class=contract.documented(responses=contract.errors(401, 404)))
    async def drift(self, service: Service) -> dict:
        if service.drift is None:
            raise NotFoundException(f"no drift reference beside the model ({service.reference_path.name} next to "
                                    f"{service.model_path.name})")
        return service.drift.summary()

    @get("/drift/report", guards=[token_required], security=SECURED, media_type=MediaType.HTML,
         summary="The drift stage's full HTML report, where one exists",
         operation_class=contract.documented(responses=contract.errors(401, 404)))
    async def report(self, service: Service) -> Response:
        drift_report = service.settings.drift_report
        if drift_report is None or not drift_report.is_file():
            raise NotFoundException(f"no drift report at {drift_report} (python -m stages.drift report writes it)")
        return Response(drift_report.read_bytes(), media_type=MediaType.HTML)

    @get("/metrics", summary="Prometheus exposition", media_type="text/plain; version=0.0.4")
    async def prometheus(self, service: Service) -> Response:
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
