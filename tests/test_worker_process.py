"""The relayer and indexer in a child process (what `python -m scripts.serve` runs): trades
accepted by the API's process are recorded and indexed by the child, and the service reports the
child's workers as its own, including their death."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account

from ledger.chain.node import LocalNode
from ledger.config import Settings
from ledger.domain.trade import ParticipantKind
from ledger.errors import LedgerError
from ledger.services.context import LedgerContext
from ledger.services.devstack import deploy
from ledger.services.runtime import LedgerService
from ledger.services.worker_process import WorkerProcess, WorkerProcessError, WorkerStatusFile, remote_failure
from ledger.signing.trader import countersigned
from ledger.store import outbox, queries
from ledger.store.db import make_session_factory
from tests.support.market import valid_trade
from tests.support.service import deployed_settings, wait_for

WORKERS = ("relayer", "indexer", "registrar", "settlement")


def test_a_child_process_records_and_indexes_what_the_api_accepts(
    anvil: LocalNode, database_url: str, tmp_path: Path
) -> None:
    settings = deployed_settings(anvil.rpc_url, database_url, tmp_path)
    workers = WorkerProcess(settings, anvil.rpc_url, status_path=tmp_path / "workers.json")
    service = LedgerService(LedgerContext.open(settings), workers=workers)
    # What another API process sees (scripts.serve --api-processes 2).
    other = LedgerService(LedgerContext.open(settings), workers=WorkerStatusFile(tmp_path / "workers.json"))
    service.start()
    try:
        running = dict.fromkeys(WORKERS, True)
        assert service.workers == running
        assert service.healthy and service.failure is None
        assert other.workers == running and other.healthy
        seller, buyer = Account.create(), Account.create()
        for account in (seller, buyer):
            service.participants.register(account.address, ParticipantKind.GENERATOR, f"licence-{account.address}")
        terms = valid_trade(seller, buyer, service.context.clock.now())
        accepted = service.trading.submit(countersigned(seller, buyer, service.context.recorder.domain, terms))
        sessions = make_session_factory(service.context.engine)

        def recorded_and_indexed() -> bool:
            with sessions() as session:
                row = outbox.get_submission(session, accepted.submission_id)
                recorded = row is not None and row.status.value == "recorded"
                return recorded and queries.get_trade_record(session, accepted.trade_id) is not None

        wait_for(recorded_and_indexed, "the trade recorded and indexed by the child", timeout=60)
    finally:
        service.stop()
        service.context.close()
        other.context.close()
    stopped = dict.fromkeys(WORKERS, False)
    assert service.workers == stopped
    assert not service.healthy
    assert other.workers == stopped and not other.healthy


def test_a_dead_child_is_an_unhealthy_service(anvil: LocalNode, tmp_path: Path) -> None:
    settings = Settings(
        rpc_url=anvil.rpc_url,
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        deployment_file=tmp_path / "deployment.json",
    )
    deploy(settings, anvil.rpc_url)
    workers = WorkerProcess(settings, anvil.rpc_url)
    service = LedgerService(LedgerContext.open(settings), workers=workers)
    service.start()
    try:
        assert service.healthy
        process = workers._process
        assert process is not None
        process.kill()
        wait_for(lambda: not service.healthy, "health to see the dead worker")
        assert service.workers == dict.fromkeys(WORKERS, False)
        assert isinstance(service.failure, WorkerProcessError)
    finally:
        service.stop()
        service.context.close()


def test_a_remote_failure_answers_like_the_original() -> None:
    ledger_error = remote_failure({"type": "ReorgBeyondFinality", "code": "reorg_beyond_finality", "detail": "deep"})
    assert type(ledger_error).__name__ == "ReorgBeyondFinality"
    assert isinstance(ledger_error, LedgerError)
    assert ledger_error.code == "reorg_beyond_finality" and str(ledger_error) == "deep"
    other = remote_failure({"type": "OperationalError", "code": None, "detail": "disk I/O error"})
    assert type(other).__name__ == "OperationalError" and str(other) == "disk I/O error"
