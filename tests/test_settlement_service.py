"""Settlement runs end to end on a real chain and both databases: trades recorded on chain and
indexed, readings and prices imported (and committed) through MeteringService, the run computed,
written and committed in one transaction; proofs checked on and off chain; versions, deltas,
disputes; crashes at every step of a run and their resumption.

The main scenario is SETTLEMENT.md's worked example, reached through a cancelled trade and an
amended one that must not count: its lines are known to the unit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from pydantic import SecretStr
from sqlalchemy import func, select

from ledger import errors
from ledger.chain.node import LocalNode
from ledger.chain.settlement import DisputeStatus as ChainDisputeStatus
from ledger.chain.settlement import RunStatus as ChainRunStatus
from ledger.config import Settings
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.settlement import LEAF_ENCODING, LineKind, MeterReading, MissingReferencePrice, interval_ref
from ledger.domain.trade import DEFAULT_TRADE_LIMITS, ParticipantKind, Trade
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.services import settlement as settlement_module
from ledger.services.context import LedgerContext
from ledger.services.devstack import deploy
from ledger.services.metering import MeteringService
from ledger.services.runtime import LedgerService
from ledger.services.settlement import (
    IndexBehind,
    NothingToSettle,
    RunAction,
    SettlementService,
)
from ledger.services.settlement import runs as settlement_runs
from ledger.services.settlement.jobs import JobView, SettlementJobs
from ledger.services.settlement.parameters import ParameterDesk
from ledger.services.settlement.progress import Step
from ledger.signing.disputes import sign_dispute
from ledger.signing.eip712 import trade_id
from ledger.signing.trader import countersigned, new_nonce, sign_cancel_trade
from ledger.store.settlement_models import JobStatus, RunStatus, SettlementRun, StatementLine
from tests.support.service import wait_for

CHAIN_ID = 31337
RUN_COMMITTED_TOPIC = "0x" + keccak(text=settlement_module.RUN_COMMITTED).hex()


class Crash(BaseException):
    """A kill -9 stand-in: not an Exception, so nothing on the way catches it."""


# --- the world: a deployment, an index, and the services over them ---------------------------


@dataclass
class World:
    context: LedgerContext
    ledger: LedgerService
    metering: MeteringService
    settlement: SettlementService

    @property
    def rpc(self) -> Any:
        return self.context.rpc

    def now(self) -> int:
        return int(self.rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)

    def advance_past(self, moment: int) -> None:
        """Chain time to just after `moment` (a new block), and the index up to it."""
        gap = moment - self.now() + 1
        if gap > 0:
            self.rpc.call("evm_increaseTime", hex(gap))
        self.rpc.call("evm_mine")
        self.index()

    def future_period(self, intervals: int) -> tuple[int, int]:
        """A period whose trades can still be recorded (after gate closure)."""
        start = (self.now() + DEFAULT_TRADE_LIMITS.gate_closure_seconds) // INTERVAL_SECONDS * INTERVAL_SECONDS
        start += 2 * INTERVAL_SECONDS
        return start, start + intervals * INTERVAL_SECONDS

    def participant(self, kind: ParticipantKind = ParticipantKind.PROSUMER) -> LocalAccount:
        account: LocalAccount = Account.create()
        self.ledger.participants.register(account.address, kind, f"licence-{account.address}")
        return account

    def record(
        self,
        seller: LocalAccount,
        buyer: LocalAccount,
        start: int,
        end: int,
        energy_wh: int,
        price: int,
        replaces: str = ZERO_ID,
    ) -> str:
        trade = Trade(
            seller.address, buyer.address, start, end, energy_wh, price, new_nonce(), self.now() + 3600, replaces
        )
        domain = self.context.recorder.domain
        self.context.recorder.record_trade(countersigned(seller, buyer, domain, trade))
        return trade_id(domain, trade)

    def cancel(self, trade_id: str, seller: LocalAccount, buyer: LocalAccount) -> None:
        domain, deadline = self.context.recorder.domain, self.now() + 3600
        self.context.recorder.cancel_trade(
            trade_id,
            seller.address,
            buyer.address,
            deadline,
            sign_cancel_trade(seller, domain, trade_id, deadline),
            sign_cancel_trade(buyer, domain, trade_id, deadline),
        )

    def index(self) -> None:
        while True:
            step = self.ledger.indexer.step()
            if step.to_block >= step.head:
                return

    def readings(self, *readings: MeterReading) -> str:
        batch_id = self.metering.import_readings(list(readings), source="test").batch_id
        self.index()  # a run takes a batch once its block is final in the index
        return batch_id

    def prices(self, period: tuple[int, int], price: int) -> str:
        start, end = period
        prices = dict.fromkeys(range(start, end, INTERVAL_SECONDS), price)
        batch_id = self.metering.import_prices(prices, start, end, source="test").batch_id
        self.index()
        return batch_id

    def settler_nonce(self) -> int:
        return int(self.rpc.call("eth_getTransactionCount", self.context.settler.sender.address, "latest"), 16)

    def commit_logs(self, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.rpc.call(
                "eth_getLogs",
                {
                    "address": self.context.settler.address,
                    "fromBlock": "0x0",
                    "toBlock": "latest",
                    "topics": [RUN_COMMITTED_TOPIC, run_id],
                },
            )
        )

    def stored_run(self, run_id: str) -> SettlementRun | None:
        with self.context.sessions() as session:
            return session.get(SettlementRun, run_id)

    def line_rows(self, run_id: str) -> int:
        with self.context.sessions() as session:
            count = session.scalar(
                select(func.count()).select_from(StatementLine).where(StatementLine.run_id == run_id)
            )
            return int(count or 0)


def world_settings(rpc_url: str, database_url: str, workdir: Path, **changes: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="local",
        rpc_url=rpc_url,
        chain_id=CHAIN_ID,
        database_url=database_url,
        deployment_file=workdir / "deployment.json",
        confirmations=1,
        operator_token=SecretStr("settlement-tests"),
        **changes,
    )


@contextmanager
def open_world(settings: Settings) -> Iterator[World]:
    """The services over an existing deployment and index (a process starting)."""
    context = LedgerContext.open(settings)
    try:
        yield World(context, LedgerService(context), MeteringService(context), SettlementService(context))
    finally:
        context.close()


@contextmanager
def new_world(rpc_url: str, database_url: str, workdir: Path) -> Iterator[World]:
    """A fresh deployment of the three contracts and an empty index."""
    settings = world_settings(rpc_url, database_url, workdir)
    deploy(settings, rpc_url)
    with open_world(settings) as world:
        world.index()
        yield world


@pytest.fixture
def world(anvil: LocalNode, database_url: str, tmp_path: Path) -> Iterator[World]:
    with new_world(anvil.rpc_url, database_url, tmp_path) as created:
        yield created


# --- scenarios ---------------------------------------------------------------------------------


@dataclass
class WorkedExample:
    """SETTLEMENT.md's worked example: one interval, trade X between G and R, Pref 40,000."""

    period: tuple[int, int]
    g: LocalAccount
    r: LocalAccount
    trade_x: str
    amended: str
    cancelled: str


