"""Settlement on a real node: committing runs and their versions, every refusal, line
verification against StandardMerkleTree roots, disputes (opening, each refusal in the documented
order, resolution) and the run status over time.

The statement lines are SETTLEMENT.md's worked example (one interval, trade X between G and R,
the balancing account B).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from ledger import errors
from ledger.chain.compiler import compile_contracts
from ledger.chain.deployment import deploy_contracts
from ledger.chain.settlement import DisputeStatus, RunStatus, SettlementContract, SettlementRun
from ledger.chain.transactions import Receipt
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.signing.disputes import (
    LINE_LEAF_ENCODING,
    DisputeLine,
    dispute_digest,
    dispute_typed_data,
    run_id,
    settlement_domain,
    sign_dispute,
)
from ledger.signing.trader import recover_signer
from tests.support.behaviours import assert_error, high_s, role_id
from tests.support.settlement_market import (
    SettlementMarket,
    account,
    merkle_tree,
    new_id,
    settlement_market_fixture,  # noqa: F401  (the `settlement_market` fixture)
)

DEFAULT_WINDOW = 72 * 3600
HOUR = 3600
DAY = 86_400
# Measured 121k (v1) / 128k (a superseding version) and 110k (first dispute of a run, 3-hash proof);
# the bounds catch a storage-layout regression.
COMMIT_RUN_GAS_BOUND = 150_000
OPEN_DISPUTE_GAS_BOUND = 130_000

G, R, BALANCING = 0, 1, 2  # indices of the worked example's accounts
# The worked example's total lines: G +34,600, R -37,160, balancing +2,560.
TOTAL_RECEIVABLE_MINOR = 34_600 + 2_560
TOTAL_PAYABLE_MINOR = 37_160


@dataclass(frozen=True)
class Parties:
    accounts: tuple[LocalAccount, LocalAccount, LocalAccount]
    trade_id: str

    def __getitem__(self, index: int) -> LocalAccount:
        return self.accounts[index]


@pytest.fixture
def parties() -> Parties:
    return Parties((account(), account(), account()), new_id())


def worked_example(run: str, p: Parties, interval_start: int) -> list[DisputeLine]:
    """SETTLEMENT.md's worked example, as the lines of run `run`."""
    t = "0x" + interval_start.to_bytes(32, "big").hex()
    g, r, b = (a.address for a in p.accounts)
    return [
        DisputeLine(run, g, 1, p.trade_id, 1_000_000, 35_000),
        DisputeLine(run, r, 1, p.trade_id, -1_000_000, -35_000),
        DisputeLine(run, g, 2, t, -10_000, -400),
        DisputeLine(run, r, 2, t, -50_000, -2_000),
        DisputeLine(run, r, 3, t, 20_000, -160),
        DisputeLine(run, b, 2, t, 60_000, 2_400),
        DisputeLine(run, b, 3, t, 0, 160),
        DisputeLine(run, g, 9, ZERO_ID, 990_000, 34_600),
        DisputeLine(run, r, 9, ZERO_ID, -1_050_000, -37_160),
        DisputeLine(run, b, 9, ZERO_ID, 60_000, 2_560),
    ]


@dataclass(frozen=True)
class CommittedRun:
    run_id: str
    period: tuple[int, int]
    version: int
    inputs_hash: str
    lines: list[DisputeLine]
    proofs: list[list[str]]
    root: str
    receipt: Receipt


def build_run(p: Parties, period: tuple[int, int], version: int) -> tuple[str, list[DisputeLine], Any]:
    rid = run_id(*period, version)
    lines = worked_example(rid, p, period[0])
    return rid, lines, merkle_tree([line.leaf_values() for line in lines], LINE_LEAF_ENCODING)


def commit(m: SettlementMarket, p: Parties, period: tuple[int, int], version: int = 1) -> CommittedRun:
    rid, lines, tree = build_run(p, period, version)
    inputs_hash = new_id()
    receipt = m.settlement("settler").commit_run(
        *period, version, tree.root, inputs_hash, len(lines), TOTAL_RECEIVABLE_MINOR, TOTAL_PAYABLE_MINOR
    )
    return CommittedRun(rid, period, version, inputs_hash, lines, tree.proofs, tree.root, receipt)


REASON = "0x" + keccak(text="my meter read 1,000,000 Wh withdrawn, not 1,050,000").hex()


@dataclass(frozen=True)
class DisputeCall:
    """One `openDispute` call: the line, its proof, the signed reason and deadline, the signature."""

    line: DisputeLine
    proof: list[str]
    reason_hash: str
    deadline: int
    signature: bytes

    def submit(self, m: SettlementMarket, role: str = "relayer") -> Receipt:
        return m.settlement(role).open_dispute(self.line, self.proof, self.reason_hash, self.deadline, self.signature)


