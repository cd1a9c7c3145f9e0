// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IMeterData} from "./interfaces/IMeterData.sol";
import {Roles} from "./libraries/Roles.sol";

/// @title MeterData
/// @notice GridLedger's commitments to meter readings and reference prices: the meter oracle
///         commits reading batches, the operator commits price batches, anyone verifies a leaf.
/// @dev Reading and price batches share the checks and the storage layout; only the mapping, the
///      events and the price-count rule differ.
contract MeterData is IMeterData, AccessControl {
    uint64 private constant INTERVAL_SECONDS = 900;
    uint8 private constant MAX_QUALITY = 2;

    mapping(bytes32 batchId => Batch) private _readingBatches;
    mapping(bytes32 batchId => Batch) private _priceBatches;

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @inheritdoc IMeterData
    function commitReadingBatch(
        bytes32 batchId,
        uint64 periodStart,
        uint64 periodEnd,
        bytes32 root,
        uint32 readingCount,
        bytes32 supersedes
    ) external onlyRole(Roles.METER_ORACLE) {
        _commit(_readingBatches, batchId, periodStart, periodEnd, root, readingCount, supersedes, false);
        emit ReadingBatchCommitted(batchId, periodStart, periodEnd, root, readingCount, supersedes, msg.sender);
        if (supersedes != bytes32(0)) emit ReadingBatchSuperseded(supersedes, batchId);
    }

    /// @inheritdoc IMeterData
    function commitPriceBatch(
        bytes32 batchId,
        uint64 periodStart,
        uint64 periodEnd,
        bytes32 root,
        uint32 priceCount,
        bytes32 supersedes
    ) external onlyRole(Roles.OPERATOR) {
        _commit(_priceBatches, batchId, periodStart, periodEnd, root, priceCount, supersedes, true);
        emit PriceBatchCommitted(batchId, periodStart, periodEnd, root, priceCount, supersedes, msg.sender);
        if (supersedes != bytes32(0)) emit PriceBatchSuperseded(supersedes, batchId);
    }

    /// @inheritdoc IMeterData
    function readingBatch(bytes32 batchId) external view returns (Batch memory) {
        return _readingBatches[batchId];
    }

    /// @inheritdoc IMeterData
    function priceBatch(bytes32 batchId) external view returns (Batch memory) {
        return _priceBatches[batchId];
    }

    /// @inheritdoc IMeterData
    function verifyReading(
        bytes32 batchId,
        address participant,
        uint64 intervalStart,
        uint64 injectedWh,
        uint64 withdrawnWh,
        uint8 quality,
        bytes32[] calldata proof
    ) external view returns (bool) {
        Batch storage batch = _readingBatches[batchId];
        if (quality > MAX_QUALITY || !_inPeriod(batch, intervalStart)) return false;
        bytes32 leaf = keccak256(
            bytes.concat(keccak256(abi.encode(participant, intervalStart, injectedWh, withdrawnWh, quality)))
        );
        return MerkleProof.verifyCalldata(proof, batch.root, leaf);
    }

    /// @inheritdoc IMeterData
    function verifyPrice(
        bytes32 batchId,
        uint64 intervalStart,
        uint64 priceMinorPerMWh,
        bytes32[] calldata proof
    ) external view returns (bool) {
        Batch storage batch = _priceBatches[batchId];
        if (!_inPeriod(batch, intervalStart)) return false;
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(intervalStart, priceMinorPerMWh))));
        return MerkleProof.verifyCalldata(proof, batch.root, leaf);
    }

    /// @dev The checks, in the order documented in IMeterData, then the writes.
    function _commit(
        mapping(bytes32 batchId => Batch) storage batches,
        bytes32 batchId,
        uint64 periodStart,
        uint64 periodEnd,
        bytes32 root,
        uint32 count,
        bytes32 supersedes,
        bool onePerInterval
    ) private {
        if (batchId == bytes32(0)) revert MeterDataZeroBatchId();
        if (periodStart % INTERVAL_SECONDS != 0 || periodEnd % INTERVAL_SECONDS != 0) {
            revert MeterDataMisalignedPeriod(batchId, periodStart, periodEnd);
        }
        if (periodEnd <= periodStart) revert MeterDataEmptyPeriod(batchId, periodStart, periodEnd);
        if (root == bytes32(0)) revert MeterDataZeroRoot(batchId);
        if (count == 0) revert MeterDataEmptyBatch(batchId);
        uint64 intervalCount = (periodEnd - periodStart) / INTERVAL_SECONDS;
        if (onePerInterval && count != intervalCount) revert MeterDataPriceCountMismatch(batchId, count, intervalCount);
        if (batches[batchId].root != bytes32(0)) revert MeterDataDuplicateBatch(batchId);
        if (supersedes != bytes32(0)) {
            Batch storage previous = batches[supersedes];
            if (previous.root == bytes32(0)) revert MeterDataUnknownSupersededBatch(batchId, supersedes);
            if (previous.supersededBy != bytes32(0)) {
                revert MeterDataBatchAlreadySuperseded(batchId, supersedes, previous.supersededBy);
            }
            previous.supersededBy = batchId;
        }
        batches[batchId] = Batch(root, periodStart, periodEnd, count, uint64(block.timestamp), supersedes, 0);
    }

    /// @dev Whether `intervalStart` is an interval of the batch's period; false for an unknown batch.
    function _inPeriod(Batch storage batch, uint64 intervalStart) private view returns (bool) {
        return
            intervalStart % INTERVAL_SECONDS == 0 &&
            intervalStart >= batch.periodStart &&
            intervalStart < batch.periodEnd;
    }
}
