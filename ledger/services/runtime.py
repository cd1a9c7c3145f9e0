"""The running ledger service: use cases plus the relayer, indexer and settlement-job threads
behind them.

The indexer thread also keeps the services' own records true through reorgs: at start-up and
after each rollback it runs the `Reconciler` (`ledger.services.reconcile`).

The threads run in this process, or, given `workers`, in another process: one this service
starts, stops and reports on (`WorkerProcess`), or one it only reports on (`WorkerStatusFile`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ledger.chain.compiler import compile_contracts
from ledger.chain.log_source import JsonRpcLogSource
from ledger.indexer.indexer import Indexer, indexed_sources
from ledger.services.context import LedgerContext
from ledger.services.metering import MeteringService
from ledger.services.participants import ParticipantService
from ledger.services.reconcile import Reconciler
from ledger.services.registrar import Registrar
from ledger.services.relayer import Relayer
from ledger.services.settlement import SettlementService
from ledger.services.settlement.jobs import SettlementJobs
from ledger.services.trading import TradingService
from ledger.services.worker_process import WorkerStatus

if TYPE_CHECKING:
    from ledger.services.worker_process import WorkerProcess, WorkerStatusFile

log = logging.getLogger(__name__)


class LedgerService:
    def __init__(self, context: LedgerContext, *, workers: WorkerProcess | WorkerStatusFile | None = None) -> None:
        settings = context.settings
        self.context = context
        self.trading = TradingService(context.recorder, context.sessions, context.read_sessions, context.clock)
        self.participants = ParticipantService(context.operator, context.sessions)
        start_block = context.deployment.start_block
        self.relayer = Relayer(
            context.recorder,
            context.sessions,
            start_block=start_block,
            batch_size=settings.relayer_batch_size,
            batch_window=settings.relayer_batch_window_ms / 1000,
            max_in_flight=settings.relayer_max_in_flight,
        )
        # The operator key's one sender in the workers' process (nonces: ledger.chain.transactions).
        self.registrar = Registrar(
            context.operator, context.sessions, batch_window=settings.relayer_batch_window_ms / 1000
        )
        addresses, abi = indexed_sources(
            {name: contract.address for name, contract in context.deployment.contracts.items()},
            {name: artifact.abi for name, artifact in compile_contracts().items()},
        )
        self.indexer = Indexer(
            JsonRpcLogSource(context.rpc.url),
            context.sessions,
            addresses=addresses,
            abi=abi,
            start_block=start_block,
            confirmations=settings.confirmations,
            name=f"{context.deployment.chain_id}:{context.deployment.contracts['TradeLedger'].address}",
            # Unconfirmed blocks too, so the API answers as soon as a trade is mined (with its
            # confirmations); the `name` checkpoint stays the last FINAL block, which is what
            # readers of final data (settlement inputs) filter with (`final_block_number`). A
            # reorg deeper than the confirmations halts the indexer: health then answers 503
            # with the error's code `reorg_beyond_finality`.
            follow_head=True,
        )
        self._stop = threading.Event()
        settlement = SettlementService(context)
        self.reconciler = Reconciler(context, MeteringService(context), settlement, stop=self._stop)
        self.settlement_jobs = SettlementJobs(context, settlement)
        self._threads: list[threading.Thread] = []
        self._failure: BaseException | None = None
        self._failed: set[str] = set()  # workers that raised, dead even while their thread winds down
        self._elsewhere = workers

    @property
    def failure(self) -> BaseException | None:
        return self._elsewhere.failure if self._elsewhere is not None else self._failure

    def start(self) -> None:
        if self._elsewhere is not None:
            self._elsewhere.start()
            return
        if self._threads:
            raise RuntimeError("the service is running already: two relayers would share one key's nonces")
        self._stop.clear()
        self._threads = [
            self._thread("relayer", lambda: self.relayer.run(self._stop)),
            self._thread("indexer", self._index),
            self._thread("settlement", lambda: self.settlement_jobs.run(self._stop)),
            self._thread("registrar", lambda: self.registrar.run(self._stop)),
        ]

    def _index(self) -> None:
        # First the records a reorg may have left stale while no service watched (or between a
        # rollback and its repair), then every rollback's as it happens.
        self.reconciler.at_start()
        self.indexer.run(self._stop, poll_interval=0.25, on_rollback=self.reconciler.after_rollback)

    def stop(self) -> None:
        if self._elsewhere is not None:
            self._elsewhere.stop()
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    @property
    def healthy(self) -> bool:
        workers = self.workers
        return self.failure is None and bool(workers) and all(workers.values())

    @property
    def workers(self) -> dict[str, bool]:
        """Whether each worker thread (relayer, indexer, registrar, settlement) is alive, by name;
        empty before start()."""
        if self._elsewhere is not None:
            return self._elsewhere.alive
        names = {t: t.name.removeprefix("gridledger-") for t in self._threads}
        return {name: t.is_alive() and name not in self._failed for t, name in names.items()}

    @property
    def worker_statuses(self) -> dict[str, WorkerStatus]:
        """Each worker's liveness, the state of the process it runs in and that process's restarts."""
        if self._elsewhere is not None:
            return self._elsewhere.statuses
        return {name: WorkerStatus(alive, "running" if alive else "stopped") for name, alive in self.workers.items()}

    def _thread(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # a halted worker must be visible, not silently gone
                # Dead first, then the failure: whoever sees the failure sees the worker dead.
                self._failed.add(name)
                self._failure = exc
                log.exception("%s stopped", name)

        thread = threading.Thread(target=guarded, name=f"gridledger-{name}", daemon=True)
        thread.start()
        return thread