def worked_example(world: World) -> WorkedExample:
    g, r = world.participant(ParticipantKind.GENERATOR), world.participant(ParticipantKind.RETAILER)
    period = world.future_period(1)
    start, end = period
    # Not an input: amended by X (the amendment replaces it) ...
    amended = world.record(g, r, start, end, 500_000, 35_000)
    trade_x = world.record(g, r, start, end, 1_000_000, 35_000, replaces=amended)
    # ... and cancelled.
    cancelled = world.record(g, r, start, end, 200_000, 30_000)
    world.cancel(cancelled, g, r)
    world.advance_past(end)
    world.readings(
        MeterReading(g.address, start, 990_000, 0),
        MeterReading(r.address, start, 0, 1_050_000),
    )
    world.prices(period, 40_000)
    return WorkedExample(period, g, r, trade_x, amended, cancelled)


@dataclass
class TwoIntervals:
    """G sells R 400,000 Wh in each of two intervals; R has no reading of the second (estimated)."""

    period: tuple[int, int]
    g: LocalAccount
    r: LocalAccount


def two_intervals(world: World) -> TwoIntervals:
    g, r = world.participant(ParticipantKind.GENERATOR), world.participant(ParticipantKind.CONSUMER)
    period = world.future_period(2)
    start, end = period
    world.record(g, r, start, end, 400_000, 50_000)
    world.advance_past(end)
    world.readings(
        MeterReading(g.address, start, 390_000, 0),
        MeterReading(g.address, start + INTERVAL_SECONDS, 400_000, 0),
        MeterReading(r.address, start, 0, 420_000),
    )
    world.prices(period, 45_000)
    return TwoIntervals(period, g, r)


