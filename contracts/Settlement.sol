// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ISettlement} from "./interfaces/ISettlement.sol";
import {Roles} from "./libraries/Roles.sol";
import {Dispute, DisputeLine, SettlementStructs} from "./libraries/SettlementStructs.sol";

/// @title Settlement
/// @notice GridLedger's settlement runs: the settler commits each version of a period's statement
///         as one Merkle root; line accounts dispute single lines within the dispute window; the
///         operator resolves disputes; a run is final once its window passed undisputed.
contract Settlement is ISettlement, AccessControl, EIP712 {
    uint64 private constant INTERVAL_SECONDS = 900;
    uint64 private constant DEFAULT_DISPUTE_WINDOW_SECONDS = 72 hours;
    uint64 private constant MIN_DISPUTE_WINDOW_SECONDS = 1 hours;
    uint64 private constant MAX_DISPUTE_WINDOW_SECONDS = 30 days;

    uint64 private _disputeWindowSeconds;
    mapping(bytes32 runId => Run) private _runs;
    mapping(bytes32 periodId => uint32 version) private _latestVersions;
    mapping(bytes32 disputeId => DisputeRecord) private _disputes;

    /// @dev The dispute window may be set by the admin as well as the operator.
    modifier onlyAdminOrOperator() {
        if (!hasRole(Roles.OPERATOR, msg.sender) && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert AccessControlUnauthorizedAccount(msg.sender, Roles.OPERATOR);
        }
        _;
    }

    constructor(address admin) EIP712("GridLedger Settlement", "1") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setDisputeWindow(DEFAULT_DISPUTE_WINDOW_SECONDS);
    }

    /// @inheritdoc ISettlement
    function commitRun(
        uint64 periodStart,
        uint64 periodEnd,
        uint32 version,
        bytes32 root,
        bytes32 inputsHash,
        uint32 lineCount,
        uint256 totalReceivableMinor,
        uint256 totalPayableMinor
    ) external onlyRole(Roles.SETTLER) returns (bytes32 runId) {
        runId = _runId(periodStart, periodEnd, version);
        _checkRun(runId, periodStart, periodEnd, root, lineCount, totalReceivableMinor, totalPayableMinor);
        _checkVersion(runId, _periodId(periodStart, periodEnd), version);

        uint64 disputeWindowEnds = uint64(block.timestamp) + _disputeWindowSeconds;
        Run storage committed = _runs[runId];
        committed.root = root;
        committed.inputsHash = inputsHash;
        committed.periodStart = periodStart;
        committed.periodEnd = periodEnd;
        committed.version = version;
        committed.lineCount = lineCount;
        committed.disputeWindowEnds = disputeWindowEnds;
        emit RunCommitted(
            runId,
            periodStart,
            periodEnd,
            version,
            root,
            inputsHash,
            lineCount,
            totalReceivableMinor,
            totalPayableMinor,
            disputeWindowEnds
        );
        if (version > 1) {
            bytes32 previous = _runId(periodStart, periodEnd, version - 1);
            _runs[previous].supersededBy = runId;
            emit RunSuperseded(previous, runId);
        }
    }

    /// @inheritdoc ISettlement
    function setDisputeWindow(uint64 disputeWindowSeconds) external onlyAdminOrOperator {
        _setDisputeWindow(disputeWindowSeconds);
    }

    /// @inheritdoc ISettlement
    function openDispute(
        DisputeLine calldata line,
        bytes32[] calldata proof,
        bytes32 reasonHash,
        uint64 deadline,
        bytes calldata signature
    ) external returns (bytes32 disputeId) {
        bytes32 runId = line.runId;
        Run storage disputed = _runs[runId];
        _checkDisputable(runId, disputed, deadline);
        bytes32 digest = _hashTypedDataV4(
            SettlementStructs.hash(SettlementStructs.toDispute(line, reasonHash, deadline))
        );
        if (!_signedBy(digest, signature, line.account)) revert SettlementInvalidSignature(runId, line.account);
        bytes32 leafHash = SettlementStructs.leaf(
            runId,
            line.account,
            line.kind,
            line.ref,
            line.energyWh,
            line.amountMinor
        );
        if (!MerkleProof.verifyCalldata(proof, disputed.root, leafHash)) {
            revert SettlementInvalidProof(runId, leafHash);
        }
        disputeId = keccak256(abi.encode(runId, leafHash));
        DisputeRecord storage record = _disputes[disputeId];
        if (record.status != DisputeStatus.None) revert SettlementDisputeExists(disputeId, record.status);

        record.runId = runId;
        record.status = DisputeStatus.Open;
        ++disputed.openDisputes;
        emit DisputeOpened(disputeId, runId, line.account, leafHash, reasonHash);
    }

    /// @inheritdoc ISettlement
    function resolveDispute(
        bytes32 disputeId,
        bool accepted,
        bytes32 resolutionHash
    ) external onlyRole(Roles.OPERATOR) {
        DisputeRecord storage record = _disputes[disputeId];
        if (record.status != DisputeStatus.Open) revert SettlementDisputeNotOpen(disputeId, record.status);
        record.status = accepted ? DisputeStatus.Accepted : DisputeStatus.Rejected;
        Run storage disputed = _runs[record.runId];
        --disputed.openDisputes;
        if (accepted) ++disputed.acceptedDisputes;
        emit DisputeResolved(disputeId, accepted, resolutionHash);
    }

    /// @inheritdoc ISettlement
    function run(bytes32 runId) external view returns (Run memory) {
        return _runs[runId];
    }

    /// @inheritdoc ISettlement
    function runStatus(bytes32 runId) external view returns (RunStatus) {
        Run storage r = _runs[runId];
        if (r.root == bytes32(0)) return RunStatus.Unknown;
        if (r.supersededBy != bytes32(0)) return RunStatus.Superseded;
        if (block.timestamp < r.disputeWindowEnds || r.openDisputes != 0 || r.acceptedDisputes != 0) {
            return RunStatus.Open;
        }
        return RunStatus.Final;
    }

    /// @inheritdoc ISettlement
    function latestVersion(uint64 periodStart, uint64 periodEnd) external view returns (uint32) {
        return _latestVersions[_periodId(periodStart, periodEnd)];
    }

    /// @inheritdoc ISettlement
    function runIdOf(uint64 periodStart, uint64 periodEnd, uint32 version) external pure returns (bytes32) {
        return _runId(periodStart, periodEnd, version);
    }

    /// @inheritdoc ISettlement
    function dispute(bytes32 disputeId) external view returns (DisputeRecord memory) {
        return _disputes[disputeId];
    }

    /// @inheritdoc ISettlement
    function disputeWindow() external view returns (uint64) {
        return _disputeWindowSeconds;
    }

    /// @inheritdoc ISettlement
    function verifyLine(
        bytes32 runId,
        address account,
        uint8 kind,
        bytes32 ref,
        int256 energyWh,
        int256 amountMinor,
        bytes32[] calldata proof
    ) external view returns (bool) {
        bytes32 root = _runs[runId].root;
        bytes32 leafHash = SettlementStructs.leaf(runId, account, kind, ref, energyWh, amountMinor);
        return root != bytes32(0) && MerkleProof.verifyCalldata(proof, root, leafHash);
    }

    /// @inheritdoc ISettlement
    function hashDispute(Dispute calldata message) external view returns (bytes32) {
        return _hashTypedDataV4(SettlementStructs.hash(message));
    }

    /// @dev The input checks of `commitRun`, in the documented order.
    function _checkRun(
        bytes32 runId,
        uint64 periodStart,
        uint64 periodEnd,
        bytes32 root,
        uint32 lineCount,
        uint256 totalReceivableMinor,
        uint256 totalPayableMinor
    ) private pure {
        if (periodStart % INTERVAL_SECONDS != 0 || periodEnd % INTERVAL_SECONDS != 0) {
            revert SettlementMisalignedPeriod(runId, periodStart, periodEnd);
        }
        if (periodEnd <= periodStart) revert SettlementEmptyPeriod(runId, periodStart, periodEnd);
        if (root == bytes32(0)) revert SettlementZeroRoot(runId);
        if (lineCount == 0) revert SettlementNoLines(runId);
        if (totalReceivableMinor != totalPayableMinor) {
            revert SettlementUnbalancedTotals(runId, totalReceivableMinor, totalPayableMinor);
        }
    }

    /// @dev A new run id, and the period's next version; records it as the latest.
    function _checkVersion(bytes32 runId, bytes32 periodId, uint32 version) private {
        if (_runs[runId].root != bytes32(0)) revert SettlementDuplicateRun(runId);
        uint32 latest = _latestVersions[periodId];
        if (version != latest + 1) revert SettlementVersionOutOfOrder(runId, version, latest);
        _latestVersions[periodId] = version;
    }

    /// @dev The checks of `openDispute` that precede the signature, in the documented order.
    function _checkDisputable(bytes32 runId, Run storage disputed, uint64 deadline) private view {
        if (disputed.root == bytes32(0)) revert SettlementUnknownRun(runId);
        if (disputed.supersededBy != bytes32(0)) revert SettlementRunSuperseded(runId, disputed.supersededBy);
        if (block.timestamp >= disputed.disputeWindowEnds) {
            revert SettlementDisputeWindowClosed(runId, disputed.disputeWindowEnds);
        }
        if (deadline < block.timestamp) revert SettlementSignatureExpired(runId, deadline);
    }

    function _setDisputeWindow(uint64 disputeWindowSeconds) private {
        if (disputeWindowSeconds < MIN_DISPUTE_WINDOW_SECONDS || disputeWindowSeconds > MAX_DISPUTE_WINDOW_SECONDS) {
            revert SettlementInvalidDisputeWindow(
                disputeWindowSeconds,
                MIN_DISPUTE_WINDOW_SECONDS,
                MAX_DISPUTE_WINDOW_SECONDS
            );
        }
        _disputeWindowSeconds = disputeWindowSeconds;
        emit DisputeWindowUpdated(disputeWindowSeconds);
    }

    /// @dev OpenZeppelin ECDSA: 65-byte signatures only; rejects malleable (high-s) signatures
    ///      and the zero-address recovery.
    function _signedBy(bytes32 digest, bytes calldata signature, address signer) private pure returns (bool) {
        (address recovered, ECDSA.RecoverError err, ) = ECDSA.tryRecoverCalldata(digest, signature);
        return err == ECDSA.RecoverError.NoError && recovered == signer;
    }

    function _runId(uint64 periodStart, uint64 periodEnd, uint32 version) private pure returns (bytes32) {
        return keccak256(abi.encode(periodStart, periodEnd, version));
    }

    function _periodId(uint64 periodStart, uint64 periodEnd) private pure returns (bytes32) {
        return keccak256(abi.encode(periodStart, periodEnd));
    }
}
