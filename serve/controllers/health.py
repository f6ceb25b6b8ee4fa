"""Liveness, readiness and what the served model is."""
from __future__ import annotations

from litestar import Controller, Response, get
from litestar.openapi.spec import OpenAPIType, Schema

from har.timeline import STATES
from serve import contract
from serve.service import Service


class HealthController(Controller):
    tags = ["health"]

    @get("/health", summary="Alive")
    async def health(self) -> dict:
        return {"status": "alive"}

    # /health/ready: the path the load balancer (ops/haproxy) and the Kubernetes probe check; /ready as before
    @get(["/health/ready", "/ready"], summary="Model loaded, checksum verified, batcher running; 503 while draining",
         operation_class=contract.documented(responses={"503": contract.status_response(
             "Not ready yet", status=Schema(type=OpenAPIType.STRING, enum=["not ready"]))}))
    async def ready(self, service: Service) -> Response:
        if not service.ready:
            return Response({"status": "not ready"}, status_code=503)
        card = service.card
        return Response({"status": "ready", "model": card.name, "version": card.version, "sha256": card.sha256})

    @get("/model", tags=["model"], summary="Model name, version, labels, input contract and test metrics")
    async def model(self, service: Service) -> dict:
        card, settings = service.card, service.settings
        # A recording's timeline may say more than the model's labels: what the two states mean, and when.
        timeline = {"labels": [*card.labels, *STATES], "states": STATES, "abstain_threshold": card.abstain_threshold,
                    "wear_rule": settings.wear.describe()}
        return {**card.describe(), "registry": service.registry, "timeline": timeline,
                "serving": {"threads": settings.threads, "batching": settings.batching,
                            "max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                            "max_windows_per_request": settings.max_windows_per_request}}
