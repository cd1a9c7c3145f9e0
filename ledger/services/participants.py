"""Use cases of the market operator on the participant registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eth_utils import keccak, to_checksum_address

from ledger import errors
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import Receipt
from ledger.domain.trade import ParticipantKind


@dataclass(frozen=True)
class OnChain:
    """Where an operator action landed."""

    transaction_hash: str
    block_number: int


def identifier_hash(identifier: str) -> bytes:
    """What the chain keeps of a licence or market identifier: its keccak-256, never the text."""
    return keccak(text=identifier.strip())


class ParticipantService:
    def __init__(self, operator: TradeLedgerContract) -> None:
        self._operator = operator

    def register(self, address: str, kind: ParticipantKind, identifier: str) -> OnChain:
        if not identifier.strip():
            raise errors.ValidationError("the identifier must not be blank", field="identifier")
        receipt = self._operator.register_participant(to_checksum_address(address), kind, identifier_hash(identifier))
        return OnChain(receipt.transaction_hash, receipt.block_number)

    def suspend(self, address: str) -> OnChain:
        account = to_checksum_address(address)
        return _on_chain(account, lambda: self._operator.suspend_participant(account))

    def reinstate(self, address: str) -> OnChain:
        account = to_checksum_address(address)
        return _on_chain(account, lambda: self._operator.reinstate_participant(account))


def _on_chain(account: str, send: Callable[[], Receipt]) -> OnChain:
    """Sends an action on a registered participant; an unregistered one is NotFoundError here
    (for a trade, an unknown party is a reason to refuse the trade, hence UnknownParticipant)."""
    try:
        receipt = send()
    except errors.UnknownParticipant as exc:
        raise errors.NotFoundError("no such participant is registered", address=account) from exc
    return OnChain(receipt.transaction_hash, receipt.block_number)
