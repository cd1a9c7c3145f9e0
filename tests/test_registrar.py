"""The registrar on a real chain and a real database: batches with rejections, and crashes
between claiming a registration and settling it, without anyone registered twice."""

from __future__ import annotations

import secrets
import threading
import time

import pytest
from eth_account import Account
from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.trade_ledger import PARTICIPANT_REGISTERED_TOPIC
from ledger.domain.trade import ParticipantKind, ParticipantStatus
from ledger.services.registrar import Registrar
from ledger.store import registrations
from ledger.store.registration_models import RegistrationStatus
from tests.support.market import Market

REGISTERED = RegistrationStatus.REGISTERED


def make_registrar(market: Market, sessions: sessionmaker[Session], **options: int) -> Registrar:
    return Registrar(market.ledger("operator"), sessions, batch_window=0, **options)


def queue(
    sessions: sessionmaker[Session], accounts: list[str], kind: ParticipantKind = ParticipantKind.CONSUMER
) -> list[str]:
    with sessions.begin() as session:
        return [
            registrations.add_registration(session, a, kind, "0x" + secrets.token_bytes(32).hex())[0].id
            for a in accounts
        ]


def statuses(sessions: sessionmaker[Session], ids: list[str]) -> list[RegistrationStatus]:
    with sessions() as session:
        return [registrations.get_registration(session, i).status for i in ids]  # type: ignore[union-attr]


def registered_logs(market: Market, account: str) -> list[dict]:
    topic = "0x" + "00" * 12 + account[2:].lower()
    return market.rpc.call(
        "eth_getLogs",
        {
            "address": market.address,
            "fromBlock": "0x0",
            "toBlock": "latest",
            "topics": [PARTICIPANT_REGISTERED_TOPIC, topic],
        },
    )


def fresh(n: int) -> list[str]:
    return [Account.create().address for _ in range(n)]


