"""Solidity custom errors decoded into the typed exceptions of `ledger.errors`.

Every custom error in a GridLedger ABI has an entry in `ERROR_CLASSES`; a test fails when a new
error is added to a contract without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_utils import keccak, to_checksum_address

from ledger import errors

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
}

_ERROR_STRING_SELECTOR = keccak(text="Error(string)")[:4]
_PANIC_SELECTOR = keccak(text="Panic(uint256)")[:4]


@dataclass(frozen=True)
class _ErrorAbi:
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _plain(value: Any, solidity_type: str) -> Any:
    if solidity_type == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


class ErrorDecoder:
    """Turns revert data into a `LedgerError` through the ABI of the contract that reverted."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, _ErrorAbi] = {}
        for item in abi:
            if item.get("type") != "error":
                continue
            types = tuple(i["type"] for i in item["inputs"])
            self._by_selector[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = _ErrorAbi(
                item["name"], types, tuple(i["name"] for i in item["inputs"])
            )

    def error_names(self) -> set[str]:
        return {e.name for e in self._by_selector.values()}

    def decode(self, data: bytes) -> errors.LedgerError:
        selector, payload = data[:4], data[4:]
        known = self._by_selector.get(selector)
        if known is not None:
            values = decode(list(known.types), payload)
            context = {_snake(n): _plain(v, t) for n, t, v in zip(known.names, known.types, values, strict=True)}
            cls, message = ERROR_CLASSES.get(known.name, (errors.ContractReverted, known.name))
            return cls(message, solidity_error=known.name, **context)
        if selector == _ERROR_STRING_SELECTOR:
            (reason,) = decode(["string"], payload)
            return errors.ContractReverted(f"reverted: {reason}", reason=reason)
        if selector == _PANIC_SELECTOR:
            (code,) = decode(["uint256"], payload)
            return errors.ContractReverted(f"panic 0x{code:02x}", panic_code=code)
        return errors.ContractReverted("reverted without a known reason", data="0x" + data.hex())
