"""The services' own records of their transactions after a reorg, on a real anvil and both
databases: a reading batch, a settlement run's commit, a dispute's opening and resolution, a
relayed trade and a participant registration whose block a reorg replaced are moved to where
their transaction was mined again, unconfirmed while it waits in the mempool, or returned to where
their service retries them when it is gone; retrying commits nothing twice.
`scripts/verify_index.py` reports the stale record before the repair and nothing after it.
`decide` (the rule) is checked on its own first."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from eth_account import Account
from eth_utils import keccak
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ledger.chain.node import LocalNode
from ledger.domain.settlement import LineKind, MeterReading
from ledger.domain.trade import ParticipantKind
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.errors import ConflictError
from ledger.services import metering as metering_module
from ledger.services import settlement as settlement_module
from ledger.services.participants import RegistrationRequest
from ledger.services.reconcile import Fate, Location, Repair, decide
from ledger.services.settlement import RunAction
from ledger.services.verification import DifferenceKind
from ledger.signing.disputes import sign_dispute
from ledger.store import outbox, registrations
from ledger.store.metering_models import BatchStatus, PriceBatchRow, ReadingBatchRow
from ledger.store.models import IndexedBlock, Participant, SubmissionStatus
from ledger.store.registration_models import ParticipantRegistration, RegistrationStatus
from ledger.store.settlement_models import Dispute, DisputeStatus, RunStatus, SettlementRun
from scripts import verify_index
from tests.support.reorg import about, block_number_of, differences, index_through_reorg, move_into_next_block
from tests.support.settled_world import finalize, world_with
from tests.test_settlement_service import World, open_world, two_intervals

CONFIRMATIONS = 3
TX, OTHER_TX = "0x" + "aa" * 32, "0x" + "bb" * 32
HERE = Location(TX, 10)

Row = TypeVar("Row")


# --- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fate", list(Fate))
def test_a_record_follows_its_effect_wherever_the_chain_has_it(fate: Fate) -> None:
    assert decide(HERE, Location(TX, 10), fate) is Repair.KEEP
    assert decide(HERE, Location(TX, 12), fate) is Repair.MOVE  # mined again later
    assert decide(HERE, Location(OTHER_TX, 11), fate) is Repair.MOVE  # a resend of ours won
    assert decide(None, Location(TX, 12), fate) is Repair.MOVE  # an unconfirmed record, mined now


def test_without_its_effect_a_record_waits_for_a_pending_transaction_or_is_retried() -> None:
    assert decide(HERE, None, Fate.PENDING) is Repair.UNCONFIRM
    assert decide(None, None, Fate.PENDING) is Repair.KEEP  # still waiting
    for gone in (Fate.GONE, Fate.REVERTED, Fate.MINED):  # mined without the effect: it is gone too
        assert decide(HERE, None, gone) is Repair.RESET
        assert decide(None, None, gone) is Repair.RESET


def test_a_block_hash_and_an_outcome_count_where_the_record_keeps_them() -> None:
    assert Location(TX, 10, "0x01").same_as(Location(TX, 10, "0x01"))
    assert not Location(TX, 10, "0x01").same_as(Location(TX, 10, "0x02"))  # the same height, replaced
    assert Location(TX, 10).same_as(Location(TX, 10, "0x02"))  # the record keeps no hash
    assert not Location(TX, 10, outcome="recorded").same_as(Location(TX, 10, outcome="rejected"))


def test_a_submission_is_relocated_unconfirmed_and_reopened(store_session_factory: sessionmaker[Session]) -> None:
    trade_id = "0x" + "cc" * 32
    with store_session_factory.begin() as session:
        submission, _ = outbox.add_submission(session, trade_id, {"trade": "signed"})
        outbox.mark_pending(session, [submission.id], TX)
        outbox.mark_recorded(session, [trade_id], TX, 10)

        # Re-executed in another order: rejected now, by the same transaction in a later block.
        outbox.relocate(session, trade_id, SubmissionStatus.REJECTED, TX, 12, ("DuplicateTrade", "recorded already"))
        row = outbox.get_submission_by_trade(session, trade_id)
        assert row is not None
        assert (row.status, row.block_number, row.error_code) == (SubmissionStatus.REJECTED, 12, "DuplicateTrade")

        outbox.unconfirm(session, [trade_id], TX)
        assert (row.status, row.transaction_hash, row.block_number) == (SubmissionStatus.PENDING, TX, None)
        outbox.reopen(session, [trade_id])
        assert (row.status, row.transaction_hash, row.attempts) == (SubmissionStatus.ACCEPTED, None, 0)
        with pytest.raises(ConflictError):
            outbox.unconfirm(session, [trade_id], TX)  # an accepted trade has no transaction to wait for


def test_a_cancellation_is_moved_unconfirmed_and_reopened(store_session_factory: sessionmaker[Session]) -> None:
    trade_id, digest = "0x" + "cc" * 32, "0x" + "dd" * 32
    with store_session_factory.begin() as session:
        row, created = outbox.add_cancellation(session, digest, trade_id, {"tradeId": trade_id})
        assert created and outbox.add_cancellation(session, digest, trade_id, {})[0].id == row.id
        outbox.mark_cancellations_pending(session, [row.id], TX)
        outbox.settle_cancellation(session, row.id, SubmissionStatus.RECORDED, TX, 10)
        assert outbox.live_cancellations(session, [trade_id]) == {trade_id}

        outbox.settle_cancellation(session, row.id, SubmissionStatus.REJECTED, TX, 12, ("trade_not_active", "no"))
        assert (row.status, row.block_number, row.error_code) == (SubmissionStatus.REJECTED, 12, "trade_not_active")
        assert outbox.live_cancellations(session, [trade_id]) == set()

        outbox.unconfirm_cancellation(session, row.id, TX)
        assert (row.status, row.transaction_hash, row.block_number) == (SubmissionStatus.PENDING, TX, None)
        outbox.reopen_cancellation(session, row.id)
        assert (row.status, row.transaction_hash, row.attempts) == (SubmissionStatus.ACCEPTED, None, 0)
        with pytest.raises(ConflictError):
            outbox.unconfirm_cancellation(session, row.id, TX)


def test_a_registration_is_moved_unconfirmed_and_reopened(store_session_factory: sessionmaker[Session]) -> None:
    address = Account.create().address
    with store_session_factory.begin() as session:
        row, _ = registrations.add_registration(session, address, ParticipantKind.CONSUMER, "0x" + "ee" * 32)
        registrations.mark_pending(session, [row.id], TX)
        registrations.mark_registered(session, [row.id], TX, 10)

        # Re-executed in another order: refused now, by the same transaction in a later block.
        reason = ("participant_already_registered", "the account is registered already")
        registrations.relocate(session, row.id, RegistrationStatus.REJECTED, TX, 12, reason)
        assert (row.status, row.block_number, row.error_code) == (RegistrationStatus.REJECTED, 12, reason[0])
        registrations.relocate(session, row.id, RegistrationStatus.REGISTERED, OTHER_TX, 13)
        assert (row.status, row.transaction_hash, row.block_number, row.error_code) == (
            RegistrationStatus.REGISTERED,
            OTHER_TX,
            13,
            None,
        )

        registrations.unconfirm(session, row.id, TX)
        assert (row.status, row.transaction_hash, row.block_number) == (RegistrationStatus.PENDING, TX, None)
        registrations.reopen(session, row.id)
        assert (row.status, row.transaction_hash, row.attempts) == (RegistrationStatus.ACCEPTED, None, 0)
        registrations.unconfirm(session, row.id, TX)  # an accepted registration has no transaction to wait for
        assert (row.status, row.transaction_hash) == (RegistrationStatus.ACCEPTED, None)


# --- on a chain --------------------------------------------------------------------------------


@pytest.fixture
def world(anvil: LocalNode, database_url: str, tmp_path: Path) -> Iterator[World]:
    with world_with(anvil.rpc_url, database_url, tmp_path, confirmations=CONFIRMATIONS) as created:
        try:
            yield created
        finally:
            created.ledger.stop()  # ends the reconciler's follow-up before the database goes


def commit_logs(world: World, contract: str, signature: str, key: str) -> list[dict[str, str]]:
    address = world.context.deployment.contracts[contract].address
    topic = "0x" + keccak(text=signature).hex()
    return list(
        world.rpc.call(
            "eth_getLogs", {"address": address, "fromBlock": "0x0", "toBlock": "latest", "topics": [topic, key]}
        )
    )


def stored(world: World, model: type[Row], key: str) -> Row:
    """The service's record `key` as stored now."""
    with world.context.sessions() as session:
        row = session.get(model, key)
        assert row is not None
        return row


