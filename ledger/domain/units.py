"""Units and time grid of the market (see ../shared/SETTLEMENT.md, "Units" and "Intervals")."""

from __future__ import annotations

from datetime import UTC, datetime

INTERVAL_SECONDS = 900
ZERO_ID = "0x" + "00" * 32


def is_interval_aligned(unix_seconds: int) -> bool:
    return unix_seconds % INTERVAL_SECONDS == 0


def to_datetime(unix_seconds: int) -> datetime:
    return datetime.fromtimestamp(unix_seconds, tz=UTC)


def to_unix(moment: datetime) -> int:
    """UTC Unix seconds of an aware datetime; naive datetimes are refused, not guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must carry a UTC offset")
    return int(moment.timestamp())
