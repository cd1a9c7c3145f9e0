"""verify_index over MeterData and Settlement: the chain facts (batches, runs, disputes) field by
field, and the off-chain content against the roots and hashes the chain committed. On anvil and
both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from ledger.chain.log_source import JsonRpcLogSource
from ledger.chain.node import LocalNode
from ledger.services.verification import Difference, DifferenceKind, verify
from ledger.store.chain_models import ChainBatch, ChainDispute, ChainRun
from ledger.store.metering_models import MeterReadingRow, ReferencePriceRow
from ledger.store.settlement_models import Dispute, StatementLine
from scripts import verify_index
from scripts.reindex import index_sources
from tests.support.settled_world import settle_with_corrections, world_with
from tests.test_settlement_service import World


def run_verify(world: World, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    settings = world.context.settings
    status = verify_index.main(
        [
            "--rpc-url",
            world.context.rpc.url,
            "--chain-id",
            str(settings.chain_id),
            "--deployment-file",
            str(settings.deployment_file),
            "--database-url",
            settings.database_url,
        ]
    )
    return status, capsys.readouterr().out


def differences(world: World) -> list[Difference]:
    addresses, abi = index_sources(world.context.deployment)
    with JsonRpcLogSource(world.context.rpc.url) as source:
        return verify(
            source,
            world.context.sessions,
            name=world.ledger.indexer.name,
            addresses=addresses,
            abi=abi,
            start_block=world.context.deployment.start_block,
        )


def test_chain_facts_and_content_are_verified_and_every_tampering_is_listed(
    anvil: LocalNode, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with world_with(anvil.rpc_url, database_url, tmp_path) as world:
        settled = settle_with_corrections(world)
        world.index()
        assert run_verify(world, capsys) == (0, "the index equals the chain\n")

        first_readings, corrected_readings = settled.reading_batches
        first_run, second_run = settled.runs
        with world.context.sessions.begin() as session:
            # Chain facts: a root, a supersession, a resolution.
            session.execute(update(ChainRun).where(ChainRun.run_id == second_run).values(root="0x" + "11" * 32))
            session.execute(update(ChainBatch).where(ChainBatch.batch_id == first_readings).values(superseded_by=None))
            session.execute(update(ChainDispute).values(accepted=True))
            # Off-chain content: a reading's value, a statement line's amount, a dispute's reason,
            # a price batch's rows gone.
            reading_id = session.scalars(
                select(MeterReadingRow.id).where(MeterReadingRow.batch_id == corrected_readings).limit(1)
            ).one()
            session.execute(update(MeterReadingRow).where(MeterReadingRow.id == reading_id).values(injected_wh=1))
            line = session.scalars(select(StatementLine).where(StatementLine.run_id == first_run).limit(1)).one()
            line.amount_minor += 1
            session.execute(update(Dispute).values(reason="something else"))
            session.execute(delete(ReferencePriceRow).where(ReferencePriceRow.batch_id == settled.price_batches[0]))

        found = differences(world)

        listed = {(d.kind, d.table, d.key, d.field) for d in found}
        assert listed == {
            (DifferenceKind.FIELD, "chain_runs", (second_run,), "root"),
            (DifferenceKind.FIELD, "chain_batches", (first_readings,), "superseded_by"),
            (DifferenceKind.FIELD, "chain_disputes", (settled.dispute_id,), "accepted"),
            (DifferenceKind.CONTENT, "meter_readings", (corrected_readings,), "root"),
            (DifferenceKind.CONTENT, "statement_lines", (first_run,), "root"),
            (DifferenceKind.CONTENT, "disputes", (settled.dispute_id,), "reason"),
            (DifferenceKind.CONTENT, "reference_prices", (settled.price_batches[0],), "root"),
        }
        by_key = {(d.table, d.key): d for d in found}
        tampered_run = by_key[("chain_runs", (second_run,))]
        assert (tampered_run.chain_value, tampered_run.index_value) != (None, None)
        assert tampered_run.index_value == "0x" + "11" * 32
        readings = by_key[("meter_readings", (corrected_readings,))]
        assert readings.detail == "the stored values do not hash to the root on chain"
        with world.context.sessions() as session:
            batch = session.get(ChainBatch, corrected_readings)
            assert batch is not None and readings.chain_value == batch.root != readings.index_value

        status, out = run_verify(world, capsys)
        assert status == 1
        assert f"content: meter_readings {corrected_readings} root: the stored values do not hash" in out
        assert f"content: statement_lines {first_run} root: the stored lines do not hash" in out
        assert f"field: chain_runs {second_run} root: chain " in out
        assert len(out.strip().splitlines()) == 7


def test_a_record_the_chain_does_not_have_is_reported(
    anvil: LocalNode, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch the metering service marked committed whose commitment a reorg took away."""
    with world_with(anvil.rpc_url, database_url, tmp_path, confirmations=3) as world:
        settled = settle_with_corrections(world)
        world.index()
        world.rpc.call("anvil_mine", "0x1")
        # The dispute's resolution and the empty block after it are replaced by empty blocks.
        world.rpc.call("anvil_reorg", 2, [])
        world.index()
        with world.context.sessions() as session:
            dispute = session.get(ChainDispute, settled.dispute_id)
            assert dispute is not None and dispute.accepted is None  # the resolution was rolled back

        found = differences(world)

        assert [(d.kind, d.table, d.key, d.field) for d in found] == [
            (DifferenceKind.CONTENT, "disputes", (settled.dispute_id,), "status")
        ]
        assert (found[0].chain_value, found[0].index_value) == ("open", "rejected")