def batch_row(world: World, batch_id: str) -> ReadingBatchRow:
    return stored(world, ReadingBatchRow, batch_id)


def test_a_reading_batch_moves_waits_and_is_committed_again_once(world: World) -> None:
    g = world.participant(ParticipantKind.GENERATOR)
    start, _ = world.future_period(1)
    readings = [MeterReading(g.address, start, 1_000, 0)]
    first = world.metering.import_readings(readings, source="test")
    batch_id, tx = first.batch_id, first.transaction_hash
    assert tx is not None
    world.index()

    # (a) mined again in the next block: the record moves there.
    moved_to = move_into_next_block(world, tx)
    fork = index_through_reorg(world)
    stale = about(differences(world), "reading_batches")
    assert [(d.kind, d.field, d.chain_value, d.index_value) for d in stale] == [
        (DifferenceKind.CONTENT, "block_number", moved_to, moved_to - 1)
    ]
    world.ledger.reconciler.after_rollback(fork)
    row = batch_row(world, batch_id)
    assert (row.status, row.transaction_hash, row.block_number) == (BatchStatus.COMMITTED, tx, moved_to)
    assert differences(world) == []

    # (b) dropped, then back in the mempool: prepared with its transaction until it is mined.
    raw = world.rpc.call("eth_getRawTransactionByHash", tx)
    world.rpc.call("anvil_reorg", 1, [])
    fork = index_through_reorg(world)
    stale = about(differences(world), "reading_batches")
    assert [(d.field, d.detail) for d in stale] == [("status", "committed here, not on chain")]
    world.rpc.call("evm_setAutomine", False)
    try:
        world.rpc.call("eth_sendRawTransaction", raw)
        world.ledger.reconciler.after_rollback(fork)
        row = batch_row(world, batch_id)
        assert (row.status, row.transaction_hash, row.block_number) == (BatchStatus.PREPARED, tx, None)
        assert differences(world) == []
        world.rpc.call("evm_mine")
    finally:
        world.rpc.call("evm_setAutomine", True)
    world.index()
    world.ledger.reconciler.reconcile(None)  # what the follow-up of unconfirmed records runs
    row = batch_row(world, batch_id)
    assert (row.status, row.transaction_hash, row.block_number) == (
        BatchStatus.COMMITTED,
        tx,
        block_number_of(world, tx),
    )

    # (c) dropped for good: prepared; importing it again commits it, once.
    world.rpc.call("anvil_reorg", 1, [])
    world.ledger.reconciler.after_rollback(index_through_reorg(world))
    row = batch_row(world, batch_id)
    assert (row.status, row.transaction_hash, row.block_number) == (BatchStatus.PREPARED, None, None)
    assert commit_logs(world, "MeterData", READING_COMMITTED, batch_id) == []
    again = world.metering.import_readings(readings, source="test")
    assert (again.batch_id, again.outcome, again.status) == (batch_id, "resumed", BatchStatus.COMMITTED)
    assert world.metering.import_readings(readings, source="test").outcome == "existing"
    assert len(commit_logs(world, "MeterData", READING_COMMITTED, batch_id)) == 1
    world.index()
    assert differences(world) == []