def test_queued_registrations_are_registered_in_batches_and_a_refused_one_is_rejected_with_its_reason(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    known = market.participant()  # registered outside the queue: the contract refuses it
    accounts = [*fresh(2), known.address, *fresh(2)]
    ids = queue(sessions, accounts)

    result = make_registrar(market, sessions, batch_size=2).register_round()

    assert (result.sent, result.registered, result.rejected) == (5, 4, 1)
    assert statuses(sessions, ids) == [REGISTERED, REGISTERED, RegistrationStatus.REJECTED, REGISTERED, REGISTERED]
    with sessions() as session:
        rows = [registrations.get_registration(session, i) for i in ids]
    assert len({r.transaction_hash for r in rows}) == 3  # batches of 2, 2 and 1
    assert rows[2].error_code == "participant_already_registered"
    for row in rows[:2] + rows[3:]:
        (log,) = registered_logs(market, row.address)
        assert (log["transactionHash"], int(log["blockNumber"], 16)) == (row.transaction_hash, row.block_number)
        assert market.ledger("outsider").participant(row.address).identifier_hash == row.identifier_hash


def test_crash_after_marking_pending_before_broadcast_resends_after_restart(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    ids = queue(sessions, fresh(3))
    make_registrar(market, sessions)._prepare()  # signed and committed as pending; never sent
    assert statuses(sessions, ids) == [RegistrationStatus.PENDING] * 3

    market.ledger("operator").sender.nonces.resync()  # a new process starts from the chain's nonce
    restarted = make_registrar(market, sessions)
    assert restarted.recover().requeued == 3
    restarted.register_round()

    assert statuses(sessions, ids) == [REGISTERED] * 3
    with sessions() as session:
        assert all(r.attempts == 1 for r in (registrations.get_registration(session, i) for i in ids))


def test_crash_after_broadcast_before_settling_is_resolved_from_the_receipt(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    accounts = fresh(3)
    ids = queue(sessions, accounts)
    registrar = make_registrar(market, sessions)
    batches = registrar._prepare()
    sender = market.ledger("operator").sender
    sender.broadcast([b.tx for b in batches if b.tx is not None])
    sender.wait([b.tx_hash for b in batches])  # mined, but the process dies before settling

    result = make_registrar(market, sessions).recover()

    assert result.registered == 3
    with sessions() as session:
        rows = [registrations.get_registration(session, i) for i in ids]
    assert {r.transaction_hash for r in rows} == {batches[0].tx_hash}
    assert all(len(registered_logs(market, a)) == 1 for a in accounts)


def test_a_batch_sent_again_after_it_was_mined_counts_as_registered_not_rejected(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    accounts = fresh(2)
    ids = queue(sessions, accounts)
    first = make_registrar(market, sessions)._prepare()
    sender = market.ledger("operator").sender
    sender.broadcast([b.tx for b in first if b.tx is not None])
    sender.wait([b.tx_hash for b in first])
    # The receipt was never seen (a node that lost its index, a reorg): the registrations go back
    # to the queue and are sent again, and the contract refuses them as registered already.
    with sessions.begin() as session:
        registrations.requeue(session, ids)

    result = make_registrar(market, sessions).register_round()

    assert (result.registered, result.rejected) == (2, 0)
    assert statuses(sessions, ids) == [REGISTERED] * 2
    assert all(len(registered_logs(market, a)) == 1 for a in accounts)


def test_a_batch_still_in_the_mempool_at_restart_is_settled_once_mined_by_the_running_registrar(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    ids = queue(sessions, fresh(2))
    batches = make_registrar(market, sessions)._prepare()
    stop = threading.Event()
    market.rpc.call("evm_setAutomine", False)
    try:
        market.ledger("operator").sender.broadcast([b.tx for b in batches if b.tx is not None])
        restarted = make_registrar(market, sessions)
        assert restarted.recover().waiting == 2
        running = threading.Thread(target=restarted.run, args=(stop,))
        running.start()
        assert statuses(sessions, ids) == [RegistrationStatus.PENDING] * 2
        market.rpc.call("evm_mine")
    finally:
        market.rpc.call("evm_setAutomine", True)
    try:
        deadline = time.monotonic() + 10
        while statuses(sessions, ids) != [REGISTERED] * 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        running.join(timeout=10)
    assert statuses(sessions, ids) == [REGISTERED] * 2
    assert (
        market.ledger("outsider").participant(registrations_address(sessions, ids[0])).status
        is ParticipantStatus.ACTIVE
    )


def registrations_address(sessions: sessionmaker[Session], registration_id: str) -> str:
    with sessions() as session:
        return registrations.get_registration(session, registration_id).address  # type: ignore[union-attr]


def test_the_queue_keeps_one_registration_per_account_and_pages_the_unindexed(
    store_session_factory: sessionmaker[Session],
) -> None:
    sessions = store_session_factory
    a, b = fresh(2)
    h1, h2 = "0x" + "11" * 32, "0x" + "22" * 32
    consumer, generator = ParticipantKind.CONSUMER, ParticipantKind.GENERATOR
    with sessions.begin() as session:
        added = registrations.add_registrations(
            session,
            [(a.lower(), consumer, h1), (b, consumer, h1), (a, consumer, h1), (a, generator, h1), (b, consumer, h2)],
        )
    first, second, again, other_kind, other_identifier = added
    assert isinstance(first, tuple) and isinstance(second, tuple) and isinstance(again, tuple)
    assert (first[1], second[1], again[1]) == (True, True, False)
    assert first[0].address == a and again[0].id == first[0].id
    assert isinstance(other_kind, errors.ParticipantAlreadyRegistered)
    assert isinstance(other_identifier, errors.ParticipantAlreadyRegistered)
    with sessions.begin() as session:  # a later transaction finds the same rows
        (later,) = registrations.add_registrations(session, [(a, consumer, h1.upper().replace("0X", "0x"))])
    assert isinstance(later, tuple) and (later[0].id, later[1]) == (first[0].id, False)

    with sessions() as session:
        page, cursor = registrations.list_unindexed(session, kind=consumer, limit=1, cursor=None)
        assert [r.address for r in page] == [a] and cursor is not None
        page, cursor = registrations.list_unindexed(session, kind=consumer, limit=1, cursor=cursor)
        assert [r.address for r in page] == [b]
        assert registrations.list_unindexed(session, kind=generator, limit=5, cursor=None) == ([], None)
        for bad in ("p.\x00", "p." + "0" * 36, "x"):
            with pytest.raises(errors.ValidationError):
                registrations.list_unindexed(session, kind=None, limit=1, cursor=bad)
