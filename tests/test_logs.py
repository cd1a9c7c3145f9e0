"""The one logging set-up: text for people, one JSON object per line for machines, and the HTTP
clients' line per request held back."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from ledger import logs


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in logs.CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_json_is_one_object_per_line_with_time_level_logger_message_and_extras(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("json")
    logging.getLogger("ledger.services.relayer").info("batch recorded in block %d", 7, extra={"recorded": 12})
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logging.getLogger("gridledger").exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "ledger.services.relayer"
    assert first["message"] == "batch recorded in block 7" and first["recorded"] == 12
    assert datetime.fromisoformat(first["time"]).utcoffset() is not None
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError" in second["exc_info"]


def test_http_request_lines_are_held_back_and_a_second_set_up_replaces_the_first(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("text")
    logs.configure("text")
    logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1:8545 "HTTP/1.1 200 OK"')
    logging.getLogger("httpx").warning("connection reset")
    logging.getLogger("ledger").debug("routine")
    logging.getLogger("ledger").info("meaningful")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 3)[3] for line in lines] == ["httpx: connection reset", "ledger: meaningful"]
