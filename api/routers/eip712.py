"""EIP-712: the domain and types to sign in, and ready-to-sign documents for wallets."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ServiceDep
from api.problems import problem_responses
from api.schemas import CancelTypedDataIn, Eip712Out, TradeTerms, TypedDataOut
from ledger.signing.eip712 import TYPES

router = APIRouter(prefix="/eip712", tags=["eip712"], responses=problem_responses(503))


@router.get("", operation_id="getEip712", summary="The EIP-712 domain and types of GridLedger")
def get_eip712(service: ServiceDep) -> Eip712Out:
    return Eip712Out.model_validate(
        {
            "domain": service.trading.domain.as_dict(),
            "types": {name: [{"name": f, "type": t} for f, t in fields] for name, fields in TYPES.items()},
            "primaryTypes": [name for name in TYPES if name != "EIP712Domain"],
        }
    )


@router.post(
    "/trade",
    operation_id="buildTradeTypedData",
    summary="The typed-data document of a trade, to sign",
    responses=problem_responses(422),
)
def build_trade_typed_data(terms: TradeTerms, service: ServiceDep) -> TypedDataOut:
    """Takes the terms as POST /trades does (ISO times) and answers the `eth_signTypedData_v4`
    document: times as Unix seconds, the nonce as a decimal string, and the trade's id."""
    trade = terms.to_domain()
    return TypedDataOut.model_validate(
        {"typed_data": service.trading.trade_typed_data(trade), "trade_id": service.trading.trade_id(trade)}
    )


@router.post(
    "/cancel",
    operation_id="buildCancelTypedData",
    summary="The typed-data document of a cancellation",
    responses=problem_responses(422),
)
def build_cancel_typed_data(body: CancelTypedDataIn, service: ServiceDep) -> TypedDataOut:
    return TypedDataOut.model_validate(
        {"typed_data": service.trading.cancel_typed_data(body.trade_id, body.deadline), "trade_id": body.trade_id}
    )