READING_COMMITTED = metering_module.READINGS.event


def run_row(world: World, run_id: str) -> SettlementRun:
    return stored(world, SettlementRun, run_id)


def dispute_row(world: World, dispute_id: str) -> Dispute:
    return stored(world, Dispute, dispute_id)


def test_a_run_commit_moves_with_its_block_and_once_dropped_is_committed_again_never_twice(world: World) -> None:
    market = two_intervals(world)
    start, end = market.period
    finalize(world)
    run = world.settlement.execute(start, end).run
    tx = run.transaction_hash
    assert tx is not None
    world.index()

    moved_to = move_into_next_block(world, tx)
    fork = index_through_reorg(world)
    stale = {d.field: (d.chain_value, d.index_value) for d in about(differences(world), "settlement_runs")}
    assert stale.keys() == {"block_hash", "block_number"} and stale["block_number"] == (moved_to, moved_to - 1)
    world.ledger.reconciler.after_rollback(fork)
    row = run_row(world, run.run_id)
    block = world.rpc.call("eth_getBlockByNumber", hex(moved_to), False)
    assert (row.status, row.transaction_hash, row.block_number) == (RunStatus.COMMITTED, tx, moved_to)
    assert (row.block_hash, row.committed_at) == (block["hash"], int(block["timestamp"], 16))
    assert row.dispute_window_ends == world.context.settler.run(run.run_id).dispute_window_ends
    assert differences(world) == []

    world.rpc.call("anvil_reorg", 1, [])
    fork = index_through_reorg(world)
    gone = about(differences(world), "settlement_runs")
    assert [(d.field, d.detail) for d in gone] == [("status", "committed here, not on chain")]
    world.ledger.reconciler.after_rollback(fork)
    row = run_row(world, run.run_id)
    assert (row.status, row.transaction_hash, row.block_number, row.committed_at) == (
        RunStatus.COMPUTED,
        None,
        None,
        None,
    )
    assert differences(world) == []

    outcome = world.settlement.execute(start, end)
    assert (outcome.action, outcome.run.run_id, outcome.run.status) == (
        RunAction.RESUMED,
        run.run_id,
        RunStatus.COMMITTED,
    )
    assert world.settlement.execute(start, end).action is RunAction.UNCHANGED
    assert len(world.commit_logs(run.run_id)) == 1
    assert world.context.settler.latest_version(start, end) == 1
    world.index()
    assert differences(world) == []


