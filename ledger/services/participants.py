"""Use cases of the market operator on the participant registry."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import keccak, to_checksum_address

from ledger.chain.trade_ledger import TradeLedgerContract
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
        receipt = self._operator.register_participant(to_checksum_address(address), kind, identifier_hash(identifier))
        return OnChain(receipt.transaction_hash, receipt.block_number)

    def suspend(self, address: str) -> OnChain:
        receipt = self._operator.suspend_participant(to_checksum_address(address))
        return OnChain(receipt.transaction_hash, receipt.block_number)

    def reinstate(self, address: str) -> OnChain:
        receipt = self._operator.reinstate_participant(to_checksum_address(address))
        return OnChain(receipt.transaction_hash, receipt.block_number)
