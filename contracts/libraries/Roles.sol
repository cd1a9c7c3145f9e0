// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Roles
/// @notice The role identifiers every GridLedger contract grants through OpenZeppelin AccessControl.
/// @dev `DEFAULT_ADMIN_ROLE` (0x00) is the admin: it grants and revokes the roles below.
library Roles {
    /// @notice Registers, suspends and reinstates participants; sets market limits.
    bytes32 internal constant OPERATOR = keccak256("OPERATOR_ROLE");
    /// @notice The service's relayer: submits trades and cancellations signed by the traders.
    bytes32 internal constant RECORDER = keccak256("RECORDER_ROLE");
    /// @notice Commits meter-reading batches.
    bytes32 internal constant METER_ORACLE = keccak256("METER_ORACLE_ROLE");
    /// @notice Commits settlement runs.
    bytes32 internal constant SETTLER = keccak256("SETTLER_ROLE");
    /// @notice Pauses and unpauses trade recording in an emergency.
    bytes32 internal constant PAUSER = keccak256("PAUSER_ROLE");
}
