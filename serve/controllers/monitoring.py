"""What the service has seen: drift of the received windows, and the Prometheus exposition."""
from __future__ import annotations

from litestar import Controller, Response, get
from litestar.exceptions import NotFoundException

from serve import contract
from serve.service import Service, token_required

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

    @get("/metrics", summary="Prometheus exposition", media_type="text/plain; version=0.0.4")
    async def prometheus(self, service: Service) -> Response:
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
