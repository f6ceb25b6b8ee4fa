"""Benchmark: what the request log (serve/logs.py) adds to one request, in microseconds.

    python bench/logs.py [--requests 20000] [--runs 5]

Calls a do-nothing ASGI app (it answers 200 with an empty body) directly, then wrapped in
`RequestLog`: with the access event off (the level `--no-access-log` sets), as JSON lines and as
text, each written to /dev/null through the handler `har.logs.setup_logging` installs. Beside
them, in the same run, uvicorn's own access line (its AccessFormatter, the line the service wrote
before) to /dev/null: the cost it replaces. Medians of --runs runs of --requests calls each.
Writes metrics/bench_logs.json.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import median_seconds, report  # noqa: E402
from har.logs import setup_logging  # noqa: E402
from serve.logs import ACCESS_LOGGER, RequestLog  # noqa: E402

SCOPE = {"type": "http", "method": "POST", "path": "/predict", "path_template": "/predict",
         "headers": [(b"x-request-id", b"bench-0001"), (b"content-type", b"application/octet-stream")]}


async def do_nothing(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(_message):
    pass


def requests_per_run(app, n: int):
    async def many():
        for _ in range(n):
            await app(dict(SCOPE), receive, send)
    return lambda: asyncio.run(many())


def uvicorn_access_lines(n: int):
    from uvicorn.logging import AccessFormatter

    logger = logging.getLogger("bench.uvicorn_access")
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(AccessFormatter('%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                                         use_colors=False))
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO

    def lines():
        for _ in range(n):
            logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", "POST", "/predict", "1.1", 200)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.requests

    def per_request_us(fn) -> float:
        return round(median_seconds(fn, args.runs) / n * 1e6, 2)

    devnull = open(os.devnull, "w")
    sys.stderr, real_stderr = devnull, sys.stderr  # the log handler writes to whatever sys.stderr is
    try:
        wrapped = RequestLog(do_nothing)
        setup_logging("json")
        bare = per_request_us(requests_per_run(do_nothing, n))
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
        no_access = per_request_us(requests_per_run(wrapped, n))
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET)
        json_lines = per_request_us(requests_per_run(wrapped, n))
        setup_logging("text")
        text_lines = per_request_us(requests_per_run(wrapped, n))
        uvicorn_line = per_request_us(uvicorn_access_lines(n))
    finally:
        sys.stderr = real_stderr
    report({"requests_per_run": n, "runs": args.runs,
            "bare_app_us": bare,
            "request_id_only_us": round(no_access - bare, 2),  # --no-access-log: the id is still made and echoed
            "request_log_json_us": round(json_lines - bare, 2),
            "request_log_text_us": round(text_lines - bare, 2),
            "uvicorn_access_line_us": uvicorn_line,
            "json_vs_uvicorn_line": round((json_lines - bare) / uvicorn_line, 2)}, "logs")


if __name__ == "__main__":
    main()
