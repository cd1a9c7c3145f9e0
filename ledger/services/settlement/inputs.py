"""What a run takes from the index: the period's final trades, readings and prices, the
settlement parameters in effect for the period and the balancing account, and their hash; and the checks that the index
holds all of them before a run takes them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from ledger.domain.settlement import (
    MeterReading,
    MissingReferencePrice,
    ReadingQuality,
    RecordedTrade,
    SettlementInputs,
    SettlementParameters,
    inputs_hash,
    price_inputs_root,
)
from ledger.domain.units import INTERVAL_SECONDS
from ledger.indexer.indexer import final_block_number
from ledger.services.context import LedgerContext
from ledger.services.settlement.errors import IndexBehind
from ledger.services.settlement.parameters import ParameterDesk
from ledger.store import metering_queries
from ledger.store.metering_models import BatchStatus, PriceBatchRow, ReadingBatchRow
from ledger.store.models import IndexedBlock, IndexerCheckpoint, Trade, TradeEvent, TradeEventKind, hash32

# How long a run waits for the reading and price batches committed for its period to become final
# in the index (the indexer follows the head; a batch counts once its block is final).
FINAL_INPUTS_WAIT_SECONDS = 15.0


@dataclass(frozen=True)
class GatheredInputs:
    period_start: int
    period_end: int
    trades: list[RecordedTrade]
    readings: list[MeterReading]
    # (participant, interval start) -> (batch id, version) of the reading used.
    reading_origin: dict[tuple[str, int], tuple[str, int]]
    reading_batches: dict[str, str]  # batch id -> root
    price_batches: dict[str, str]  # batch id -> root, of every batch holding a price the run used
    newest_price_batch_id: str  # the batch of the highest price version used (the run row's price_batch_id)
    prices: dict[int, int]
    parameters: SettlementParameters
    parameter_change_id: int | None  # the scheduled change that set them (None: the settings)
    balancing_account: str
    inputs_hash: str

    def engine_inputs(self, version: int) -> SettlementInputs:
        return SettlementInputs(
            period_start=self.period_start,
            period_end=self.period_end,
            version=version,
            balancing_account=self.balancing_account,
            trades=self.trades,
            readings=self.readings,
            reference_prices_minor_per_mwh=self.prices,
            parameters=self.parameters,
        )


class InputGatherer:
    """Reads a run's inputs from the final part of the trade index, with the parameters in effect."""

    def __init__(self, context: LedgerContext) -> None:
        self._read_sessions = context.read_sessions
        self._parameters = ParameterDesk(context)
        self.balancing_account = self._parameters.balancing_account
        trade_ledger = context.deployment.contracts["TradeLedger"].address
        # The trade indexer's checkpoint (the name `LedgerService` gives its indexer).
        self._index_name = f"{context.deployment.chain_id}:{trade_ledger}"

    def gather(self, period_start: int, period_end: int) -> GatheredInputs:
        """The inputs of a run of the period as the FINAL part of the index has them now, and their
        hash. The indexer follows the head, so the index holds unconfirmed blocks too; a run only
        takes what is in the blocks up to the final checkpoint (trades recorded there and not
        cancelled there, batches committed there), so a reorg cannot take an input back."""
        with self._read_sessions() as session:
            _one_snapshot(session)
            final = final_block_number(session, self._index_name)
            final = -1 if final is None else final  # nothing is final before the first step
            trades = _active_trades(session, period_start, period_end, final)
            reading_rows = metering_queries.latest_readings(session, period_start, period_end, final_block=final)
            batches = {
                hash32(row.batch_id, field="batch_id"): hash32(row.root, field="root")
                for row in metering_queries.reading_batches_used(session, period_start, period_end, final_block=final)
            }
            price_rows = metering_queries.current_prices(session, period_start, period_end, final_block=final)
            parameters, change_id = self._parameters.in_effect(session, period_start)
        prices = {row.interval_start: row.price_minor_per_mwh for row in price_rows}
        missing = [start for start in range(period_start, period_end, INTERVAL_SECONDS) if start not in prices]
        if missing:
            raise MissingReferencePrice(missing)
        price_batches = {
            hash32(row.batch_id, field="price_batch_id"): hash32(row.root, field="price_batch_root")
            for row in price_rows
        }
        readings, origin = _readings(reading_rows)
        digest = inputs_hash(
            period_start=period_start,
            period_end=period_end,
            trade_ids=[trade.trade_id for trade in trades],
            reading_batch_roots=sorted(set(batches.values())),
            price_batch_root=price_inputs_root(price_batches.values()),
            parameters=parameters,
            balancing_account=self.balancing_account,
        )
        return GatheredInputs(
            period_start=period_start,
            period_end=period_end,
            trades=trades,
            readings=readings,
            reading_origin=origin,
            reading_batches=batches,
            price_batches=price_batches,
            newest_price_batch_id=hash32(max(price_rows, key=lambda row: row.version).batch_id, field="batch_id"),
            prices=prices,
            parameters=parameters,
            parameter_change_id=change_id,
            balancing_account=self.balancing_account,
            inputs_hash=digest,
        )

    def check_index_covers(self, period_end: int) -> None:
        """Trades are recorded and cancelled only before their gate closure, so once the index
        holds a block at or after the period's end, the period's trade set is complete in it."""
        with self._read_sessions() as session:
            checkpoint = session.get(IndexerCheckpoint, self._index_name)
            indexed_until = None
            if checkpoint is not None:
                indexed_until = session.scalar(
                    select(IndexedBlock.timestamp).where(IndexedBlock.number == checkpoint.block_number)
                )
        if indexed_until is None or indexed_until < period_end:
            raise IndexBehind(
                "the trade index has not reached the end of the period yet: settle once the period is "
                "over and the indexer has caught up",
                period_end=period_end,
                indexed_until=indexed_until,
            )

    def await_final_batches(self, period_start: int, period_end: int) -> None:
        """Waits (FINAL_INPUTS_WAIT_SECONDS at most) until every batch of the period that its
        receipt puts in a block is final in the index, else refuses: a run takes only final
        inputs, and silently leaving out a reading just imported would settle the wrong values.
        A batch whose receipt block is final but which the indexed chain lacks was reorged out:
        it is not waited for (and `_live` leaves it out)."""
        deadline = time.monotonic() + FINAL_INPUTS_WAIT_SECONDS
        while True:
            with self._read_sessions() as session:
                final = final_block_number(session, self._index_name)
                final = -1 if final is None else final
                pending = {
                    row.batch_id: row.block_number
                    for model in (ReadingBatchRow, PriceBatchRow)
                    for row in session.execute(
                        select(model.batch_id, model.block_number).where(
                            model.status == BatchStatus.COMMITTED,
                            model.block_number > final,
                            model.period_start < period_end,
                            model.period_end > period_start,
                        )
                    )
                }
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise IndexBehind(
                    "batches of the period are committed in blocks that are not final yet: settle once "
                    "the indexer has them final",
                    final_block=final,
                    pending_batches=sorted(pending),
                    blocks=sorted(set(pending.values())),
                )
            time.sleep(0.2)


