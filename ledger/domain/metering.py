"""Meter-reading and reference-price files, parsed and checked before anything is imported.

Pure: text (or an already decoded JSON document) in, domain values or one `MeteringFileError` out.
Every error names its row and field, and all errors of a file are collected (the first
`MAX_ERRORS` are kept, all are counted) so that the sender fixes the file in one go; a file with
any error is refused as a whole.

Formats
-------
Readings, CSV: a header row naming the columns (any order, case-insensitive)
`participant,interval_start,injected_wh,withdrawn_wh[,quality]`, then one reading per row.
Readings, JSON: `{"readings": [{"participant", "intervalStart", "injectedWh", "withdrawnWh",
"quality"?}, ...], "supersedes"?: "0x…"}`.
Prices, CSV: `interval_start,price_minor_per_mwh`. Prices, JSON: `{"prices": [{"intervalStart",
"priceMinorPerMWh"}, ...], "periodStart"?, "periodEnd"?, "supersedes"?}`.

Values
------
- `interval_start`: either an ISO 8601 date-time **with** its UTC offset (`2030-06-01T12:15:00Z`,
  `…+08:00`; naive times are refused, never guessed) or whole Unix seconds (digits only in CSV or
  a JSON string, or a JSON integer). Both are accepted because meter-data systems export Unix
  seconds and people write ISO 8601; neither is ambiguous. It must start a 15-minute interval
  (a multiple of 900 s, SETTLEMENT.md "Intervals and periods"), at the latest in year 9999.
- Wh and prices: whole non-negative numbers. In CSV digits only ("1.5", "1e3", "-3", "+3" are
  refused); in JSON integers only (1.5, 1e3, 1000.0 and "1000" are refused). At most 2**63 - 1,
  the largest BIGINT (the chain takes uint64).
- `participant`: 0x + 40 hex digits (mixed case must be a valid EIP-55 checksum) of a registered
  participant: the caller passes `registered`, a container of EIP-55 addresses (the metering
  service's asks the index, then the chain).
- `quality`: measured (the default when empty or absent), estimated or substituted.
- One reading per (participant, interval) and one price per interval in a file: SETTLEMENT.md
  calls two readings of one participant and interval in one import an input error.
- A price file covers every interval of its period exactly once (IMeterData); the period is the
  one given (`periodStart`/`periodEnd` in JSON, or the caller's), else [first, last + 900 s).

Rows: CSV errors carry the 1-based line number (the header is line 1) and the column name; JSON
errors carry the 0-based index in the list and the member name. Errors about the file as a whole
(the JSON document, the period, missing prices) have no row.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from eth_utils import is_checksum_address, to_checksum_address

from ledger.domain.settlement import MeterReading, ReadingQuality
from ledger.domain.units import INTERVAL_SECONDS, to_datetime, to_unix
from ledger.errors import LedgerError, ValidationError

FileFormat = Literal["csv", "json"]

MAX_ERRORS = 100
MAX_QUANTITY = 2**63 - 1  # the largest BIGINT; the leaves take uint64
# 9999-12-31T23:59:59Z, the last second ISO 8601 (and Python's datetime) can name.
MAX_TIME = 253_402_300_799

READING_CSV_COLUMNS = ("participant", "interval_start", "injected_wh", "withdrawn_wh", "quality")
PRICE_CSV_COLUMNS = ("interval_start", "price_minor_per_mwh")
_OPTIONAL_COLUMNS = frozenset({"quality"})

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_DIGITS = re.compile(r"[0-9]+")
_HASH32 = re.compile(r"0x[0-9a-fA-F]{64}")
_QUALITY_CODES = frozenset(quality.value for quality in ReadingQuality)
_QUALITIES = ", ".join(quality.value for quality in ReadingQuality)


# --- results and errors --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    row: int | None  # CSV: 1-based line; JSON: 0-based index; None: the file as a whole
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        where = f"field {self.field}" if self.row is None else f"row {self.row}, field {self.field}"
        return f"{where}: {self.message}"


class MeteringFileError(ValidationError):
    """A readings or prices file (or API body) with errors; nothing of it was imported.

    Context: `errors` (up to MAX_ERRORS `{row, field, message}`), `error_count` (all of them),
    and for prices that miss intervals of their period, `intervals` (their starts, every one, as
    `missing_reference_price` names them)."""

    code = "metering_file_invalid"

    def __init__(
        self,
        what: str,
        errors: Sequence[RowError],
        error_count: int | None = None,
        intervals: Sequence[int] = (),
    ) -> None:
        count = len(errors) if error_count is None else error_count
        plural = "error" if count == 1 else "errors"
        first = f"; first: {errors[0]}" if errors else ""
        context: dict[str, Any] = {"errors": [error.as_dict() for error in errors], "error_count": count}
        if intervals:
            context["intervals"] = list(intervals)
        super().__init__(f"{count} {plural} in the {what}, nothing was imported{first}", **context)
        self.errors = list(errors)
        self.error_count = count


class BatchIntegrityError(LedgerError):
    """A stored batch whose rows no longer rebuild its committed root: the store was altered.
    A server fault (500), never the request's."""

    code = "batch_integrity_error"


