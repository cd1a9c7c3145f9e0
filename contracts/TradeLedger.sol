// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ITradeLedger} from "./interfaces/ITradeLedger.sol";
import {ParticipantRegistry} from "./mixins/ParticipantRegistry.sol";
import {Roles} from "./libraries/Roles.sol";
import {
    CancelTrade,
    CompactSignature,
    SignedCancel,
    SignedTrade,
    Trade,
    TradeStructs
} from "./libraries/TradeStructs.sol";

/// @title TradeLedger
/// @notice GridLedger's trade ledger: the participant registry and every bilateral energy trade,
///         signed by both counterparties and recorded by the service's relayer (recorder role).
/// @dev Only the status, delivery start and a digest of the parties are stored per trade (one
///      storage slot); the terms live in the `TradeRecorded` event.
contract TradeLedger is ITradeLedger, ParticipantRegistry, Pausable, EIP712 {
    /// @dev One slot: 8 + 64 + 184 bits.
    struct TradeRecord {
        TradeStatus status;
        uint64 deliveryStart;
        bytes23 partiesDigest;
    }

    uint64 private constant INTERVAL_SECONDS = 900;

    TradeLimits private _limits;
    mapping(bytes32 tradeId => TradeRecord) private _trades;

    constructor(address admin, TradeLimits memory limits) EIP712("GridLedger", "1") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setTradeLimits(limits);
    }

    /// @inheritdoc ITradeLedger
    function recordTrade(
        SignedTrade calldata signedTrade
    ) external onlyRole(Roles.RECORDER) whenNotPaused returns (bytes32 tradeId) {
        bytes memory failure;
        (tradeId, failure) = _tryRecord(signedTrade, _limits);
        if (failure.length != 0) _revertWith(failure);
    }

    /// @inheritdoc ITradeLedger
    function recordTrades(
        SignedTrade[] calldata signedTrades
    ) external onlyRole(Roles.RECORDER) whenNotPaused returns (uint256 recorded) {
        if (signedTrades.length == 0) revert TradeLedgerEmptyBatch();
        TradeLimits memory limits = _limits;
        for (uint256 i = 0; i < signedTrades.length; ++i) {
            (bytes32 tradeId, bytes memory failure) = _tryRecord(signedTrades[i], limits);
            if (failure.length == 0) {
                ++recorded;
            } else {
                emit TradeRejected(tradeId, failure);
            }
        }
    }

    /// @inheritdoc ITradeLedger
    function cancelTrade(SignedCancel calldata cancel) external onlyRole(Roles.RECORDER) whenNotPaused {
        bytes memory failure = _tryCancel(cancel, _limits.gateClosureSeconds);
        if (failure.length != 0) _revertWith(failure);
    }

    /// @inheritdoc ITradeLedger
    function cancelTrades(
        SignedCancel[] calldata cancels
    ) external onlyRole(Roles.RECORDER) whenNotPaused returns (uint256 cancelled) {
        if (cancels.length == 0) revert TradeLedgerEmptyBatch();
        uint64 gateClosureSeconds = _limits.gateClosureSeconds;
        for (uint256 i = 0; i < cancels.length; ++i) {
            bytes memory failure = _tryCancel(cancels[i], gateClosureSeconds);
            if (failure.length == 0) {
                ++cancelled;
            } else {
                emit TradeCancelRejected(cancels[i].tradeId, failure);
            }
        }
    }

    /// @inheritdoc ITradeLedger
    function setTradeLimits(TradeLimits calldata limits) external onlyRole(Roles.OPERATOR) {
        _setTradeLimits(limits);
    }

    function pause() external onlyRole(Roles.PAUSER) {
        _pause();
    }

    function unpause() external onlyRole(Roles.PAUSER) {
        _unpause();
    }

    /// @inheritdoc ITradeLedger
    function tradeLimits() external view returns (TradeLimits memory) {
        return _limits;
    }

    /// @inheritdoc ITradeLedger
    function tradeStatus(bytes32 tradeId) external view returns (TradeStatus) {
        return _trades[tradeId].status;
    }

    /// @inheritdoc ITradeLedger
    function hashTrade(Trade calldata trade) external view returns (bytes32) {
        return _hashTypedDataV4(TradeStructs.hash(trade));
    }

    /// @inheritdoc ITradeLedger
    function hashCancelTrade(bytes32 tradeId, uint64 deadline) external view returns (bytes32) {
        return _hashTypedDataV4(TradeStructs.hash(CancelTrade(tradeId, deadline)));
    }

    /// @dev Records the trade if it passes every check; otherwise returns the encoded custom
    ///      error and changes nothing. Shared by the single and the batch entry point so both
    ///      apply the same checks in the same order.
    function _tryRecord(
        SignedTrade calldata signedTrade,
        TradeLimits memory limits
    ) private returns (bytes32 tradeId, bytes memory failure) {
        tradeId = _hashTypedDataV4(TradeStructs.hash(signedTrade.trade));
        // One validated copy: every later read is a plain MLOAD instead of a checked calldata load.
        Trade memory trade = signedTrade.trade;
        TradeRecord storage record = _trades[tradeId];
        failure = _check(tradeId, record, trade, signedTrade, limits);
        if (failure.length != 0) return (tradeId, failure);

        _storeRecorded(record, trade.deliveryStart, _partiesDigest(trade.seller, trade.buyer));
        emit TradeRecorded(
            tradeId,
            trade.seller,
            trade.buyer,
            trade.deliveryStart,
            trade.deliveryEnd,
            trade.energyPerIntervalWh,
            trade.priceMinorPerMWh,
            trade.nonce,
            trade.deadline,
            trade.replaces
        );
        if (trade.replaces != bytes32(0)) {
            _trades[trade.replaces].status = TradeStatus.Amended;
            emit TradeCancelled(trade.replaces, tradeId);
        }
    }

    /// @dev Cancels the trade if the cancellation passes every check, in the order documented in
    ///      ITradeLedger; otherwise returns the encoded custom error and changes nothing.
    function _tryCancel(SignedCancel calldata c, uint64 gateClosureSeconds) private returns (bytes memory failure) {
        bytes32 tradeId = c.tradeId;
        if (c.deadline < block.timestamp) {
            return abi.encodeWithSelector(TradeLedgerSignatureExpired.selector, tradeId, c.deadline);
        }
        failure = _checkReplaceable(tradeId, c.seller, c.buyer, gateClosureSeconds);
        if (failure.length != 0) return failure;
        bytes32 digest = _hashTypedDataV4(TradeStructs.hash(CancelTrade(tradeId, c.deadline)));
        if (!_signedBy(digest, c.sellerSignature, c.seller)) {
            return abi.encodeWithSelector(TradeLedgerInvalidSignature.selector, tradeId, c.seller);
        }
        if (!_signedBy(digest, c.buyerSignature, c.buyer)) {
            return abi.encodeWithSelector(TradeLedgerInvalidSignature.selector, tradeId, c.buyer);
        }
        failure = _checkActive(tradeId, c.seller);
        if (failure.length == 0) failure = _checkActive(tradeId, c.buyer);
        if (failure.length != 0) return failure;
        _trades[tradeId].status = TradeStatus.Cancelled;
        emit TradeCancelled(tradeId, bytes32(0));
    }

    /// @dev The checks, in the order documented in ITradeLedger. Returns the first failure.
    function _check(
        bytes32 tradeId,
        TradeRecord storage record,
        Trade memory t,
        SignedTrade calldata signedTrade,
        TradeLimits memory limits
    ) private view returns (bytes memory failure) {
        if (t.deadline < block.timestamp) {
            return abi.encodeWithSelector(TradeLedgerSignatureExpired.selector, tradeId, t.deadline);
        }
        if (t.seller == t.buyer) return abi.encodeWithSelector(TradeLedgerSelfTrade.selector, tradeId, t.seller);
        if (t.deliveryStart % INTERVAL_SECONDS != 0 || t.deliveryEnd % INTERVAL_SECONDS != 0) {
            return
                abi.encodeWithSelector(TradeLedgerMisalignedInterval.selector, tradeId, t.deliveryStart, t.deliveryEnd);
        }
        if (t.deliveryEnd <= t.deliveryStart) {
            return
                abi.encodeWithSelector(
                    TradeLedgerEmptyDeliveryWindow.selector,
                    tradeId,
                    t.deliveryStart,
                    t.deliveryEnd
                );
        }
        if (_gateClosed(t.deliveryStart, limits.gateClosureSeconds)) {
            return
                abi.encodeWithSelector(
                    TradeLedgerGateClosed.selector,
                    tradeId,
                    t.deliveryStart,
                    _gateClosedAt(t.deliveryStart, limits.gateClosureSeconds)
                );
        }
        if (t.deliveryEnd > block.timestamp + limits.horizonSeconds) {
            return
                abi.encodeWithSelector(
                    TradeLedgerBeyondHorizon.selector,
                    tradeId,
                    t.deliveryEnd,
                    uint64(block.timestamp + limits.horizonSeconds)
                );
        }
        if (t.energyPerIntervalWh == 0 || t.energyPerIntervalWh > limits.maxEnergyPerIntervalWh) {
            return
                abi.encodeWithSelector(
                    TradeLedgerEnergyOutOfBounds.selector,
                    tradeId,
                    t.energyPerIntervalWh,
                    limits.maxEnergyPerIntervalWh
                );
        }
        if (t.priceMinorPerMWh == 0 || t.priceMinorPerMWh > limits.maxPriceMinorPerMWh) {
            return
                abi.encodeWithSelector(
                    TradeLedgerPriceOutOfBounds.selector,
                    tradeId,
                    t.priceMinorPerMWh,
                    limits.maxPriceMinorPerMWh
                );
        }
        if (record.status != TradeStatus.None)
            return abi.encodeWithSelector(TradeLedgerDuplicateTrade.selector, tradeId);
        if (!_signedBy(tradeId, signedTrade.seller, t.seller)) {
            return abi.encodeWithSelector(TradeLedgerInvalidSignature.selector, tradeId, t.seller);
        }
        if (!_signedBy(tradeId, signedTrade.buyer, t.buyer)) {
            return abi.encodeWithSelector(TradeLedgerInvalidSignature.selector, tradeId, t.buyer);
        }
        failure = _checkActive(tradeId, t.seller);
        if (failure.length != 0) return failure;
        failure = _checkActive(tradeId, t.buyer);
        if (failure.length != 0 || t.replaces == bytes32(0)) return failure;
        return _checkReplaceable(t.replaces, t.seller, t.buyer, limits.gateClosureSeconds);
    }

    /// @dev Returns an empty `failure` (the zero slot, no allocation) when the check passes.
    function _checkActive(bytes32 tradeId, address account) private view returns (bytes memory failure) {
        ParticipantStatus status = _participantStatus(account);
        if (status == ParticipantStatus.Active) return failure;
        if (status == ParticipantStatus.None)
            return abi.encodeWithSelector(TradeLedgerParticipantUnknown.selector, tradeId, account);
        return abi.encodeWithSelector(TradeLedgerParticipantSuspended.selector, tradeId, account);
    }

    /// @dev A recorded trade may be cancelled or amended by the same two parties until its gate closes.
    function _checkReplaceable(
        bytes32 tradeId,
        address seller,
        address buyer,
        uint64 gateClosureSeconds
    ) private view returns (bytes memory failure) {
        TradeRecord storage record = _trades[tradeId];
        if (record.status != TradeStatus.Recorded) {
            return abi.encodeWithSelector(TradeLedgerTradeNotActive.selector, tradeId, record.status);
        }
        if (record.partiesDigest != _partiesDigest(seller, buyer)) {
            return abi.encodeWithSelector(TradeLedgerPartiesMismatch.selector, tradeId, seller, buyer);
        }
        uint64 deliveryStart = record.deliveryStart;
        if (_gateClosed(deliveryStart, gateClosureSeconds)) {
            return
                abi.encodeWithSelector(
                    TradeLedgerGateClosed.selector,
                    tradeId,
                    deliveryStart,
                    _gateClosedAt(deliveryStart, gateClosureSeconds)
                );
        }
    }

    function _setTradeLimits(TradeLimits memory limits) private {
        if (limits.horizonSeconds == 0 || limits.maxEnergyPerIntervalWh == 0 || limits.maxPriceMinorPerMWh == 0) {
            revert TradeLedgerInvalidLimits();
        }
        _limits = limits;
        emit TradeLimitsUpdated(limits);
    }

    function _gateClosed(uint64 deliveryStart, uint64 gateClosureSeconds) private view returns (bool) {
        return block.timestamp + gateClosureSeconds > deliveryStart;
    }

    function _gateClosedAt(uint64 deliveryStart, uint64 gateClosureSeconds) private pure returns (uint64) {
        return deliveryStart > gateClosureSeconds ? deliveryStart - gateClosureSeconds : 0;
    }

    /// @dev OpenZeppelin ECDSA: rejects malleable (high-s) signatures and the zero-address recovery.
    function _signedBy(
        bytes32 digest,
        CompactSignature calldata signature,
        address signer
    ) private pure returns (bool) {
        (address recovered, ECDSA.RecoverError err, ) = ECDSA.tryRecover(digest, signature.r, signature.vs);
        return err == ECDSA.RecoverError.NoError && recovered == signer;
    }

    /// @dev Writes a new TradeRecord in one SSTORE; the struct assignment would read the slot
    ///      and write it once per member. Layout (low to high bits): status 8, deliveryStart 64,
    ///      partiesDigest 184; the digest's low 72 bits are zero, so it is or-ed in as it is.
    function _storeRecorded(TradeRecord storage record, uint64 deliveryStart, bytes23 partiesDigest) private {
        uint256 packed =
            uint256(bytes32(partiesDigest)) | (uint256(deliveryStart) << 8) | uint256(TradeStatus.Recorded);
        assembly ("memory-safe") {
            sstore(record.slot, packed)
        }
    }

    /// @dev `bytes23(keccak256(abi.encode(seller, buyer)))`, hashed in scratch space.
    function _partiesDigest(address seller, address buyer) private pure returns (bytes23 digest) {
        assembly ("memory-safe") {
            mstore(0x00, seller)
            mstore(0x20, buyer)
            // Keep the top 23 bytes only: a bytesN value must be clean below its width.
            digest := and(keccak256(0x00, 0x40), shl(72, not(0)))
        }
    }

    function _revertWith(bytes memory failure) private pure {
        assembly ("memory-safe") {
            revert(add(failure, 0x20), mload(failure))
        }
    }
}