def _one_snapshot(session: Session) -> None:
    """All reads of the session see one state of the index: the readings and the batches they
    come from must not straddle an import committed in between. SQLite's read transaction is a
    snapshot already (WAL); PostgreSQL's default, READ COMMITTED, is not."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _active_trades(session: Session, period_start: int, period_end: int, final: int) -> list[RecordedTrade]:
    """Trades recorded in a final block (up to `final`) and not cancelled or amended in one,
    overlapping the period. Status as of the final block: from the events, not `Trade.status`,
    which an unconfirmed cancellation may have changed already."""
    ended = exists().where(
        TradeEvent.trade_id == Trade.trade_id,
        TradeEvent.event.in_([TradeEventKind.CANCELLED, TradeEventKind.AMENDED]),
        TradeEvent.block_number <= final,
    )
    rows = session.execute(
        select(
            Trade.trade_id,
            Trade.seller,
            Trade.buyer,
            Trade.delivery_start,
            Trade.delivery_end,
            Trade.energy_per_interval_wh,
            Trade.price_minor_per_mwh,
        ).where(
            Trade.block_number <= final,
            ~ended,
            Trade.delivery_start < period_end,
            Trade.delivery_end > period_start,
        )
    )
    return [RecordedTrade(*row) for row in rows]


_QUALITY_BY_INDEX = list(ReadingQuality)  # MeterData's uint8 quality: 0 measured, 1 estimated, 2 substituted


def _quality(value: Any) -> ReadingQuality:
    """A reading's quality from the metering index, whether stored as its code or its index."""
    if isinstance(value, int):
        return _QUALITY_BY_INDEX[int(value)]
    return ReadingQuality(getattr(value, "value", value))


def _readings(rows: Iterable[Any]) -> tuple[list[MeterReading], dict[tuple[str, int], tuple[str, int]]]:
    readings: list[MeterReading] = []
    origin: dict[tuple[str, int], tuple[str, int]] = {}
    checksummed: dict[str, str] = {}
    for row in rows:
        participant = checksummed.get(row.participant)
        if participant is None:
            participant = checksummed[row.participant] = to_checksum_address(row.participant)
        readings.append(
            MeterReading(participant, row.interval_start, row.injected_wh, row.withdrawn_wh, _quality(row.quality))
        )
        origin[(participant, row.interval_start)] = (hash32(row.batch_id, field="batch_id"), int(row.version))
    return readings, origin
