"""A settled period with every kind of MeterData and Settlement chain fact, through the services:
reading and price batches and their corrections (superseding batches), a run and its next version
(superseding it), a dispute opened and resolved. For the chain-fact index tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ledger.domain.settlement import LineKind, MeterReading
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.services.devstack import deploy
from ledger.signing.disputes import sign_dispute
from ledger.store.chain_models import ChainBatch, ChainDispute, ChainRun
from tests.test_settlement_service import World, open_world, two_intervals, world_settings

CHAIN_MODELS = (ChainBatch, ChainRun, ChainDispute)


@dataclass
class Settled:
    period: tuple[int, int]
    reading_batches: list[str]  # the first, then the one that supersedes it
    price_batches: list[str]
    runs: list[str]  # version 1, version 2
    dispute_id: str


@contextmanager
def world_with(rpc_url: str, database_url: str, workdir: Path, **settings: Any) -> Iterator[World]:
    """new_world with other settings (e.g. confirmations)."""
    configured = world_settings(rpc_url, database_url, workdir).model_copy(update=settings)
    deploy(configured, rpc_url)
    with open_world(configured) as world:
        world.index()
        yield world


def finalize(world: World) -> None:
    """Mines blocks until the head block is final, and indexes: a run takes only final inputs."""
    if world.context.settings.confirmations > 1:
        world.rpc.call("anvil_mine", hex(world.context.settings.confirmations - 1))
    world.index()


def settle_with_corrections(world: World) -> Settled:
    market = two_intervals(world)
    start, end = market.period
    with world.context.sessions() as session:
        [first_readings] = session.scalars(select(ChainBatch.batch_id).where(ChainBatch.batch_kind == "readings"))
        [first_prices] = session.scalars(select(ChainBatch.batch_id).where(ChainBatch.batch_kind == "prices"))
    finalize(world)
    first = world.settlement.execute(start, end).run
    corrected = world.metering.import_readings(
        [
            MeterReading(market.g.address, start, 400_000, 0),
            MeterReading(market.g.address, start + INTERVAL_SECONDS, 400_000, 0),
            MeterReading(market.r.address, start, 0, 400_000),
        ],
        source="test",
        supersedes=first_readings,
    ).batch_id
    prices = dict.fromkeys(range(start, end, INTERVAL_SECONDS), 46_000)
    corrected_prices = world.metering.import_prices(prices, start, end, source="test", supersedes=first_prices).batch_id
    finalize(world)
    second = world.settlement.execute(start, end).run
    assert second.version == 2

    account = market.r
    proof = world.settlement.line_proof(second.run_id, account.address, int(LineKind.TOTAL), ZERO_ID)
    reason = "the second interval is missing"
    reason_hash = "0x" + keccak(text=reason).hex()
    deadline = world.now() + 3600
    signature = sign_dispute(account, world.context.settlement_operator.domain, proof.line, reason_hash, deadline)
    dispute = world.settlement.open_dispute(
        second.run_id, account.address, int(LineKind.TOTAL), ZERO_ID, reason, deadline, signature
    )
    world.settlement.resolve_dispute(dispute.dispute_id, False, "it is estimated, as the rules say")
    return Settled(
        market.period,
        [first_readings, corrected],
        [first_prices, corrected_prices],
        [first.run_id, second.run_id],
        dispute.dispute_id,
    )


def chain_rows(sessions: sessionmaker[Session]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every chain-fact row, table -> key -> columns."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    with sessions() as session:
        for model in CHAIN_MODELS:
            columns = list(model.__table__.columns)
            key = next(c.name for c in columns if c.primary_key)
            rows = [
                dict(zip([c.name for c in columns], values, strict=True))
                for values in session.execute(select(*columns))
            ]
            tables[model.__tablename__] = {row[key]: row for row in rows}
    return tables
