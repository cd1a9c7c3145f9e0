// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IParticipantRegistry
/// @notice The market participants the operator admits: who may trade, and in which capacity.
interface IParticipantRegistry {
    /// @notice The capacity in which a participant trades.
    enum ParticipantKind {
        Generator,
        Retailer,
        Consumer,
        Prosumer
    }

    /// @notice `None` is the state of an address that was never registered.
    enum ParticipantStatus {
        None,
        Active,
        Suspended
    }

    struct Participant {
        ParticipantKind kind;
        ParticipantStatus status;
        uint64 registeredAt;
        bytes32 identifierHash;
    }

    /// @notice `account` was admitted as `kind`; `identifierHash` is the hash of its licence or
    ///         market identifier (the identifier itself stays off chain).
    event ParticipantRegistered(address indexed account, ParticipantKind kind, bytes32 identifierHash);
    /// @notice `account` may no longer trade until reinstated; its recorded trades stand.
    event ParticipantSuspended(address indexed account);
    /// @notice `account` may trade again.
    event ParticipantReinstated(address indexed account);

    /// @notice The zero address cannot be a participant.
    error ParticipantRegistryZeroAddress();
    /// @notice `account` is registered already (suspended or not).
    error ParticipantRegistryAlreadyRegistered(address account);
    /// @notice `account` was never registered.
    error ParticipantRegistryUnknownParticipant(address account);
    /// @notice `account` is not in the status the action needs.
    error ParticipantRegistryInvalidStatus(address account, ParticipantStatus status);

    function registerParticipant(address account, ParticipantKind kind, bytes32 identifierHash) external;

    function suspendParticipant(address account) external;

    function reinstateParticipant(address account) external;

    function participant(address account) external view returns (Participant memory);

    function isActiveParticipant(address account) external view returns (bool);
}