@dataclass(frozen=True)
class ReadingsFile:
    readings: list[MeterReading]  # in file order
    supersedes: str | None = None  # JSON only; 0x lowercase


@dataclass(frozen=True)
class PricesFile:
    period_start: int
    period_end: int
    prices: dict[int, int]  # interval start -> price (minor/MWh), ascending
    supersedes: str | None = None


class _Errors:
    """Collects a file's errors: keeps the first `limit`, counts them all."""

    def __init__(self, what: str, limit: int = MAX_ERRORS) -> None:
        self.what = what
        self.limit = limit
        self.kept: list[RowError] = []
        self.count = 0
        self.missing_intervals: list[int] = []

    def add(self, row: int | None, field: str, message: str) -> None:
        self.count += 1
        if len(self.kept) < self.limit:
            self.kept.append(RowError(row, field, message))

    def raise_if_any(self) -> None:
        if self.count:
            raise MeteringFileError(self.what, self.kept, self.count, self.missing_intervals)


# --- values --------------------------------------------------------------------------------

# What a row validator is given: CSV cells are text; JSON and Python values are typed.
_TEXT = True
_TYPED = False


def iso(unix_seconds: int) -> str:
    return to_datetime(unix_seconds).isoformat()


def _missing(raw: Any, text: bool) -> bool:
    return raw is None or (text and isinstance(raw, str) and not raw.strip())


@lru_cache(maxsize=65_536)
def _checksummed(value: str) -> tuple[str | None, str | None]:
    # Cached: a file names each of its ~1,000 participants ~100 times, and EIP-55 costs a keccak.
    if not _ADDRESS.fullmatch(value):
        return None, "must be an address: 0x followed by 40 hex digits"
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        return None, "has mixed case but an invalid EIP-55 checksum (a typo?)"
    return to_checksum_address(value), None


def _address(raw: Any, registered: Container[str] | None) -> tuple[str | None, str | None]:
    """(checksummed address, None) or (None, why not)."""
    if not isinstance(raw, str):
        return None, "must be an address: 0x followed by 40 hex digits"
    address, why = _checksummed(raw.strip())
    if address is not None and registered is not None and address not in registered:
        return None, f"{address} is not a registered participant"
    return address, why


def _time(raw: Any, text: bool) -> tuple[int | None, str | None]:
    """Unix seconds of an ISO 8601 time with offset, or of Unix seconds given as digits/integer."""
    if isinstance(raw, bool) or (not text and isinstance(raw, float)):
        return None, "must be an ISO 8601 time with a UTC offset or whole Unix seconds"
    if isinstance(raw, int) and not text:
        seconds = raw
    elif isinstance(raw, str):
        value = raw.strip()
        if _DIGITS.fullmatch(value):
            seconds = int(value)
        else:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None, "is neither an ISO 8601 time with a UTC offset nor whole Unix seconds"
            if moment.tzinfo is None or moment.utcoffset() is None:
                return None, "has no UTC offset: naive times are refused (add Z, +00:00 or the local offset)"
            if moment.microsecond:
                return None, "must be a whole second"
            seconds = to_unix(moment)
    else:
        return None, "must be an ISO 8601 time with a UTC offset or whole Unix seconds"
    if seconds < 0:
        return None, "is before 1970-01-01T00:00:00Z"
    if seconds > MAX_TIME:
        return None, "is after 9999-12-31T23:59:59Z"
    return seconds, None