def line_values(world: World, run_id: str, account: str) -> dict[tuple[LineKind, str], tuple[int, int]]:
    statement = world.settlement.statement(run_id, account)
    return {(line.kind, line.ref): (line.energy_wh, line.amount_minor) for line in statement.lines}


# --- the main flow -----------------------------------------------------------------------------


def test_a_day_is_settled_proven_corrected_and_disputed(world: World) -> None:
    example = worked_example(world)
    start, end = example.period
    g, r, b = example.g.address, example.r.address, world.settlement.balancing_account
    assert b == world.context.settlement_operator.sender.address
    nonce = world.settler_nonce()
    steps: list[str] = []

    first = world.settlement.execute(start, end, progress=lambda event: steps.append(event.step.value))

    # One commit transaction; the run as SETTLEMENT.md computes the worked example.
    assert first.action is RunAction.COMMITTED and first.created
    assert world.settler_nonce() == nonce + 1
    assert steps[0] == "gathering inputs" and steps[-1] == "done"
    assert {"computing", "building the tree", "writing lines", "committing"} <= set(steps)
    run = first.run
    assert (run.version, run.status, run.line_count) == (1, RunStatus.COMMITTED, 10)
    assert run.total_receivable_minor == run.total_payable_minor == 34_600 + 2_560
    assert run.transaction_hash is not None and run.block_number is not None
    assert first.gas_used is not None and first.gas_used > 0
    assert len(world.commit_logs(run.run_id)) == 1
    ref = interval_ref(start)
    trade, imbalance, penalty, total = LineKind.TRADE, LineKind.IMBALANCE, LineKind.PENALTY, LineKind.TOTAL
    assert line_values(world, run.run_id, g) == {
        (trade, example.trade_x): (1_000_000, 35_000),
        (imbalance, ref): (-10_000, -400),
        (total, ZERO_ID): (990_000, 34_600),
    }
    assert line_values(world, run.run_id, r) == {
        (trade, example.trade_x): (-1_000_000, -35_000),
        (imbalance, ref): (-50_000, -2_000),
        (penalty, ref): (20_000, -160),
        (total, ZERO_ID): (-1_050_000, -37_160),
    }
    assert line_values(world, run.run_id, b) == {
        (imbalance, ref): (60_000, 2_400),
        (penalty, ref): (0, 160),
        (total, ZERO_ID): (60_000, 2_560),
    }
    detail = world.settlement.get_run(run.run_id)
    assert detail.trade_count == 1  # the cancelled and the amended trade are not inputs
    assert len(detail.reading_batch_ids) == 1
    assert detail.chain is not None and detail.chain.status is ChainRunStatus.OPEN
    positions = world.settlement.statement(run.run_id, r).positions
    assert [(p.contracted_wh, p.metered_wh, p.imbalance_wh, p.tolerance_wh, p.excess_wh) for p in positions] == [
        (-1_000_000, -1_050_000, -50_000, 30_000, 20_000)
    ]
    assert positions[0].reading_batch_id == detail.reading_batch_ids[0] and positions[0].reading_version == 1

    # Every line's proof verifies on chain and off chain.
    for account in (g, r, b):
        for line in world.settlement.statement(run.run_id, account).lines:
            proof = world.settlement.line_proof(run.run_id, account, int(line.kind), line.ref)
            assert proof.root == run.root
            assert world.context.settler.verify_line(proof.line, proof.proof)
            assert StandardMerkleTree.verify(proof.root, LEAF_ENCODING, proof.values, proof.proof)

    # Same inputs: the same run, and no transaction.
    again = world.settlement.execute(start, end)
    assert again.action is RunAction.UNCHANGED and not again.created
    assert again.run.run_id == run.run_id
    assert world.settler_nonce() == nonce + 1

    # A corrected reading: version 2 supersedes version 1, which stays queryable.
    world.readings(MeterReading(g, start, 1_000_000, 0))
    second = world.settlement.execute(start, end)
    assert second.action is RunAction.COMMITTED and second.run.version == 2
    assert world.settler_nonce() == nonce + 2
    previous = world.settlement.get_run(run.run_id)
    assert previous.run.status is RunStatus.SUPERSEDED and previous.run.superseded_by == second.run.run_id
    assert previous.chain is not None and previous.chain.status is ChainRunStatus.SUPERSEDED
    assert line_values(world, run.run_id, g)[(imbalance, ref)] == (-10_000, -400)

    statement = world.settlement.statement(second.run.run_id, g)
    assert statement.previous_run_id == run.run_id
    deltas = {(line.kind, line.ref): line.delta for line in statement.lines}
    assert deltas[(trade, example.trade_x)] == settlement_module.LineDelta(1_000_000, 35_000, 0, 0)
    assert deltas[(total, ZERO_ID)] == settlement_module.LineDelta(990_000, 34_600, 10_000, 400)
    # G has no imbalance any more: its old line is removed, a delta of minus the whole line.
    assert [(line.kind, line.ref, line.previous_amount_minor) for line in statement.removed_lines] == [
        (imbalance, ref, -400)
    ]
    balancing = world.settlement.statement(second.run.run_id, b)
    b_deltas = {(line.kind, line.ref): line.delta for line in balancing.lines}
    assert b_deltas[(imbalance, ref)] == settlement_module.LineDelta(60_000, 2_400, -10_000, -400)

    # A dispute, signed by R with its own key, relayed, recorded and resolved.
    domain = world.context.settlement_operator.domain
    reason = "my meter was replaced on that day; the reading is of the old meter"
    deadline = world.now() + 3600
    proof = world.settlement.line_proof(second.run.run_id, r, int(penalty), ref)
    reason_hash = "0x" + keccak(text=reason).hex()
    signature = sign_dispute(example.r, domain, proof.line, reason_hash, deadline)

    with pytest.raises(errors.InvalidDisputeSignature):
        world.settlement.open_dispute(
            second.run.run_id,
            r,
            int(penalty),
            ref,
            reason,
            deadline,
            sign_dispute(example.g, domain, proof.line, reason_hash, deadline),
        )
    with pytest.raises(errors.RunSuperseded):
        old_line = world.settlement.line_proof(run.run_id, r, int(penalty), ref).line
        world.settlement.open_dispute(
            run.run_id,
            r,
            int(penalty),
            ref,
            reason,
            deadline,
            sign_dispute(example.r, domain, old_line, reason_hash, deadline),
        )

    dispute = world.settlement.open_dispute(second.run.run_id, r, int(penalty), ref, reason, deadline, signature)
    assert dispute.created and dispute.status.value == "open"
    assert dispute.reason_hash == reason_hash and dispute.amount_minor == -160
    assert world.context.settler.dispute(dispute.dispute_id).status is ChainDisputeStatus.OPEN
    chain = world.settlement.get_run(second.run.run_id).chain
    assert chain is not None and chain.open_disputes == 1
    relayed_again = world.settlement.open_dispute(second.run.run_id, r, int(penalty), ref, reason, deadline, signature)
    assert not relayed_again.created and relayed_again.dispute_id == dispute.dispute_id

    resolved = world.settlement.resolve_dispute(dispute.dispute_id, False, "the new meter was installed the day after")
    assert resolved.status.value == "rejected" and resolved.resolved_transaction_hash is not None
    assert world.context.settler.dispute(dispute.dispute_id).status is ChainDisputeStatus.REJECTED
    assert (
        world.settlement.resolve_dispute(dispute.dispute_id, False, "the new meter was installed the day after")
        == resolved
    )
    with pytest.raises(errors.DisputeNotOpen):
        world.settlement.resolve_dispute(dispute.dispute_id, True, "on second thoughts")
    assert world.settlement.get_dispute(dispute.dispute_id) == resolved
    assert world.settler_nonce() == nonce + 2  # disputes are relayed by the operator, not the settler


