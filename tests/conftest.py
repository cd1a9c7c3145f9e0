from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.chain.node import LocalNode
from tests.store_fixtures import *  # noqa: F403  (database_url: SQLite and PostgreSQL)
from tests.support.market import Market, deploy_market

CHAIN_ID = 31337


@pytest.fixture(
    scope="session",
    params=[pytest.param("hardhat", marks=pytest.mark.hardhat), pytest.param("anvil", marks=pytest.mark.anvil)],
)
def node(request: pytest.FixtureRequest) -> Iterator[LocalNode]:
    """One automining node of each kind for the whole session; tests deploy their own contracts."""
    with LocalNode(request.param, chain_id=CHAIN_ID) as running:
        yield running


@pytest.fixture
def market(node: LocalNode) -> Market:
    return deploy_market(node.rpc_url, CHAIN_ID)


@pytest.fixture(scope="session")
def anvil() -> Iterator[LocalNode]:
    """An automining anvil node for tests that are about our code, not about node differences."""
    with LocalNode("anvil", chain_id=CHAIN_ID) as running:
        yield running


@pytest.fixture
def anvil_market(anvil: LocalNode) -> Market:
    return deploy_market(anvil.rpc_url, CHAIN_ID)
