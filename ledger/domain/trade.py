"""The trade as both counterparties sign it, and the checks that need no chain state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ledger import errors
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID, is_interval_aligned


class ParticipantKind(StrEnum):
    """Order matches `IParticipantRegistry.ParticipantKind`."""

    GENERATOR = "generator"
    RETAILER = "retailer"
    CONSUMER = "consumer"
    PROSUMER = "prosumer"

    @property
    def ordinal(self) -> int:
        """The Solidity enum value."""
        return list(ParticipantKind).index(self)

    @classmethod
    def from_index(cls, index: int) -> ParticipantKind:
        return list(cls)[index]


class ParticipantStatus(StrEnum):
    """Order matches `IParticipantRegistry.ParticipantStatus`."""

    NONE = "none"
    ACTIVE = "active"
    SUSPENDED = "suspended"

    @classmethod
    def from_index(cls, index: int) -> ParticipantStatus:
        return list(cls)[index]


class TradeStatus(StrEnum):
    """Order matches `ITradeLedger.TradeStatus`."""

    NONE = "none"
    RECORDED = "recorded"
    CANCELLED = "cancelled"
    AMENDED = "amended"

    @classmethod
    def from_index(cls, index: int) -> TradeStatus:
        return list(cls)[index]


@dataclass(frozen=True)
class TradeLimits:
    """Mirrors `ITradeLedger.TradeLimits`; the contract holds the authoritative values."""

    gate_closure_seconds: int
    horizon_seconds: int
    max_energy_per_interval_wh: int
    max_price_minor_per_mwh: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (
            self.gate_closure_seconds,
            self.horizon_seconds,
            self.max_energy_per_interval_wh,
            self.max_price_minor_per_mwh,
        )


DEFAULT_TRADE_LIMITS = TradeLimits(
    gate_closure_seconds=3600,
    horizon_seconds=400 * 86400,
    # 10 GWh in 15 minutes is a 40 GW flow: beyond any single bilateral trade, yet far from uint64.
    max_energy_per_interval_wh=10_000_000_000,
    # 10,000,000 minor units per MWh (100,000 CNY/MWh) bounds fat-finger prices.
    max_price_minor_per_mwh=10_000_000,
)


@dataclass(frozen=True)
class Trade:
    """Field for field the EIP-712 `Trade` struct (names in snake_case; addresses checksummed)."""

    seller: str
    buyer: str
    delivery_start: int
    delivery_end: int
    energy_per_interval_wh: int
    price_minor_per_mwh: int
    nonce: int
    deadline: int
    replaces: str = ZERO_ID

    @property
    def intervals(self) -> int:
        return (self.delivery_end - self.delivery_start) // INTERVAL_SECONDS

    @property
    def is_amendment(self) -> bool:
        return self.replaces != ZERO_ID

    def as_message(self) -> dict[str, object]:
        """The EIP-712 message, as wallets (ethers.js, MetaMask) take it."""
        return {
            "seller": self.seller,
            "buyer": self.buyer,
            "deliveryStart": self.delivery_start,
            "deliveryEnd": self.delivery_end,
            "energyPerIntervalWh": self.energy_per_interval_wh,
            "priceMinorPerMWh": self.price_minor_per_mwh,
            "nonce": self.nonce,
            "deadline": self.deadline,
            "replaces": self.replaces,
        }

    def as_tuple(self) -> tuple[object, ...]:
        """The ABI tuple of the Solidity struct."""
        return (
            self.seller,
            self.buyer,
            self.delivery_start,
            self.delivery_end,
            self.energy_per_interval_wh,
            self.price_minor_per_mwh,
            self.nonce,
            self.deadline,
            bytes.fromhex(self.replaces[2:]),
        )


@dataclass(frozen=True)
class SignedTrade:
    trade: Trade
    seller_signature: bytes = field(repr=False)
    buyer_signature: bytes = field(repr=False)

    def to_json(self) -> dict[str, object]:
        """The outbox's stored form; the nonce is a decimal string because JSON numbers lose
        precision beyond 2**53 in most readers."""
        message = self.trade.as_message()
        return {
            "trade": message | {"nonce": str(self.trade.nonce)},
            "sellerSignature": "0x" + self.seller_signature.hex(),
            "buyerSignature": "0x" + self.buyer_signature.hex(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SignedTrade:
        t = raw["trade"]
        trade = Trade(
            seller=t["seller"],
            buyer=t["buyer"],
            delivery_start=int(t["deliveryStart"]),
            delivery_end=int(t["deliveryEnd"]),
            energy_per_interval_wh=int(t["energyPerIntervalWh"]),
            price_minor_per_mwh=int(t["priceMinorPerMWh"]),
            nonce=int(t["nonce"]),
            deadline=int(t["deadline"]),
            replaces=t["replaces"],
        )
        return cls(trade, bytes.fromhex(raw["sellerSignature"][2:]), bytes.fromhex(raw["buyerSignature"][2:]))

    def as_tuple(self) -> tuple[object, ...]:
        return (self.trade.as_tuple(), compact(self.seller_signature), compact(self.buyer_signature))


@dataclass(frozen=True)
class SignedCancellation:
    """Both parties' consent to cancel a recorded trade: their signatures over the EIP-712
    `CancelTrade(tradeId, deadline)`, with the parties the trade names (the contract checks them
    against the trade it holds)."""

    trade_id: str
    seller: str
    buyer: str
    deadline: int
    seller_signature: bytes = field(repr=False)
    buyer_signature: bytes = field(repr=False)

    def to_json(self) -> dict[str, object]:
        """The outbox's stored form."""
        return {
            "tradeId": self.trade_id,
            "seller": self.seller,
            "buyer": self.buyer,
            "deadline": self.deadline,
            "sellerSignature": "0x" + self.seller_signature.hex(),
            "buyerSignature": "0x" + self.buyer_signature.hex(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SignedCancellation:
        return cls(
            raw["tradeId"],
            raw["seller"],
            raw["buyer"],
            int(raw["deadline"]),
            bytes.fromhex(raw["sellerSignature"][2:]),
            bytes.fromhex(raw["buyerSignature"][2:]),
        )

    def as_tuple(self) -> tuple[object, ...]:
        """The contract's `SignedCancel`."""
        return (
            bytes.fromhex(self.trade_id[2:]),
            self.seller,
            self.buyer,
            self.deadline,
            compact(self.seller_signature),
            compact(self.buyer_signature),
        )


def compact(signature: bytes) -> tuple[bytes, bytes]:
    """The EIP-2098 form `(r, vs)` of a 65-byte `(r, s, v)` signature, as the contract takes it.

    The parity bit goes into the top bit of `s`; a high-s signature cannot be expressed and so
    recovers to some other address, which the contract refuses like any wrong signature."""
    if len(signature) != 65:
        raise ValueError("a signature is 65 bytes (r, s, v)")
    v = signature[64]
    if v not in (0, 1, 27, 28):
        raise ValueError(f"a signature's v is 27 or 28 (or 0 or 1), not {v}")
    y_parity = v - 27 if v >= 27 else v
    vs = int.from_bytes(signature[32:64], "big") | (y_parity << 255)
    return signature[:32], vs.to_bytes(32, "big")


def check_terms(trade: Trade, limits: TradeLimits, now: int) -> None:
    """The contract's stateless checks, in the contract's order, so that the service can refuse
    a trade at once instead of after a block. The contract stays the authority."""

    if trade.deadline < now:
        raise errors.SignatureExpired("the signatures' deadline has passed", deadline=trade.deadline)
    if trade.seller.lower() == trade.buyer.lower():
        raise errors.SelfTrade("seller and buyer are the same account", account=trade.seller)
    if not (is_interval_aligned(trade.delivery_start) and is_interval_aligned(trade.delivery_end)):
        raise errors.MisalignedInterval(
            f"delivery start and end must be multiples of {INTERVAL_SECONDS} s",
            delivery_start=trade.delivery_start,
            delivery_end=trade.delivery_end,
        )
    if trade.delivery_end <= trade.delivery_start:
        raise errors.EmptyDeliveryWindow(
            "delivery end must be after delivery start",
            delivery_start=trade.delivery_start,
            delivery_end=trade.delivery_end,
        )
    gate_closed_at = trade.delivery_start - limits.gate_closure_seconds
    if now > gate_closed_at:
        raise errors.GateClosed(
            "gate closure for this delivery start has passed",
            delivery_start=trade.delivery_start,
            gate_closed_at=max(gate_closed_at, 0),
        )
    if trade.delivery_end > now + limits.horizon_seconds:
        raise errors.BeyondHorizon(
            "delivery ends beyond the trading horizon",
            delivery_end=trade.delivery_end,
            horizon_end=now + limits.horizon_seconds,
        )
    if not 0 < trade.energy_per_interval_wh <= limits.max_energy_per_interval_wh:
        raise errors.EnergyOutOfBounds(
            f"energy per interval must be between 1 and {limits.max_energy_per_interval_wh} Wh",
            energy_per_interval_wh=trade.energy_per_interval_wh,
            max_energy_per_interval_wh=limits.max_energy_per_interval_wh,
        )
    if not 0 < trade.price_minor_per_mwh <= limits.max_price_minor_per_mwh:
        raise errors.PriceOutOfBounds(
            f"price must be between 1 and {limits.max_price_minor_per_mwh} minor units per MWh",
            price_minor_per_mwh=trade.price_minor_per_mwh,
            max_price_minor_per_mwh=limits.max_price_minor_per_mwh,
        )