def _interval(raw: Any, text: bool) -> tuple[int | None, str | None]:
    seconds, why = _time(raw, text)
    if seconds is not None and seconds % INTERVAL_SECONDS:
        return None, f"{iso(seconds)} does not start a 15-minute interval (a multiple of {INTERVAL_SECONDS} s)"
    return seconds, why


def _quantity(raw: Any, text: bool, unit: str) -> tuple[int | None, str | None]:
    """A whole number >= 0: CSV digits only, JSON integers only."""
    if text:
        value = raw.strip() if isinstance(raw, str) else raw
        if not isinstance(value, str) or not _DIGITS.fullmatch(value):
            if isinstance(value, str) and value.startswith("-"):
                return None, f"must not be negative: {value!r}"
            return None, f"must be a whole number of {unit}, digits only (no sign, point or exponent): {value!r}"
        number = int(value)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
        if number < 0:
            return None, f"must not be negative: {number}"
    elif isinstance(raw, float):
        return None, f"must be a JSON integer of {unit} (no fraction or exponent): {raw!r}"
    else:
        return None, f"must be a JSON integer of {unit}, not {type(raw).__name__}"
    if number > MAX_QUANTITY:
        return None, f"is too large (at most {MAX_QUANTITY})"
    return number, None


def _quality(raw: Any, text: bool) -> tuple[ReadingQuality | None, str | None]:
    if _missing(raw, text):
        return ReadingQuality.MEASURED, None
    if isinstance(raw, str) and raw.strip().lower() in _QUALITY_CODES:
        return ReadingQuality(raw.strip().lower()), None
    return None, f"must be one of {_QUALITIES}"


def _first_at(row: int | None) -> str:
    return "" if row is None else f" (row {row} has the first)"


def _hash32(raw: Any) -> str | None:
    if isinstance(raw, str) and _HASH32.fullmatch(raw):
        return raw.lower()
    return None


# --- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ReadingNames:
    """The name of each reading field in one format (what error messages call it)."""

    participant: str
    interval_start: str
    injected_wh: str
    withdrawn_wh: str
    quality: str

    def required(self) -> tuple[str, ...]:
        return (self.participant, self.interval_start, self.injected_wh, self.withdrawn_wh)


_CSV_READING = _ReadingNames("participant", "interval_start", "injected_wh", "withdrawn_wh", "quality")
_JSON_READING = _ReadingNames("participant", "intervalStart", "injectedWh", "withdrawnWh", "quality")


@dataclass(frozen=True)
class _PriceNames:
    interval_start: str
    price: str


_CSV_PRICE = _PriceNames("interval_start", "price_minor_per_mwh")
_JSON_PRICE = _PriceNames("intervalStart", "priceMinorPerMWh")


class _ReadingRows:
    """Turns rows of one file into readings, collecting errors and spotting duplicates."""

    def __init__(self, names: _ReadingNames, registered: Container[str] | None, errors: _Errors) -> None:
        self.names = names
        self.registered = registered
        self.errors = errors
        self.readings: list[MeterReading] = []
        self._rows: dict[tuple[str, int], int | None] = {}

    def add(self, row: int | None, values: Mapping[str, Any], text: bool) -> None:
        names, errors = self.names, self.errors
        for name in names.required():
            if _missing(values.get(name), text):
                errors.add(row, name, "is missing")
        fields: dict[str, Any] = {}
        checks = (
            (names.participant, lambda raw: _address(raw, self.registered)),
            (names.interval_start, lambda raw: _interval(raw, text)),
            (names.injected_wh, lambda raw: _quantity(raw, text, "Wh")),
            (names.withdrawn_wh, lambda raw: _quantity(raw, text, "Wh")),
        )
        for name, check in checks:
            raw = values.get(name)
            if _missing(raw, text):
                continue
            value, why = check(raw)
            if why is not None:
                errors.add(row, name, why)
            fields[name] = value
        quality, why = _quality(values.get(names.quality), text)
        if why is not None:
            errors.add(row, names.quality, why)
        participant, interval_start = fields.get(names.participant), fields.get(names.interval_start)
        if participant is not None and interval_start is not None:
            key = (participant, interval_start)
            if key in self._rows:
                first = self._rows[key]
                errors.add(
                    row,
                    names.interval_start,
                    f"a second reading of {participant} for {iso(interval_start)}{_first_at(first)}",
                )
                return
            self._rows[key] = row
        if None in (participant, interval_start, quality) or len(fields) < 4 or None in fields.values():
            return
        self.readings.append(
            MeterReading(
                participant=participant,  # type: ignore[arg-type]
                interval_start=interval_start,  # type: ignore[arg-type]
                injected_wh=fields[names.injected_wh],
                withdrawn_wh=fields[names.withdrawn_wh],
                quality=quality,  # type: ignore[arg-type]
            )
        )


