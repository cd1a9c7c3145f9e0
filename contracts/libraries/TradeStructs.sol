// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice An energy trade as both counterparties sign it (EIP-712 primary type `Trade`).
/// @dev Delivery is `energyPerIntervalWh` in every 900 s interval of `[deliveryStart, deliveryEnd)`
///      (UTC Unix seconds). `nonce` only makes otherwise identical trades distinct; `deadline`
///      is when the signatures expire; `replaces` is the id of the trade this one amends, or zero.
struct Trade {
    address seller;
    address buyer;
    uint64 deliveryStart;
    uint64 deliveryEnd;
    uint64 energyPerIntervalWh;
    uint64 priceMinorPerMWh;
    uint256 nonce;
    uint64 deadline;
    bytes32 replaces;
}

/// @notice A signature in the compact EIP-2098 form `(r, yParityAndS)`: 64 bytes of calldata
///         instead of 65 padded to 96 plus a length word.
struct CompactSignature {
    bytes32 r;
    bytes32 vs;
}

/// @notice A trade with both counterparties' signatures over its EIP-712 digest.
struct SignedTrade {
    Trade trade;
    CompactSignature seller;
    CompactSignature buyer;
}

/// @notice Both counterparties' agreement to cancel a recorded trade (EIP-712 type `CancelTrade`).
struct CancelTrade {
    bytes32 tradeId;
    uint64 deadline;
}

/// @notice A cancellation as the recorder sends it: the trade, the two parties it names, and
///         both parties' signatures over the `CancelTrade` of `tradeId` and `deadline`.
struct SignedCancel {
    bytes32 tradeId;
    address seller;
    address buyer;
    uint64 deadline;
    CompactSignature sellerSignature;
    CompactSignature buyerSignature;
}

/// @title TradeStructs
/// @notice The EIP-712 type hashes of the signed structs. `ledger/signing/eip712.py` mirrors the
///         type strings; a test proves both sides compute the same digest.
library TradeStructs {
    bytes32 internal constant TRADE_TYPEHASH = keccak256(
        "Trade(address seller,address buyer,uint64 deliveryStart,uint64 deliveryEnd,"
        "uint64 energyPerIntervalWh,uint64 priceMinorPerMWh,uint256 nonce,uint64 deadline,bytes32 replaces)"
    );

    bytes32 internal constant CANCEL_TRADE_TYPEHASH = keccak256("CancelTrade(bytes32 tradeId,uint64 deadline)");

    /// @dev `keccak256(abi.encode(TRADE_TYPEHASH, trade...))` without allocating: a static struct
    ///      in calldata is already ABI-encoded, so it is copied behind the type hash as it is.
    ///      Out-of-range values (dirty high bits) cannot slip through: reading any field of the
    ///      struct afterwards, as the ledger does for every field, reverts on them.
    function hash(Trade calldata trade) internal pure returns (bytes32 digest) {
        bytes32 typeHash = TRADE_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typeHash)
            calldatacopy(add(m, 0x20), trade, 0x120)
            digest := keccak256(m, 0x140)
        }
    }

    function hash(CancelTrade memory cancel) internal pure returns (bytes32) {
        return keccak256(abi.encode(CANCEL_TRADE_TYPEHASH, cancel.tradeId, cancel.deadline));
    }
}
