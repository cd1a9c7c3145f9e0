"""The one exception tree of GridLedger.

Every error the ledger raises is a `LedgerError` with a stable, machine-readable `code` (the API
turns it into an RFC 9457 problem type) and its context as attributes. `retryable` marks errors
where trying the same thing again later may succeed (a node that is down, a nonce race).
"""

from __future__ import annotations

from typing import Any, ClassVar


class LedgerError(Exception):
    code: ClassVar[str] = "ledger_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class ConfigurationError(LedgerError):
    code = "configuration_error"


class ValidationError(LedgerError):
    """Input that can never succeed as given; `field` names what is wrong."""

    code = "validation_error"

    def __init__(self, message: str, *, field: str | None = None, **context: Any) -> None:
        super().__init__(message, field=field, **context)
        self.field = field


class NotFoundError(LedgerError):
    code = "not_found"


class ConflictError(LedgerError):
    code = "conflict"


class ChainError(LedgerError):
    """The node could not be reached or answered something unexpected."""

    code = "chain_unavailable"
    retryable = True


class CompilerError(LedgerError):
    code = "compiler_error"


class Unauthorized(LedgerError):
    """The caller lacks the role or credential the action needs."""

    code = "unauthorized"


class Paused(LedgerError):
    code = "paused"


# Trade rejections: one class per reason the contract (or the service's pre-check) refuses a
# trade. `ledger/chain/contract_errors.py` maps every Solidity custom error onto these.


class TradeRejected(ValidationError):
    code = "trade_rejected"


class SignatureExpired(TradeRejected):
    code = "signature_expired"


class SelfTrade(TradeRejected):
    code = "self_trade"


class MisalignedInterval(TradeRejected):
    code = "misaligned_interval"


class EmptyDeliveryWindow(TradeRejected):
    code = "empty_delivery_window"


class GateClosed(TradeRejected):
    code = "gate_closed"


class BeyondHorizon(TradeRejected):
    code = "beyond_horizon"


class EnergyOutOfBounds(TradeRejected):
    code = "energy_out_of_bounds"


class PriceOutOfBounds(TradeRejected):
    code = "price_out_of_bounds"


class InvalidSignature(TradeRejected):
    code = "invalid_signature"


class UnknownParticipant(TradeRejected):
    code = "unknown_participant"


class ParticipantSuspended(TradeRejected):
    code = "participant_suspended"


class TradeNotActive(TradeRejected):
    code = "trade_not_active"


class PartiesMismatch(TradeRejected):
    code = "parties_mismatch"


class DuplicateTrade(ConflictError):
    code = "duplicate_trade"


class EmptyBatch(ValidationError):
    code = "empty_batch"


class InvalidLimits(ValidationError):
    code = "invalid_limits"


class ParticipantAlreadyRegistered(ConflictError):
    code = "participant_already_registered"


class InvalidParticipantStatus(ConflictError):
    code = "invalid_participant_status"


class ContractReverted(LedgerError):
    """A revert whose data matches no custom error of the ABI (a bug, or an unknown contract)."""

    code = "contract_reverted"
