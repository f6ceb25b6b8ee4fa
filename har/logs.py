"""One logging setup for the service and every command line: JSON lines for a log pipeline, text for a person.

    from har.logs import add_log_arguments, setup_logging
    add_log_arguments(parser)                    # --log-format {auto,json,text}, --log-level
    setup_logging(args.log_format, args.log_level)

Every line goes to stderr (stdout stays free for what a command prints as its result) through the
standard library's logging, formatted by structlog: `json` writes one object a line with `time`
(ISO 8601, UTC), `level`, `logger`, `message`, the fields the caller gave, `request_id` while a
request is handled (serve/logs.py binds it), and `exception` (the traceback) when there is one;
`text` writes the same as one readable line. `auto` (the default, or $HAR_LOG_FORMAT) is text on
a terminal and JSON otherwise; the container sets HAR_LOG_FORMAT=json. Code that logs uses plain
`logging.getLogger(name)`, or `event_logger(name)` for events with fields (access, audit).
uvicorn's loggers propagate to the same handler, so one stream has one format. docs/operations.md
lists the fields.
"""
from __future__ import annotations

import logging
import os
import sys

import structlog

FORMATS = ("auto", "json", "text")
FORMAT_ENV = "HAR_LOG_FORMAT"

# Run on every line, whether it came from structlog (events with fields) or from a plain logging
# call (uvicorn, onnxruntime's Python side, our own log.info): both reach the same handler.
SHARED = [
    structlog.contextvars.merge_contextvars,  # request_id while a request is handled
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
]

structlog.configure(
    processors=[structlog.stdlib.filter_by_level, *SHARED, structlog.stdlib.PositionalArgumentsFormatter(),
                structlog.processors.StackInfoRenderer(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


def event_logger(name: str):
    """A structlog logger on the standard logger `name`: `event_logger("audit").info("audit", action=...)`."""
    return structlog.stdlib.get_logger(name)


def resolve_format(log_format: str | None, stream=None) -> str:
    """`json` or `text`: the one asked for, else $HAR_LOG_FORMAT, else text on a terminal and JSON otherwise."""
    log_format = log_format or os.environ.get(FORMAT_ENV) or "auto"
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} (from --log-format or ${FORMAT_ENV}) "
                         f"is not one of {list(FORMATS)}")
    if log_format != "auto":
        return log_format
    stream = stream or sys.stderr
    return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"


LEADING = ("time", "level", "logger", "message", "request_id")


def leading_keys_first(_logger, _name, event: dict) -> dict:
    """time, level, logger, message and request_id open every JSON line, for the person who reads it raw."""
    return {**{key: event.pop(key) for key in LEADING if key in event}, **event}


def renderers(log_format: str, *, colors: bool = False) -> list:
    """The last processors of a line: JSON, or structlog's console line (plain tracebacks: no local
    variables, which could hold a token or sample values)."""
    if log_format == "json":
        return [structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info,
                structlog.processors.EventRenamer("message"), leading_keys_first,
                structlog.processors.JSONRenderer(default=str, ensure_ascii=False)]
    return [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=colors, timestamp_key="time", sort_keys=False,
                                          exception_formatter=structlog.dev.plain_traceback)]


class StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever sys.stderr is when a line is written, not when logging was set up
    (pytest and other callers swap sys.stderr; a stream kept from set-up time may be closed since)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def setup_logging(log_format: str | None = None, level: str = "info") -> str:
    """Configure logging for this process (see the module docstring); returns the format used.

    One handler on the root logger (a second call replaces it). Set up by hand rather than by
    logging.config.dictConfig, which closes every handler that exists, a test runner's included.
    uvicorn is then given log_config=None (serve/__main__.py): its loggers keep no handler of their
    own and propagate here."""
    log_format = resolve_format(log_format)
    handler = StderrHandler()
    colors = log_format == "text" and sys.stderr.isatty()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=SHARED,
                                                             processors=renderers(log_format, colors=colors)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:  # their own handlers would write a second format
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("audit").setLevel(logging.INFO)  # an audit event is written whatever --log-level says
    logging.captureWarnings(True)  # warnings.warn would otherwise write its own plain-text lines
    return log_format


def add_log_arguments(parser) -> None:
    """--log-format and --log-level, as every entry point spells them."""
    parser.add_argument("--log-format", choices=FORMATS, default=None,
                        help=f"json lines or readable text (default: ${FORMAT_ENV}, else text on a terminal, "
                             "json otherwise)")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error (default info)")
