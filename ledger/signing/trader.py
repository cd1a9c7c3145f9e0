"""Signing helpers for traders: the same typed data any EIP-712 wallet signs."""

from __future__ import annotations

import secrets

from eth_account.datastructures import SignedMessage
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_typing import Hash32
from eth_utils import to_checksum_address

from ledger.domain.trade import SignedTrade, Trade
from ledger.signing.eip712 import Domain, cancel_trade_digest, trade_digest


def new_nonce() -> int:
    """A random 64-bit nonce: it only has to make two otherwise identical trades distinct."""
    return secrets.randbits(64)


def sign_digest(account: LocalAccount, digest: bytes) -> bytes:
    """A 65-byte (r, s, v) signature with v in {27, 28}, as wallets produce for typed data."""
    signed: SignedMessage = account.unsafe_sign_hash(Hash32(digest))
    return bytes(signed.signature)


def sign_trade(account: LocalAccount, domain: Domain, trade: Trade) -> bytes:
    return sign_digest(account, trade_digest(domain, trade))


def sign_cancel_trade(account: LocalAccount, domain: Domain, trade_id: str, deadline: int) -> bytes:
    return sign_digest(account, cancel_trade_digest(domain, trade_id, deadline))


def countersigned(seller: LocalAccount, buyer: LocalAccount, domain: Domain, trade: Trade) -> SignedTrade:
    return SignedTrade(trade, sign_trade(seller, domain, trade), sign_trade(buyer, domain, trade))


def recover_signer(digest: bytes, signature: bytes) -> str | None:
    """The address that made `signature` over `digest`, or None when it is not a canonical
    signature (wrong length, v not 27/28, or a malleable high-s form), matching OZ ECDSA."""
    if len(signature) != 65:
        return None
    v = signature[64]
    if v not in (27, 28):
        return None
    s = int.from_bytes(signature[32:64], "big")
    if s > _SECP256K1_HALF_N or s == 0:
        return None
    try:
        public_key = keys.Signature(signature[:64] + bytes([v - 27])).recover_public_key_from_msg_hash(digest)
    except Exception:  # eth_keys raises several types for points that are not on the curve
        return None
    return to_checksum_address(public_key.to_canonical_address())


_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
