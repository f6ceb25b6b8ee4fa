"""Bearer-token authentication for the prediction routes (the windows are health data).

The token comes from an environment variable or a file (a Docker or Kubernetes secret). With
neither, the service refuses to start, unless it is told explicitly that it runs insecurely
on this machine only.
"""
from __future__ import annotations

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


def bearer_guard(token: str | None, read_token: str | None = None, *, write: bool = True):
    """A Litestar guard: requests must carry `Authorization: Bearer <token>` (no-op when token is None).

    `read_token` (the study store's read-only token) is accepted too where `write` is False, and refused
    with 403 where it is True: it is known, but may not do this.
    """
    from litestar.exceptions import NotAuthorizedException, PermissionDeniedException  # start-up checks need no web stack

    expected = token.encode() if token else None
    reader = read_token.encode() if read_token else None

    async def guard(connection, _route_handler) -> None:
        # async: Litestar runs a plain-function guard in a worker thread, a thread hop per request
        if expected is None:
            return
        header = connection.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            raise NotAuthorizedException("missing bearer token: send 'Authorization: Bearer <token>'",
                                         headers={"WWW-Authenticate": 'Bearer realm="har"'})
        given = credentials.strip().encode()
        if hmac.compare_digest(given, expected):
            return
        if reader is not None and hmac.compare_digest(given, reader):
            if write:
                raise PermissionDeniedException("the read-only token may not write: use the service's token")
            return
        raise NotAuthorizedException("invalid bearer token",
                                     headers={"WWW-Authenticate": 'Bearer realm="har", error="invalid_token"'})

    return guard