class _PriceRows:
    def __init__(self, names: _PriceNames, errors: _Errors) -> None:
        self.names = names
        self.errors = errors
        self.prices: dict[int, int] = {}
        self.rows: dict[int, int | None] = {}  # interval start -> row
        self.unreadable_intervals = 0  # rows whose interval is missing or invalid

    def add(self, row: int | None, values: Mapping[str, Any], text: bool) -> None:
        names, errors = self.names, self.errors
        interval_start = price = None
        raw = values.get(names.interval_start)
        if _missing(raw, text):
            errors.add(row, names.interval_start, "is missing")
        else:
            interval_start, why = _interval(raw, text)
            if why is not None:
                errors.add(row, names.interval_start, why)
        raw = values.get(names.price)
        if _missing(raw, text):
            errors.add(row, names.price, "is missing")
        else:
            price, why = _quantity(raw, text, "minor units per MWh")
            if why is not None:
                errors.add(row, names.price, why)
        if interval_start is None:
            self.unreadable_intervals += 1
            return
        if interval_start in self.rows:
            first = self.rows[interval_start]
            errors.add(
                row,
                names.interval_start,
                f"a second price for {iso(interval_start)}{_first_at(first)}",
            )
            return
        self.rows[interval_start] = row
        if price is not None:
            self.prices[interval_start] = price


# --- CSV -----------------------------------------------------------------------------------


def _text(content: str | bytes, errors: _Errors) -> str:
    if isinstance(content, bytes):
        try:
            return content.decode("utf-8-sig")  # -sig: spreadsheets start UTF-8 with a BOM
        except UnicodeDecodeError as exc:
            errors.add(None, "file", f"is not UTF-8 text (byte {exc.start})")
            raise MeteringFileError(errors.what, errors.kept, errors.count) from exc
    return content.removeprefix("\ufeff")


def _csv_rows(
    content: str | bytes, columns: Sequence[str], optional: frozenset[str], errors: _Errors
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: cell}) of every non-blank data row, in file order. Header errors
    are raised at once: the rows cannot be read without the header."""
    reader = csv.reader(io.StringIO(_text(content, errors), newline=""), strict=True)
    expected = ", ".join(columns)
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            errors.add(1, "header", f"the file is empty: expected a header row {expected}")
            errors.raise_if_any()
        names = [cell.strip().lower() for cell in header or []]
        for name in dict.fromkeys(names):
            if name not in columns:
                errors.add(1, name or "header", f"unknown column; expected {expected}")
            elif names.count(name) > 1:
                errors.add(1, name, "column appears more than once")
        for name in columns:
            if name not in names and name not in optional:
                errors.add(1, name, "column is missing")
        errors.raise_if_any()
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank lines, e.g. at the end
            if len(cells) != len(names):
                errors.add(line, "columns", f"expected {len(names)} values as in the header, found {len(cells)}")
                continue
            yield line, dict(zip(names, cells, strict=True))
    except csv.Error as exc:
        errors.add(reader.line_num, "file", f"is not valid CSV: {exc}")
        errors.raise_if_any()


def parse_readings_csv(content: str | bytes, registered: Container[str]) -> ReadingsFile:
    """The readings of a CSV file, or MeteringFileError with every error by line and column."""
    errors = _Errors("readings file")
    readings = _ReadingRows(_CSV_READING, registered, errors)
    for line, values in _csv_rows(content, READING_CSV_COLUMNS, _OPTIONAL_COLUMNS, errors):
        readings.add(line, values, _TEXT)
    if not readings.readings and not errors.count:
        errors.add(None, "readings", "the file holds no readings")
    errors.raise_if_any()
    return ReadingsFile(readings.readings)


def parse_prices_csv(
    content: str | bytes, *, period_start: int | None = None, period_end: int | None = None
) -> PricesFile:
    """The prices of a CSV file, covering their period; the period defaults to the file's span."""
    errors = _Errors("prices file")
    prices = _PriceRows(_CSV_PRICE, errors)
    for line, values in _csv_rows(content, PRICE_CSV_COLUMNS, frozenset(), errors):
        prices.add(line, values, _TEXT)
    return _price_file(prices, period_start, period_end, None, errors, ("period_start", "period_end"))


