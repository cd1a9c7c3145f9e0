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


class Unauthenticated(Unauthorized):
    """No usable credential where one is needed (HTTP 401); the subclasses say why."""

    code = "token_required"


class InvalidToken(Unauthenticated):
    """A bearer token that no one issued (or a malformed one)."""

    code = "invalid_token"


class TokenExpired(Unauthenticated):
    code = "token_expired"


class TokenRevoked(Unauthenticated):
    code = "token_revoked"


class Forbidden(Unauthorized):
    """A valid credential that does not cover this request (HTTP 403)."""

    code = "forbidden"


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


class InvalidParticipantKind(ValidationError):
    code = "invalid_participant_kind"


class InvalidParticipantStatus(ConflictError):
    code = "invalid_participant_status"


class ContractReverted(LedgerError):
    """A revert whose data matches no custom error of the ABI (a bug, or an unknown contract)."""

    code = "contract_reverted"


# Metering and settlement: the commitments of `MeterData` (reading and price batches) and
# `Settlement` (runs and disputes). `ledger/chain/contract_errors.py` maps their custom errors here.


class MisalignedPeriod(ValidationError):
    code = "misaligned_period"


class EmptyPeriod(ValidationError):
    code = "empty_period"


class InvalidBatchId(ValidationError):
    code = "invalid_batch_id"


class MissingMerkleRoot(ValidationError):
    code = "missing_merkle_root"


class EmptyCommitment(ValidationError):
    """A batch without readings or prices, or a run without statement lines."""

    code = "empty_commitment"


class PriceCountMismatch(ValidationError):
    code = "price_count_mismatch"


class DuplicateBatch(ConflictError):
    code = "duplicate_batch"


class UnknownBatch(ValidationError):
    code = "unknown_batch"


class BatchAlreadySuperseded(ConflictError):
    code = "batch_already_superseded"


class UnbalancedSettlement(ValidationError):
    code = "unbalanced_settlement"


class DuplicateRun(ConflictError):
    code = "duplicate_run"


class RunVersionOutOfOrder(ConflictError):
    code = "run_version_out_of_order"


class UnknownRun(NotFoundError):
    code = "unknown_run"


class RunSuperseded(ConflictError):
    code = "run_superseded"


class DisputeWindowClosed(ConflictError):
    code = "dispute_window_closed"


class DisputeRejected(ValidationError):
    """A dispute the contract refuses as signed or proven."""

    code = "dispute_rejected"


class DisputeSignatureExpired(DisputeRejected):
    code = "dispute_signature_expired"


class InvalidDisputeSignature(DisputeRejected):
    code = "invalid_dispute_signature"


class InvalidLineProof(DisputeRejected):
    code = "invalid_line_proof"


class DisputeExists(ConflictError):
    code = "dispute_exists"


class DisputeNotOpen(ConflictError):
    code = "dispute_not_open"


class InvalidDisputeWindow(ValidationError):
    code = "invalid_dispute_window"
