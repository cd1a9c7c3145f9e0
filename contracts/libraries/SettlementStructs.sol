// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice One statement line of a settlement run, as its Merkle leaf commits it
///         (SETTLEMENT.md, "Statement lines" and "Merkle commitment").
/// @dev `kind`: 1 trade, 2 imbalance, 3 penalty, 9 total. `ref`: the trade id, the interval start
///      as a 32-byte big-endian integer, or zero for a total. Energy in Wh, amount in minor units,
///      both signed (positive: delivered / receives).
struct DisputeLine {
    bytes32 runId;
    address account;
    uint8 kind;
    bytes32 ref;
    int256 energyWh;
    int256 amountMinor;
}

/// @notice A line's account disputing it (EIP-712 primary type `Dispute`): the line's fields,
///         the hash of the reasons (the text stays off chain) and when the signature expires.
struct Dispute {
    bytes32 runId;
    address account;
    uint8 kind;
    bytes32 ref;
    int256 energyWh;
    int256 amountMinor;
    bytes32 reasonHash;
    uint64 deadline;
}

/// @title SettlementStructs
/// @notice The EIP-712 type hash of the signed `Dispute`, and the Merkle leaf of a statement line.
///         `ledger/signing/disputes.py` mirrors the type string; a test proves both sides compute
///         the same digest.
library SettlementStructs {
    bytes32 internal constant DISPUTE_TYPEHASH = keccak256(
        "Dispute(bytes32 runId,address account,uint8 kind,bytes32 ref,int256 energyWh,int256 amountMinor,"
        "bytes32 reasonHash,uint64 deadline)"
    );

    function hash(Dispute memory message) internal pure returns (bytes32) {
        return
            keccak256(
                abi.encode(
                    DISPUTE_TYPEHASH,
                    message.runId,
                    message.account,
                    message.kind,
                    message.ref,
                    message.energyWh,
                    message.amountMinor,
                    message.reasonHash,
                    message.deadline
                )
            );
    }

    /// @notice The `Dispute` an account signs over `line`.
    function toDispute(
        DisputeLine calldata line,
        bytes32 reasonHash,
        uint64 deadline
    ) internal pure returns (Dispute memory) {
        return
            Dispute(
                line.runId,
                line.account,
                line.kind,
                line.ref,
                line.energyWh,
                line.amountMinor,
                reasonHash,
                deadline
            );
    }

    /// @notice The StandardMerkleTree leaf of a line, encoding
    ///         `["bytes32", "address", "uint8", "bytes32", "int256", "int256"]`.
    function leaf(
        bytes32 runId,
        address account,
        uint8 kind,
        bytes32 ref,
        int256 energyWh,
        int256 amountMinor
    ) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(runId, account, kind, ref, energyWh, amountMinor))));
    }
}
