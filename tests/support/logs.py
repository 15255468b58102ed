"""The worker's and the edge's log lines, read back by a test (both run in the test process)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import structlog

from warden import logs


class CapturedLogs:
    """JSON lines written while the capture was open."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[dict[str, Any]]:
        """Every line, as a dict; a line that is not JSON is kept whole under "event"."""
        records: list[dict[str, Any]] = []
        for line in self.stream.getvalue().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = {"event": line, "level": "unparsed"}
            records.append(record if isinstance(record, dict) else {"event": line})
        return records


@contextlib.contextmanager
def captured_logs() -> Iterator[CapturedLogs]:
    """`warden.logs.configure("json")` for the block, written where the test can read it.

    What it changed (structlog's configuration, the root handlers, the levels) is put back.
    """
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    logs.configure("json", "info")
    # Cached loggers would keep this configuration after the block: no caching here.
    structlog.configure(cache_logger_on_first_use=False)
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    try:
        yield CapturedLogs(stream)
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
