"""Read-side queries over the indexed ledger, for the API.

Lists are keyset-paginated in chain order, (block_number, log_index) of the row's log: a page
never skips or repeats a row, however many rows the indexer appends meanwhile. The cursor is
opaque to clients: base64url of that key of the page's last row.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import namedtuple
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, Generic, Literal, Protocol, TypeVar

from sqlalchemy import (
    ColumnElement,
    Executable,
    Integer,
    Row,
    Select,
    String,
    bindparam,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session, selectinload

from ledger.domain.market import TradeVolume
from ledger.domain.trade import ParticipantKind
from ledger.errors import ValidationError
from ledger.store.models import (
    IndexerCheckpoint,
    Participant,
    ParticipantStatus,
    Trade,
    TradeEvent,
    TradeStatus,
    checksum_address,
    hash32,
)

MAX_PAGE_SIZE = 500

T = TypeVar("T")
_Row = TypeVar("_Row", Trade, Participant)
_Code = TypeVar("_Code", bound=StrEnum)


class _Keyed(Protocol):
    @property
    def block_number(self) -> int: ...
    @property
    def log_index(self) -> int: ...


_TradeLike = TypeVar("_TradeLike", bound=_Keyed)

_CURSOR = re.compile(r"(\d{1,19}):(\d{1,10})")
# The largest key a cursor may name: BIGINT block numbers, INTEGER log indexes.
_MAX_BLOCK_NUMBER = 2**63 - 1
_MAX_LOG_INDEX = 2**31 - 1


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None on the last page


def get_trade(session: Session, trade_id: str) -> Trade | None:
    """The trade with its events in chain order, or None."""
    statement = (
        select(Trade).where(Trade.trade_id == hash32(trade_id, field="trade_id")).options(selectinload(Trade.events))
    )
    return session.scalars(statement).one_or_none()


@dataclass(frozen=True)
class TradeRecord:
    """A trade and its events in chain order as plain rows (the columns of `trades` and of
    `trade_events` as attributes): what the API renders, without ORM objects to build."""

    trade: Row[Any]
    events: Sequence[Any]


_trades = Trade.__table__
_trade_events = TradeEvent.__table__
_EVENT_PREFIX = "event_"
_event_columns = [c for c in _trade_events.c if c.name not in ("id", "trade_id")]
# The trade and its events in one round trip: a row per event, the trade's columns repeated.
_TRADE_WITH_EVENTS = (
    select(*_trades.c, *(c.label(_EVENT_PREFIX + c.name) for c in _event_columns))
    .select_from(_trades.outerjoin(_trade_events, _trade_events.c.trade_id == _trades.c.trade_id))
    .where(_trades.c.trade_id == bindparam("trade_id"))
    .order_by(_trade_events.c.block_number, _trade_events.c.log_index)
)
_TradeEventRow = namedtuple("_TradeEventRow", [c.name for c in _event_columns])  # type: ignore[misc]


def get_trade_record(session: Session, trade_id: str) -> TradeRecord | None:
    """`get_trade` as rows, read in one statement."""
    rows = session.execute(_TRADE_WITH_EVENTS, {"trade_id": hash32(trade_id, field="trade_id")}).all()
    if not rows:
        return None
    names = [_EVENT_PREFIX + c.name for c in _event_columns]
    events = [
        _TradeEventRow(*(mapping[name] for name in names))
        for mapping in (row._mapping for row in rows)
        if mapping[_EVENT_PREFIX + "event"] is not None  # the outer join's row of a trade without events
    ]
    return TradeRecord(rows[0], events)


def list_trade_rows(
    session: Session,
    *,
    participant: str | None = None,
    side: Literal["seller", "buyer", "any"] = "any",
    delivery_from: int | None = None,
    delivery_to: int | None = None,
    status: TradeStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Row[Any]]:
    """Trades in chain order, without their events, as rows (the columns of `trades` as
    attributes): what the API renders, without ORM objects to build.

    `participant` with `side` selects trades where the address sells, buys, or either.
    `delivery_from`/`delivery_to` (UTC Unix seconds) select trades whose delivery window
    [delivery_start, delivery_end) overlaps [delivery_from, delivery_to).
    """
    statement, params = _trade_list(participant, side, delivery_from, delivery_to, status, limit, cursor)
    return _trade_page(session.execute(statement, params).all(), limit)


def _trade_page(rows: Sequence[_TradeLike], limit: int) -> Page[_TradeLike]:
    items = list(rows[:limit])
    next_cursor = _encode_cursor(items[-1].block_number, items[-1].log_index) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def _trade_list(
    participant: str | None,
    side: str,
    delivery_from: int | None,
    delivery_to: int | None,
    status: TradeStatus | str | None,
    limit: int,
    cursor: str | None,
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement of a page of trades and its parameters; see `list_trade_rows`."""
    if side not in ("seller", "buyer", "any"):
        raise ValidationError("side must be seller, buyer or any", field="side", value=side)
    if delivery_from is not None and delivery_to is not None and delivery_from >= delivery_to:
        raise ValidationError("delivery_to must be after delivery_from", field="delivery_to", value=delivery_to)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE_SIZE}", field="limit", value=limit)
    # One row more than asked tells whether another page follows.
    params: dict[str, Any] = {"delivery_from": delivery_from, "delivery_to": delivery_to, "limit": limit + 1}
    if status is not None:
        params["status"] = _code(TradeStatus, status, "status")
    if cursor is not None:
        params["after_block"], params["after_log"] = _decode_cursor(cursor)
    if participant is not None:
        params["participant"] = checksum_address(participant, field="participant")
    statement = _trade_list_statement(
        side if participant is not None else None,
        delivery_from is not None,
        delivery_to is not None,
        status is not None,
        cursor is not None,
    )
    return statement, params


