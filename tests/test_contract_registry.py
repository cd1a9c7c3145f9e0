"""registerParticipants on Hardhat and anvil: every valid entry registered, every invalid one
rejected with its custom error in a ParticipantRejected log, the batch never sunk by one."""

from __future__ import annotations

import secrets

import pytest
from eth_account import Account

from ledger import errors
from ledger.chain.trade_ledger import Registration
from ledger.chain.transactions import Receipt, SignedTransaction
from ledger.domain.trade import ParticipantKind, ParticipantStatus
from tests.support.market import Market

ZERO = "0x" + "00" * 20


def entry(account: str, kind: int = ParticipantKind.CONSUMER.ordinal) -> Registration:
    return Registration(account, kind, secrets.token_bytes(32))


def send(market: Market, batch: list[Registration]) -> tuple[SignedTransaction, Receipt]:
    ledger = market.ledger("operator")
    tx = ledger.sign_register_participants(batch)
    assert ledger.sender.broadcast([tx]) == {}
    receipt = ledger.sender.wait([tx.hash])[tx.hash]
    return tx, receipt


def test_a_batch_registers_the_valid_entries_and_rejects_the_others_with_their_errors(market: Market) -> None:
    known = market.participant()
    fresh = [Account.create().address for _ in range(4)]
    batch = [
        entry(fresh[0], ParticipantKind.GENERATOR.ordinal),
        entry(ZERO),
        entry(fresh[1]),
        entry(known.address),
        entry(fresh[2], 4),  # one past Prosumer
        entry(fresh[3], 255),
        entry(fresh[0]),  # the same account again in one batch
    ]
    _, receipt = send(market, batch)
    assert receipt.status == 1
    outcome = market.ledger("operator").registration_outcome(receipt)

    assert set(outcome.registered) == {fresh[0], fresh[1]}
    assert list(outcome.registered.values()) == sorted(outcome.registered.values())
    rejected = outcome.rejected
    assert set(rejected) == {ZERO, known.address, fresh[2], fresh[3], fresh[0]}
    assert isinstance(rejected[ZERO], errors.ValidationError)
    assert rejected[ZERO].context["solidity_error"] == "ParticipantRegistryZeroAddress"
    assert isinstance(rejected[known.address], errors.ParticipantAlreadyRegistered)
    assert isinstance(rejected[fresh[2]], errors.InvalidParticipantKind) and rejected[fresh[2]].context["kind"] == 4
    assert rejected[fresh[3]].code == "invalid_participant_kind"
    # The second entry of fresh[0] was rejected after the first registered it: both are in the logs.
    events = market.ledger("outsider").events(receipt, "ParticipantRejected")
    assert [e["account"] for e in events] == [ZERO, known.address, fresh[2], fresh[3], fresh[0]]

    reader = market.ledger("outsider")
    first = reader.participant(fresh[0])
    assert (first.status, first.kind) == (ParticipantStatus.ACTIVE, ParticipantKind.GENERATOR)
    assert first.identifier_hash == "0x" + batch[0].identifier_hash.hex()  # the first entry's, not the repeat's
    assert reader.participant(fresh[1]).kind is ParticipantKind.CONSUMER
    assert reader.participant(fresh[2]).status is ParticipantStatus.NONE
    registered = reader.events(receipt, "ParticipantRegistered")
    assert [e["account"] for e in registered] == [fresh[0], fresh[1]]


def test_a_batch_of_only_invalid_entries_is_mined_and_registers_nobody(market: Market) -> None:
    known = market.participant()
    _, receipt = send(market, [entry(ZERO), entry(known.address)])
    outcome = market.ledger("operator").registration_outcome(receipt)
    assert receipt.status == 1 and outcome.registered == {} and set(outcome.rejected) == {ZERO, known.address}


@pytest.mark.parametrize(
    ("role", "batch_size", "error"),
    [("outsider", 1, errors.Unauthorized), ("recorder", 1, errors.Unauthorized), ("operator", 0, errors.EmptyBatch)],
)
def test_only_the_operator_registers_and_never_an_empty_batch(
    market: Market, role: str, batch_size: int, error: type[errors.LedgerError]
) -> None:
    ledger = market.ledger(role)
    batch = [entry(Account.create().address) for _ in range(batch_size)]
    data = ledger.encode("registerParticipants", [[(r.account, r.kind, r.identifier_hash) for r in batch]])
    with pytest.raises(error):
        ledger.sender.transact(ledger.address, data, ledger.errors.decode)
    assert all(market.ledger("outsider").participant(r.account).status is ParticipantStatus.NONE for r in batch)


def test_a_single_registration_keeps_its_custom_errors(market: Market) -> None:
    known = market.participant()
    operator = market.ledger("operator")
    with pytest.raises(errors.ParticipantAlreadyRegistered):
        operator.register_participant(known.address, ParticipantKind.CONSUMER, b"\x01" * 32)
    with pytest.raises(errors.ValidationError) as refused:
        operator.register_participant(ZERO, ParticipantKind.CONSUMER, b"\x01" * 32)
    assert refused.value.context["solidity_error"] == "ParticipantRegistryZeroAddress"


def test_a_batch_of_250_fits_its_gas_bound(market: Market) -> None:
    batch = [entry(Account.create().address) for _ in range(250)]
    _, receipt = send(market, batch)
    assert receipt.status == 1
    assert len(market.ledger("operator").registration_outcome(receipt).registered) == 250
    assert receipt.gas_used < 250 * 55_000 + 60_000