def test_estimated_intervals_and_listing(world: World) -> None:
    market = two_intervals(world)
    start, end = market.period
    outcome = world.settlement.execute(start, end)
    positions = world.settlement.statement(outcome.run.run_id, market.r.address).positions
    assert [(p.estimated, p.metered_wh, p.imbalance_wh, p.reading_batch_id is None) for p in positions] == [
        (False, -420_000, -20_000, False),
        (True, -400_000, 0, True),  # no reading: metered = contracted, zero imbalance
    ]
    assert [run.run_id for run in world.settlement.list_runs(period_start=start, period_end=end)] == [
        outcome.run.run_id
    ]
    assert world.settlement.list_runs(period_start=start, period_end=end, status=RunStatus.SUPERSEDED) == []
    with pytest.raises(errors.NotFoundError):
        world.settlement.statement(outcome.run.run_id, Account.create().address)
    with pytest.raises(errors.NotFoundError):
        world.settlement.line_proof(outcome.run.run_id, market.g.address, 2, ZERO_ID)
    with pytest.raises(errors.NotFoundError):
        world.settlement.get_run("0x" + "ab" * 32)


# --- refusals ----------------------------------------------------------------------------------


def test_refusals_name_their_reason_and_write_nothing(world: World) -> None:
    g, r = world.participant(), world.participant()
    period = world.future_period(4)
    start, end = period
    world.record(g, r, start, end, 100_000, 40_000)

    with pytest.raises(IndexBehind):  # the period is not over
        world.settlement.execute(start, end)

    world.advance_past(end)
    with pytest.raises(MissingReferencePrice) as missing:  # no price batch at all
        world.settlement.execute(start, end)
    assert missing.value.intervals == list(range(start, end, INTERVAL_SECONDS))

    world.prices((start, start + 2 * INTERVAL_SECONDS), 40_000)  # covers only half the period
    with pytest.raises(MissingReferencePrice):
        world.settlement.execute(start, end)

    with pytest.raises(errors.ValidationError) as misaligned:
        world.settlement.execute(start + 1, end)
    assert misaligned.value.field == "period"

    empty = (end + 4 * INTERVAL_SECONDS, end + 8 * INTERVAL_SECONDS)
    world.advance_past(empty[1])
    world.prices(empty, 40_000)
    with pytest.raises(NothingToSettle):
        world.settlement.execute(*empty)
    assert world.settlement.list_runs() == []


