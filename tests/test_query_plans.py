"""SQLite's plan for a participant's trades in a delivery window: the chain-order index holding
the window (migration 0007), chosen once the planner has statistics (`refresh_planner_statistics`,
run by `migrate`). Without them SQLite reads the (party, delivery_start) index and sorts."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, or_, select

from ledger.store import queries
from ledger.store.db import make_engine, make_session_factory, migrate
from ledger.store.models import Trade
from scripts import bench_api

DAY = 86_400


def searched_indexes(engine: Engine, participant: str, window: tuple[int, int]) -> list[str]:
    statement, params = queries._trade_list(participant, "any", *window, None, 50, None)
    with engine.connect() as connection:
        compiled = statement.compile(dialect=connection.dialect)
        # The OFFSET parameters SQLAlchemy adds to each LIMIT are 0.
        values = tuple(params.get(key, 0) for key in compiled.positiontup or ())
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", values).all()
    return [detail.split(" USING INDEX ")[1].split(" ")[0] for *_, detail in plan if " USING INDEX " in detail]


def test_a_window_list_reads_the_chain_order_index_with_the_window_once_statistics_exist(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    bench_api.seed(engine, 20_000, 20)  # a year of deliveries, ~2,000 trades per participant
    participant = bench_api.participant_address(3)
    window = (bench_api.YEAR_START + 200 * DAY, bench_api.YEAR_START + 230 * DAY)
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM sqlite_stat1")
    engine.dispose()  # a connection reads the statistics when it opens
    assert searched_indexes(engine, participant, window) == [
        "ix_trades_seller_delivery_start",
        "ix_trades_buyer_delivery_start",
    ]

    migrate(engine)
    engine.dispose()
    assert searched_indexes(engine, participant, window) == [
        "ix_trades_seller_block_number_log_index_delivery",
        "ix_trades_buyer_block_number_log_index_delivery",
    ]

    with make_session_factory(engine)() as session:
        page = queries.list_trade_rows(
            session, participant=participant, delivery_from=window[0], delivery_to=window[1], limit=50
        )
        overlapping = session.scalars(
            select(Trade.trade_id)
            .where(or_(Trade.seller == participant, Trade.buyer == participant))
            .where(Trade.delivery_start < window[1], Trade.delivery_end > window[0])
            .order_by(Trade.block_number, Trade.log_index)
            .limit(50)
        ).all()
    assert len(overlapping) == 50
    assert [row.trade_id for row in page.items] == overlapping
    engine.dispose()
