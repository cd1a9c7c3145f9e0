// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Dispute, DisputeLine} from "../libraries/SettlementStructs.sol";

/// @title ISettlement
/// @notice Settlement runs (one Merkle root of statement lines per period and version), their
///         supersession by later versions, and disputes of single lines by their accounts.
/// @dev `runId = keccak256(abi.encode(uint64 periodStart, uint64 periodEnd, uint32 version))`;
///      versions of a period are 1, 2, 3, ... and each supersedes the one before. Periods are
///      identified by their exact bounds: the service keeps periods from overlapping.
///      `commitRun` checks, in order: period alignment, non-empty period, root non-zero, line
///      count non-zero, balanced totals, run not committed yet, version = latest + 1.
///      `openDispute` checks, in order: the run exists, it is not superseded, its dispute window
///      is open, the signature's deadline, the signer is the line's account, the proof against
///      the run's root, no dispute of that line yet.
///      Finality: a run is Final once its window has passed with no dispute open and none
///      accepted. An accepted dispute means the operator owes a corrected version: the run stays
///      Open until that version supersedes it.
interface ISettlement {
    enum RunStatus {
        Unknown,
        Open,
        Final,
        Superseded
    }

    enum DisputeStatus {
        None,
        Open,
        Accepted,
        Rejected
    }

    /// @notice A committed run. `disputeWindowEnds`: disputes are accepted while
    ///         `block.timestamp < disputeWindowEnds`. `supersededBy`: the next version's run id, or
    ///         zero. An unknown run has a zero root.
    struct Run {
        bytes32 root;
        bytes32 inputsHash;
        uint64 periodStart;
        uint64 periodEnd;
        uint32 version;
        uint32 lineCount;
        uint64 disputeWindowEnds;
        bytes32 supersededBy;
        uint32 openDisputes;
        uint32 acceptedDisputes;
    }

    struct DisputeRecord {
        bytes32 runId;
        DisputeStatus status;
    }

    /// @notice A settlement run was committed. `inputsHash` commits to the trades, reading batch
    ///         roots, price batch root and parameters it used; the totals are the sums of the
    ///         positive and of the negative total-line amounts (as a magnitude), always equal.
    event RunCommitted(
        bytes32 indexed runId,
        uint64 periodStart,
        uint64 periodEnd,
        uint32 version,
        bytes32 root,
        bytes32 inputsHash,
        uint32 lineCount,
        uint256 totalReceivableMinor,
        uint256 totalPayableMinor,
        uint64 disputeWindowEnds
    );

    /// @notice The run `runId` was replaced by its next version `supersededBy`.
    event RunSuperseded(bytes32 indexed runId, bytes32 indexed supersededBy);

    /// @notice Runs committed from now on may be disputed for `disputeWindowSeconds`.
    event DisputeWindowUpdated(uint64 disputeWindowSeconds);

    /// @notice `account` disputed its line `leafHash` of run `runId`; `reasonHash` is the hash of
    ///         its reasons.
    event DisputeOpened(
        bytes32 indexed disputeId,
        bytes32 indexed runId,
        address indexed account,
        bytes32 leafHash,
        bytes32 reasonHash
    );

    /// @notice The operator accepted (a corrected version follows) or rejected a dispute.
    event DisputeResolved(bytes32 indexed disputeId, bool accepted, bytes32 resolutionHash);

