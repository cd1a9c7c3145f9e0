"""The scalar formats of the API, each one validator plus its OpenAPI description.

Requests: times are ISO 8601 strings with a UTC offset (naive times are refused, never guessed),
in whole seconds, converted to UTC Unix seconds for the chain; energy and money are strict JSON
integers (a float or a numeric string is refused); nonces are uint256 as a decimal string or an
integer; addresses are 0x + 40 hex (a mixed-case address must carry a valid EIP-55 checksum).
Responses: times as ISO 8601 with `+00:00`, addresses checksummed, ids and hashes 0x lowercase.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

from eth_utils import is_checksum_address, to_checksum_address
from pydantic import Field, PlainSerializer, PlainValidator, Strict, WithJsonSchema

from ledger.domain.units import to_datetime, to_unix

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1
# The last second a datetime can name (9999-12-31T23:59:59Z); later uint64 values have no ISO form.
MAX_ISO_UNIX = 253_402_300_799

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
_BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"[0-9]{1,78}")
_MAX_TIME_TEXT = 40

TIME_EXAMPLE = "2030-06-01T12:00:00+00:00"


def parse_time(value: Any) -> int:
    """UTC Unix seconds of an ISO 8601 date-time that carries its UTC offset."""
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 date-time string with a UTC offset, e.g. {TIME_EXAMPLE}")
    if len(value) > _MAX_TIME_TEXT:
        raise ValueError("is too long for an ISO 8601 date-time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"is not an ISO 8601 date-time, e.g. {TIME_EXAMPLE}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("has no UTC offset: naive times are refused (add +00:00, Z or the local offset)")
    if moment.microsecond:
        raise ValueError("must be a whole second: the chain keeps seconds")
    seconds = to_unix(moment)
    if seconds < 0:
        raise ValueError("is before 1970-01-01T00:00:00Z")
    return seconds


def render_time(unix_seconds: int) -> str:
    """`to_datetime(unix_seconds).isoformat()`, e.g. 2030-06-01T12:00:00+00:00, at a fraction of its
    cost (a page of trades renders three times per row): the date is looked up by day."""
    day, second = divmod(unix_seconds, 86_400)
    if day < 0 or day >= _MAX_DAY:
        return to_datetime(unix_seconds).isoformat()
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return f"{_date(day)}T{hour:02d}:{minute:02d}:{second:02d}+00:00"


_MAX_DAY = (MAX_ISO_UNIX + 1) // 86_400


@lru_cache(maxsize=4096)
def _date(day: int) -> str:
    return to_datetime(day * 86_400).date().isoformat()


def render_optional_time(unix_seconds: int | None) -> str | None:
    """ISO 8601, or None for a uint64 time beyond year 9999 (a deadline meaning "never")."""
    if unix_seconds is None or unix_seconds > MAX_ISO_UNIX:
        return None
    return render_time(unix_seconds)


def _address(value: Any) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ValueError("must be an address: 0x followed by 40 hex digits")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise ValueError("has mixed case but an invalid EIP-55 checksum (a typo?)")
    return to_checksum_address(value)


def _signature(value: Any) -> bytes:
    if not isinstance(value, str) or not _SIGNATURE.fullmatch(value):
        raise ValueError("must be a 65-byte signature (r, s, v): 0x followed by 130 hex digits")
    return bytes.fromhex(value[2:])


def _bytes32(value: Any) -> str:
    if not isinstance(value, str) or not _BYTES32.fullmatch(value):
        raise ValueError("must be 0x followed by 64 hex digits")
    return value.lower()


def _uint256(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an unsigned integer (uint256): a decimal string or a JSON integer")
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError("must be a decimal string of digits only (uint256)")
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise ValueError("must be an unsigned integer below 2**256: a decimal string or a JSON integer")
    return value


def _string_schema(pattern: str, description: str, example: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "description": description, "examples": [example]})


# --- request formats --------------------------------------------------------------------------

IsoTime = Annotated[
    int,
    PlainValidator(parse_time),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 with a UTC offset, whole seconds; naive times are refused",
            "examples": [TIME_EXAMPLE],
        }
    ),
]
Address = Annotated[
    str,
    PlainValidator(_address),
    _string_schema("^0x[0-9a-fA-F]{40}$", "EVM address; mixed case must be EIP-55", "0x" + "ab" * 20),
]
Signature = Annotated[
    bytes,
    PlainValidator(_signature),
    _string_schema("^0x[0-9a-fA-F]{130}$", "65-byte ECDSA signature (r, s, v), v 27 or 28", "0x" + "11" * 65),
]
Bytes32 = Annotated[
    str,
    PlainValidator(_bytes32),
    _string_schema("^0x[0-9a-fA-F]{64}$", "32 bytes, hex", "0x" + "00" * 32),
]
Uint64 = Annotated[int, Strict(), Field(ge=0, le=UINT64_MAX)]
Uint256 = Annotated[
    int,
    PlainValidator(_uint256),
    WithJsonSchema(
        {
            "oneOf": [{"type": "string", "pattern": "^[0-9]{1,78}$"}, {"type": "integer", "minimum": 0}],
            "description": "uint256: a decimal string (recommended; JSON numbers lose precision) or an integer",
            "examples": ["18446744073709551615"],
        }
    ),
]

# --- response formats -------------------------------------------------------------------------

UtcTime = Annotated[
    int,
    PlainSerializer(render_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": [TIME_EXAMPLE]}),
]
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda moment: moment.astimezone(UTC).isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

# --- the published schema ---------------------------------------------------------------------

# The integer bounds above 2**53 the API declares: FastAPI's OpenAPI model keeps bounds as floats,
# which cannot hold them, so they are put back from here.
_LARGE_BOUNDS = {float(bound): bound for bound in (UINT64_MAX, UINT256_MAX, 2**63 - 1)}
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def exact_integers(schema: Any) -> None:
    """Rewrites, in place, the float bounds of integer schemas in an OpenAPI document as the
    exact integers declared (18446744073709551615, not 1.8446744073709552e+19)."""
    if isinstance(schema, list):
        for item in schema:
            exact_integers(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "integer":
        for key in _BOUNDS:
            bound = schema.get(key)
            if isinstance(bound, float):
                schema[key] = _exact(bound)
    for value in schema.values():
        exact_integers(value)


def _exact(bound: float) -> int:
    if abs(bound) < 2**53:
        if not bound.is_integer():
            raise ValueError(f"an integer schema declares the fractional bound {bound}")
        return int(bound)
    if bound not in _LARGE_BOUNDS:
        raise ValueError(f"the integer bound {bound:.0f} lost precision: add it to api.types._LARGE_BOUNDS")
    return _LARGE_BOUNDS[bound]