def test_a_dropped_dispute_is_relayed_again_and_a_dropped_resolution_reopens_it(world: World) -> None:
    market = two_intervals(world)
    start, end = market.period
    finalize(world)
    run = world.settlement.execute(start, end).run
    account = market.r
    line = world.settlement.line_proof(run.run_id, account.address, int(LineKind.TOTAL), ZERO_ID).line
    reason = "the second interval is missing"
    deadline = world.now() + 3600
    reason_hash = "0x" + keccak(text=reason).hex()
    signature = sign_dispute(account, world.context.settlement_operator.domain, line, reason_hash, deadline)
    opened = world.settlement.open_dispute(
        run.run_id, account.address, int(LineKind.TOTAL), ZERO_ID, reason, deadline, signature
    )
    dispute_id = opened.dispute_id
    world.index()

    world.rpc.call("anvil_reorg", 1, [])
    fork = index_through_reorg(world)
    stale = about(differences(world), "disputes")
    assert [(d.field, d.detail) for d in stale] == [("status", "opened here, not on chain")]
    world.ledger.reconciler.after_rollback(fork)  # relays the account's signed dispute again
    row = dispute_row(world, dispute_id)
    # The same signed transaction, byte for byte, when the operator's nonce and fees are unchanged.
    assert row.status is DisputeStatus.OPEN and row.opened_block_number > opened.opened_block_number
    assert row.opened_block_number == block_number_of(world, row.opened_transaction_hash)
    assert len(commit_logs(world, "Settlement", settlement_module.DISPUTE_OPENED, dispute_id)) == 1
    world.index()
    assert differences(world) == []

    resolution = "it is estimated, as the rules say"
    world.settlement.resolve_dispute(dispute_id, False, resolution)
    world.index()
    world.rpc.call("anvil_reorg", 1, [])
    fork = index_through_reorg(world)
    stale = about(differences(world), "disputes")
    assert [(d.field, d.chain_value, d.index_value) for d in stale] == [("status", "open", "rejected")]
    world.ledger.reconciler.after_rollback(fork)
    row = dispute_row(world, dispute_id)
    assert (row.status, row.resolution, row.resolved_transaction_hash) == (DisputeStatus.OPEN, None, None)
    assert differences(world) == []

    resolved = world.settlement.resolve_dispute(dispute_id, False, resolution)
    assert resolved.status is DisputeStatus.REJECTED
    assert len(commit_logs(world, "Settlement", settlement_module.DISPUTE_RESOLVED, dispute_id)) == 1
    world.index()
    assert differences(world) == []


