"""`python -m serve`: start the inference service under uvicorn (httptools + uvloop).

Settings come from params.yaml (`serve:`, composed from conf/serve/); flags override them.
The bearer token comes from $HAR_SERVE_TOKEN or a token file; without one the service
refuses to start unless `--insecure-local` (loopback only).

Several replicas behind a load balancer (ops/haproxy/haproxy.cfg, docs/operations.md "Replicas") each
run with `--replicated` (the study store must be one they share: SQLite is refused) and `--drain-s`
(on SIGTERM they leave the balancer's rotation before they stop listening).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import uvicorn

from har.logs import add_log_arguments, setup_logging
from har.modelfile import ModelFileError
from serve.admission import read_body_before_answer
from serve.config import Settings
from serve.logs import ACCESS_LOGGER
from serve.security import ConfigurationError, load_token

ACCEPTED_GRACE_S = 1.0


class DrainingServer(uvicorn.Server):
    """uvicorn with a shutdown (SIGTERM) in three steps, so that no client sees its connection dropped:

    1. for `drain_s` seconds, `on_drain()` has made readiness answer 503 while every request is still
       served: a load balancer's health checks take this replica out of rotation (none: 0 s);
    2. stop listening, then wait ACCEPTED_GRACE_S before closing idle connections. Plain uvicorn closes a
       connection that is accepted but whose request it has not read yet, and that client sees the
       connection dropped without an answer; here every client sees either "connection refused" (nothing
       was done, safe to retry: HAProxy sends it to another replica) or its whole answer;
    3. finish the requests in flight, then exit.

    tests/test_ops_stack.py restarts one service under load, tests/test_replicas.py rolls two behind HAProxy."""

    def __init__(self, config: uvicorn.Config, *, drain_s: float = 0.0, on_drain=lambda: None):
        super().__init__(config)
        self.drain_s, self.on_drain = drain_s, on_drain

    async def shutdown(self, sockets=None) -> None:
        if self.drain_s > 0:
            self.on_drain()
            logging.getLogger("serve").info("draining: not ready for %g s before no longer listening", self.drain_s)
            await asyncio.sleep(self.drain_s)
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await asyncio.sleep(ACCEPTED_GRACE_S)  # their requests arrive; uvicorn then finishes them and closes
        await super().shutdown()


def check_shared_store(settings: Settings) -> None:
    """A replicated service's study store must be one every replica reaches: each replica's SQLite file would
    be a study of its own, so that a participant's days depended on which replica the balancer chose."""
    from sqlalchemy.engine import make_url

    from store import DEFAULT_URL

    url = make_url(settings.store_url or DEFAULT_URL)
    if url.get_backend_name() == "sqlite":
        raise ConfigurationError(
            f"--replicated needs a study store that every replica shares, and {url.render_as_string()} "
            f"({'store.url' if settings.store_url else 'the default'}) is an SQLite file on this machine: each "
            "replica would keep a study of its own. Give --store postgresql+psycopg://user@host/db (or store.url "
            "in params.yaml)")


def quiet_onnxruntime() -> None:
    """onnxruntime's C++ logger writes plain-text lines straight to stderr, past logging. Every error it
    reports also raises in Python, where the service logs it (with the request id); its warnings
    (graph optimisation notes) say nothing a client or an operator acts on."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # fatal only


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="composed parameters (default: params.yaml)")
    parser.add_argument("--model", dest="model_path", help="ONNX model (default: serve.model_path)")
    parser.add_argument("--host", help="address to bind (default: serve.host)")
    parser.add_argument("--port", type=int, help="port (default: serve.port; 0 picks a free one)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: serve.threads)")
    parser.add_argument("--store", help="study store URL (default: store.url; sqlite:///... or postgresql+psycopg://...)")
    parser.add_argument("--token-file", help="file holding the bearer token (used when $HAR_SERVE_TOKEN is unset)")
    parser.add_argument("--batching", choices=["on", "off"], help="dynamic batching (default: serve.batching.enabled)")
    parser.add_argument("--insecure-local", action="store_true",
                        help="serve WITHOUT a token, on a loopback address only (local try-outs)")
    parser.add_argument("--replicated", action="store_true",
                        help="one of several replicas behind a load balancer: refuse a store they cannot share (SQLite)")
    parser.add_argument("--drain-s", type=float, default=0.0,
                        help="on SIGTERM, answer readiness 503 for this long while still serving, so that the load "
                             "balancer's health checks take this replica out first (default 0: stop listening at once)")
    parser.add_argument("--no-access-log", action="store_true", help="skip the per-request access events")
    parser.add_argument("--http", choices=["httptools", "h11"], default="httptools",
                        help="HTTP parser (default httptools; h11 is uvicorn's pure-Python one)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (default uvloop)")
    add_log_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    log = logging.getLogger("serve")
    if args.no_access_log:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
    quiet_onnxruntime()
    batching = None if args.batching is None else args.batching == "on"
    settings = Settings.load(args.params, model_path=args.model_path, host=args.host, port=args.port,
                             threads=args.threads, token_file=args.token_file, batching=batching,
                             store_url=args.store)
    try:
        token = load_token(settings.token_env, settings.token_file)
        if args.replicated:
            check_shared_store(settings)
        read_token = load_token(settings.read_token_env, None)
        from serve.app import create_app  # it checks the tokens' rules before the model loads

        app = create_app(settings, token=token, insecure=args.insecure_local, read_token=read_token)
    except (ConfigurationError, ModelFileError) as error:
        log.error("serve: refusing to start: %s", error)
        return 2
    if token is None:
        log.warning("serving WITHOUT authentication (--insecure-local) on %s", settings.host)
    # One access event per request comes from serve/logs.py (route template, model, windows), so
    # uvicorn's own access line (raw path and query) stays off; log_config=None: its other lines go
    # through the handler setup_logging installed.
    # httptools (C) parses HTTP and uvloop (libuv) runs the event loop: on megabyte bodies uvicorn's
    # default pure-Python h11 parser cost more than the model (bench/serve.py, docs/binary-and-client.md)
    # Outermost: an early answer (a refusal, 401, 413) on a connection that closes waits for the body it did not
    # need, so that the client reads it instead of a reset (serve/admission.py).
    config = uvicorn.Config(read_body_before_answer(app), host=settings.host, port=settings.port,
                            log_level=args.log_level, http=args.http, loop=args.loop, access_log=False,
                            log_config=None, server_header=False)
    service = app.state.service
    DrainingServer(config, drain_s=args.drain_s, on_drain=lambda: setattr(service, "ready", False)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
