"""structlog set-up: JSON lines (or console), with secrets redacted before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from aiohttp.http_exceptions import BadHttpMessage

SENSITIVE = re.compile(r"pass(word)?|secret|token|authorization|hash|cookie|api[-_]?key", re.I)
_DSN_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I)
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    if isinstance(value, MutableMapping):
        return {k: REDACTED if SENSITIVE.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return mask_dsn(value)
    return value


def mask_dsn(text: str) -> str:
    """`scheme://user:secret@host` -> `scheme://user:***@host`."""
    return _DSN_PASSWORD.sub(r"\g<scheme>***@", text)


def redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Passwords, hashes, tokens and DSN passwords never reach a log line."""
    for key in list(event):
        if key in ("event", "timestamp", "level", "logger"):
            if isinstance(event[key], str):
                event[key] = mask_dsn(event[key])
            continue
        event[key] = REDACTED if SENSITIVE.search(key) else redact(event[key])
    return event


class ParserRefusals(logging.Filter):
    """A request aiohttp's parser refuses (a control character in a header, a request line
    over 8 KiB) is answered 400 by aiohttp itself, which logs it as an error with the
    exception attached, whose message quotes the raw line (an Authorization header, say).
    It is the caller's fault, not a fault of ours: one warning, quoting nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        if isinstance(refused, BadHttpMessage):
            record.msg, record.args = "request refused by the HTTP parser", ()
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure(fmt: str = "json", level: str = "info") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # A line below the level is dropped before any processor (redaction, timestamps) runs.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our own line per message/request says it all; the libraries speak only of trouble.
    for noisy in ("faststream", "aiormq", "aio_pika", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserRefusals) for f in server.filters):
        server.addFilter(ParserRefusals())