def dispute_call(
    m: SettlementMarket,
    p: Parties,
    run: CommittedRun,
    index: int = 8,
    *,
    signer: LocalAccount | None = None,
    deadline: int | None = None,
    reason_hash: str = REASON,
) -> DisputeCall:
    """A valid dispute of line `index` (default: R's total), signed by the line's account."""
    line = run.lines[index]
    owner = next(a for a in p.accounts if a.address == line.account)
    deadline = m.now() + HOUR if deadline is None else deadline
    signature = sign_dispute(signer or owner, m.domain, line, reason_hash, deadline)
    return DisputeCall(line, run.proofs[index], reason_hash, deadline, signature)


def stored(m: SettlementMarket, rid: str) -> SettlementRun:
    return m.settlement("outsider").run(rid)


def status(m: SettlementMarket, rid: str) -> RunStatus:
    return m.settlement("outsider").run_status(rid)


def refused(call: Callable[[], Any]) -> errors.LedgerError:
    with pytest.raises(errors.LedgerError) as caught:
        call()
    return caught.value


# --- committing runs ------------------------------------------------------------------------------


def test_commit_run_stores_the_run_and_emits_its_fields(settlement_market: SettlementMarket, parties: Parties) -> None:
    m = settlement_market
    period = m.period(4)
    run = commit(m, parties, period)
    at = m.block_timestamp(run.receipt)
    s = m.settlement("outsider")

    assert run.receipt.gas_used < COMMIT_RUN_GAS_BOUND
    assert s.events(run.receipt, "RunCommitted") == [
        {
            "runId": run.run_id,
            "periodStart": period[0],
            "periodEnd": period[1],
            "version": 1,
            "root": run.root,
            "inputsHash": run.inputs_hash,
            "lineCount": len(run.lines),
            "totalReceivableMinor": TOTAL_RECEIVABLE_MINOR,
            "totalPayableMinor": TOTAL_PAYABLE_MINOR,
            "disputeWindowEnds": at + DEFAULT_WINDOW,
        }
    ]
    assert s.events(run.receipt, "RunSuperseded") == []
    assert stored(m, run.run_id) == SettlementRun(
        run_id=run.run_id,
        root=run.root,
        inputs_hash=run.inputs_hash,
        period_start=period[0],
        period_end=period[1],
        version=1,
        line_count=len(run.lines),
        dispute_window_ends=at + DEFAULT_WINDOW,
        superseded_by=ZERO_ID,
        open_disputes=0,
        accepted_disputes=0,
    )
    assert status(m, run.run_id) is RunStatus.OPEN
    assert s.latest_version(*period) == 1
    assert s.run_id_of(*period, 1) == run.run_id == run_id(*period, 1)


def test_versions_supersede_each_other_and_stay_queryable(
    settlement_market: SettlementMarket, parties: Parties
) -> None:
    m = settlement_market
    s = m.settlement("outsider")
    period = m.period(4)
    runs = [commit(m, parties, period, version) for version in (1, 2, 3)]

    for previous, current in pairwise(runs):
        assert s.events(current.receipt, "RunSuperseded") == [
            {"runId": previous.run_id, "supersededBy": current.run_id}
        ]
        assert stored(m, previous.run_id).superseded_by == current.run_id
        assert status(m, previous.run_id) is RunStatus.SUPERSEDED
    assert [status(m, r.run_id) for r in runs] == [RunStatus.SUPERSEDED, RunStatus.SUPERSEDED, RunStatus.OPEN]
    assert s.latest_version(*period) == 3
    assert stored(m, runs[2].run_id).superseded_by == ZERO_ID
    # Earlier versions keep their commitment: their lines still verify against their own root.
    assert s.verify_line(runs[0].lines[3], runs[0].proofs[3])
    # Another period has its own versions; the past ones are untouched after the window.
    other = commit(m, parties, m.period(8))
    assert s.latest_version(*other.period) == 1
    m.advance(DEFAULT_WINDOW)
    assert [status(m, r.run_id) for r in runs] == [RunStatus.SUPERSEDED, RunStatus.SUPERSEDED, RunStatus.FINAL]


@dataclass(frozen=True)
class RunArgs:
    period_start: int
    period_end: int
    version: int
    root: str
    inputs_hash: str
    line_count: int
    total_receivable_minor: int
    total_payable_minor: int

    @property
    def run_id(self) -> str:
        return run_id(self.period_start, self.period_end, self.version)

    def commit(self, m: SettlementMarket, role: str = "settler") -> Receipt:
        return m.settlement(role).commit_run(
            self.period_start,
            self.period_end,
            self.version,
            self.root,
            self.inputs_hash,
            self.line_count,
            self.total_receivable_minor,
            self.total_payable_minor,
        )


@dataclass(frozen=True)
class Refusal:
    args: RunArgs
    error: type[errors.LedgerError]
    code: str
    solidity_error: str
    context: dict[str, Any]


