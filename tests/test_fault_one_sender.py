"""Fault test: one key, one sender. Trades and cancellations accepted at the same time by the API's
process are all sent from the recorder key by the relayer in the worker process (`cancelTrades` and
`recordTrades` batches under one nonce cache): no nonce refusal, every trade recorded once, every
cancellation cancelled once. (Cancellations used to be sent from the API's process, whose nonce
cache raced the relayer's: `nonce too low`, answered as 503.)"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.node import LocalNode
from ledger.chain.trade_ledger import TRADE_CANCELLED_TOPIC, TRADE_RECORDED_TOPIC, ZERO_TOPIC
from ledger.domain.trade import ParticipantKind
from ledger.services.context import LedgerContext
from ledger.services.runtime import LedgerService
from ledger.services.trading import CancelRequest
from ledger.services.worker_process import WorkerProcess
from ledger.signing.trader import countersigned, sign_cancel_trade
from ledger.store import outbox, queries
from ledger.store.db import make_session_factory
from tests.support.market import valid_trade
from tests.support.service import deployed_settings, wait_for

PAIRS = 4
ROUNDS = 3
PER_ROUND = 20  # trades per round; each round also cancels the previous round's trades


def test_trades_and_cancellations_from_the_api_process_are_relayed_without_a_nonce_refusal(
    anvil: LocalNode, database_url: str, tmp_path: Path
) -> None:
    settings = deployed_settings(anvil.rpc_url, database_url, tmp_path)
    service = LedgerService(LedgerContext.open(settings), workers=WorkerProcess(settings, anvil.rpc_url))
    service.start()
    try:
        pairs: list[tuple[LocalAccount, LocalAccount]] = [(Account.create(), Account.create()) for _ in range(PAIRS)]
        for account in itertools.chain.from_iterable(pairs):
            service.participants.register(account.address, ParticipantKind.PROSUMER, f"licence-{account.address}")
        domain = service.context.recorder.domain
        sessions = make_session_factory(service.context.engine)

        def submit(index: int) -> tuple[str, str, LocalAccount, LocalAccount]:
            seller, buyer = pairs[index % PAIRS]
            terms = valid_trade(seller, buyer, service.context.clock.now())
            accepted = service.trading.submit(countersigned(seller, buyer, domain, terms))
            return accepted.submission_id, accepted.trade_id, seller, buyer

        def cancel(trade: tuple[str, str, LocalAccount, LocalAccount]) -> str:
            _, trade_id, seller, buyer = trade
            deadline = service.context.clock.now() + 600
            request = CancelRequest(
                trade_id,
                deadline,
                sign_cancel_trade(seller, domain, trade_id, deadline),
                sign_cancel_trade(buyer, domain, trade_id, deadline),
            )
            return service.trading.cancel(request).cancellation_id

        def settled(model: Any, ids: list[str]) -> bool:
            get = outbox.get_submission if model == "submission" else outbox.get_cancellation
            with sessions() as session:
                rows = [get(session, i) for i in ids]
            refused = [
                (r.id, r.error_code, r.error_detail) for r in rows if r is not None and r.status.value == "rejected"
            ]
            assert refused == []
            return all(r is not None and r.status.value == "recorded" for r in rows)

        def indexed(trade_ids: list[str]) -> bool:
            with sessions() as session:
                return all(queries.trade_exists(session, t) for t in trade_ids)

        trades: list[tuple[str, str, LocalAccount, LocalAccount]] = []
        cancellations: list[str] = []
        previous: list[tuple[str, str, LocalAccount, LocalAccount]] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for round_ in range(ROUNDS):
                new = pool.map(submit, range(round_ * PER_ROUND, (round_ + 1) * PER_ROUND))
                cancelled = pool.map(cancel, previous)
                previous = list(new)
                trades += previous
                cancellations += list(cancelled)
                submission_ids, trade_ids = [t[0] for t in previous], [t[1] for t in previous]
                wait_for(lambda ids=submission_ids: settled("submission", ids), "the round's trades", timeout=60)
                wait_for(lambda ids=trade_ids: indexed(ids), "the round's trades indexed", timeout=60)
        wait_for(lambda: settled("cancellation", cancellations), "every cancellation recorded", timeout=60)

        assert len(cancellations) == (ROUNDS - 1) * PER_ROUND
        # Sent once each: a node refusal (a nonce taken) requeues a batch and counts an attempt.
        with sessions() as session:
            rows = [outbox.get_submission(session, t[0]) for t in trades]
            rows += [outbox.get_cancellation(session, c) for c in cancellations]  # type: ignore[misc]
        assert [r.attempts for r in rows if r is not None] == [0] * len(rows)
        ledger = service.context.recorder
        rpc = service.context.rpc
        for _, trade_id, _, _ in trades:
            recorded = rpc.call(
                "eth_getLogs",
                {
                    "address": ledger.address,
                    "fromBlock": "0x0",
                    "toBlock": "latest",
                    "topics": [TRADE_RECORDED_TOPIC, trade_id],
                },
            )
            assert len(recorded) == 1
        for _, trade_id, _, _ in trades[: len(cancellations)]:
            cancelled = rpc.call(
                "eth_getLogs",
                {
                    "address": ledger.address,
                    "fromBlock": "0x0",
                    "toBlock": "latest",
                    "topics": [TRADE_CANCELLED_TOPIC, trade_id, ZERO_TOPIC],
                },
            )
            assert len(cancelled) == 1
        assert service.healthy
    finally:
        service.stop()
        service.context.close()
