// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IMeterData
/// @notice Commitments to batches of meter readings (by the meter oracle) and of reference prices
///         (by the market operator): one Merkle root per batch, one transaction per batch whatever
///         its size. The readings and prices themselves stay off chain; anyone holding one with its
///         proof can check it against the committed root.
/// @dev Each root is an OpenZeppelin `StandardMerkleTree` (double-hashed leaves, sorted pairs):
///      `leaf = keccak256(bytes.concat(keccak256(abi.encode(...values))))` with the encodings
///      - reading `["address", "uint64", "uint64", "uint64", "uint8"]` =
///        `[participant, intervalStart, injectedWh, withdrawnWh, quality]`, quality 0 measured,
///        1 estimated, 2 substituted;
///      - price `["uint64", "uint64"]` = `[intervalStart, priceMinorPerMWh]`.
///      Readings and prices are separate namespaces: a batch id is unique within its kind, and a
///      batch supersedes only a batch of its own kind. A batch is superseded at most once, so the
///      corrections of a batch form one chain whose last link is the current version.
///      Commit checks run in this order, and the first that fails names the reason:
///      batch id non-zero, period alignment, non-empty period, root non-zero, count non-zero,
///      (prices) one price per interval, batch id unused, superseded batch exists, superseded
///      batch not superseded already.
interface IMeterData {
    /// @notice A committed batch. `count` is the number of leaves (readings or prices);
    ///         `supersedes` the batch it corrects (zero: none); `supersededBy` the batch that
    ///         corrected it (zero: it is the current version). An unknown batch has a zero root.
    struct Batch {
        bytes32 root;
        uint64 periodStart;
        uint64 periodEnd;
        uint32 count;
        uint64 committedAt;
        bytes32 supersedes;
        bytes32 supersededBy;
    }

    /// @notice The meter oracle committed a batch of `readingCount` readings of the intervals in
    ///         `[periodStart, periodEnd)`, correcting the batch `supersedes` (zero: none).
    event ReadingBatchCommitted(
        bytes32 indexed batchId,
        uint64 periodStart,
        uint64 periodEnd,
        bytes32 root,
        uint32 readingCount,
        bytes32 supersedes,
        address indexed committer
    );

    /// @notice The operator committed the reference prices of every interval of
    ///         `[periodStart, periodEnd)`, correcting the batch `supersedes` (zero: none).
    event PriceBatchCommitted(
        bytes32 indexed batchId,
        uint64 periodStart,
        uint64 periodEnd,
        bytes32 root,
        uint32 priceCount,
        bytes32 supersedes,
        address indexed committer
    );

    /// @notice The reading batch `batchId` was corrected by the batch `supersededBy`.
    event ReadingBatchSuperseded(bytes32 indexed batchId, bytes32 indexed supersededBy);

    /// @notice The price batch `batchId` was corrected by the batch `supersededBy`.
    event PriceBatchSuperseded(bytes32 indexed batchId, bytes32 indexed supersededBy);

    /// @notice Zero is reserved for "no batch" in `supersedes`.
    error MeterDataZeroBatchId();
    /// @notice Period start and end must be multiples of 900 s.
    error MeterDataMisalignedPeriod(bytes32 batchId, uint64 periodStart, uint64 periodEnd);
    /// @notice Period end must be after period start.
    error MeterDataEmptyPeriod(bytes32 batchId, uint64 periodStart, uint64 periodEnd);
    /// @notice A batch commits a non-zero Merkle root.
    error MeterDataZeroRoot(bytes32 batchId);
    /// @notice A batch holds at least one reading or price.
    error MeterDataEmptyBatch(bytes32 batchId);
    /// @notice A price batch holds exactly one price per interval of its period.
    error MeterDataPriceCountMismatch(bytes32 batchId, uint32 priceCount, uint64 intervalCount);
    /// @notice `batchId` is committed already (in this kind of batch).
    error MeterDataDuplicateBatch(bytes32 batchId);
    /// @notice The batch `supersedes` names is not a committed batch of the same kind.
    error MeterDataUnknownSupersededBatch(bytes32 batchId, bytes32 supersedes);
    /// @notice The batch `supersedes` names was corrected already, by `supersededBy`: correct that one.
    error MeterDataBatchAlreadySuperseded(bytes32 batchId, bytes32 supersedes, bytes32 supersededBy);

    /// @notice Commits a batch of meter readings (meter oracle only).
    function commitReadingBatch(
        bytes32 batchId,
        uint64 periodStart,
        uint64 periodEnd,
        bytes32 root,
        uint32 readingCount,
        bytes32 supersedes
    ) external;

    /// @notice Commits the reference prices of a period, one per interval (operator only).
    function commitPriceBatch(
        bytes32 batchId,
        uint64 periodStart,
        uint64 periodEnd,
        bytes32 root,
        uint32 priceCount,
        bytes32 supersedes
    ) external;

    function readingBatch(bytes32 batchId) external view returns (Batch memory);

    function priceBatch(bytes32 batchId) external view returns (Batch memory);

    /// @notice Whether the reading is a leaf of the committed batch `batchId`, inside its period
    ///         and of a known quality. True for a superseded batch too: check `supersededBy`.
    function verifyReading(
        bytes32 batchId,
        address participant,
        uint64 intervalStart,
        uint64 injectedWh,
        uint64 withdrawnWh,
        uint8 quality,
        bytes32[] calldata proof
    ) external view returns (bool);

    /// @notice Whether the price is a leaf of the committed price batch `batchId`, inside its period.
    function verifyPrice(
        bytes32 batchId,
        uint64 intervalStart,
        uint64 priceMinorPerMWh,
        bytes32[] calldata proof
    ) external view returns (bool);
}
