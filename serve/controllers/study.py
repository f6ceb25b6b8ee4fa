"""What the study page (`GET /study`, serve/controllers/page.py) asks for beside the store's own routes
(serve/controllers/subjects.py): may this token write, and a subject's hour cells for the heatmap."""
from __future__ import annotations

from litestar import Controller, Request, get

from serve import contract
from serve.controllers.subjects import SUBJECT
from serve.security import Caller, may_read
from serve.service import StudyStore

SECURED = [{"bearer": []}]


def hour_cells(store, subject: str) -> dict:
    """The store's hour rows of a subject as JSON (the heatmap's cells): one per hour of absolute time from
    the first to the last day, with its date, local hour and start, minutes recorded, not worn and uncertain,
    and per activity the estimated minutes, their 90 % interval and the counted minutes (store.days'
    one shape of minutes)."""
    from store.days import NOT_WORN, UNCERTAIN, estimated, minutes, minutes_fields

    zone = store.participant(subject)["timezone"]
    rows = store.hour_rows(subject)
    days = store.days(subject)  # its activities are those of GET /days, in its order
    activities = list(days[0]["minutes_per_activity"]) if days else []
    worn = (rows["recorded_s"] - rows[NOT_WORN]).to_numpy(float) if len(rows) else []
    estimate, bounds, _ = estimated(rows, activities, worn, len(rows))
    cells = [{"date": row["date"].isoformat(), "hour": int(row["hour"]), "hour_start": row["hour_start"],
              "recorded_minutes": minutes(row["recorded_s"]), "not_worn_minutes": minutes(row[NOT_WORN]),
              "uncertain_minutes": minutes(row[UNCERTAIN]),
              **minutes_fields(activities, estimate[k], bounds[k], [row.get(a, 0.0) for a in activities])}
             for k, row in enumerate(rows.to_dict("records"))]
    return {"subject": subject, "timezone": zone, "hours": cells}


class StudyController(Controller):
    path = "/study"
    tags = ["study"]
    guards = [may_read]
    security = SECURED

    @get("/access", summary="Whether the bearer token may write (the service's token) or only read (the read-only "
                            "token)", operation_class=contract.documented(responses=contract.errors(401)))
    async def access(self, request: Request) -> dict:
        # The page shows write controls for the service's token only (serve.security found who is calling).
        return {"write": request.user is Caller.SERVICE}

    @get("/subjects/{subject:str}/hours",
         summary="A subject's minutes in every local hour of every day (the study page's heatmap)",
         operation_class=contract.documented(responses=contract.errors(400, 401, 404)))
    async def hours(self, store: StudyStore, subject: SUBJECT) -> dict:
        return await store.call(hour_cells, subject)