def test_prices_of_several_batches_price_one_run(world: World) -> None:
    """The current price of each interval, whichever batch holds it: a run takes them all, names
    exactly the intervals none has, and records every batch it took a price from."""
    g, r = world.participant(), world.participant()
    period = world.future_period(4)
    start, end = period
    world.record(g, r, start, end, 100_000, 40_000)
    world.advance_past(end)
    world.readings(MeterReading(g.address, start, 0, 0))
    first = world.prices((start, start + 2 * INTERVAL_SECONDS), 40_000)
    last = world.prices((start + 3 * INTERVAL_SECONDS, end), 41_000)
    with pytest.raises(MissingReferencePrice) as missing:
        world.settlement.execute(start, end)
    assert missing.value.intervals == [start + 2 * INTERVAL_SECONDS]

    third = world.prices((start + 2 * INTERVAL_SECONDS, start + 3 * INTERVAL_SECONDS), 42_000)
    fix = world.prices((start, start + INTERVAL_SECONDS), 50_000)  # a newer price of the first interval
    outcome = world.settlement.execute(start, end)
    assert outcome.action is RunAction.COMMITTED
    ref = interval_ref(start)
    # G delivered nothing in the first interval: its imbalance is priced at the newest price.
    assert line_values(world, outcome.run.run_id, g.address)[(LineKind.IMBALANCE, ref)] == (-100_000, -5_000)
    detail = world.settlement.get_run(outcome.run.run_id)
    assert sorted(detail.price_batch_ids) == sorted([first, last, third, fix])
    assert detail.run.price_batch_id == fix  # the newest
    gathered = world.settlement.gather_inputs(start, end)
    assert gathered.prices == {
        start: 50_000,
        start + INTERVAL_SECONDS: 40_000,
        start + 2 * INTERVAL_SECONDS: 42_000,
        start + 3 * INTERVAL_SECONDS: 41_000,
    }
    assert gathered.inputs_hash == outcome.run.inputs_hash
    roots = sorted(gathered.price_batches.values())
    assert len(roots) == 4
    # The inputs hash commits to every price batch: one more price batch, one more version.
    world.prices((start + INTERVAL_SECONDS, start + 2 * INTERVAL_SECONDS), 40_500)
    assert world.settlement.execute(start, end).run.version == 2


