"""The service's route groups, one module each: a Litestar `Controller` (or, where the OpenAPI
document must name the served model's contract, a function that makes one for that model).

Each handler asks for the shared `service` (serve/service.py) by dependency injection; adding a
route group is adding a module here and listing it in `serve.app.route_handlers`.
"""