@cache
def _trade_list_statement(
    side: str | None, window_from: bool, window_to: bool, by_status: bool, after: bool
) -> Select[Any]:
    """The statement for one combination of filters, built once: building it costs more than
    running it. The values are bound parameters (see `_trade_list`)."""
    c = _trades.c
    key = (c.block_number, c.log_index)
    conditions: list[ColumnElement[bool]] = []
    if window_to:
        conditions.append(c.delivery_start < bindparam("delivery_to"))
    if window_from:
        conditions.append(c.delivery_end > bindparam("delivery_from"))
    if by_status:
        conditions.append(c.status == bindparam("status"))
    if after:
        conditions.append(tuple_(*key) > tuple_(bindparam("after_block"), bindparam("after_log")))
    limit = bindparam("limit", type_=Integer)
    participant = bindparam("participant", type_=String)
    statement = select(*c).where(*conditions)
    if side is None:
        return statement.order_by(*key).limit(limit)
    # Not `seller = x OR buyer = x`: no index gives that in chain order, so the database would
    # read and sort every trade of the participant. Each side reads at most one page from its
    # (party, block_number, log_index) index; the contract refuses self-trades, so no trade is on
    # both sides.
    sides = {"seller": [c.seller], "buyer": [c.buyer], "any": [c.seller, c.buyer]}[side]
    if len(sides) == 1:
        return statement.where(sides[0] == participant).order_by(*key).limit(limit)
    # Each branch in a subquery of its own: SQLite refuses LIMIT on a bare UNION member.
    pages = [statement.where(party == participant).order_by(*key).limit(limit).subquery() for party in sides]
    merged = union_all(*(select(page) for page in pages)).subquery()
    return select(merged).order_by(merged.c.block_number, merged.c.log_index).limit(limit)


def participant_status(session: Session, address: str) -> ParticipantStatus | None:
    """The indexed status of a participant alone (no events), or None when the index has none."""
    statement = select(Participant.status).where(Participant.address == checksum_address(address, field="address"))
    return session.scalar(statement)


def trade_exists(session: Session, trade_id: str) -> bool:
    statement = select(Trade.trade_id).where(Trade.trade_id == hash32(trade_id, field="trade_id"))
    return session.scalar(statement) is not None


def trades_by_id(session: Session, trade_ids: Collection[str]) -> dict[str, Trade]:
    """The indexed trades among `trade_ids` (no events), by lower-case id."""
    ids = {hash32(trade_id, field="trade_id") for trade_id in trade_ids}
    if not ids:
        return {}
    return {row.trade_id: row for row in session.scalars(select(Trade).where(Trade.trade_id.in_(ids)))}


