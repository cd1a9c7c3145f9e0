"""The chain's own answer about a block or a transaction, read from the node (not the index): where
the explorer's block and transaction links lead."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from api.auth import require
from api.chain_schemas import ChainBlockOut, ChainTransactionOut
from api.deps import ServiceDep
from api.problems import problem_responses
from api.types import Bytes32
from ledger import errors
from ledger.auth.scopes import Principal, Scope
from ledger.chain.compiler import compile_contracts
from ledger.chain.event_catalog import EventCatalog
from ledger.services.chain_view import ChainView

router = APIRouter(prefix="/chain", tags=["chain"], responses=problem_responses(404, 422, 503))

_view_lock = threading.Lock()


def get_chain_view(request: Request, service: ServiceDep) -> ChainView:
    with _view_lock:
        view: ChainView | None = getattr(request.app.state, "chain_view", None)
        if view is None:
            context = service.context
            catalog = EventCatalog(
                {name: contract.address for name, contract in context.deployment.contracts.items()},
                {name: artifact.abi for name, artifact in compile_contracts().items()},
            )
            view = request.app.state.chain_view = ChainView(context.rpc, catalog, context.settings.confirmations)
        return view


ChainViewDep = Annotated[ChainView, Depends(get_chain_view)]


@router.get(
    "/blocks/{blockNumber}",
    operation_id="getChainBlock",
    summary="A block as the node has it now: hash, parent, time, transactions, confirmations",
)
def get_block(
    block_number: Annotated[int, Path(alias="blockNumber", ge=0, le=2**63 - 1)], view: ChainViewDep
) -> ChainBlockOut:
    """Public, as block headers are. Compare its hash with the `blockHash` of a provenance: a
    different one means the block was replaced by a reorg since it was indexed."""
    block = view.block(block_number)
    if block is None:
        raise errors.NotFoundError("no block with this number on the chain yet", block_number=block_number)
    return ChainBlockOut.model_validate(block, from_attributes=True)


@router.get(
    "/transactions/{transactionHash}",
    operation_id="getChainTransaction",
    summary="A mined transaction as the node has it: sender, status, gas and its logs decoded",
    responses=problem_responses(401, 403),
)
def get_transaction(
    transaction_hash: Annotated[Bytes32, Path(alias="transactionHash")],
    view: ChainViewDep,
    _auditor: Annotated[Principal, Depends(require(Scope.TRADES_READ))],
) -> ChainTransactionOut:
    """For tokens with `trades:read`: one transaction records up to 1000 trades of any parties,
    so a trader, who sees its own trades only, gets a 403 (its history links to the trades'
    own verification instead)."""
    transaction = view.transaction(transaction_hash)
    if transaction is None:
        raise errors.NotFoundError("no mined transaction with this hash", transaction_hash=transaction_hash)
    return ChainTransactionOut.model_validate(transaction, from_attributes=True)