def batch_dropped_by_an_unrepaired_reorg(world: World) -> str:
    """A reading batch committed, then dropped by a reorg the index followed but nobody repaired:
    its record still says committed."""
    g = world.participant(ParticipantKind.GENERATOR)
    start, _ = world.future_period(1)
    batch_id = world.metering.import_readings([MeterReading(g.address, start, 1_000, 0)], source="test").batch_id
    world.index()
    world.rpc.call("anvil_reorg", 1, [])
    index_through_reorg(world)
    return batch_id


def test_verify_index_repairs_a_stale_record_on_demand(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reorg the service did not see (its indexer rolled back, it stopped before repairing)."""
    batch_id = batch_dropped_by_an_unrepaired_reorg(world)
    settings = world.context.settings
    flags = ["--rpc-url", world.context.rpc.url, "--chain-id", str(settings.chain_id)]
    flags += ["--deployment-file", str(settings.deployment_file), "--database-url", settings.database_url]

    assert verify_index.main(flags) == 1
    assert f"content: reading_batches {batch_id} status: committed here, not on chain" in capsys.readouterr().out

    assert verify_index.main([*flags, "--repair"]) == 0
    out = capsys.readouterr().out
    assert f"repaired: reading_batches {batch_id}: reset" in out
    assert out.rstrip().endswith("the index equals the chain")
    assert batch_row(world, batch_id).status is BatchStatus.PREPARED


def test_start_up_repair_checks_every_record_when_the_index_window_cannot_be_read(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's indexer thread runs `at_start` first: a database hiccup there must not kill it."""
    batch_id = batch_dropped_by_an_unrepaired_reorg(world)
    read_sessions = world.context.read_sessions
    failures = iter([OperationalError("SELECT min(number)", {}, Exception("database is locked"))])

    def flaky_read_sessions() -> Session:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return read_sessions()

    monkeypatch.setattr(world.context, "read_sessions", flaky_read_sessions)
    world.ledger.reconciler.at_start()

    assert next(failures, None) is None  # the window's read failed, and the pass went on
    assert batch_row(world, batch_id).status is BatchStatus.PREPARED
    assert differences(world) == []


def test_a_dropped_second_version_makes_the_first_current_again_until_it_is_committed_again(world: World) -> None:
    """Repaired at start-up, as by a service that restarts after the rollback."""
    market = two_intervals(world)
    start, end = market.period
    finalize(world)
    first = world.settlement.execute(start, end).run
    world.readings(MeterReading(market.r.address, start + INTERVAL_SECONDS, 0, 380_000))  # the missing reading
    finalize(world)
    second = world.settlement.execute(start, end).run
    assert second.version == 2
    world.index()

    world.rpc.call("anvil_reorg", 1, [])
    index_through_reorg(world)
    world.ledger.reconciler.at_start()
    assert (run_row(world, second.run_id).status, run_row(world, first.run_id).status) == (
        RunStatus.COMPUTED,
        RunStatus.COMMITTED,
    )
    assert run_row(world, first.run_id).superseded_by is None
    assert differences(world) == []

    outcome = world.settlement.execute(start, end)
    assert (outcome.action, outcome.run.run_id, outcome.run.version) == (RunAction.RESUMED, second.run_id, 2)
    assert (run_row(world, first.run_id).status, run_row(world, first.run_id).superseded_by) == (
        RunStatus.SUPERSEDED,
        second.run_id,
    )
    assert len(world.commit_logs(second.run_id)) == 1
    assert world.context.settler.latest_version(start, end) == 2
    world.index()
    assert differences(world) == []


def test_a_dispute_re_executed_before_its_run_reverts_and_is_relayed_once_the_run_is_committed_again(
    world: World,
) -> None:
    market = two_intervals(world)
    start, end = market.period
    finalize(world)
    run = world.settlement.execute(start, end).run
    account = market.r
    line = world.settlement.line_proof(run.run_id, account.address, int(LineKind.TOTAL), ZERO_ID).line
    reason, deadline = "the second interval is missing", world.now() + 3600
    reason_hash = "0x" + keccak(text=reason).hex()
    signature = sign_dispute(account, world.context.settlement_operator.domain, line, reason_hash, deadline)
    opened = world.settlement.open_dispute(
        run.run_id, account.address, int(LineKind.TOTAL), ZERO_ID, reason, deadline, signature
    )
    world.index()

    # The run's block and the dispute's are replaced; only the dispute is mined again, first: it reverts.
    assert run.block_number is not None
    assert opened.opened_block_number == run.block_number + 1 == int(world.rpc.call("eth_blockNumber"), 16)
    raw = world.rpc.call("eth_getRawTransactionByHash", opened.opened_transaction_hash)
    world.rpc.call("anvil_reorg", 2, [[raw, 0]])
    assert world.rpc.call("eth_getTransactionReceipt", opened.opened_transaction_hash)["status"] == "0x0"
    world.ledger.reconciler.after_rollback(index_through_reorg(world))
    assert run_row(world, run.run_id).status is RunStatus.COMPUTED
    stale = about(differences(world), "disputes")
    assert [(d.field, d.detail) for d in stale] == [("status", "opened here, not on chain")]

    assert world.settlement.execute(start, end).action is RunAction.RESUMED
    world.ledger.reconciler.reconcile(None)  # what the follow-up runs: the run is back, so is the dispute
    row = dispute_row(world, opened.dispute_id)
    assert row.opened_transaction_hash != opened.opened_transaction_hash
    assert row.opened_block_number == block_number_of(world, row.opened_transaction_hash)
    assert len(commit_logs(world, "Settlement", settlement_module.DISPUTE_OPENED, opened.dispute_id)) == 1
    world.index()
    assert differences(world) == []


def test_a_dispute_waiting_to_be_relayed_again_is_found_after_a_restart_outside_the_window(
    world: World,
) -> None:
    """The opening a reorg took back waits for its run's commit; the service restarts, and by the
    time the run is committed again its block is far below the indexer's 256-block window."""
    market = two_intervals(world)
    start, end = market.period
    finalize(world)
    run = world.settlement.execute(start, end).run
    account = market.r
    line = world.settlement.line_proof(run.run_id, account.address, int(LineKind.TOTAL), ZERO_ID).line
    reason, deadline = "the second interval is missing", world.now() + 3600
    reason_hash = "0x" + keccak(text=reason).hex()
    signature = sign_dispute(account, world.context.settlement_operator.domain, line, reason_hash, deadline)
    opened = world.settlement.open_dispute(
        run.run_id, account.address, int(LineKind.TOTAL), ZERO_ID, reason, deadline, signature
    )
    world.index()
    raw = world.rpc.call("eth_getRawTransactionByHash", opened.opened_transaction_hash)
    world.rpc.call("anvil_reorg", 2, [[raw, 0]])  # the dispute mined again before its run: it reverts
    world.ledger.reconciler.after_rollback(index_through_reorg(world))
    assert run_row(world, run.run_id).status is RunStatus.COMPUTED
    row = dispute_row(world, opened.dispute_id)
    assert row.opening_unconfirmed and row.opened_transaction_hash == opened.opened_transaction_hash
    assert world.settlement.get_dispute(opened.dispute_id).opening_unconfirmed
    world.ledger.stop()

    with open_world(world.context.settings) as restarted:  # a new process: nothing in memory
        restarted.rpc.call("anvil_mine", hex(300))
        restarted.index()
        with restarted.context.sessions() as session:
            lowest = session.scalar(select(func.min(IndexedBlock.number)))
        assert lowest is not None and lowest > row.opened_block_number  # out of the window at_start checks
        restarted.ledger.reconciler.at_start()
        assert restarted.settlement.execute(start, end).action is RunAction.RESUMED
        restarted.ledger.reconciler.reconcile(None)  # what the follow-up runs
        relayed = dispute_row(restarted, opened.dispute_id)
        assert not relayed.opening_unconfirmed
        assert relayed.opened_transaction_hash != opened.opened_transaction_hash
        assert relayed.opened_block_number == block_number_of(restarted, relayed.opened_transaction_hash)
        assert len(commit_logs(restarted, "Settlement", settlement_module.DISPUTE_OPENED, opened.dispute_id)) == 1
        restarted.ledger.stop()


def test_an_import_waits_for_its_commit_back_in_the_mempool_rather_than_send_another(world: World) -> None:
    g = world.participant(ParticipantKind.GENERATOR)
    start, _ = world.future_period(1)
    readings = [MeterReading(g.address, start, 1_000, 0)]
    first = world.metering.import_readings(readings, source="test")
    tx = first.transaction_hash
    assert tx is not None
    world.index()
    raw = world.rpc.call("eth_getRawTransactionByHash", tx)
    nonce = int(world.rpc.call("eth_getTransactionByHash", tx)["nonce"], 16)
    oracle = world.context.meter_oracle.sender.address

    world.rpc.call("anvil_reorg", 1, [])
    fork = index_through_reorg(world)
    world.rpc.call("evm_setAutomine", False)
    try:
        world.rpc.call("eth_sendRawTransaction", raw)
        world.ledger.reconciler.after_rollback(fork)
        row = batch_row(world, first.batch_id)
        assert (row.status, row.transaction_hash) == (BatchStatus.PREPARED, tx)
        with ThreadPoolExecutor(1) as pool:
            importing = pool.submit(world.metering.import_readings, readings, source="test")
            time.sleep(1.0)  # the import finds the batch prepared, its transaction pending: it waits
            assert not importing.done()
            world.rpc.call("evm_mine")
            again = importing.result(timeout=60)
    finally:
        world.rpc.call("evm_setAutomine", True)
    assert (again.outcome, again.status, again.transaction_hash) == ("resumed", BatchStatus.COMMITTED, tx)
    assert int(world.rpc.call("eth_getTransactionCount", oracle, "latest"), 16) == nonce + 1  # nothing else sent
    world.index()
    assert differences(world) == []


def test_a_dropped_price_batch_is_prepared_again_and_committed_once(world: World) -> None:
    start, end = world.future_period(2)
    prices = dict.fromkeys(range(start, end, INTERVAL_SECONDS), 45_000)
    first = world.metering.import_prices(prices, start, end, source="test")
    world.index()
    world.rpc.call("anvil_reorg", 1, [])
    world.ledger.reconciler.after_rollback(index_through_reorg(world))
    with world.context.sessions() as session:
        row = session.get(PriceBatchRow, first.batch_id)
        assert row is not None and (row.status, row.transaction_hash) == (BatchStatus.PREPARED, None)
    assert differences(world) == []

    again = world.metering.import_prices(prices, start, end, source="test")
    assert (again.batch_id, again.outcome, again.status) == (first.batch_id, "resumed", BatchStatus.COMMITTED)
    assert len(commit_logs(world, "MeterData", metering_module.PRICES.event, first.batch_id)) == 1


def registration_row(world: World, registration_id: str) -> ParticipantRegistration:
    return stored(world, ParticipantRegistration, registration_id)


def registered_logs_of(world: World, address: str) -> list[dict[str, str]]:
    account = "0x" + "00" * 12 + address[2:].lower()
    return commit_logs(world, "TradeLedger", "ParticipantRegistered(address,uint8,bytes32)", account)


def test_a_registration_moves_waits_and_once_dropped_is_registered_again_once(world: World) -> None:
    address = Account.create().address
    request = RegistrationRequest(address, ParticipantKind.CONSUMER, f"GLN-{address}")
    registration_id = world.ledger.participants.queue(request).registration.id
    assert world.ledger.registrar.register_round().registered == 1
    tx = registration_row(world, registration_id).transaction_hash
    assert tx is not None
    world.index()

    # (a) mined again in the next block: the record moves there.
    moved_to = move_into_next_block(world, tx)
    world.ledger.reconciler.after_rollback(index_through_reorg(world))
    row = registration_row(world, registration_id)
    assert (row.status, row.transaction_hash, row.block_number) == (RegistrationStatus.REGISTERED, tx, moved_to)

    # (b) dropped, then back in the mempool: pending with its transaction until it is mined.
    raw = world.rpc.call("eth_getRawTransactionByHash", tx)
    world.rpc.call("anvil_reorg", 1, [])
    fork = index_through_reorg(world)
    world.rpc.call("evm_setAutomine", False)
    try:
        world.rpc.call("eth_sendRawTransaction", raw)
        world.ledger.reconciler.after_rollback(fork)
        row = registration_row(world, registration_id)
        assert (row.status, row.transaction_hash, row.block_number) == (RegistrationStatus.PENDING, tx, None)
        world.rpc.call("evm_mine")
    finally:
        world.rpc.call("evm_setAutomine", True)
    world.index()
    world.ledger.reconciler.reconcile(None)  # what the follow-up of unconfirmed records runs
    row = registration_row(world, registration_id)
    assert (row.status, row.transaction_hash, row.block_number) == (
        RegistrationStatus.REGISTERED,
        tx,
        block_number_of(world, tx),
    )

    # (c) dropped for good: accepted again, and the registrar registers the account again, once.
    world.rpc.call("anvil_reorg", 1, [])
    world.ledger.reconciler.after_rollback(index_through_reorg(world))
    row = registration_row(world, registration_id)
    assert (row.status, row.transaction_hash, row.block_number) == (RegistrationStatus.ACCEPTED, None, None)
    assert registered_logs_of(world, address) == []
    assert world.ledger.registrar.register_round().registered == 1
    row = registration_row(world, registration_id)
    assert row.status is RegistrationStatus.REGISTERED and row.transaction_hash is not None
    assert row.block_number == block_number_of(world, row.transaction_hash)
    assert [log["transactionHash"] for log in registered_logs_of(world, address)] == [row.transaction_hash]
    world.index()
    with world.context.sessions() as session:
        assert session.get(Participant, address) is not None
    assert differences(world) == []


def test_a_registration_refused_in_a_block_a_reorg_replaced_is_sent_again(world: World) -> None:
    """A refusal is an outcome of its block too: gone with it, the registration is sent again."""
    known = world.participant(ParticipantKind.GENERATOR)
    with world.context.sessions.begin() as session:  # queued before the index had the account
        row, _ = registrations.add_registration(session, known.address, ParticipantKind.CONSUMER, "0x" + "ee" * 32)
        registration_id = row.id
    assert world.ledger.registrar.register_round().rejected == 1
    world.index()
    refused = registration_row(world, registration_id)
    assert (refused.status, refused.error_code) == (RegistrationStatus.REJECTED, "participant_already_registered")

    moved_to = move_into_next_block(world, refused.transaction_hash or "")
    world.ledger.reconciler.after_rollback(index_through_reorg(world))
    row = registration_row(world, registration_id)
    assert (row.status, row.block_number, row.error_code) == (
        RegistrationStatus.REJECTED,
        moved_to,
        "participant_already_registered",
    )

    world.rpc.call("anvil_reorg", 1, [])
    world.ledger.reconciler.after_rollback(index_through_reorg(world))
    row = registration_row(world, registration_id)
    assert (row.status, row.transaction_hash, row.error_code) == (RegistrationStatus.ACCEPTED, None, None)
    assert world.ledger.registrar.register_round().rejected == 1  # the chain refuses it again
    assert registration_row(world, registration_id).status is RegistrationStatus.REJECTED
    assert world.context.operator.participant(known.address).kind is ParticipantKind.GENERATOR
