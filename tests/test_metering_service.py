"""Importing readings and prices on a real chain and real databases (SQLite and PostgreSQL): one
transaction per batch, proofs that verify on and off chain, idempotent and crash-safe imports,
corrections as new versions, and refused inputs that leave nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import func, select

from ledger import errors
from ledger.chain.meter_data import PRICE_LEAF_ENCODING, READING_LEAF_ENCODING, PriceLeaf, ReadingLeaf
from ledger.chain.meter_data import ReadingQuality as LeafQuality
from ledger.chain.node import LocalNode
from ledger.config import Settings
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.metering import MeteringFileError
from ledger.domain.settlement import MeterReading, ReadingQuality
from ledger.domain.trade import ParticipantKind
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.services import metering as metering_service
from ledger.services.context import LedgerContext
from ledger.services.devstack import deploy
from ledger.services.metering import MeteringService
from ledger.services.participants import ParticipantService
from ledger.store import metering_queries
from ledger.store.metering_models import BatchStatus, MeterReadingRow, ReadingBatchRow, ReferencePriceRow

DAY = 1_906_502_400  # 2030-06-01T00:00:00Z
Q = INTERVAL_SECONDS


@dataclass
class Ledger:
    context: LedgerContext
    metering: MeteringService
    participants: list[str]

    def sent(self, role: str) -> int:
        """Transactions sent so far from the account of `role` (its nonce)."""
        contract = self.context.meter_oracle if role == "meter_oracle" else self.context.price_publisher
        return int(self.context.rpc.call("eth_getTransactionCount", contract.sender.address, "latest"), 16)

    def count(self, model: Any) -> int:
        with self.context.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def ledger(anvil: LocalNode, database_url: str, tmp_path: Path) -> Iterator[Ledger]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        rpc_url=anvil.rpc_url,
        database_url=database_url,
        deployment_file=tmp_path / "deployment.json",
    )
    deploy(settings, anvil.rpc_url)
    context = LedgerContext.open(settings)
    registry = ParticipantService(context.operator, context.sessions)
    addresses = []
    for n in range(3):
        account = Account.create()
        registry.register(account.address, ParticipantKind.PROSUMER, f"GLN-{n}-{account.address}")
        addresses.append(account.address)
    try:
        yield Ledger(context, MeteringService(context), addresses)
    finally:
        context.close()


def readings(participants: list[str], intervals: int = 4, offset: int = 0, **changes: Any) -> list[MeterReading]:
    values = []
    for p, participant in enumerate(participants):
        for i in range(intervals):
            fields: dict[str, Any] = {
                "participant": participant,
                "interval_start": DAY + i * Q,
                "injected_wh": 1_000 * (p + 1) + i + offset,
                "withdrawn_wh": 10 * i,
                "quality": ReadingQuality.ESTIMATED if i == 1 else ReadingQuality.MEASURED,
            }
            values.append(MeterReading(**(fields | changes)))
    return values


def day_prices(intervals: int = 4, base: int = 40_000) -> dict[int, int]:
    return {DAY + i * Q: base + i for i in range(intervals)}


# --- committing and proving ------------------------------------------------------------------


def test_a_reading_batch_is_one_transaction_and_each_reading_proves_on_and_off_chain(ledger: Ledger) -> None:
    values = readings(ledger.participants)
    before = ledger.sent("meter_oracle")
    result = ledger.metering.import_readings(values[::-1], source="day.csv")  # order does not matter
    assert ledger.sent("meter_oracle") == before + 1
    assert (result.outcome, result.status, result.count) == ("committed", BatchStatus.COMMITTED, 12)
    assert (result.period_start, result.period_end, result.source) == (DAY, DAY + 4 * Q, "day.csv")
    assert result.transaction_hash is not None and result.block_number is not None

    on_chain = ledger.context.meter_oracle.reading_batch(result.batch_id)
    assert (on_chain.root, on_chain.count, on_chain.period_start, on_chain.period_end) == (
        result.root,
        12,
        DAY,
        DAY + 4 * Q,
    )
    # The same values in any order give the same id: the root commits to the set.
    assert metering_service.plan_reading_batch(values).batch_id == result.batch_id

    with ledger.context.sessions() as session:
        for reading in values:
            proof = metering_queries.reading_proof(
                session, result.batch_id, reading.participant, reading.interval_start
            )
            assert proof is not None and proof.root == result.root
            assert proof.leaf_encoding == list(READING_LEAF_ENCODING)
            assert StandardMerkleTree.verify(result.root, READING_LEAF_ENCODING, proof.value, proof.proof)
            leaf = ReadingLeaf(
                reading.participant,
                reading.interval_start,
                reading.injected_wh,
                reading.withdrawn_wh,
                LeafQuality[reading.quality.name],
            )
            assert proof.value == leaf.leaf_values()
            assert ledger.context.meter_oracle.verify_reading(result.batch_id, leaf, proof.proof)
            # A changed value does not verify with the same proof.
            forged = ReadingLeaf(leaf.participant, leaf.interval_start, leaf.injected_wh + 1, leaf.withdrawn_wh)
            assert not ledger.context.meter_oracle.verify_reading(result.batch_id, forged, proof.proof)
        missing = metering_queries.reading_proof(session, result.batch_id, ledger.participants[0], DAY + 99 * Q)
        assert missing is None
        assert metering_queries.reading_proof(session, "0x" + "42" * 32, ledger.participants[0], DAY) is None


def test_a_price_batch_covers_its_period_and_proves_on_chain(ledger: Ledger) -> None:
    before = ledger.sent("operator")
    result = ledger.metering.import_prices(day_prices(), DAY, DAY + 4 * Q, source="prices.json")
    assert ledger.sent("operator") == before + 1
    assert (result.kind, result.count, result.outcome) == ("prices", 4, "committed")
    with ledger.context.sessions() as session:
        assert metering_queries.prices(session, result.batch_id) == day_prices()
        current = metering_queries.current_prices(session, DAY + Q, DAY + 3 * Q)
        assert current == [(DAY + i * Q, 40_000 + i, 1, result.batch_id, result.root) for i in (1, 2)]
        assert len(metering_queries.current_prices(session, DAY, DAY + 5 * Q)) == 4  # the fifth has none
        for interval_start, price in day_prices().items():
            proof = metering_queries.price_proof(session, result.batch_id, interval_start)
            assert proof is not None and proof.verify()
            assert StandardMerkleTree.verify(result.root, PRICE_LEAF_ENCODING, proof.value, proof.proof)
            leaf = PriceLeaf(interval_start, price)
            assert ledger.context.price_publisher.verify_price(result.batch_id, leaf, proof.proof)


# --- idempotence and crash safety --------------------------------------------------------------


def test_importing_the_same_values_again_is_a_no_op(ledger: Ledger) -> None:
    first = ledger.metering.import_readings(readings(ledger.participants), source="day.csv")
    sent = ledger.sent("meter_oracle")
    again = ledger.metering.import_readings(readings(ledger.participants)[::-1], source="api")
    assert ledger.sent("meter_oracle") == sent
    assert again.outcome == "existing"
    assert (again.batch_id, again.transaction_hash, again.source) == (first.batch_id, first.transaction_hash, "day.csv")
    assert (ledger.count(ReadingBatchRow), ledger.count(MeterReadingRow)) == (1, 12)
    prices = ledger.metering.import_prices(day_prices(), DAY, DAY + 4 * Q, source="p.csv")
    sent = ledger.sent("operator")
    assert ledger.metering.import_prices(day_prices(), DAY, DAY + 4 * Q, source="p.csv").outcome == "existing"
    assert ledger.sent("operator") == sent
    assert ledger.metering.import_prices(day_prices(), DAY, DAY + 4 * Q, source="x").batch_id == prices.batch_id


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def test_a_crash_after_the_chain_commit_resumes_without_a_second_commit(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = readings(ledger.participants)
    real_mark = metering_queries.mark_committed

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    monkeypatch.setattr(metering_queries, "mark_committed", crash)
    before = ledger.sent("meter_oracle")
    with pytest.raises(Crash):
        ledger.metering.import_readings(values, source="day.csv")
    assert ledger.sent("meter_oracle") == before + 1  # committed on chain, not marked in the store
    plan = metering_service.plan_reading_batch(values)
    with ledger.context.sessions() as session:
        stored = metering_queries.get_reading_batch(session, plan.batch_id)
        assert stored is not None and stored.status is BatchStatus.PREPARED
        assert metering_queries.latest_readings(session, DAY, DAY + 4 * Q) == []  # prepared never counts

    monkeypatch.setattr(metering_queries, "mark_committed", real_mark)
    restarted = MeteringService(ledger.context)
    resumed = restarted.import_readings(values, source="day.csv")
    assert ledger.sent("meter_oracle") == before + 1  # no second commit
    assert (resumed.outcome, resumed.status) == ("resumed", BatchStatus.COMMITTED)
    # The location was found from the commit's event.
    on_chain = ledger.context.meter_oracle.reading_batch(plan.batch_id)
    assert on_chain.exists
    receipt = ledger.context.rpc.call("eth_getTransactionReceipt", resumed.transaction_hash)
    assert int(receipt["blockNumber"], 16) == resumed.block_number
    assert restarted.import_readings(values, source="day.csv").outcome == "existing"


def test_a_crash_before_the_chain_commit_sends_it_once_on_resume(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    monkeypatch.setattr(ledger.context.price_publisher, "commit_price_batch", crash)
    before = ledger.sent("operator")
    with pytest.raises(Crash):
        ledger.metering.import_prices(day_prices(), DAY, DAY + 4 * Q, source="p.csv")
    assert ledger.sent("operator") == before
    monkeypatch.undo()
    resumed = MeteringService(ledger.context).import_prices(day_prices(), DAY, DAY + 4 * Q, source="p.csv")
    assert ledger.sent("operator") == before + 1
    assert (resumed.outcome, resumed.status, resumed.count) == ("resumed", BatchStatus.COMMITTED, 4)


# --- corrections ---------------------------------------------------------------------------------


def test_a_correction_is_version_2_and_history_keeps_both(ledger: Ledger) -> None:
    bob = ledger.participants[1]
    first = ledger.metering.import_readings(readings(ledger.participants), source="day.csv")
    fix = MeterReading(bob, DAY + Q, 7_777, 0, ReadingQuality.SUBSTITUTED)
    second = ledger.metering.import_readings([fix], source="fix.csv")
    assert second.batch_id != first.batch_id and second.supersedes is None
    with ledger.context.sessions() as session:
        latest = {
            (r.participant, r.interval_start): r for r in metering_queries.latest_readings(session, DAY, DAY + 4 * Q)
        }
        assert len(latest) == 12
        corrected = latest[(bob, DAY + Q)]
        assert (corrected.version, corrected.injected_wh, corrected.batch_id) == (2, 7_777, second.batch_id)
        assert corrected.quality is ReadingQuality.SUBSTITUTED
        assert {r.version for key, r in latest.items() if key != (bob, DAY + Q)} == {1}
        history = metering_queries.reading_history(session, bob, DAY + Q)
        assert [(h.version, h.batch_id, h.batch.source, h.batch.status) for h in history] == [
            (1, first.batch_id, "day.csv", BatchStatus.COMMITTED),
            (2, second.batch_id, "fix.csv", BatchStatus.COMMITTED),
        ]
        assert history[1].batch.transaction_hash == second.transaction_hash
        used = metering_queries.reading_batches_used(session, DAY, DAY + 4 * Q)
        assert [b.batch_id for b in used] == [first.batch_id, second.batch_id]
        # A period where only the first batch has current readings.
        assert [b.batch_id for b in metering_queries.reading_batches_used(session, DAY, DAY + Q)] == [first.batch_id]
        # The proof of the current version verifies against the correcting batch.
        proof = metering_queries.reading_proof(session, second.batch_id, bob, DAY + Q)
        assert proof is not None and proof.verify()


def test_a_declared_replacement_withdraws_what_it_leaves_out(ledger: Ledger) -> None:
    alice, bob, _ = ledger.participants
    first = ledger.metering.import_readings(readings([alice, bob], intervals=2), source="day.csv")
    replacement = readings([alice], intervals=2, offset=5)
    second = ledger.metering.import_readings(replacement, source="redo.csv", supersedes=first.batch_id)
    assert second.supersedes == first.batch_id
    assert ledger.context.meter_oracle.reading_batch(first.batch_id).superseded_by == second.batch_id
    with ledger.context.sessions() as session:
        latest = metering_queries.latest_readings(session, DAY, DAY + 2 * Q)
        assert {(r.participant, r.version, r.batch_id) for r in latest} == {(alice, 2, second.batch_id)}
        assert [b.batch_id for b in metering_queries.reading_batches_used(session, DAY, DAY + 2 * Q)] == [
            second.batch_id
        ]
    # A batch is superseded once: the refusal comes before anything is stored.
    rows = ledger.count(MeterReadingRow)
    with pytest.raises(errors.BatchAlreadySuperseded):
        ledger.metering.import_readings(readings([bob], intervals=1), source="x", supersedes=first.batch_id)
    with pytest.raises(errors.UnknownBatch):
        ledger.metering.import_readings(readings([bob], intervals=1), source="x", supersedes="0x" + "99" * 32)
    assert ledger.count(MeterReadingRow) == rows


def test_a_newer_price_batch_wins_and_versions_count_up(ledger: Ledger) -> None:
    first = ledger.metering.import_prices(day_prices(8), DAY, DAY + 8 * Q, source="week.csv")
    second = ledger.metering.import_prices(day_prices(4, base=50_000), DAY, DAY + 4 * Q, source="fix.csv")
    with ledger.context.sessions() as session:
        current = metering_queries.current_prices(session, DAY, DAY + 8 * Q)
        assert [price.batch_id for price in current] == [second.batch_id] * 4 + [first.batch_id] * 4
        page = metering_queries.list_latest_prices(session, interval_from=DAY, interval_to=DAY + 8 * Q)
        assert [(p.interval_start - DAY) // Q for p in page.items] == list(range(8))
        assert [p.version for p in page.items] == [2, 2, 2, 2, 1, 1, 1, 1]
        assert [p.price_minor_per_mwh for p in page.items][:2] == [50_000, 50_001]
        assert [p.version for p in metering_queries.price_history(session, DAY)] == [1, 2]


# --- refusals ------------------------------------------------------------------------------------


def test_refused_readings_write_nothing_and_send_nothing(ledger: Ledger) -> None:
    alice, bob, _ = ledger.participants
    stranger = Account.create().address
    bad = [
        MeterReading(alice, DAY, 1, 0),
        MeterReading(alice, DAY, 2, 0),  # duplicate
        MeterReading(bob, DAY + 7, 1, 0),  # misaligned
        MeterReading(stranger, DAY, 1, 0),  # not registered
        MeterReading(bob, DAY, -1, 0),  # negative
    ]
    before = ledger.sent("meter_oracle")
    with pytest.raises(MeteringFileError) as refused:
        ledger.metering.import_readings(bad, source="bad.csv")
    assert [(e.row, e.field) for e in refused.value.errors] == [
        (1, "interval_start"),
        (2, "interval_start"),
        (3, "participant"),
        (4, "injected_wh"),
    ]
    with pytest.raises(MeteringFileError):
        ledger.metering.import_prices({DAY: 1, DAY + 2 * Q: 1}, DAY, DAY + 3 * Q, source="gap.csv")
    assert ledger.sent("meter_oracle") == before
    assert (ledger.count(ReadingBatchRow), ledger.count(MeterReadingRow), ledger.count(ReferencePriceRow)) == (0, 0, 0)


def test_a_batch_the_chain_refuses_is_removed(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    # The meter oracle loses its role between the checks and the commit.
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise errors.Unauthorized("the sending account lacks the role")

    monkeypatch.setattr(ledger.context.meter_oracle, "commit_reading_batch", refuse)
    with pytest.raises(errors.Unauthorized):
        ledger.metering.import_readings(readings(ledger.participants), source="day.csv")
    assert (ledger.count(ReadingBatchRow), ledger.count(MeterReadingRow)) == (0, 0)


def test_an_unindexed_participant_is_checked_on_chain(ledger: Ledger) -> None:
    """The fixture's participants are registered on chain but the indexer never ran."""
    with ledger.context.sessions() as session:
        assert metering_queries.latest_readings(session, DAY, DAY + Q) == []
    registered = ledger.metering.registered_participants()
    assert ledger.participants[0] in registered
    assert Account.create().address not in registered
    assert "0x" + "00" * 20 not in registered
    assert ZERO_ID not in registered  # not an address at all