# --- JSON ----------------------------------------------------------------------------------


def _document(
    content: str | bytes | Mapping[str, Any], list_name: str, members: Sequence[str], errors: _Errors
) -> tuple[Mapping[str, Any], list[Any]]:
    if isinstance(content, str | bytes):
        try:
            document = json.loads(_text(content, errors))
        except json.JSONDecodeError as exc:
            errors.add(None, "file", f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
            errors.raise_if_any()
    else:
        document = content
    if not isinstance(document, Mapping):
        errors.add(None, "file", f'must be a JSON object {{"{list_name}": [...]}}')
        errors.raise_if_any()
    for name in document:
        if name not in members:
            errors.add(None, str(name), f"unknown member; expected {', '.join(members)}")
    items = document.get(list_name)
    if not isinstance(items, list):
        errors.add(None, list_name, "must be a list" if list_name in document else "is missing")
        errors.raise_if_any()
    elif not items:
        errors.add(None, list_name, "must not be empty")
    return document, items


def _items(items: list[Any], list_name: str, known: Sequence[str], errors: _Errors) -> Iterator[tuple[int, Any]]:
    """(index, item) of the items that are objects, in order; unknown members and non-objects
    are errors (added as the items come, so that errors stay in row order)."""
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            errors.add(index, list_name, "must be an object")
            continue
        for name in item:
            if name not in known:
                errors.add(index, str(name), f"unknown member; expected {', '.join(known)}")
        yield index, item


def _supersedes(document: Mapping[str, Any], errors: _Errors) -> str | None:
    raw = document.get("supersedes")
    if raw is None:
        return None
    value = _hash32(raw)
    if value is None:
        errors.add(None, "supersedes", "must be a batch id: 0x followed by 64 hex digits")
    return value


def parse_readings_json(content: str | bytes | Mapping[str, Any], registered: Container[str]) -> ReadingsFile:
    """The readings of a JSON document (text, or decoded as by an API), or MeteringFileError."""
    errors = _Errors("readings")
    document, items = _document(content, "readings", ("readings", "supersedes"), errors)
    supersedes = _supersedes(document, errors)
    readings = _ReadingRows(_JSON_READING, registered, errors)
    known = (*_JSON_READING.required(), _JSON_READING.quality)
    for index, item in _items(items, "readings", known, errors):
        readings.add(index, item, _TYPED)
    errors.raise_if_any()
    return ReadingsFile(readings.readings, supersedes)


def parse_prices_json(
    content: str | bytes | Mapping[str, Any], *, period_start: int | None = None, period_end: int | None = None
) -> PricesFile:
    """The prices of a JSON document; its periodStart/periodEnd must agree with given ones."""
    errors = _Errors("prices")
    members = ("prices", "periodStart", "periodEnd", "supersedes")
    document, items = _document(content, "prices", members, errors)
    supersedes = _supersedes(document, errors)
    bounds: dict[str, int | None] = {"periodStart": period_start, "periodEnd": period_end}
    period_known = True
    for name, given in bounds.items():
        if document.get(name) is None:
            continue
        value, why = _interval(document[name], _TYPED)
        if value is None or why is not None:
            errors.add(None, name, why or "is missing")
            period_known = False
        elif given is not None and value != given:
            errors.add(None, name, f"{iso(value)} differs from the period given, {iso(given)}")
            period_known = False
        else:
            bounds[name] = value
    prices = _PriceRows(_JSON_PRICE, errors)
    for index, item in _items(items, "prices", (_JSON_PRICE.interval_start, _JSON_PRICE.price), errors):
        prices.add(index, item, _TYPED)
    if not period_known:
        errors.raise_if_any()  # the prices cannot be checked against a period in doubt
    return _price_file(
        prices, bounds["periodStart"], bounds["periodEnd"], supersedes, errors, ("periodStart", "periodEnd")
    )


# --- either format -------------------------------------------------------------------------


def file_format(name: str) -> FileFormat:
    """The format a file name's extension says, or ValidationError."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in ("csv", "json"):
        return suffix  # type: ignore[return-value]
    raise ValidationError(f"cannot tell the format of {name!r} from its extension: use .csv or .json", field="format")


def parse_readings(content: str | bytes, fmt: FileFormat, registered: Container[str]) -> ReadingsFile:
    if fmt == "csv":
        return parse_readings_csv(content, registered)
    return parse_readings_json(content, registered)


def parse_prices(
    content: str | bytes, fmt: FileFormat, *, period_start: int | None = None, period_end: int | None = None
) -> PricesFile:
    if fmt == "csv":
        return parse_prices_csv(content, period_start=period_start, period_end=period_end)
    return parse_prices_json(content, period_start=period_start, period_end=period_end)


# --- checks on values (the service's, whatever their source) -------------------------------


def check_readings(readings: Sequence[MeterReading], registered: Container[str]) -> None:
    """The rules of a readings file applied to values; rows are list indexes."""
    errors = _Errors("readings")
    rows = _ReadingRows(_CSV_READING, registered, errors)
    for index, reading in enumerate(readings):
        if not isinstance(reading, MeterReading):
            errors.add(index, "reading", "must be a MeterReading")
            continue
        values = {
            "participant": reading.participant,
            "interval_start": reading.interval_start,
            "injected_wh": reading.injected_wh,
            "withdrawn_wh": reading.withdrawn_wh,
            "quality": str(reading.quality),
        }
        rows.add(index, values, _TYPED)
    if not readings:
        errors.add(None, "readings", "a batch holds at least one reading")
    errors.raise_if_any()


def check_prices(prices: Mapping[int, int], period_start: int, period_end: int) -> None:
    """The rules of a prices file applied to values: one valid price for every interval of the
    period, and none outside it."""
    errors = _Errors("prices")
    rows = _PriceRows(_CSV_PRICE, errors)
    for interval_start, price in prices.items():
        rows.add(None, {"interval_start": interval_start, "price_minor_per_mwh": price}, _TYPED)
    _price_file(rows, period_start, period_end, None, errors, ("period_start", "period_end"))


def _price_file(
    rows: _PriceRows,
    period_start: int | None,
    period_end: int | None,
    supersedes: str | None,
    errors: _Errors,
    period_names: tuple[str, str],
) -> PricesFile:
    """Checks the period and that the prices cover it exactly once; raises all errors so far."""
    names = rows.names
    start_name, end_name = period_names
    for name, value in ((start_name, period_start), (end_name, period_end)):
        if value is not None and (value < 0 or value % INTERVAL_SECONDS):
            errors.add(None, name, f"must be a multiple of {INTERVAL_SECONDS} s")
            errors.raise_if_any()  # the intervals cannot be checked against a broken period
    if rows.rows:
        period_start = min(rows.rows) if period_start is None else period_start
        period_end = max(rows.rows) + INTERVAL_SECONDS if period_end is None else period_end
    elif not errors.count:
        errors.add(None, names.price if rows.unreadable_intervals else "prices", "the file holds no prices")
    if period_start is None or period_end is None:
        errors.raise_if_any()
        raise AssertionError("unreachable: a file without prices is an error")
    if period_end <= period_start:
        errors.add(None, end_name, f"must be after {start_name} ({iso(period_start)})")
        errors.raise_if_any()
    period = f"[{iso(period_start)}, {iso(period_end)})"
    for interval_start, row in rows.rows.items():
        if not period_start <= interval_start < period_end:
            errors.add(row, names.interval_start, f"{iso(interval_start)} is outside the period {period}")
    # A row whose interval could not be read may be one of the "missing" ones: say nothing then.
    if not rows.unreadable_intervals:
        intervals = range(period_start, period_end, INTERVAL_SECONDS)
        missing = [start for start in intervals if start not in rows.rows]
        if missing:
            shown = ", ".join(iso(start) for start in missing[:10]) + (" …" if len(missing) > 10 else "")
            # The body as a whole lacks them: no row or value of it is at fault.
            errors.add(None, "prices", f"no price for {len(missing)} interval(s) of {period}: {shown}")
            errors.missing_intervals = missing
    errors.raise_if_any()
    return PricesFile(period_start, period_end, dict(sorted(rows.prices.items())), supersedes)