def test_scheduled_parameters_apply_from_their_period_without_a_restart(world: World) -> None:
    g, r = world.participant(ParticipantKind.GENERATOR), world.participant(ParticipantKind.RETAILER)
    first = world.future_period(1)
    second = (first[1], first[1] + INTERVAL_SECONDS)
    desk = ParameterDesk(world.context)
    with pytest.raises(errors.ValidationError) as misaligned:
        desk.schedule(second[0] + 1, 100, 5_000, "operator")
    assert misaligned.value.field == "effective_from"
    with pytest.raises(errors.ValidationError):  # a period that has begun keeps its parameters
        desk.schedule(world.now() // INTERVAL_SECONDS * INTERVAL_SECONDS, 100, 5_000, "operator")
    change = desk.schedule(second[0], 100, 5_000, "operator")
    assert [c.change_id for c in desk.changes()] == [change.change_id]
    assert change.scheduled_by == "operator" and change.scheduled_at is not None
    for start, end in (first, second):
        world.record(g, r, start, end, 1_000_000, 35_000)
    world.advance_past(second[1])
    world.readings(
        *(MeterReading(g.address, start, 990_000, 0) for start, _ in (first, second)),
        *(MeterReading(r.address, start, 0, 1_050_000) for start, _ in (first, second)),
    )
    world.prices((first[0], second[1]), 40_000)

    # The same service as before the change: no restart.
    before = world.settlement.execute(*first).run
    after = world.settlement.execute(*second).run
    assert (before.tolerance_bps, before.penalty_bps, before.parameter_change_id) == (300, 2_000, None)
    assert (after.tolerance_bps, after.penalty_bps, after.parameter_change_id) == (100, 5_000, change.change_id)
    # SETTLEMENT.md's worked example for R: E = 50,000 - 30,000 at 3 %, 50,000 - 10,000 at 1 %.
    assert line_values(world, before.run_id, r.address)[(LineKind.PENALTY, interval_ref(first[0]))] == (20_000, -160)
    assert line_values(world, after.run_id, r.address)[(LineKind.PENALTY, interval_ref(second[0]))] == (40_000, -800)
    assert world.settlement.gather_inputs(*second).inputs_hash == after.inputs_hash


# --- crashes and resumption --------------------------------------------------------------------


CRASH_POINTS = ["before_signing", "before_broadcast", "before_receipt", "before_marking_committed"]


def arm_crash(monkeypatch: pytest.MonkeyPatch, world: World, point: str) -> None:
    """Makes the run die once at `point`, as a kill would (nothing after it runs)."""
    sender = world.context.settler.sender
    committer = world.settlement._committer
    targets: dict[str, tuple[Any, str]] = {
        "before_signing": (committer, "_send_commit"),  # the computed run is written, nothing sent
        "before_broadcast": (sender, "broadcast"),  # the tx hash is stored, the tx never left
        "before_receipt": (sender, "wait"),  # the tx is sent (and mined: automine)
        "before_marking_committed": (committer, "_mark_committed"),  # on chain, index not told
    }
    owner, name = targets[point]
    original = getattr(owner, name)
    fired: list[bool] = []

    def crash_once(*args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(True)
            raise Crash(point)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, crash_once)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_run_killed_at_any_step_is_finished_by_the_next_invocation(
    anvil: LocalNode, database_url: str, tmp_path: Path, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with new_world(anvil.rpc_url, database_url, tmp_path) as world:
        market = two_intervals(world)
        nonce = world.settler_nonce()
        arm_crash(monkeypatch, world, point)
        with pytest.raises(Crash):
            world.settlement.execute(*market.period)
        monkeypatch.undo()
        [stored] = world.settlement.list_runs()
        assert stored.status is RunStatus.COMPUTED  # complete, but not marked done
        assert world.line_rows(stored.run_id) == stored.line_count
        on_chain = point in ("before_receipt", "before_marking_committed")
        assert world.context.settler.run(stored.run_id).exists is on_chain
        assert (stored.transaction_hash is not None) is (point != "before_signing")

    # The next invocation is a new process: new context, new nonce manager, same index and chain.
    with open_world(world.context.settings) as restarted:
        resumed = restarted.settlement.execute(*market.period)
        assert resumed.action is RunAction.RESUMED and resumed.created
        assert resumed.run.run_id == stored.run_id and resumed.run.status is RunStatus.COMMITTED
        assert resumed.run.root == stored.root and resumed.run.transaction_hash is not None
        assert len(restarted.commit_logs(stored.run_id)) == 1
        assert restarted.settler_nonce() == nonce + 1  # exactly one commit transaction
        assert restarted.line_rows(stored.run_id) == stored.line_count
        assert restarted.settlement.execute(*market.period).action is RunAction.UNCHANGED
        assert [run.run_id for run in restarted.settlement.list_runs()] == [stored.run_id]


def test_a_settlement_job_is_stored_at_once_and_finished_after_a_crash(
    anvil: LocalNode, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job is durable before anyone executes it; the same request while it is queued returns it;
    a worker that dies mid-run leaves it running, and the next worker finishes that run."""
    with new_world(anvil.rpc_url, database_url, tmp_path) as world:
        market = two_intervals(world)
        jobs = SettlementJobs(world.context, world.settlement)
        job = jobs.submit(*market.period, "operator")
        assert job.created and job.status is JobStatus.QUEUED
        assert jobs.submit(*market.period, "someone else").job_id == job.job_id
        arm_crash(monkeypatch, world, "before_broadcast")
        stop = threading.Event()
        with pytest.raises(Crash):
            jobs.run(stop)
        monkeypatch.undo()
        running = jobs.get(job.job_id)
        assert (running.status, running.step, running.attempts) == (JobStatus.RUNNING, Step.COMMITTING.value, 1)
        assert jobs.submit(*market.period, "operator").job_id == job.job_id

    with open_world(world.context.settings) as restarted:
        jobs = SettlementJobs(restarted.context, restarted.settlement)
        stop = threading.Event()
        worker = threading.Thread(target=jobs.run, args=(stop,))
        worker.start()
        try:
            done = wait_for(lambda: _ended(jobs.get(job.job_id)), "the job")
        finally:
            stop.set()
            worker.join()
        assert (done.action, done.version, done.attempts, done.problem) == ("resumed", 1, 2, None)
        assert done.run_id is not None and len(restarted.commit_logs(done.run_id)) == 1
        # Ended: the same request is a new job, which finds the inputs unchanged.
        again = jobs.submit(*market.period, "operator")
        assert again.created and jobs.execute(again).action == "unchanged"
        failed = jobs.execute(jobs.submit(market.period[1], market.period[1] + INTERVAL_SECONDS, "operator"))
        assert failed.status is JobStatus.FAILED and failed.problem is not None
        assert failed.problem["code"] == "index_behind_period"
        with pytest.raises(errors.NotFoundError):
            jobs.get("not-a-job")


def _ended(job: JobView) -> JobView | None:
    return job if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None


def test_a_crash_in_the_same_process_resumes_without_a_nonce_gap(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signed transaction that never left took a nonce from the in-process nonce manager;
    the resumed commit must not wait behind that gap forever."""
    market = two_intervals(world)
    nonce = world.settler_nonce()
    arm_crash(monkeypatch, world, "before_broadcast")
    with pytest.raises(Crash):
        world.settlement.execute(*market.period)
    monkeypatch.undo()
    resumed = world.settlement.execute(*market.period)
    assert resumed.action is RunAction.RESUMED and world.settler_nonce() == nonce + 1


def test_inputs_changed_while_a_run_was_interrupted(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interrupted run is finished as it was computed, then the new inputs make version 2."""
    market = two_intervals(world)
    start, _ = market.period
    arm_crash(monkeypatch, world, "before_signing")
    with pytest.raises(Crash):
        world.settlement.execute(*market.period)
    monkeypatch.undo()
    world.readings(MeterReading(market.r.address, start + INTERVAL_SECONDS, 0, 400_000))
    outcome = world.settlement.execute(*market.period)
    assert outcome.action is RunAction.COMMITTED and outcome.run.version == 2
    versions = {run.version: run.status for run in world.settlement.list_runs()}
    assert versions == {1: RunStatus.SUPERSEDED, 2: RunStatus.COMMITTED}
    positions = world.settlement.statement(outcome.run.run_id, market.r.address).positions
    assert [p.estimated for p in positions] == [False, False]


def test_a_lost_index_adopts_the_run_the_chain_has(anvil: LocalNode, tmp_path: Path, database_url: str) -> None:
    """The run is on chain but the index that computed it is gone: rebuilt from the same inputs,
    the same version is adopted, not sent again; a different root is refused."""
    with new_world(anvil.rpc_url, database_url, tmp_path) as world:
        market = two_intervals(world)
        committed = world.settlement.execute(*market.period).run
        nonce = world.settler_nonce()
        with world.context.sessions.begin() as session:
            session.delete(session.get(SettlementRun, committed.run_id))
        adopted = world.settlement.execute(*market.period)
        assert adopted.action is RunAction.COMMITTED
        assert (adopted.run.run_id, adopted.run.transaction_hash) == (committed.run_id, committed.transaction_hash)
        assert world.settler_nonce() == nonce

        with world.context.sessions.begin() as session:
            session.delete(session.get(SettlementRun, committed.run_id))
        start, _ = market.period
        world.readings(MeterReading(market.r.address, start + INTERVAL_SECONDS, 0, 100_000))
        with pytest.raises(settlement_module.RunMismatch):
            world.settlement.execute(*market.period)
        assert world.settler_nonce() == nonce
        assert world.settlement.list_runs() == []  # refused before anything was written


def test_a_run_killed_while_writing_leaves_nothing_behind(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The computed run is one transaction: killed half-way through its lines, nothing is stored,
    and the next invocation computes it afresh."""
    market = two_intervals(world)
    original, calls = settlement_runs._insert_rows, []

    def insert_then_crash(*args: Any) -> None:
        calls.append(args)
        original(*args)
        if len(calls) == 3:  # run, trades and reading batches written; lines half-way
            raise Crash("writing lines")

    monkeypatch.setattr(settlement_runs, "_insert_rows", insert_then_crash)
    with pytest.raises(Crash):
        world.settlement.execute(*market.period)
    monkeypatch.undo()
    assert world.settlement.list_runs() == []
    outcome = world.settlement.execute(*market.period)
    assert outcome.action is RunAction.COMMITTED and outcome.run.version == 1
    assert world.line_rows(outcome.run.run_id) == outcome.run.line_count


def test_proofs_from_a_new_process_rebuild_the_tree_from_the_index(world: World) -> None:
    market = two_intervals(world)
    run = world.settlement.execute(*market.period).run
    fresh = SettlementService(world.context)  # nothing cached: the tree comes from the stored lines
    for line in fresh.statement(run.run_id, market.g.address).lines:
        proof = fresh.line_proof(run.run_id, market.g.address, int(line.kind), line.ref)
        assert proof.root == run.root and world.context.settler.verify_line(proof.line, proof.proof)


def test_a_dispute_relayed_or_resolved_by_a_process_that_died_is_adopted(world: World) -> None:
    """The chain has the dispute (and then its resolution) but the index was never told: the
    same request again records what the chain has instead of failing."""
    market = two_intervals(world)
    run = world.settlement.execute(*market.period).run
    account, kind, ref = market.g.address, int(LineKind.TOTAL), ZERO_ID
    proof = world.settlement.line_proof(run.run_id, account, kind, ref)
    reason, deadline = "the second interval was not delivered", world.now() + 3600
    reason_hash = "0x" + keccak(text=reason).hex()
    domain = world.context.settlement_operator.domain
    signature = sign_dispute(market.g, domain, proof.line, reason_hash, deadline)
    relayed = world.context.settlement_operator.open_dispute(proof.line, proof.proof, reason_hash, deadline, signature)

    dispute = world.settlement.open_dispute(run.run_id, account, kind, ref, reason, deadline, signature)
    assert dispute.created and dispute.opened_transaction_hash == relayed.transaction_hash

    resolution = "delivery confirmed by the grid operator"
    resolved_on_chain = world.context.settlement_operator.resolve_dispute(
        dispute.dispute_id, False, "0x" + keccak(text=resolution).hex()
    )
    resolved = world.settlement.resolve_dispute(dispute.dispute_id, False, resolution)
    assert resolved.status.value == "rejected"
    assert resolved.resolved_transaction_hash == resolved_on_chain.transaction_hash
