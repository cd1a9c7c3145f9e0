"""Solidity custom errors decoded into the typed exceptions of `ledger.errors`.

Every custom error in a GridLedger ABI has an entry in `ERROR_CLASSES`; a test fails when a new
error is added to a contract without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak

from ledger import errors
from ledger.chain.abi import abi_type, plain_value

ERROR_CLASSES: dict[str, tuple[type[errors.LedgerError], str]] = {
    "AccessControlUnauthorizedAccount": (errors.Unauthorized, "the sending account lacks the role"),
    "AccessControlBadConfirmation": (errors.Unauthorized, "an account may only renounce its own role"),
    "EnforcedPause": (errors.Paused, "trade recording is paused"),
    "ExpectedPause": (errors.ConflictError, "trade recording is not paused"),
    "InvalidShortString": (errors.ContractReverted, "invalid short string"),
    "StringTooLong": (errors.ContractReverted, "string too long"),
    "ParticipantRegistryZeroAddress": (errors.ValidationError, "the zero address cannot be a participant"),
    "ParticipantRegistryAlreadyRegistered": (
        errors.ParticipantAlreadyRegistered,
        "the account is registered already",
    ),
    "ParticipantRegistryInvalidKind": (errors.InvalidParticipantKind, "the kind is not a participant kind"),
    "ParticipantRegistryEmptyBatch": (errors.EmptyBatch, "a batch needs at least one registration"),
    "ParticipantRegistryUnknownParticipant": (errors.UnknownParticipant, "the account is not registered"),
    "ParticipantRegistryInvalidStatus": (
        errors.InvalidParticipantStatus,
        "the participant is not in the status this action needs",
    ),
    "TradeLedgerSignatureExpired": (errors.SignatureExpired, "the signatures' deadline has passed"),
    "TradeLedgerSelfTrade": (errors.SelfTrade, "seller and buyer are the same account"),
    "TradeLedgerMisalignedInterval": (
        errors.MisalignedInterval,
        "delivery start and end must be multiples of 900 s",
    ),
    "TradeLedgerEmptyDeliveryWindow": (errors.EmptyDeliveryWindow, "delivery end must be after delivery start"),
    "TradeLedgerGateClosed": (errors.GateClosed, "gate closure for this delivery start has passed"),
    "TradeLedgerBeyondHorizon": (errors.BeyondHorizon, "delivery ends beyond the trading horizon"),
    "TradeLedgerEnergyOutOfBounds": (errors.EnergyOutOfBounds, "energy per interval is zero or above the maximum"),
    "TradeLedgerPriceOutOfBounds": (errors.PriceOutOfBounds, "price is zero or above the maximum"),
    "TradeLedgerDuplicateTrade": (errors.DuplicateTrade, "this trade is recorded already"),
    "TradeLedgerInvalidSignature": (errors.InvalidSignature, "a signature does not belong to its party"),
    "TradeLedgerParticipantUnknown": (errors.UnknownParticipant, "a party is not a registered participant"),
    "TradeLedgerParticipantSuspended": (errors.ParticipantSuspended, "a party is suspended"),
    "TradeLedgerTradeNotActive": (errors.TradeNotActive, "the trade is not recorded or no longer active"),
    "TradeLedgerPartiesMismatch": (errors.PartiesMismatch, "the parties differ from the recorded trade's"),
    "TradeLedgerInvalidLimits": (errors.InvalidLimits, "trade limits must be positive"),
    "TradeLedgerEmptyBatch": (errors.EmptyBatch, "a batch needs at least one trade"),
    # MeterData: reading and price batches.
    "MeterDataZeroBatchId": (errors.InvalidBatchId, "the zero batch id is reserved"),
    "MeterDataMisalignedPeriod": (errors.MisalignedPeriod, "period start and end must be multiples of 900 s"),
    "MeterDataEmptyPeriod": (errors.EmptyPeriod, "period end must be after period start"),
    "MeterDataZeroRoot": (errors.MissingMerkleRoot, "a batch commits a non-zero Merkle root"),
    "MeterDataEmptyBatch": (errors.EmptyCommitment, "a batch holds at least one reading or price"),
    "MeterDataPriceCountMismatch": (
        errors.PriceCountMismatch,
        "a price batch holds exactly one price per interval of its period",
    ),
    "MeterDataDuplicateBatch": (errors.DuplicateBatch, "this batch id is committed already"),
    "MeterDataUnknownSupersededBatch": (errors.UnknownBatch, "the superseded batch is not committed"),
    "MeterDataBatchAlreadySuperseded": (
        errors.BatchAlreadySuperseded,
        "the superseded batch was corrected already: correct the latest version",
    ),
    # Settlement: runs and disputes.
    "SettlementMisalignedPeriod": (errors.MisalignedPeriod, "period start and end must be multiples of 900 s"),
    "SettlementEmptyPeriod": (errors.EmptyPeriod, "period end must be after period start"),
    "SettlementZeroRoot": (errors.MissingMerkleRoot, "a run commits a non-zero Merkle root"),
    "SettlementNoLines": (errors.EmptyCommitment, "a run has at least one statement line"),
    "SettlementUnbalancedTotals": (errors.UnbalancedSettlement, "total receivable must equal total payable"),
    "SettlementDuplicateRun": (errors.DuplicateRun, "this period and version is committed already"),
    "SettlementVersionOutOfOrder": (errors.RunVersionOutOfOrder, "the next version is the latest version + 1"),
    "SettlementUnknownRun": (errors.UnknownRun, "no such settlement run"),
    "SettlementRunSuperseded": (errors.RunSuperseded, "the run was superseded by a later version"),
    "SettlementDisputeWindowClosed": (errors.DisputeWindowClosed, "the run's dispute window has ended"),
    "SettlementSignatureExpired": (errors.DisputeSignatureExpired, "the dispute signature's deadline has passed"),
    "SettlementInvalidSignature": (
        errors.InvalidDisputeSignature,
        "the dispute is not signed by the line's account",
    ),
    "SettlementInvalidProof": (errors.InvalidLineProof, "the line is not in the run's Merkle tree"),
    "SettlementDisputeExists": (errors.DisputeExists, "the line is disputed already"),
    "SettlementDisputeNotOpen": (errors.DisputeNotOpen, "the dispute is not open"),
    "SettlementInvalidDisputeWindow": (errors.InvalidDisputeWindow, "the dispute window is out of bounds"),
}

# Reverts can also carry Solidity's built-in errors, which no ABI declares.
_BUILTIN_ERRORS: tuple[dict[str, Any], ...] = (
    {"type": "error", "name": "Error", "inputs": [{"name": "message", "type": "string"}]},
    {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
)


class UndecodableRevert(errors.ContractReverted):
    """Revert data that no error of the ABI (nor Solidity's built-ins) explains."""


@dataclass(frozen=True)
class _ErrorAbi:
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class ErrorDecoder:
    """Turns revert data (or a `TradeRejected` reason) into its error, through the ABI of the
    contract that produced it."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, _ErrorAbi] = {}
        for item in (*_BUILTIN_ERRORS, *abi):
            if item.get("type") != "error":
                continue
            types = tuple(abi_type(i) for i in item["inputs"])
            self._by_selector[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = _ErrorAbi(
                item["name"], types, tuple(_snake(i["name"]) for i in item["inputs"])
            )

    def error_names(self) -> set[str]:
        builtin = {e["name"] for e in _BUILTIN_ERRORS}
        return {e.name for e in self._by_selector.values()} - builtin

    def describe(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """(error name, arguments by snake_case name); UndecodableRevert when nothing fits."""
        known = self._by_selector.get(bytes(data[:4]))
        if known is None:
            raise UndecodableRevert("revert data matches no known error", data="0x" + bytes(data).hex())
        try:
            values = decode(list(known.types), bytes(data[4:]))
        except DecodingError as exc:
            raise UndecodableRevert(
                f"{known.name} arguments do not match the ABI: {exc}", data="0x" + bytes(data).hex()
            ) from exc
        return known.name, {n: plain_value(v, t) for n, t, v in zip(known.names, known.types, values, strict=True)}

    def decode(self, data: bytes) -> errors.LedgerError:
        try:
            name, args = self.describe(data)
        except UndecodableRevert as exc:
            return exc
        if name == "Error":
            return errors.ContractReverted(f"reverted: {args['message']}", reason=args["message"])
        if name == "Panic":
            return errors.ContractReverted(f"panic 0x{args['code']:02x}", panic_code=args["code"])
        cls, message = ERROR_CLASSES.get(name, (errors.ContractReverted, name))
        return cls(message, solidity_error=name, **args)
