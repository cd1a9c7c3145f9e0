"""MeterData on a real node: reading and price batch commitments, every refusal (for both kinds
of batch), supersession, roles, and Merkle verification of single readings and prices against
StandardMerkleTree roots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from ledger import errors
from ledger.chain.compiler import compile_contracts
from ledger.chain.contract_errors import ERROR_CLASSES
from ledger.chain.meter_data import (
    PRICE_LEAF_ENCODING,
    READING_LEAF_ENCODING,
    MeterBatch,
    PriceLeaf,
    ReadingLeaf,
    ReadingQuality,
)
from ledger.chain.transactions import Receipt
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from tests.support.behaviours import assert_error, role_id
from tests.support.settlement_market import (
    SettlementMarket,
    account,
    js_tree,
    merkle_tree,
    new_id,
    settlement_market_fixture,  # noqa: F401  (the `settlement_market` fixture)
)

# A batch commits a root whatever its size: measured 77.6k gas (124k when it supersedes one);
# the bound catches a storage-layout regression.
COMMIT_GAS_BOUND = 100_000


@dataclass(frozen=True)
class Kind:
    """One kind of batch: who commits it, through which call, with which event and view."""

    name: str
    role: str
    other_role: str
    commit: str
    view: str
    event: str
    superseded_event: str
    count_field: str

    def __str__(self) -> str:
        return self.name


READINGS = Kind(
    "readings",
    "meter_oracle",
    "operator",
    "commit_reading_batch",
    "reading_batch",
    "ReadingBatchCommitted",
    "ReadingBatchSuperseded",
    "readingCount",
)
PRICES = Kind(
    "prices",
    "operator",
    "meter_oracle",
    "commit_price_batch",
    "price_batch",
    "PriceBatchCommitted",
    "PriceBatchSuperseded",
    "priceCount",
)
KINDS = [READINGS, PRICES]


def other(kind: Kind) -> Kind:
    return PRICES if kind is READINGS else READINGS


@dataclass(frozen=True)
class BatchArgs:
    batch_id: str
    period_start: int
    period_end: int
    root: str
    count: int
    supersedes: str = ZERO_ID

    def commit(self, m: SettlementMarket, kind: Kind, role: str | None = None) -> Receipt:
        contract = m.meter_data(role or kind.role)
        commit: Callable[..., Receipt] = getattr(contract, kind.commit)
        return commit(self.batch_id, self.period_start, self.period_end, self.root, self.count, self.supersedes)


def valid_batch(m: SettlementMarket, intervals: int = 4) -> BatchArgs:
    """A batch either kind accepts: one leaf per interval (the price rule), fresh id and root."""
    start, end = m.period(intervals)
    return BatchArgs(new_id(), start, end, new_id(), intervals)


def stored(m: SettlementMarket, kind: Kind, batch_id: str) -> MeterBatch:
    view: Callable[[str], MeterBatch] = getattr(m.meter_data("outsider"), kind.view)
    return view(batch_id)


# --- commitments ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_commit_stores_the_batch_and_emits_its_fields(settlement_market: SettlementMarket, kind: Kind) -> None:
    m = settlement_market
    batch = valid_batch(m)
    receipt = batch.commit(m, kind)

    assert receipt.gas_used < COMMIT_GAS_BOUND
    md = m.meter_data("outsider")
    assert md.events(receipt, kind.event) == [
        {
            "batchId": batch.batch_id,
            "periodStart": batch.period_start,
            "periodEnd": batch.period_end,
            "root": batch.root,
            kind.count_field: batch.count,
            "supersedes": ZERO_ID,
            "committer": m.senders[kind.role].address,
        }
    ]
    assert md.events(receipt, kind.superseded_event) == []
    assert stored(m, kind, batch.batch_id) == MeterBatch(
        batch_id=batch.batch_id,
        root=batch.root,
        period_start=batch.period_start,
        period_end=batch.period_end,
        count=batch.count,
        committed_at=m.block_timestamp(receipt),
        supersedes=ZERO_ID,
        superseded_by=ZERO_ID,
    )
    assert not stored(m, other(kind), batch.batch_id).exists


def test_one_transaction_per_batch_whatever_its_size(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    small = valid_batch(m)
    large = replace(valid_batch(m), count=4_000_000_000)
    gas_small = small.commit(m, READINGS).gas_used
    gas_large = large.commit(m, READINGS).gas_used
    # Only the calldata of the count differs (non-zero bytes cost 16 gas, zero bytes 4).
    assert abs(gas_large - gas_small) <= 4 * 12
    assert stored(m, READINGS, large.batch_id).count == 4_000_000_000


def test_the_two_kinds_are_separate_namespaces(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    batch = valid_batch(m)
    batch.commit(m, READINGS)
    prices = replace(batch, root=new_id())
    prices.commit(m, PRICES)

    assert stored(m, READINGS, batch.batch_id).root == batch.root
    assert stored(m, PRICES, batch.batch_id).root == prices.root


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_supersession_forms_one_chain_of_corrections(settlement_market: SettlementMarket, kind: Kind) -> None:
    m = settlement_market
    md = m.meter_data("outsider")
    first = valid_batch(m)
    first.commit(m, kind)
    second = replace(first, batch_id=new_id(), root=new_id(), supersedes=first.batch_id)
    receipt = second.commit(m, kind)

    assert md.events(receipt, kind.event)[0]["supersedes"] == first.batch_id
    assert md.events(receipt, kind.superseded_event) == [{"batchId": first.batch_id, "supersededBy": second.batch_id}]
    assert stored(m, kind, first.batch_id).superseded_by == second.batch_id
    assert stored(m, kind, first.batch_id).root == first.root  # the earlier version stays queryable
    assert stored(m, kind, second.batch_id).supersedes == first.batch_id
    assert stored(m, kind, second.batch_id).superseded_by == ZERO_ID

    third = replace(second, batch_id=new_id(), root=new_id(), supersedes=second.batch_id)
    third.commit(m, kind)
    assert stored(m, kind, second.batch_id).superseded_by == third.batch_id

    fork = replace(first, batch_id=new_id(), root=new_id(), supersedes=first.batch_id)
    with pytest.raises(errors.LedgerError) as refused:
        fork.commit(m, kind)
    assert_error(
        refused.value,
        errors.BatchAlreadySuperseded,
        "batch_already_superseded",
        {"batch_id": fork.batch_id, "supersedes": first.batch_id, "superseded_by": second.batch_id},
        solidity_error="MeterDataBatchAlreadySuperseded",
    )


# --- refusals -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    batch: BatchArgs
    error: type[errors.LedgerError]
    code: str
    solidity_error: str
    context: dict[str, Any]


Breaker = Callable[[SettlementMarket, Kind, BatchArgs], Refusal]


def period_context(b: BatchArgs) -> dict[str, Any]:
    return {"batch_id": b.batch_id, "period_start": b.period_start, "period_end": b.period_end}


def zero_batch_id(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    # Also misaligned: the id is checked first.
    bad = replace(b, batch_id=ZERO_ID, period_start=b.period_start + 1)
    return Refusal(bad, errors.InvalidBatchId, "invalid_batch_id", "MeterDataZeroBatchId", {})


def misaligned(**change: int) -> Breaker:
    def breaks(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
        bad = replace(b, **{name: getattr(b, name) + delta for name, delta in change.items()})
        return Refusal(
            bad, errors.MisalignedPeriod, "misaligned_period", "MeterDataMisalignedPeriod", period_context(bad)
        )

    return breaks


def misaligned_and_reversed(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    bad = replace(b, period_start=b.period_end + 60, period_end=b.period_start)
    return Refusal(bad, errors.MisalignedPeriod, "misaligned_period", "MeterDataMisalignedPeriod", period_context(bad))


def empty_period(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    bad = replace(b, period_end=b.period_start, count=0)  # zero count too: the period comes first
    return Refusal(bad, errors.EmptyPeriod, "empty_period", "MeterDataEmptyPeriod", period_context(bad))


def reversed_period(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    bad = replace(b, period_start=b.period_end, period_end=b.period_start)
    return Refusal(bad, errors.EmptyPeriod, "empty_period", "MeterDataEmptyPeriod", period_context(bad))


def zero_root(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    bad = replace(b, root=ZERO_ID, count=0)  # zero count too: the root comes first
    return Refusal(
        bad, errors.MissingMerkleRoot, "missing_merkle_root", "MeterDataZeroRoot", {"batch_id": bad.batch_id}
    )


def zero_count(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    bad = replace(b, count=0)
    return Refusal(bad, errors.EmptyCommitment, "empty_commitment", "MeterDataEmptyBatch", {"batch_id": bad.batch_id})


def duplicate(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    b.commit(m, k)
    # Another root, period and an unknown `supersedes`: the id is checked before the latter.
    start, end = m.period(2)
    bad = replace(b, root=new_id(), period_start=start, period_end=end, count=2, supersedes=new_id())
    return Refusal(bad, errors.DuplicateBatch, "duplicate_batch", "MeterDataDuplicateBatch", {"batch_id": b.batch_id})


def supersedes_unknown(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    bad = replace(b, supersedes=new_id())
    context = {"batch_id": bad.batch_id, "supersedes": bad.supersedes}
    return Refusal(bad, errors.UnknownBatch, "unknown_batch", "MeterDataUnknownSupersededBatch", context)


def supersedes_other_kind(m: SettlementMarket, k: Kind, b: BatchArgs) -> Refusal:
    theirs = replace(b, batch_id=new_id(), root=new_id())
    theirs.commit(m, other(k))
    bad = replace(b, supersedes=theirs.batch_id)
    context = {"batch_id": bad.batch_id, "supersedes": bad.supersedes}
    return Refusal(bad, errors.UnknownBatch, "unknown_batch", "MeterDataUnknownSupersededBatch", context)


BREAKERS: dict[str, Breaker] = {
    "zero batch id": zero_batch_id,
    "misaligned start": misaligned(period_start=1),
    "misaligned end": misaligned(period_end=-300),
    "misaligned and reversed": misaligned_and_reversed,
    "empty period": empty_period,
    "reversed period": reversed_period,
    "zero root": zero_root,
    "zero count": zero_count,
    "duplicate id": duplicate,
    "supersedes an unknown batch": supersedes_unknown,
    "supersedes a batch of the other kind": supersedes_other_kind,
}


@pytest.mark.parametrize("kind", KINDS, ids=str)
@pytest.mark.parametrize("breaker", BREAKERS.values(), ids=BREAKERS.keys())
def test_refused(settlement_market: SettlementMarket, kind: Kind, breaker: Breaker) -> None:
    m = settlement_market
    refusal = breaker(m, kind, valid_batch(m))
    before = stored(m, kind, refusal.batch.batch_id)
    with pytest.raises(errors.LedgerError) as refused:
        refusal.batch.commit(m, kind)
    assert_error(refused.value, refusal.error, refusal.code, refusal.context, solidity_error=refusal.solidity_error)
    assert stored(m, kind, refusal.batch.batch_id) == before


@pytest.mark.parametrize("intervals, count", [(4, 3), (4, 5), (96, 1)])
def test_a_price_batch_holds_one_price_per_interval(
    settlement_market: SettlementMarket, intervals: int, count: int
) -> None:
    m = settlement_market
    batch = replace(valid_batch(m, intervals), count=count)
    with pytest.raises(errors.LedgerError) as refused:
        batch.commit(m, PRICES)
    assert_error(
        refused.value,
        errors.PriceCountMismatch,
        "price_count_mismatch",
        {"batch_id": batch.batch_id, "price_count": count, "interval_count": intervals},
        solidity_error="MeterDataPriceCountMismatch",
    )
    # A reading batch has no such rule: any number of participants reads each interval.
    batch.commit(m, READINGS)


@pytest.mark.parametrize("kind", KINDS, ids=str)
@pytest.mark.parametrize("role", ["other", "outsider", "admin"])
def test_only_the_kinds_role_commits(settlement_market: SettlementMarket, kind: Kind, role: str) -> None:
    m = settlement_market
    sender_role = kind.other_role if role == "other" else role
    batch = valid_batch(m)
    with pytest.raises(errors.LedgerError) as refused:
        batch.commit(m, kind, role=sender_role)
    assert_error(
        refused.value,
        errors.Unauthorized,
        "unauthorized",
        {"account": m.senders[sender_role].address, "needed_role": role_id(kind.role)},
        solidity_error="AccessControlUnauthorizedAccount",
    )
    assert not stored(m, kind, batch.batch_id).exists


# --- verification -----------------------------------------------------------------------------------


def test_readings_verify_against_the_committed_root(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    start, end = m.period(8)
    participants = [account().address for _ in range(5)]
    readings = [
        ReadingLeaf(p, t, (i * 7_919) % 900_000, (i * 104_729) % 1_100_000, ReadingQuality(i % 3))
        for i, (p, t) in enumerate((p, t) for p in participants for t in range(start, end, INTERVAL_SECONDS))
    ]
    tree = merkle_tree([r.leaf_values() for r in readings], READING_LEAF_ENCODING)
    batch = BatchArgs(new_id(), start, end, tree.root, len(readings))
    batch.commit(m, READINGS)
    md = m.meter_data("outsider")

    for reading, proof in zip(readings, tree.proofs, strict=True):
        assert md.verify_reading(batch.batch_id, reading, proof)

    reading, proof = readings[7], tree.proofs[7]
    tampered = [
        replace(reading, injected_wh=reading.injected_wh + 1),
        replace(reading, withdrawn_wh=reading.withdrawn_wh + 1),
        replace(reading, quality=ReadingQuality((reading.quality + 1) % 3)),
        replace(reading, participant=participants[0] if reading.participant != participants[0] else participants[1]),
        replace(reading, interval_start=reading.interval_start + INTERVAL_SECONDS),
    ]
    for changed in tampered:
        assert not md.verify_reading(batch.batch_id, changed, proof), changed
    assert not md.verify_reading(batch.batch_id, reading, tree.proofs[8])  # another leaf's proof
    assert not md.verify_reading(batch.batch_id, reading, proof[:-1])  # a truncated proof
    assert not md.verify_reading(new_id(), reading, proof)  # an unknown batch
    assert not m.meter_data("outsider").verify_price(batch.batch_id, PriceLeaf(start, 1), proof)


def test_a_reading_outside_the_period_or_of_unknown_quality_does_not_verify(
    settlement_market: SettlementMarket,
) -> None:
    """The oracle committed it, but it is not a reading of the batch's period: refused."""
    m = settlement_market
    start, end = m.period(2)
    who = account().address
    readings = [
        ReadingLeaf(who, start, 1, 2),
        ReadingLeaf(who, end, 1, 2),  # the period is [start, end)
        ReadingLeaf(who, start - INTERVAL_SECONDS, 1, 2),
        ReadingLeaf(who, start + 60, 1, 2),  # not an interval start
    ]
    values = [r.leaf_values() for r in readings] + [[who, start + INTERVAL_SECONDS, 1, 2, 3]]
    tree = merkle_tree(values, READING_LEAF_ENCODING)
    batch = BatchArgs(new_id(), start, end, tree.root, len(values))
    batch.commit(m, READINGS)
    md = m.meter_data("outsider")

    assert md.verify_reading(batch.batch_id, readings[0], tree.proofs[0])
    for reading, proof in zip(readings[1:], tree.proofs[1:4], strict=True):
        assert not md.verify_reading(batch.batch_id, reading, proof), reading
    quality_3 = md.encode(
        "verifyReading",
        [
            bytes.fromhex(batch.batch_id[2:]),
            who,
            start + INTERVAL_SECONDS,
            1,
            2,
            3,
            [bytes.fromhex(p[2:]) for p in tree.proofs[4]],
        ],
    )
    answer = m.rpc.call("eth_call", {"to": md.address, "data": quality_3}, "latest")
    assert int(answer, 16) == 0