RunBreaker = Callable[[SettlementMarket, Parties, RunArgs], Refusal]


def valid_args(m: SettlementMarket) -> RunArgs:
    start, end = m.period(4)
    return RunArgs(start, end, 1, new_id(), new_id(), 10, TOTAL_RECEIVABLE_MINOR, TOTAL_PAYABLE_MINOR)


def period_refusal(error: type[errors.LedgerError], code: str, name: str, bad: RunArgs) -> Refusal:
    context = {"run_id": bad.run_id, "period_start": bad.period_start, "period_end": bad.period_end}
    return Refusal(bad, error, code, name, context)


def misaligned(**change: int) -> RunBreaker:
    def breaks(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
        bad = replace(a, **{name: getattr(a, name) + delta for name, delta in change.items()}, root=ZERO_ID)
        return period_refusal(errors.MisalignedPeriod, "misaligned_period", "SettlementMisalignedPeriod", bad)

    return breaks


def empty_period(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
    bad = replace(a, period_end=a.period_start, line_count=0)
    return period_refusal(errors.EmptyPeriod, "empty_period", "SettlementEmptyPeriod", bad)


def reversed_period(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
    bad = replace(a, period_start=a.period_end, period_end=a.period_start)
    return period_refusal(errors.EmptyPeriod, "empty_period", "SettlementEmptyPeriod", bad)


def zero_root(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
    bad = replace(a, root=ZERO_ID, line_count=0)
    return Refusal(bad, errors.MissingMerkleRoot, "missing_merkle_root", "SettlementZeroRoot", {"run_id": bad.run_id})


def no_lines(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
    bad = replace(a, line_count=0, total_payable_minor=1)
    return Refusal(bad, errors.EmptyCommitment, "empty_commitment", "SettlementNoLines", {"run_id": bad.run_id})


def unbalanced(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
    bad = replace(a, total_payable_minor=a.total_receivable_minor - 1)
    context = {
        "run_id": bad.run_id,
        "total_receivable_minor": bad.total_receivable_minor,
        "total_payable_minor": bad.total_payable_minor,
    }
    return Refusal(bad, errors.UnbalancedSettlement, "unbalanced_settlement", "SettlementUnbalancedTotals", context)


def duplicate(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
    a.commit(m)
    bad = replace(a, root=new_id(), inputs_hash=new_id())
    return Refusal(bad, errors.DuplicateRun, "duplicate_run", "SettlementDuplicateRun", {"run_id": a.run_id})


def duplicate_of_a_superseded_version(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
    a.commit(m)
    replace(a, version=2, root=new_id()).commit(m)
    bad = replace(a, root=new_id())
    return Refusal(bad, errors.DuplicateRun, "duplicate_run", "SettlementDuplicateRun", {"run_id": a.run_id})


def version_out_of_order(version: int, committed: int) -> RunBreaker:
    def breaks(m: SettlementMarket, p: Parties, a: RunArgs) -> Refusal:
        for v in range(1, committed + 1):
            replace(a, version=v, root=new_id()).commit(m)
        bad = replace(a, version=version)
        context = {"run_id": bad.run_id, "version": version, "latest_version": committed}
        return Refusal(
            bad, errors.RunVersionOutOfOrder, "run_version_out_of_order", "SettlementVersionOutOfOrder", context
        )

    return breaks


RUN_BREAKERS: dict[str, RunBreaker] = {
    "misaligned start": misaligned(period_start=900 // 2),
    "misaligned end": misaligned(period_end=1),
    "empty period": empty_period,
    "reversed period": reversed_period,
    "zero root": zero_root,
    "no lines": no_lines,
    "unbalanced totals": unbalanced,
    "duplicate run": duplicate,
    "duplicate of a superseded version": duplicate_of_a_superseded_version,
    "version 0": version_out_of_order(0, 0),
    "version 2 first": version_out_of_order(2, 0),
    "version 3 after 1": version_out_of_order(3, 1),
}


@pytest.mark.parametrize("breaker", RUN_BREAKERS.values(), ids=RUN_BREAKERS.keys())
def test_commit_run_refused(settlement_market: SettlementMarket, parties: Parties, breaker: RunBreaker) -> None:
    m = settlement_market
    refusal = breaker(m, parties, valid_args(m))
    before = stored(m, refusal.args.run_id)
    latest = m.settlement("outsider").latest_version(refusal.args.period_start, refusal.args.period_end)

    error = refused(lambda: refusal.args.commit(m))

    assert_error(error, refusal.error, refusal.code, refusal.context, solidity_error=refusal.solidity_error)
    assert stored(m, refusal.args.run_id) == before
    assert m.settlement("outsider").latest_version(refusal.args.period_start, refusal.args.period_end) == latest


@pytest.mark.parametrize("role", ["operator", "meter_oracle", "admin", "outsider"])
def test_only_the_settler_commits_runs(settlement_market: SettlementMarket, role: str) -> None:
    m = settlement_market
    args = valid_args(m)
    error = refused(lambda: args.commit(m, role))
    assert_error(
        error,
        errors.Unauthorized,
        "unauthorized",
        {"account": m.senders[role].address, "needed_role": role_id("settler")},
        solidity_error="AccessControlUnauthorizedAccount",
    )
    assert not stored(m, args.run_id).exists


# --- verifying lines ------------------------------------------------------------------------------


def test_every_line_verifies_and_tampered_lines_do_not(settlement_market: SettlementMarket, parties: Parties) -> None:
    m = settlement_market
    s = m.settlement("outsider")
    run = commit(m, parties, m.period(4))

    for line, proof in zip(run.lines, run.proofs, strict=True):
        assert s.verify_line(line, proof), line

    line, proof = run.lines[4], run.proofs[4]  # R's penalty line
    tampered = [
        replace(line, amount_minor=line.amount_minor + 1),
        replace(line, energy_wh=-line.energy_wh),
        replace(line, kind=2),
        replace(line, ref=ZERO_ID),
        replace(line, account=parties[G].address),
        replace(line, run_id=run_id(*run.period, 2)),
    ]
    for changed in tampered:
        assert not s.verify_line(changed, proof), changed
    assert not s.verify_line(line, run.proofs[5])
    assert not s.verify_line(line, [])
    assert not s.verify_line(replace(line, run_id=new_id()), proof)  # an unknown run


def test_lines_of_one_version_do_not_verify_under_the_next(
    settlement_market: SettlementMarket, parties: Parties
) -> None:
    m = settlement_market
    period = m.period(4)
    first, second = commit(m, parties, period, 1), commit(m, parties, period, 2)
    s = m.settlement("outsider")
    assert s.verify_line(second.lines[0], second.proofs[0])
    assert not s.verify_line(replace(first.lines[0], run_id=second.run_id), first.proofs[0])


# --- the dispute window ---------------------------------------------------------------------------


def test_the_default_window_is_72_hours_and_set_at_deployment(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    s = m.settlement("outsider")
    assert s.dispute_window() == DEFAULT_WINDOW
    raw = m.rpc.call("eth_getTransactionReceipt", m.deployments["Settlement"].transaction_hash)
    assert s.events(Receipt.from_rpc(raw), "DisputeWindowUpdated") == [{"disputeWindowSeconds": DEFAULT_WINDOW}]


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_admin_and_operator_set_the_window_for_later_runs(
    settlement_market: SettlementMarket, parties: Parties, role: str
) -> None:
    m = settlement_market
    earlier = commit(m, parties, m.period(4))
    receipt = m.settlement(role).set_dispute_window(6 * HOUR)
    later = commit(m, parties, m.period(4))
    s = m.settlement("outsider")

    assert s.events(receipt, "DisputeWindowUpdated") == [{"disputeWindowSeconds": 6 * HOUR}]
    assert s.dispute_window() == 6 * HOUR
    assert stored(m, earlier.run_id).dispute_window_ends == m.block_timestamp(earlier.receipt) + DEFAULT_WINDOW
    assert stored(m, later.run_id).dispute_window_ends == m.block_timestamp(later.receipt) + 6 * HOUR
    m.advance(6 * HOUR)
    assert status(m, later.run_id) is RunStatus.FINAL
    assert status(m, earlier.run_id) is RunStatus.OPEN


@pytest.mark.parametrize("seconds", [0, HOUR - 1, 30 * DAY + 1, 2**64 - 1])
def test_a_window_out_of_bounds_is_refused(settlement_market: SettlementMarket, seconds: int) -> None:
    m = settlement_market
    error = refused(lambda: m.settlement("operator").set_dispute_window(seconds))
    assert_error(
        error,
        errors.InvalidDisputeWindow,
        "invalid_dispute_window",
        {"dispute_window_seconds": seconds, "min_seconds": HOUR, "max_seconds": 30 * DAY},
        solidity_error="SettlementInvalidDisputeWindow",
    )
    for bound in (HOUR, 30 * DAY):
        m.settlement("operator").set_dispute_window(bound)
        assert m.settlement("outsider").dispute_window() == bound


@pytest.mark.parametrize("role", ["settler", "meter_oracle", "outsider"])
def test_only_admin_or_operator_set_the_window(settlement_market: SettlementMarket, role: str) -> None:
    m = settlement_market
    error = refused(lambda: m.settlement(role).set_dispute_window(6 * HOUR))
    assert_error(
        error,
        errors.Unauthorized,
        "unauthorized",
        {"account": m.senders[role].address, "needed_role": role_id("operator")},
        solidity_error="AccessControlUnauthorizedAccount",
    )
    assert m.settlement("outsider").dispute_window() == DEFAULT_WINDOW


# --- disputes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [8, 0, 9], ids=["retailer total", "generator trade", "balancing total"])
def test_a_line_owner_disputes_its_line_through_any_relayer(
    settlement_market: SettlementMarket, parties: Parties, index: int
) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    call = dispute_call(m, parties, run, index)
    receipt = call.submit(m)
    s = m.settlement("outsider")
    dispute_id = call.line.dispute_id()

    assert receipt.gas_used < OPEN_DISPUTE_GAS_BOUND
    assert s.events(receipt, "DisputeOpened") == [
        {
            "disputeId": dispute_id,
            "runId": run.run_id,
            "account": call.line.account,
            "leafHash": "0x" + call.line.leaf_hash().hex(),
            "reasonHash": REASON,
        }
    ]
    assert dispute_id == "0x" + keccak(bytes.fromhex(run.run_id[2:]) + call.line.leaf_hash()).hex()
    record = s.dispute(dispute_id)
    assert (record.run_id, record.status) == (run.run_id, DisputeStatus.OPEN)
    assert stored(m, run.run_id).open_disputes == 1
    assert status(m, run.run_id) is RunStatus.OPEN


@dataclass(frozen=True)
class DisputeRefusal:
    call: DisputeCall
    error: type[errors.LedgerError]
    code: str
    solidity_error: str
    context: dict[str, Any]
    at: int | None = None
    """The timestamp to pin the block of the attempt to, when the check depends on it."""


DisputeBreaker = Callable[[SettlementMarket, Parties, CommittedRun], DisputeRefusal]


def unknown_run(m: SettlementMarket, p: Parties, run: CommittedRun) -> DisputeRefusal:
    good = dispute_call(m, p, run)
    line = replace(good.line, run_id=new_id())
    call = replace(good, line=line, signature=sign_dispute(p[R], m.domain, line, REASON, good.deadline))
    return DisputeRefusal(call, errors.UnknownRun, "unknown_run", "SettlementUnknownRun", {"run_id": line.run_id})


def superseded_run(m: SettlementMarket, p: Parties, run: CommittedRun) -> DisputeRefusal:
    """Superseded, and the signature expired and is someone else's: the supersession comes first."""
    next_version = commit(m, p, run.period, 2)
    call = dispute_call(m, p, run, signer=p[G], deadline=m.now() - 1)
    context = {"run_id": run.run_id, "superseded_by": next_version.run_id}
    return DisputeRefusal(call, errors.RunSuperseded, "run_superseded", "SettlementRunSuperseded", context)


def window_closed(offset: int) -> DisputeBreaker:
    """At `disputeWindowEnds + offset`, with an expired signature and another line's proof."""

    def breaks(m: SettlementMarket, p: Parties, run: CommittedRun) -> DisputeRefusal:
        ends = stored(m, run.run_id).dispute_window_ends
        call = replace(dispute_call(m, p, run, deadline=ends - 1), proof=run.proofs[0])
        context = {"run_id": run.run_id, "dispute_window_ends": ends}
        name = "SettlementDisputeWindowClosed"
        return DisputeRefusal(call, errors.DisputeWindowClosed, "dispute_window_closed", name, context, ends + offset)

    return breaks


def signature_expired(m: SettlementMarket, p: Parties, run: CommittedRun) -> DisputeRefusal:
    """Expired and signed by someone else: the deadline comes first."""
    at = m.now() + 10
    call = dispute_call(m, p, run, signer=account(), deadline=at - 1)
    context = {"run_id": run.run_id, "deadline": at - 1}
    name = "SettlementSignatureExpired"
    return DisputeRefusal(call, errors.DisputeSignatureExpired, "dispute_signature_expired", name, context, at)


def badly_signed(sign: Callable[[SettlementMarket, Parties, DisputeCall], bytes]) -> DisputeBreaker:
    """A dispute whose signature is not the line account's, with another line's proof too: the
    signature is checked first."""

    def breaks(m: SettlementMarket, p: Parties, run: CommittedRun) -> DisputeRefusal:
        good = dispute_call(m, p, run)
        call = replace(good, signature=sign(m, p, good), proof=run.proofs[0])
        context = {"run_id": run.run_id, "account": good.line.account}
        name = "SettlementInvalidSignature"
        return DisputeRefusal(call, errors.InvalidDisputeSignature, "invalid_dispute_signature", name, context)

    return breaks


def by(signer: Callable[[Parties], LocalAccount]) -> Callable[[SettlementMarket, Parties, DisputeCall], bytes]:
    return lambda m, p, c: sign_dispute(signer(p), m.domain, c.line, c.reason_hash, c.deadline)


def for_domain(**change: Any) -> Callable[[SettlementMarket, Parties, DisputeCall], bytes]:
    def sign(m: SettlementMarket, p: Parties, c: DisputeCall) -> bytes:
        return sign_dispute(p[R], replace(m.domain, **change), c.line, c.reason_hash, c.deadline)

    return sign


def over_other_terms(**change: Any) -> Callable[[SettlementMarket, Parties, DisputeCall], bytes]:
    def sign(m: SettlementMarket, p: Parties, c: DisputeCall) -> bytes:
        terms: dict[str, Any] = {"reason_hash": c.reason_hash, "deadline": c.deadline} | change
        return sign_dispute(p[R], m.domain, c.line, terms["reason_hash"], terms["deadline"])

    return sign


def bad_proof(m: SettlementMarket, p: Parties, run: CommittedRun) -> DisputeRefusal:
    call = replace(dispute_call(m, p, run), proof=run.proofs[3])
    context = {"run_id": run.run_id, "leaf_hash": "0x" + call.line.leaf_hash().hex()}
    return DisputeRefusal(call, errors.InvalidLineProof, "invalid_line_proof", "SettlementInvalidProof", context)


def tampered_line(m: SettlementMarket, p: Parties, run: CommittedRun) -> DisputeRefusal:
    """R signs a line with a better amount than its committed one, with the committed line's proof."""
    good = dispute_call(m, p, run)
    line = replace(good.line, amount_minor=good.line.amount_minor + 2_000)
    call = replace(good, line=line, signature=sign_dispute(p[R], m.domain, line, REASON, good.deadline))
    context = {"run_id": run.run_id, "leaf_hash": "0x" + line.leaf_hash().hex()}
    return DisputeRefusal(call, errors.InvalidLineProof, "invalid_line_proof", "SettlementInvalidProof", context)


def disputed_twice(resolution: bool | None) -> DisputeBreaker:
    """The line is disputed already (still open, or accepted / rejected), with a new reason."""

    def breaks(m: SettlementMarket, p: Parties, run: CommittedRun) -> DisputeRefusal:
        first = dispute_call(m, p, run)
        first.submit(m)
        if resolution is not None:
            m.settlement("operator").resolve_dispute(first.line.dispute_id(), resolution, new_id())
        again = dispute_call(m, p, run, reason_hash=new_id())
        state = {None: DisputeStatus.OPEN, True: DisputeStatus.ACCEPTED, False: DisputeStatus.REJECTED}[resolution]
        context = {"dispute_id": first.line.dispute_id(), "status": state.ordinal}
        return DisputeRefusal(again, errors.DisputeExists, "dispute_exists", "SettlementDisputeExists", context)

    return breaks


DISPUTE_BREAKERS: dict[str, DisputeBreaker] = {
    "unknown run": unknown_run,
    "superseded run": superseded_run,
    "at the window's end": window_closed(0),
    "after the window": window_closed(DAY),
    "expired signature": signature_expired,
    "signed by a stranger": badly_signed(by(lambda p: account())),
    "signed by another line's account": badly_signed(by(lambda p: p[G])),
    "signed for another chain": badly_signed(for_domain(chain_id=1)),
    "signed for another contract": badly_signed(for_domain(verifying_contract=account().address)),
    "signed for the trade ledger's domain": badly_signed(for_domain(name="GridLedger")),
    "signed over another reason": badly_signed(over_other_terms(reason_hash=ZERO_ID)),
    "signed over another deadline": badly_signed(over_other_terms(deadline=2**40)),
    "malleable high-s signature": badly_signed(lambda m, p, c: high_s(c.signature)),
    "64-byte compact signature": badly_signed(lambda m, p, c: c.signature[:64]),
    "empty signature": badly_signed(lambda m, p, c: b""),
    "another line's proof": bad_proof,
    "tampered line": tampered_line,
    "disputed already": disputed_twice(None),
    "disputed already, accepted": disputed_twice(True),
    "disputed already, rejected": disputed_twice(False),
}


@pytest.mark.parametrize("breaker", DISPUTE_BREAKERS.values(), ids=DISPUTE_BREAKERS.keys())
def test_open_dispute_refused(settlement_market: SettlementMarket, parties: Parties, breaker: DisputeBreaker) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    refusal = breaker(m, parties, run)
    record_before = m.settlement("outsider").dispute(refusal.call.line.dispute_id())
    run_before = stored(m, run.run_id)
    if refusal.at is not None:
        m.pin_next_block(refusal.at)

    error = refused(lambda: refusal.call.submit(m))

    assert_error(error, refusal.error, refusal.code, refusal.context, solidity_error=refusal.solidity_error)
    assert m.settlement("outsider").dispute(refusal.call.line.dispute_id()) == record_before
    assert stored(m, run.run_id) == run_before


def test_a_dispute_opens_until_the_last_second_of_the_window(
    settlement_market: SettlementMarket, parties: Parties
) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    ends = stored(m, run.run_id).dispute_window_ends
    call = dispute_call(m, parties, run, deadline=ends - 1)
    m.pin_next_block(ends - 1)
    receipt = call.submit(m)
    assert m.block_timestamp(receipt) == ends - 1
    assert m.settlement("outsider").dispute(call.line.dispute_id()).status is DisputeStatus.OPEN


def test_a_signature_is_valid_until_its_deadline_second(settlement_market: SettlementMarket, parties: Parties) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    at = m.now() + 10
    call = dispute_call(m, parties, run, deadline=at)
    m.pin_next_block(at)
    call.submit(m)
    assert m.settlement("outsider").dispute(call.line.dispute_id()).status is DisputeStatus.OPEN


def test_each_line_of_a_run_is_disputed_separately(settlement_market: SettlementMarket, parties: Parties) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    for index in (1, 3, 4, 8):
        dispute_call(m, parties, run, index).submit(m)
    assert stored(m, run.run_id).open_disputes == 4


# --- resolution -----------------------------------------------------------------------------------


@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "rejected"])
def test_the_operator_resolves_an_open_dispute(
    settlement_market: SettlementMarket, parties: Parties, accepted: bool
) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    call = dispute_call(m, parties, run)
    call.submit(m)
    dispute_id = call.line.dispute_id()
    resolution = new_id()

    receipt = m.settlement("operator").resolve_dispute(dispute_id, accepted, resolution)

    s = m.settlement("outsider")
    assert s.events(receipt, "DisputeResolved") == [
        {"disputeId": dispute_id, "accepted": accepted, "resolutionHash": resolution}
    ]
    assert s.dispute(dispute_id).status is (DisputeStatus.ACCEPTED if accepted else DisputeStatus.REJECTED)
    after = stored(m, run.run_id)
    assert (after.open_disputes, after.accepted_disputes) == (0, 1 if accepted else 0)

    error = refused(lambda: m.settlement("operator").resolve_dispute(dispute_id, not accepted, new_id()))
    assert_error(
        error,
        errors.DisputeNotOpen,
        "dispute_not_open",
        {"dispute_id": dispute_id, "status": s.dispute(dispute_id).status.ordinal},
        solidity_error="SettlementDisputeNotOpen",
    )


def test_an_unknown_dispute_cannot_be_resolved(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    dispute_id = new_id()
    error = refused(lambda: m.settlement("operator").resolve_dispute(dispute_id, True, new_id()))
    assert_error(
        error,
        errors.DisputeNotOpen,
        "dispute_not_open",
        {"dispute_id": dispute_id, "status": DisputeStatus.NONE.ordinal},
        solidity_error="SettlementDisputeNotOpen",
    )


@pytest.mark.parametrize("role", ["settler", "admin", "meter_oracle", "relayer"])
def test_only_the_operator_resolves(settlement_market: SettlementMarket, parties: Parties, role: str) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    call = dispute_call(m, parties, run)
    call.submit(m)
    error = refused(lambda: m.settlement(role).resolve_dispute(call.line.dispute_id(), False, new_id()))
    assert_error(
        error,
        errors.Unauthorized,
        "unauthorized",
        {"account": m.senders[role].address, "needed_role": role_id("operator")},
        solidity_error="AccessControlUnauthorizedAccount",
    )
    assert m.settlement("outsider").dispute(call.line.dispute_id()).status is DisputeStatus.OPEN


# --- finality -------------------------------------------------------------------------------------


def test_an_undisputed_run_is_final_once_its_window_has_passed(
    settlement_market: SettlementMarket, parties: Parties
) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    ends = stored(m, run.run_id).dispute_window_ends
    assert status(m, new_id()) is RunStatus.UNKNOWN
    assert status(m, run.run_id) is RunStatus.OPEN
    m.mine_at(ends - 1)
    assert status(m, run.run_id) is RunStatus.OPEN
    m.mine_at(ends)
    assert status(m, run.run_id) is RunStatus.FINAL


def test_an_open_dispute_holds_finality_until_rejected(settlement_market: SettlementMarket, parties: Parties) -> None:
    m = settlement_market
    run = commit(m, parties, m.period(4))
    call = dispute_call(m, parties, run)
    call.submit(m)
    m.advance(DEFAULT_WINDOW + HOUR)
    assert status(m, run.run_id) is RunStatus.OPEN
    m.settlement("operator").resolve_dispute(call.line.dispute_id(), False, new_id())
    assert status(m, run.run_id) is RunStatus.FINAL


def test_an_accepted_dispute_keeps_the_run_open_until_the_next_version(
    settlement_market: SettlementMarket, parties: Parties
) -> None:
    m = settlement_market
    first = commit(m, parties, m.period(4))
    call = dispute_call(m, parties, first)
    call.submit(m)
    m.settlement("operator").resolve_dispute(call.line.dispute_id(), True, new_id())
    m.advance(DEFAULT_WINDOW + HOUR)
    assert status(m, first.run_id) is RunStatus.OPEN

    second = commit(m, parties, first.period, 2)
    assert status(m, first.run_id) is RunStatus.SUPERSEDED
    assert status(m, second.run_id) is RunStatus.OPEN
    m.advance(DEFAULT_WINDOW)
    assert status(m, second.run_id) is RunStatus.FINAL


def test_a_dispute_of_a_superseded_run_is_still_resolved(settlement_market: SettlementMarket, parties: Parties) -> None:
    m = settlement_market
    first = commit(m, parties, m.period(4))
    call = dispute_call(m, parties, first)
    call.submit(m)
    commit(m, parties, first.period, 2)
    m.settlement("operator").resolve_dispute(call.line.dispute_id(), True, new_id())
    assert m.settlement("outsider").dispute(call.line.dispute_id()).status is DisputeStatus.ACCEPTED
    assert status(m, first.run_id) is RunStatus.SUPERSEDED


def test_a_final_run_can_still_be_resettled(settlement_market: SettlementMarket, parties: Parties) -> None:
    """A late meter reading leads to a re-settlement (SETTLEMENT.md): the final version is superseded."""
    m = settlement_market
    first = commit(m, parties, m.period(4))
    m.advance(DEFAULT_WINDOW)
    assert status(m, first.run_id) is RunStatus.FINAL
    commit(m, parties, first.period, 2)
    assert status(m, first.run_id) is RunStatus.SUPERSEDED


# --- one definition on both sides -----------------------------------------------------------------


def test_python_dispute_digest_equals_the_contracts(settlement_market: SettlementMarket, parties: Parties) -> None:
    m = settlement_market
    s = m.settlement("outsider")
    assert s.domain == settlement_domain(m.chain_id, m.address("Settlement"))
    _, lines, _ = build_run(parties, m.period(4), 7)
    extremes = DisputeLine(new_id(), parties[R].address, 255, "0x" + "ff" * 32, -(2**255), 2**255 - 1)
    for line, reason, deadline in [(lines[4], REASON, 1), (lines[9], ZERO_ID, 2**64 - 1), (extremes, new_id(), 0)]:
        digest = dispute_digest(s.domain, line, reason, deadline)
        assert s.hash_dispute(line, reason, deadline) == "0x" + digest.hex()
        # ... and what any EIP-712 wallet signs for the same typed data.
        typed = encode_typed_data(full_message=dispute_typed_data(s.domain, line, reason, deadline))
        assert keccak(b"\x19" + typed.version + typed.header + typed.body) == digest
        signature = sign_dispute(parties[R], s.domain, line, reason, deadline)
        assert recover_signer(digest, signature) == parties[R].address


def test_python_run_id_equals_the_contracts(settlement_market: SettlementMarket) -> None:
    s = settlement_market.settlement("outsider")
    for start, end, version in [(0, 900, 1), (1_767_225_600, 1_767_312_000, 3), (2**64 - 900, 2**64 - 1, 2**32 - 1)]:
        assert s.run_id_of(start, end, version) == run_id(start, end, version)


def test_python_leaf_hash_is_the_trees_leaf(settlement_market: SettlementMarket, parties: Parties) -> None:
    """A one-line tree's root is its leaf hash: the Python leaf is the StandardMerkleTree leaf."""
    line = worked_example(new_id(), parties, 900 * INTERVAL_SECONDS)[4]
    tree = merkle_tree([line.leaf_values()], LINE_LEAF_ENCODING)
    assert tree.root == "0x" + line.leaf_hash().hex()


# --- deployment -----------------------------------------------------------------------------------


def test_deployment_grants_each_contract_only_the_roles_it_checks(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    md, s = m.meter_data("outsider"), m.settlement("outsider")
    holder = {role: m.senders[role].address for role in ("admin", "operator", "meter_oracle", "settler")}
    assert [md.has_role(role, account) for role, account in holder.items()] == [True, True, True, False]
    assert [s.has_role(role, account) for role, account in holder.items()] == [True, True, False, True]


def test_deployment_takes_a_dispute_window_and_refuses_unknown_roles(settlement_market: SettlementMarket) -> None:
    m = settlement_market
    admin, artifacts = m.senders["admin"], compile_contracts()
    deployed = deploy_contracts(
        admin, artifacts, roles={"recorder": m.senders["outsider"].address}, dispute_window_seconds=6 * HOUR
    ).contracts
    settlement = SettlementContract(admin, deployed["Settlement"].address, artifacts["Settlement"].abi)
    assert settlement.dispute_window() == 6 * HOUR
    assert not settlement.has_role("recorder", m.senders["outsider"].address)

    error = refused(lambda: deploy_contracts(admin, artifacts, roles={"setler": admin.address}).contracts)
    assert type(error) is errors.ConfigurationError
    assert error.context == {"roles": ["setler"]}
