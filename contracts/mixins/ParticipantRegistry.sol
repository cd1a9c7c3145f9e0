// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IParticipantRegistry} from "../interfaces/IParticipantRegistry.sol";
import {Roles} from "../libraries/Roles.sol";

/// @title ParticipantRegistry
/// @notice The operator's register of market participants. Suspension stops new trades and
///         cancellations by the participant; it never rewrites what is recorded.
abstract contract ParticipantRegistry is AccessControl, IParticipantRegistry {
    mapping(address account => Participant) private _participants;

    /// @inheritdoc IParticipantRegistry
    function registerParticipant(
        address account,
        ParticipantKind kind,
        bytes32 identifierHash
    ) external onlyRole(Roles.OPERATOR) {
        bytes memory reason = _registrationError(account, uint8(kind));
        if (reason.length != 0) {
            assembly ("memory-safe") {
                revert(add(reason, 0x20), mload(reason))
            }
        }
        _register(account, kind, identifierHash);
    }

    /// @inheritdoc IParticipantRegistry
    function registerParticipants(Registration[] calldata registrations) external onlyRole(Roles.OPERATOR) {
        if (registrations.length == 0) revert ParticipantRegistryEmptyBatch();
        for (uint256 i = 0; i < registrations.length; ++i) {
            Registration calldata r = registrations[i];
            bytes memory reason = _registrationError(r.account, r.kind);
            if (reason.length != 0) {
                emit ParticipantRejected(r.account, reason);
            } else {
                _register(r.account, ParticipantKind(r.kind), r.identifierHash);
            }
        }
    }

    /// @inheritdoc IParticipantRegistry
    function suspendParticipant(address account) external onlyRole(Roles.OPERATOR) {
        _transition(account, ParticipantStatus.Active, ParticipantStatus.Suspended);
        emit ParticipantSuspended(account);
    }

    /// @inheritdoc IParticipantRegistry
    function reinstateParticipant(address account) external onlyRole(Roles.OPERATOR) {
        _transition(account, ParticipantStatus.Suspended, ParticipantStatus.Active);
        emit ParticipantReinstated(account);
    }

    /// @inheritdoc IParticipantRegistry
    function participant(address account) external view returns (Participant memory) {
        return _participants[account];
    }

    /// @inheritdoc IParticipantRegistry
    function isActiveParticipant(address account) external view returns (bool) {
        return _participants[account].status == ParticipantStatus.Active;
    }

    function _participantStatus(address account) internal view returns (ParticipantStatus) {
        return _participants[account].status;
    }

    /// @dev The custom error a registration of `account` as `kind` fails with, empty if none.
    function _registrationError(address account, uint8 kind) private view returns (bytes memory) {
        if (account == address(0)) return abi.encodeWithSelector(ParticipantRegistryZeroAddress.selector);
        if (kind > uint8(type(ParticipantKind).max)) {
            return abi.encodeWithSelector(ParticipantRegistryInvalidKind.selector, kind);
        }
        if (_participants[account].status != ParticipantStatus.None) {
            return abi.encodeWithSelector(ParticipantRegistryAlreadyRegistered.selector, account);
        }
        return "";
    }

    function _register(address account, ParticipantKind kind, bytes32 identifierHash) private {
        _participants[account] = Participant(kind, ParticipantStatus.Active, uint64(block.timestamp), identifierHash);
        emit ParticipantRegistered(account, kind, identifierHash);
    }

    function _transition(address account, ParticipantStatus from, ParticipantStatus to) private {
        Participant storage p = _participants[account];
        if (p.status == ParticipantStatus.None) revert ParticipantRegistryUnknownParticipant(account);
        if (p.status != from) revert ParticipantRegistryInvalidStatus(account, p.status);
        p.status = to;
    }
}