def test_prices_verify_against_the_committed_root(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    start, end = m.period(96)
    prices = [PriceLeaf(t, 30_000 + (t // INTERVAL_SECONDS) % 97 * 100) for t in range(start, end, INTERVAL_SECONDS)]
    tree = merkle_tree([p.leaf_values() for p in prices], PRICE_LEAF_ENCODING)
    batch = BatchArgs(new_id(), start, end, tree.root, len(prices))
    batch.commit(m, PRICES)
    md = m.meter_data("outsider")

    for price, proof in zip(prices, tree.proofs, strict=True):
        assert md.verify_price(batch.batch_id, price, proof)
    price, proof = prices[10], tree.proofs[10]
    assert not md.verify_price(batch.batch_id, replace(price, price_minor_per_mwh=price.price_minor_per_mwh + 1), proof)
    assert not md.verify_price(batch.batch_id, replace(price, interval_start=start + 11 * INTERVAL_SECONDS), proof)
    assert not md.verify_price(batch.batch_id, price, tree.proofs[11])
    assert not md.verify_price(new_id(), price, proof)
    reading = ReadingLeaf(account().address, price.interval_start, price.price_minor_per_mwh, 0)
    assert not md.verify_reading(batch.batch_id, reading, proof)  # a price batch is no reading batch


def test_a_single_leaf_batch_verifies_with_an_empty_proof(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    start, end = m.period(1)
    price = PriceLeaf(start, 41_000)
    tree = merkle_tree([price.leaf_values()], PRICE_LEAF_ENCODING)
    assert tree.proofs == [[]]
    batch = BatchArgs(new_id(), start, end, tree.root, 1)
    batch.commit(m, PRICES)
    assert m.meter_data("outsider").verify_price(batch.batch_id, price, [])


def test_python_and_javascript_trees_agree_on_readings() -> None:
    """The roots the tests commit are the ones `@openzeppelin/merkle-tree` computes."""
    values = [
        ReadingLeaf(account().address, 900 * i, i * 1_000, 0, ReadingQuality.ESTIMATED).leaf_values() for i in range(7)
    ]
    assert merkle_tree(values, READING_LEAF_ENCODING) == js_tree(values, READING_LEAF_ENCODING)


def test_every_custom_error_decodes_to_a_typed_exception() -> None:
    artifacts = compile_contracts()
    for name in ("MeterData", "Settlement"):
        declared = {item["name"] for item in artifacts[name].abi if item["type"] == "error"}
        missing = declared - set(ERROR_CLASSES)
        assert not missing, f"{name} errors without an entry in ERROR_CLASSES: {sorted(missing)}"
        for error in declared:
            cls, _ = ERROR_CLASSES[error]
            assert cls is not errors.ContractReverted or error in ("InvalidShortString", "StringTooLong"), error
