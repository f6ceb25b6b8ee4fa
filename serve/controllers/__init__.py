"""The service's route groups, by concern, one module each: a module-level Litestar `Controller` (or, where
the OpenAPI document must state the served model's window shape, predict and v2, a function that makes one
for that model).

Handlers ask for the shared `service` and `store` (serve/service.py) by dependency injection and are
guarded by serve.security's `token_required` or `may_read`; adding a route group is adding a module here
and listing it in `serve.app.route_handlers`.
"""