    /// @notice Period start and end must be multiples of 900 s.
    error SettlementMisalignedPeriod(bytes32 runId, uint64 periodStart, uint64 periodEnd);
    /// @notice Period end must be after period start.
    error SettlementEmptyPeriod(bytes32 runId, uint64 periodStart, uint64 periodEnd);
    /// @notice A run commits a non-zero Merkle root.
    error SettlementZeroRoot(bytes32 runId);
    /// @notice A run has at least one statement line.
    error SettlementNoLines(bytes32 runId);
    /// @notice The statement amounts of a run sum to zero: receivable equals payable.
    error SettlementUnbalancedTotals(bytes32 runId, uint256 totalReceivableMinor, uint256 totalPayableMinor);
    /// @notice This period and version is committed already.
    error SettlementDuplicateRun(bytes32 runId);
    /// @notice A period's versions are 1, 2, 3, ...: the next one is `latestVersion + 1`.
    error SettlementVersionOutOfOrder(bytes32 runId, uint32 version, uint32 latestVersion);
    /// @notice No run `runId` was committed.
    error SettlementUnknownRun(bytes32 runId);
    /// @notice The run was replaced by `supersededBy`; dispute the current version.
    error SettlementRunSuperseded(bytes32 runId, bytes32 supersededBy);
    /// @notice The run's dispute window ended at `disputeWindowEnds`.
    error SettlementDisputeWindowClosed(bytes32 runId, uint64 disputeWindowEnds);
    /// @notice The dispute signature expired at `deadline`.
    error SettlementSignatureExpired(bytes32 runId, uint64 deadline);
    /// @notice The dispute is not signed by the line's account (or the signature is malformed
    ///         or malleable).
    error SettlementInvalidSignature(bytes32 runId, address account);
    /// @notice The line with this leaf hash is not in the run's Merkle tree.
    error SettlementInvalidProof(bytes32 runId, bytes32 leafHash);
    /// @notice The line is disputed already; a line is disputed at most once per run.
    error SettlementDisputeExists(bytes32 disputeId, DisputeStatus status);
    /// @notice Only an open dispute can be resolved.
    error SettlementDisputeNotOpen(bytes32 disputeId, DisputeStatus status);
    /// @notice The dispute window must lie within `[minSeconds, maxSeconds]`.
    error SettlementInvalidDisputeWindow(uint64 disputeWindowSeconds, uint64 minSeconds, uint64 maxSeconds);

    /// @notice Commits version `version` of the settlement of `[periodStart, periodEnd)` (settler
    ///         only); version 2 and later supersede the version before.
    function commitRun(
        uint64 periodStart,
        uint64 periodEnd,
        uint32 version,
        bytes32 root,
        bytes32 inputsHash,
        uint32 lineCount,
        uint256 totalReceivableMinor,
        uint256 totalPayableMinor
    ) external returns (bytes32 runId);

    /// @notice Sets the dispute window of runs committed from now on (admin or operator).
    function setDisputeWindow(uint64 disputeWindowSeconds) external;

    /// @notice Opens a dispute of `line`, signed by its account; anyone may relay it.
    ///         `disputeId = keccak256(abi.encode(runId, leafHash))`.
    function openDispute(
        DisputeLine calldata line,
        bytes32[] calldata proof,
        bytes32 reasonHash,
        uint64 deadline,
        bytes calldata signature
    ) external returns (bytes32 disputeId);

    /// @notice Accepts or rejects an open dispute (operator only); `resolutionHash` is the hash
    ///         of the decision's reasons.
    function resolveDispute(bytes32 disputeId, bool accepted, bytes32 resolutionHash) external;

    function run(bytes32 runId) external view returns (Run memory);

    function runStatus(bytes32 runId) external view returns (RunStatus);

    /// @notice The latest committed version of the period, 0 if none.
    function latestVersion(uint64 periodStart, uint64 periodEnd) external view returns (uint32);

    function runIdOf(uint64 periodStart, uint64 periodEnd, uint32 version) external pure returns (bytes32);

    function dispute(bytes32 disputeId) external view returns (DisputeRecord memory);

    function disputeWindow() external view returns (uint64);

    /// @notice Whether the line is a leaf of the run's committed root (superseded runs included).
    function verifyLine(
        bytes32 runId,
        address account,
        uint8 kind,
        bytes32 ref,
        int256 energyWh,
        int256 amountMinor,
        bytes32[] calldata proof
    ) external view returns (bool);

    /// @notice The EIP-712 digest of a `Dispute`, which the line's account signs.
    function hashDispute(Dispute calldata message) external view returns (bytes32);
}
