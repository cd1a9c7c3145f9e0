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

    /// @notice One entry of `registerParticipants`. `kind` is a plain number so that an
    ///         out-of-range kind rejects its entry instead of failing the batch's ABI decoding.
    struct Registration {
        address account;
        uint8 kind;
        bytes32 identifierHash;
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
    /// @notice A `registerParticipants` entry was not registered; `reason` is the ABI-encoded
    ///         custom error `registerParticipant` would have reverted with.
    event ParticipantRejected(address indexed account, bytes reason);
    /// @notice `account` may no longer trade until reinstated; its recorded trades stand.
    event ParticipantSuspended(address indexed account);
    /// @notice `account` may trade again.
    event ParticipantReinstated(address indexed account);

    /// @notice The zero address cannot be a participant.
    error ParticipantRegistryZeroAddress();
    /// @notice `account` is registered already (suspended or not).
    error ParticipantRegistryAlreadyRegistered(address account);
    /// @notice `kind` is not a `ParticipantKind`.
    error ParticipantRegistryInvalidKind(uint8 kind);
    /// @notice `registerParticipants` was given no entry.
    error ParticipantRegistryEmptyBatch();
    /// @notice `account` was never registered.
    error ParticipantRegistryUnknownParticipant(address account);
    /// @notice `account` is not in the status the action needs.
    error ParticipantRegistryInvalidStatus(address account, ParticipantStatus status);

    function registerParticipant(address account, ParticipantKind kind, bytes32 identifierHash) external;

    /// @notice Registers every valid entry; each invalid one (zero address, registered already,
    ///         also earlier in the same batch, unknown kind) emits `ParticipantRejected` instead,
    ///         so one bad entry never sinks the batch.
    function registerParticipants(Registration[] calldata registrations) external;

    function suspendParticipant(address account) external;

    function reinstateParticipant(address account) external;

    function participant(address account) external view returns (Participant memory);

    function isActiveParticipant(address account) external view returns (bool);
}
