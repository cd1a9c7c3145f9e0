// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SignedCancel, SignedTrade, Trade} from "../libraries/TradeStructs.sol";

/// @title ITradeLedger
/// @notice Records energy trades signed by both counterparties, and their cancellation or amendment.
/// @dev A trade's id is its EIP-712 digest, so it is bound to this chain and this contract.
///      Checks run in this order, and the first that fails names the reason:
///      deadline, seller != buyer, interval alignment, non-empty window, gate closure, horizon,
///      energy bounds, price bounds, not yet recorded, seller signature, buyer signature,
///      seller active, buyer active, and for an amendment the replaced trade's checks.
interface ITradeLedger {
    enum TradeStatus {
        None,
        Recorded,
        Cancelled,
        Amended
    }

    /// @notice The market limits every new trade is checked against.
    /// @param gateClosureSeconds how long before delivery start trading, cancelling and amending stop
    /// @param horizonSeconds how far ahead of now delivery may end
    struct TradeLimits {
        uint64 gateClosureSeconds;
        uint64 horizonSeconds;
        uint64 maxEnergyPerIntervalWh;
        uint64 maxPriceMinorPerMWh;
    }

    /// @notice A trade was recorded; the event carries every signed term, so the log alone is a
    ///         complete audit trail (the signatures are in the transaction's input).
    event TradeRecorded(
        bytes32 indexed tradeId,
        address indexed seller,
        address indexed buyer,
        uint64 deliveryStart,
        uint64 deliveryEnd,
        uint64 energyPerIntervalWh,
        uint64 priceMinorPerMWh,
        uint256 nonce,
        uint64 deadline,
        bytes32 replaces
    );

    /// @notice A trade in a batch failed its checks and was not recorded. `reason` is the
    ///         ABI-encoded custom error that `recordTrade` would have reverted with.
    event TradeRejected(bytes32 indexed tradeId, bytes reason);

    /// @notice A cancellation in a batch failed its checks and changed nothing. `reason` is the
    ///         ABI-encoded custom error that `cancelTrade` would have reverted with.
    event TradeCancelRejected(bytes32 indexed tradeId, bytes reason);

    /// @notice A recorded trade was cancelled by both parties (`replacedBy` zero), or amended by
    ///         the trade `replacedBy`.
    event TradeCancelled(bytes32 indexed tradeId, bytes32 indexed replacedBy);

    event TradeLimitsUpdated(TradeLimits limits);

    error TradeLedgerSignatureExpired(bytes32 tradeId, uint64 deadline);
    error TradeLedgerSelfTrade(bytes32 tradeId, address account);
    error TradeLedgerMisalignedInterval(bytes32 tradeId, uint64 deliveryStart, uint64 deliveryEnd);
    error TradeLedgerEmptyDeliveryWindow(bytes32 tradeId, uint64 deliveryStart, uint64 deliveryEnd);
    error TradeLedgerGateClosed(bytes32 tradeId, uint64 deliveryStart, uint64 gateClosedAt);
    error TradeLedgerBeyondHorizon(bytes32 tradeId, uint64 deliveryEnd, uint64 horizonEnd);
    error TradeLedgerEnergyOutOfBounds(bytes32 tradeId, uint64 energyPerIntervalWh, uint64 maxEnergyPerIntervalWh);
    error TradeLedgerPriceOutOfBounds(bytes32 tradeId, uint64 priceMinorPerMWh, uint64 maxPriceMinorPerMWh);
    error TradeLedgerDuplicateTrade(bytes32 tradeId);
    error TradeLedgerInvalidSignature(bytes32 tradeId, address expectedSigner);
    error TradeLedgerParticipantUnknown(bytes32 tradeId, address account);
    error TradeLedgerParticipantSuspended(bytes32 tradeId, address account);
    error TradeLedgerTradeNotActive(bytes32 tradeId, TradeStatus status);
    error TradeLedgerPartiesMismatch(bytes32 tradeId, address seller, address buyer);
    error TradeLedgerInvalidLimits();
    error TradeLedgerEmptyBatch();

    /// @notice Records one trade, or reverts with the reason it fails.
    function recordTrade(SignedTrade calldata signedTrade) external returns (bytes32 tradeId);

    /// @notice Records every trade of `signedTrades` that passes its checks; each one that fails
    ///         is reported by a `TradeRejected` event and skipped, so one bad trade does not hold
    ///         back the others.
    function recordTrades(SignedTrade[] calldata signedTrades) external returns (uint256 recorded);

    /// @notice Cancels a recorded trade that both parties signed a `CancelTrade` for, before gate closure.
    /// @dev Checks in order: deadline, the trade is recorded and active, same parties, gate closure,
    ///      seller signature, buyer signature, seller active, buyer active (a suspended participant
    ///      cannot cancel).
    function cancelTrade(SignedCancel calldata cancel) external;

    /// @notice Cancels every trade of `cancels` whose cancellation passes the checks of
    ///         `cancelTrade`; each one that fails is reported by a `TradeCancelRejected` event and
    ///         skipped, so one bad cancellation does not hold back the others.
    function cancelTrades(SignedCancel[] calldata cancels) external returns (uint256 cancelled);

    function setTradeLimits(TradeLimits calldata limits) external;

    function tradeLimits() external view returns (TradeLimits memory);

    function tradeStatus(bytes32 tradeId) external view returns (TradeStatus);

    /// @notice The id of a trade: its EIP-712 digest, which both counterparties sign.
    function hashTrade(Trade calldata trade) external view returns (bytes32);

    /// @notice The EIP-712 digest of a `CancelTrade`, which both counterparties sign.
    function hashCancelTrade(bytes32 tradeId, uint64 deadline) external view returns (bytes32);
}
