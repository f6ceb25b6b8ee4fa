"""Bearer-token authentication (the windows and the study are health data): the tokens, their rules, the one
authentication step per request, and the two guards that read what it found.

The service's token comes from an environment variable or a file (a Docker or Kubernetes secret).
With neither, the service refuses to start, unless it is told explicitly that it runs insecurely on
this machine only. An optional second token may only read the study store's routes.
"""
from __future__ import annotations

import enum
import hmac
import ipaddress
import os
from pathlib import Path

MIN_TOKEN_LENGTH = 16
LOCAL_HOSTS = {"localhost"}


class ConfigurationError(RuntimeError):
    """The service cannot start as configured; the message says what to change."""


def load_token(env_var: str, token_file: str | Path | None) -> str | None:
    """The token from $env_var, else from token_file (surrounding whitespace removed), else None."""
    token = os.environ.get(env_var, "").strip()
    if not token and token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"token file {token_file}: cannot be read ({exc.strerror})") from None
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(f"the bearer token is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                                 "(for example `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return token or None


def is_loopback(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token(token: str | None, *, insecure: bool, host: str, env_var: str) -> None:
    """Refuse to start without a token, unless insecure mode was asked for on a loopback address."""
    if token is not None:
        return
    if not insecure:
        raise ConfigurationError(f"no bearer token: set ${env_var} or serve.token_file (or pass --token-file); "
                                 "for a local try-out only, --insecure-local serves without one on 127.0.0.1")
    if not is_loopback(host):
        raise ConfigurationError(f"--insecure-local serves without a token on a loopback address only, not {host}")


def check_tokens(token: str | None, read_token: str | None, *, insecure: bool, host: str, env_var: str,
                 read_env_var: str) -> None:
    """The rules for the two tokens, wherever an app is made (serve.app.create_app checks them): a token unless
    insecure on loopback (`require_token`), and a read-only token only beside a service token and unlike it."""
    require_token(token, insecure=insecure, host=host, env_var=env_var)
    if read_token is not None and (token is None or read_token == token):
        raise ConfigurationError(f"${read_env_var} (the read-only token) needs the service's token beside it, "
                                 "and must differ from it")


class Caller(enum.Enum):
    """Who is calling, as the one authentication step (`authentication`) finds it from the bearer token."""

    SERVICE = "service"  # the service's token (everyone, when the service runs without one: --insecure-local)
    READER = "reader"  # the read-only token: may read the study store's routes only
    MISSING = "missing"  # no bearer token
    INVALID = "invalid"  # a bearer token that is neither


def identify(authorization: str, token: bytes | None, read_token: bytes | None) -> Caller:
    """The caller of an `Authorization` header value (constant-time comparisons)."""
    if token is None:
        return Caller.SERVICE
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return Caller.MISSING
    given = credentials.strip().encode()
    if hmac.compare_digest(given, token):
        return Caller.SERVICE
    if read_token is not None and hmac.compare_digest(given, read_token):
        return Caller.READER
    return Caller.INVALID


def authentication(token: str | None, read_token: str | None = None):
    """ASGI middleware: who is calling, found once per request (and per WebSocket) and kept as the connection's
    `user` (a Caller) for the guards to read. It refuses nothing itself: the routes without guards (health,
    metrics, the pages) stay open."""
    expected = token.encode() if token else None
    reader = read_token.encode() if read_token else None

    def middleware(app):
        async def authenticate(scope, receive, send):
            if scope["type"] in ("http", "websocket"):
                header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
                scope["user"] = identify(header.decode("latin-1"), expected, reader)
            await app(scope, receive, send)

        return authenticate

    return middleware


def refuse(caller: Caller) -> None:
    """401 for a request without the service's or the read-only token, saying which of the two it is."""
    from litestar.exceptions import NotAuthorizedException  # start-up checks need no web stack

    if caller is Caller.MISSING:
        raise NotAuthorizedException("missing bearer token: send 'Authorization: Bearer <token>'",
                                     headers={"WWW-Authenticate": 'Bearer realm="har"'})
    raise NotAuthorizedException("invalid bearer token",
                                 headers={"WWW-Authenticate": 'Bearer realm="har", error="invalid_token"'})


# Guards are async: Litestar runs a plain-function guard in a worker thread, a thread hop per request.

async def token_required(connection, _route_handler) -> None:
    """Writes and scoring: the service's token; the read-only token is known, but may not do this (403)."""
    caller = connection.user
    if caller is Caller.SERVICE:
        return
    if caller is Caller.READER:
        from litestar.exceptions import PermissionDeniedException

        raise PermissionDeniedException("the read-only token may not write: use the service's token")
    refuse(caller)


async def may_read(connection, _route_handler) -> None:
    """Reading the study: the service's token or the read-only one."""
    if connection.user not in (Caller.SERVICE, Caller.READER):
        refuse(connection.user)
