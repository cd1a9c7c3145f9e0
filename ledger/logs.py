"""The one logging set-up of the service, its child processes and the scripts.

`text` is for people: one line per event, `time LEVEL logger: message` (time in UTC). `json` is
for machines: one JSON object per line with `time` (ISO 8601, UTC), `level`, `logger`, `message`
and the record's extra fields (`log.info("...", extra={"trades": 12})`).

What happens on every poll or request is routine and logged at DEBUG; INFO is kept for what an
operator wants to see once (a batch recorded, a run committed, a reorg, a process restarted).
The HTTP client libraries log every request at INFO: they are held at WARNING.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
_HANDLER = "gridledger"
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO is one line per HTTP request or connection, or per process start (alembic's
# "Context impl SQLiteImpl.").
CHATTY = ("httpx", "httpcore", "urllib3", "web3", "alembic")


def configure(log_format: LogFormat = "text", level: int = logging.INFO) -> None:
    """Sends every record at `level` or above to stderr in `log_format`; replaces an earlier call's
    set-up (and only that: a test runner's capture handlers stay)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in root.handlers[:]:
        if old.get_name() == _HANDLER:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # uvicorn's own loggers carry handlers of their own unless told not to: one format for all.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # datetime.fromtimestamp(record.created, timezone.utc).isoformat()
            # uvicorn's colour variant of its messages: the plain message is there already.
            reserved_attrs=[*RESERVED_ATTRS, "taskName", "color_message"],
        )
    text = logging.Formatter(TEXT_FORMAT)
    text.converter = time.gmtime  # UTC, as everywhere else
    return text
