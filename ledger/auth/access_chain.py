"""The access log's chain of hashes: each entry carries the hash of the one before it.

An entry's hash is SHA-256 over the previous entry's hash and the canonical encoding of the
entry's own fields, so changing, removing or inserting an entry anywhere breaks a link that
`scripts/verify_index.py` reports. Pure: no I/O. The encoding is part of the stored data: an
entry written today must hash the same forever, so it never changes.

Canonical encoding: the JSON object of the fields in `FIELDS` (keys sorted, no whitespace,
non-ASCII escaped), `at` as ISO 8601 in UTC with microseconds, absent values as null, encoded in
UTF-8. The first entry's previous hash is `GENESIS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

GENESIS = "0" * 64
FIELDS = ("at", "principal_kind", "principal", "token_id", "method", "path", "query", "status", "client")


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers (`entry` maps at least `FIELDS`)."""
    return json.dumps({name: _plain(entry[name]) for name in FIELDS}, sort_keys=True, separators=(",", ":")).encode()


def link(previous_hash: str, entry: Mapping[str, Any]) -> str:
    """The hash of `entry` following the entry whose hash is `previous_hash` (64 hex digits)."""
    return hashlib.sha256(bytes.fromhex(previous_hash) + canonical(entry)).hexdigest()


@dataclass(frozen=True, slots=True)
class Break:
    """The first link that does not hold: entry `entry_id`'s `field` is not what the chain implies."""

    entry_id: int
    field: str  # "prev_hash": not the hash of the entry before it; "hash": its fields were changed
    expected: str
    stored: str


def first_break(entries: Iterable[Mapping[str, Any]]) -> Break | None:
    """The first broken link of `entries` (in id order, each with `id`, `prev_hash`, `hash` and
    `FIELDS`), or None when the whole chain holds."""
    previous = GENESIS
    for entry in entries:
        if entry["prev_hash"] != previous:
            return Break(entry["id"], "prev_hash", previous, entry["prev_hash"])
        expected = link(previous, entry)
        if entry["hash"] != expected:
            return Break(entry["id"], "hash", expected, entry["hash"])
        previous = entry["hash"]
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in an access-log entry")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, Enum):
        return value.value
    return value