def indexer_checkpoint(session: Session, name: str) -> IndexerCheckpoint | None:
    """The last final block the indexer `name` has fully indexed, or None before its first step."""
    return session.get(IndexerCheckpoint, name)


def get_participant(session: Session, address: str) -> Participant | None:
    """The participant with its events in chain order, or None."""
    statement = (
        select(Participant)
        .where(Participant.address == checksum_address(address, field="address"))
        .options(selectinload(Participant.events))
    )
    return session.scalars(statement).one_or_none()


def list_participants(
    session: Session,
    *,
    status: ParticipantStatus | None = None,
    kind: ParticipantKind | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Participant]:
    """Participants in the chain order of their registration, without their events."""
    statement = select(Participant)
    if status is not None:
        statement = statement.where(Participant.status == _code(ParticipantStatus, status, "status"))
    if kind is not None:
        statement = statement.where(Participant.kind == _code(ParticipantKind, kind, "kind"))
    return _page(session, statement, Participant, limit, cursor)


def _page(
    session: Session,
    statement: Select[_Row],
    model: type[_Row],
    limit: int,
    cursor: str | None,
    *,
    branches: Sequence[ColumnElement[bool]] = (),
) -> Page[_Row]:
    """One page of `statement` in chain order; with `branches`, of the rows matching any of these
    (disjoint) conditions, each branch paged on its own and the pages merged."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE_SIZE}", field="limit", value=limit)
    key = (model.block_number, model.log_index)
    if cursor is not None:
        statement = statement.where(tuple_(*key) > tuple_(*_decode_cursor(cursor)))
    # One row more than asked tells whether another page follows.
    if len(branches) > 1:
        # Each branch in a subquery of its own: SQLite refuses LIMIT on a bare UNION member.
        pages = [statement.where(b).order_by(*key).limit(limit + 1).subquery() for b in branches]
        merged = union_all(*(select(page) for page in pages)).subquery()
        # from_statement maps the merged columns by name, without adapting the model to an alias.
        query: Executable = select(model).from_statement(
            select(merged).order_by(merged.c.block_number, merged.c.log_index).limit(limit + 1)
        )
    else:
        if branches:
            statement = statement.where(branches[0])
        query = statement.order_by(*key).limit(limit + 1)
    rows: Sequence[_Row] = session.scalars(query).all()
    items = list(rows[:limit])
    next_cursor = _encode_cursor(items[-1].block_number, items[-1].log_index) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def _code(enum: type[_Code], value: str, field: str) -> _Code:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValidationError(f"{field} must be one of {allowed}", field=field, value=value) from None


def _encode_cursor(block_number: int, log_index: int) -> str:
    return base64.urlsafe_b64encode(f"{block_number}:{log_index}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        # validate=True: reject characters outside the alphabet instead of skipping them.
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    match = _CURSOR.fullmatch(text)
    if match is None or int(match[1]) > _MAX_BLOCK_NUMBER or int(match[2]) > _MAX_LOG_INDEX:
        raise ValidationError("cursor is not one this API returned", field="cursor", value=cursor)
    return int(match[1]), int(match[2])


def trade_parties(session: Session, trade_id: str) -> tuple[str, str] | None:
    """(seller, buyer) of an indexed trade, or None: the check of who may see a trade."""
    row = session.execute(
        select(Trade.seller, Trade.buyer).where(Trade.trade_id == hash32(trade_id, field="tradeId"))
    ).first()
    return None if row is None else (row.seller, row.buyer)


def trades_in_force(session: Session, start: int, end: int) -> list[TradeVolume]:
    """Delivery terms of the recorded (not cancelled or amended) trades delivering in [start, end)."""
    rows = session.execute(
        select(Trade.delivery_start, Trade.delivery_end, Trade.energy_per_interval_wh, Trade.price_minor_per_mwh).where(
            Trade.status == TradeStatus.RECORDED, Trade.delivery_start < end, Trade.delivery_end > start
        )
    )
    return [TradeVolume(*row) for row in rows]
