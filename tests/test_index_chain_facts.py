"""MeterData and Settlement chain facts in the index (ledger/store/chain_models.py), on anvil and
both databases: the services write them from their receipts, the indexer from the logs, and both
give the same rows; a reindex from the chain alone gives them back and keeps the off-chain
content; a reorg rolls them back."""

from __future__ import annotations

import io
from pathlib import Path

from sqlalchemy import func, select

from ledger.chain.log_source import JsonRpcLogSource
from ledger.chain.node import LocalNode
from ledger.domain.settlement import MeterReading
from ledger.indexer.indexer import Indexer, head_checkpoint_name
from ledger.store.chain_models import ChainBatch, ChainDispute, ChainRun, chain_run_status
from ledger.store.metering_models import MeterReadingRow, ReadingBatchRow
from ledger.store.models import IndexerCheckpoint
from ledger.store.settlement_models import Dispute, SettlementRun, StatementLine
from scripts.progress import Progress
from scripts.reindex import index_sources, reindex, reset_index
from tests.support.settled_world import chain_rows, settle_with_corrections, world_with
from tests.test_settlement_service import World, two_intervals


def test_the_services_and_a_reindex_write_the_same_chain_facts(
    anvil: LocalNode, database_url: str, tmp_path: Path
) -> None:
    with world_with(anvil.rpc_url, database_url, tmp_path) as world:
        settled = settle_with_corrections(world)
        sessions = world.context.sessions
        with sessions() as session:
            # Written from the receipts alone: the indexer has not read the dispute's blocks yet.
            head = session.get(IndexerCheckpoint, head_checkpoint_name(world.ledger.indexer.name))
            dispute = session.get(ChainDispute, settled.dispute_id)
            assert head is not None and dispute is not None and dispute.resolved_block_number is not None
            assert head.block_number < dispute.block_number
        written = chain_rows(sessions)

        first_readings, corrected_readings = settled.reading_batches
        batches = written["chain_batches"]
        assert len(batches) == 4
        assert batches[first_readings]["superseded_by"] == corrected_readings
        assert batches[corrected_readings]["supersedes"] == first_readings
        assert batches[corrected_readings]["superseded_by"] is None
        assert batches[settled.price_batches[0]]["superseded_by"] == settled.price_batches[1]
        runs = written["chain_runs"]
        assert [runs[run_id]["version"] for run_id in settled.runs] == [1, 2]
        assert runs[settled.runs[0]]["superseded_by"] == settled.runs[1]
        assert runs[settled.runs[1]]["superseded_by"] is None
        [dispute_row] = written["chain_disputes"].values()
        assert (dispute_row["run_id"], dispute_row["accepted"]) == (settled.runs[1], False)
        # One definition of each fact: the services' own records point at the same transactions.
        with sessions() as session:
            for batch in session.scalars(select(ReadingBatchRow)):
                fact = batches[batch.batch_id]
                assert (fact["root"], fact["transaction_hash"], fact["block_number"]) == (
                    batch.root,
                    batch.transaction_hash,
                    batch.block_number,
                )
            for run in session.scalars(select(SettlementRun)):
                fact = runs[run.run_id]
                assert (fact["root"], fact["inputs_hash"], fact["block_hash"], fact["committed_at"]) == (
                    run.root,
                    run.inputs_hash,
                    run.block_hash,
                    run.committed_at,
                )
            stored_dispute = session.get(Dispute, settled.dispute_id)
            assert stored_dispute is not None
            assert stored_dispute.resolved_transaction_hash == dispute_row["resolved_transaction_hash"]
        content = content_counts(world)

        # The indexer reading the same blocks finds every row stored, and changes none.
        world.index()
        assert chain_rows(sessions) == written

        # A rebuild from the chain alone gives the same rows and keeps the off-chain content.
        reset_index(sessions, world.ledger.indexer.name)
        assert all(not rows for rows in chain_rows(sessions).values())
        addresses, abi = index_sources(world.context.deployment)
        with JsonRpcLogSource(world.context.rpc.url) as source:
            rebuilt = Indexer(
                source,
                sessions,
                addresses=addresses,
                abi=abi,
                start_block=world.context.deployment.start_block,
                confirmations=1,
                name=world.ledger.indexer.name,
            )
            figures = reindex(rebuilt, Progress("reindex", 1, stream=io.StringIO()))  # quiet
        assert figures.events > 0
        assert chain_rows(sessions) == written
        assert content_counts(world) == content


def content_counts(world: World) -> tuple[int, int, int]:
    with world.context.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(MeterReadingRow)) or 0,
            session.scalar(select(func.count()).select_from(StatementLine)) or 0,
            session.scalar(select(func.count()).select_from(Dispute)) or 0,
        )


def test_a_reorg_rolls_back_a_batch_commitment_and_its_supersession(
    anvil: LocalNode, database_url: str, tmp_path: Path
) -> None:
    with world_with(anvil.rpc_url, database_url, tmp_path, confirmations=4) as world:
        market = two_intervals(world)
        start, _ = market.period
        with world.context.sessions() as session:
            [first] = session.scalars(select(ChainBatch.batch_id).where(ChainBatch.batch_kind == "readings"))
        corrected = world.metering.import_readings(
            [MeterReading(market.g.address, start, 1, 0)], source="test", supersedes=first
        ).batch_id
        world.index()
        with world.context.sessions() as session:
            first_row = session.get(ChainBatch, first)
            assert first_row is not None and first_row.superseded_by == corrected
            assert session.get(ChainBatch, corrected) is not None

        world.rpc.call("anvil_reorg", 1, [])  # the correction's block is replaced by an empty one
        world.index()

        with world.context.sessions() as session:
            assert session.get(ChainBatch, corrected) is None
            first_row = session.get(ChainBatch, first)
            assert first_row is not None and first_row.superseded_by is None
            assert first_row.superseded_block_number is None
            assert session.scalar(select(func.count()).select_from(ChainRun)) == 0


def test_a_runs_status_from_the_index_is_the_contracts(anvil: LocalNode, database_url: str, tmp_path: Path) -> None:
    with world_with(anvil.rpc_url, database_url, tmp_path) as world:
        settled = settle_with_corrections(world)
        world.index()
        first, second = settled.runs
        settler = world.context.settler

        def both(run_id: str) -> tuple[str | None, str]:
            with world.context.sessions() as session:
                indexed = chain_run_status(session, run_id, world.now())
            return (None if indexed is None else indexed.value), settler.run_status(run_id).value

        assert both(first) == ("superseded", "superseded")
        assert both(second) == ("open", "open")  # in its dispute window (its one dispute was rejected)
        with world.context.sessions() as session:
            run = session.get(ChainRun, second)
            assert run is not None
            window_ends = run.dispute_window_ends
        world.advance_past(window_ends)
        assert both(second) == ("final", "final")
