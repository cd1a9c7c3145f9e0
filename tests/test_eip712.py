"""One EIP-712 definition, three implementations that must agree: `ledger.signing.eip712`,
eth-account's generic encoder (what wallets compute from the JSON typed data) and the contract
(`hashTrade`, `hashCancelTrade`, `eip712Domain`), on both nodes. Plus the signatures: a wallet's
`signTypedData` is accepted, the compact form of either parity is accepted, and `recover_signer`
refuses what OpenZeppelin's ECDSA refuses.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from eth_abi import decode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_keys import keys
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.chain.abi import abi_type
from ledger.chain.compiler import PROJECT_ROOT, compile_contracts
from ledger.domain.trade import SignedTrade, Trade, TradeStatus
from ledger.signing.eip712 import (
    CANCEL_TRADE_FIELDS,
    TRADE_FIELDS,
    TYPES,
    Domain,
    cancel_trade_digest,
    trade_digest,
    trade_id,
    type_hash,
    type_string,
    typed_data,
)
from ledger.signing.trader import recover_signer, sign_digest, sign_trade
from tests.support.behaviours import high_s, record_batch, register
from tests.support.market import Market

TRADE_STRUCTS_SOL = PROJECT_ROOT / "contracts" / "libraries" / "TradeStructs.sol"


def wallet_digest(document: dict[str, Any]) -> bytes:
    """The digest eth-account's generic EIP-712 encoder computes from the JSON typed data."""
    signable: SignableMessage = encode_typed_data(full_message=document)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


# --- the types -------------------------------------------------------------------------------------


def solidity_type_strings() -> dict[str, str]:
    """`{CONSTANT_NAME: preimage}` of every `*_TYPEHASH = keccak256("..." "...")` in the library."""
    source = TRADE_STRUCTS_SOL.read_text()
    constants = re.findall(r"bytes32\s+internal\s+constant\s+(\w+_TYPEHASH)\s*=\s*keccak256\((.*?)\);", source, re.S)
    return {name: "".join(re.findall(r'"([^"]*)"', body)) for name, body in constants}


def test_type_strings_equal_the_solidity_type_hash_preimages() -> None:
    in_solidity = solidity_type_strings()
    assert set(in_solidity) == {"TRADE_TYPEHASH", "CANCEL_TRADE_TYPEHASH"}
    assert type_string("Trade") == in_solidity["TRADE_TYPEHASH"]
    assert type_string("CancelTrade") == in_solidity["CANCEL_TRADE_TYPEHASH"]
    assert type_hash("Trade") == keccak(text=in_solidity["TRADE_TYPEHASH"])
    assert type_hash("CancelTrade") == keccak(text=in_solidity["CANCEL_TRADE_TYPEHASH"])
    # Every signed type of the Python side has its Solidity twin (and no more).
    assert {s.split("(")[0] for s in in_solidity.values()} == set(TYPES) - {"EIP712Domain"}


def test_fields_equal_the_abi_of_the_contracts_hash_functions() -> None:
    abi = compile_contracts()["TradeLedger"].abi
    hash_trade = next(i for i in abi if i.get("name") == "hashTrade")
    hash_cancel = next(i for i in abi if i.get("name") == "hashCancelTrade")
    (trade_param,) = hash_trade["inputs"]
    assert tuple((c["name"], c["type"]) for c in trade_param["components"]) == TRADE_FIELDS
    assert tuple((i["name"], i["type"]) for i in hash_cancel["inputs"]) == CANCEL_TRADE_FIELDS


# --- Python digest == eth-account's generic encoder ------------------------------------------------

_addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
_uint64 = st.integers(0, 2**64 - 1)
_bytes32_hex = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
_domains = st.builds(
    Domain,
    chain_id=st.one_of(st.just(31337), st.integers(1, 2**256 - 1)),
    verifying_contract=_addresses,
    name=st.one_of(st.just("GridLedger"), st.text(max_size=40)),
    version=st.one_of(st.just("1"), st.text(max_size=8)),
)
_trades = st.builds(
    Trade,
    seller=_addresses,
    buyer=_addresses,
    delivery_start=_uint64,
    delivery_end=_uint64,
    energy_per_interval_wh=_uint64,
    price_minor_per_mwh=_uint64,
    nonce=st.integers(0, 2**256 - 1),
    deadline=_uint64,
    replaces=st.one_of(st.just("0x" + "00" * 32), _bytes32_hex),
)


@settings(max_examples=200, deadline=None, database=None)
@given(domain=_domains, trade=_trades)
def test_trade_digest_equals_eth_accounts(domain: Domain, trade: Trade) -> None:
    assert trade_digest(domain, trade) == wallet_digest(typed_data(domain, "Trade", trade.as_message()))


@settings(max_examples=100, deadline=None, database=None)
@given(domain=_domains, trade_id_hex=_bytes32_hex, deadline=_uint64)
def test_cancel_trade_digest_equals_eth_accounts(domain: Domain, trade_id_hex: str, deadline: int) -> None:
    document = typed_data(domain, "CancelTrade", {"tradeId": trade_id_hex, "deadline": deadline})
    assert cancel_trade_digest(domain, trade_id_hex, deadline) == wallet_digest(document)


def test_the_digest_changes_with_every_field_and_the_domain() -> None:
    """No field is left out of the hash: changing any one of them changes the id."""
    domain = Domain(31337, "0x" + "ab" * 20)
    trade = Trade("0x" + "11" * 20, "0x" + "22" * 20, 900, 1800, 1, 2, 3, 4, "0x" + "33" * 32)
    changed = {
        "seller": "0x" + "12" * 20,
        "buyer": "0x" + "21" * 20,
        "delivery_start": 0,
        "delivery_end": 2700,
        "energy_per_interval_wh": 5,
        "price_minor_per_mwh": 6,
        "nonce": 7,
        "deadline": 8,
        "replaces": "0x" + "44" * 32,
    }
    digests = {trade_digest(domain, trade)}
    digests |= {trade_digest(domain, replace(trade, **{k: v})) for k, v in changed.items()}
    for other in (replace(domain, chain_id=1), replace(domain, verifying_contract="0x" + "cd" * 20)):
        digests.add(trade_digest(other, trade))
    digests |= {
        trade_digest(replace(domain, name="GridLedger2"), trade),
        trade_digest(replace(domain, version="2"), trade),
    }
    assert len(digests) == 1 + len(changed) + 4


# --- Python digest == the contract's, on both nodes ------------------------------------------------


def eip712_domain(market: Market) -> tuple[Any, ...]:
    """`eip712Domain()` (ERC-5267, in the ABI through OpenZeppelin's EIP712), called raw."""
    ledger = market.ledger("outsider")
    function = next(i for i in market.abi if i.get("name") == "eip712Domain")
    raw = ledger.sender.rpc.call(
        "eth_call", {"to": market.address, "data": ledger.encode("eip712Domain", [])}, "latest"
    )
    return tuple(decode([abi_type(o) for o in function["outputs"]], bytes.fromhex(raw[2:])))


def test_domain_equals_the_contracts_eip712_domain(market: Market) -> None:
    fields, name, version, chain_id, verifying_contract, salt, extensions = eip712_domain(market)
    # 0x0f: name, version, chainId and verifyingContract are used; no salt, no extensions.
    assert fields == bytes([0b01111])
    assert (salt, list(extensions)) == (b"\x00" * 32, [])
    on_chain = Domain(chain_id, to_checksum_address(verifying_contract), name, version)
    assert on_chain == market.domain
    assert on_chain.separator == market.domain.separator
    node_chain_id = int(market.rpc.call("eth_chainId"), 16)
    assert chain_id == node_chain_id == market.chain_id


def test_digests_equal_the_contracts(market: Market) -> None:
    seller, buyer = Account.create(), Account.create()
    trade = market.trade(seller, buyer, replaces="0x" + "5a" * 32)
    ledger = market.ledger("outsider")
    tid = trade_id(market.domain, trade)

    assert ledger.hash_trade(trade) == tid
    assert "0x" + wallet_digest(typed_data(market.domain, "Trade", trade.as_message())).hex() == tid
    deadline = market.now() + 600
    cancel = "0x" + cancel_trade_digest(market.domain, tid, deadline).hex()
    assert ledger.hash_cancel_trade(tid, deadline) == cancel
    document = typed_data(market.domain, "CancelTrade", {"tradeId": tid, "deadline": deadline})
    assert "0x" + wallet_digest(document).hex() == cancel


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # read-only calls: one deployment is fine
)
@given(trade=_trades)
def test_contract_hashes_any_trade_like_python(market: Market, trade: Trade) -> None:
    assert market.ledger("outsider").hash_trade(trade) == trade_id(market.domain, trade)


# --- signatures ------------------------------------------------------------------------------------


def test_a_wallets_sign_typed_data_is_accepted(market: Market) -> None:
    """What MetaMask or ethers' `signTypedData` produce from the JSON document records the trade
    and cancels it: the service's own signing is not special."""
    seller, buyer = register(market, 2)
    trade = market.trade(seller, buyer)
    document = typed_data(market.domain, "Trade", trade.as_message())
    by_wallet = [bytes(Account.sign_typed_data(a.key, full_message=document).signature) for a in (seller, buyer)]
    assert by_wallet == [sign_trade(seller, market.domain, trade), sign_trade(buyer, market.domain, trade)]

    market.ledger("recorder").record_trade(SignedTrade(trade, *by_wallet))
    tid = market.trade_id(trade)
    assert market.ledger("outsider").trade_status(tid) is TradeStatus.RECORDED

    deadline = market.now() + 600
    cancel = typed_data(market.domain, "CancelTrade", {"tradeId": tid, "deadline": deadline})
    seller_sig, buyer_sig = (
        bytes(Account.sign_typed_data(a.key, full_message=cancel).signature) for a in (seller, buyer)
    )
    market.ledger("recorder").cancel_trade(tid, trade.seller, trade.buyer, deadline, seller_sig, buyer_sig)
    assert market.ledger("outsider").trade_status(tid) is TradeStatus.CANCELLED


def test_compact_signatures_of_either_parity_are_accepted(market: Market) -> None:
    """The compact (r, vs) form goes through OpenZeppelin's recovery for every combination of the
    two parties' y-parities."""
    seller, buyer = register(market, 2)
    base = market.trade(seller, buyer)
    by_parity: dict[tuple[int, int], SignedTrade] = {}
    for nonce in range(200):
        trade = replace(base, nonce=nonce)
        signed = SignedTrade(trade, sign_trade(seller, market.domain, trade), sign_trade(buyer, market.domain, trade))
        by_parity.setdefault((signed.seller_signature[64], signed.buyer_signature[64]), signed)
        if len(by_parity) == 4:
            break
    assert set(by_parity) == {(27, 27), (27, 28), (28, 27), (28, 28)}

    outcome = record_batch(market, list(by_parity.values()))
    assert outcome.rejected == {}
    assert set(outcome.recorded) == {market.trade_id(s.trade) for s in by_parity.values()}


_SIGNER = Account.from_key(keccak(text="recover signer"))
_DIGEST = keccak(text="a digest")


def test_recover_signer_recovers_a_canonical_signature() -> None:
    assert recover_signer(_DIGEST, sign_digest(_SIGNER, _DIGEST)) == _SIGNER.address


def test_recover_signer_refuses_the_high_s_twin() -> None:
    signature = sign_digest(_SIGNER, _DIGEST)
    twin = high_s(signature)
    r, s, v = int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:64], "big"), twin[64]
    # The twin is a valid signature by the same key: only the low-s rule tells it apart.
    assert keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(_DIGEST).to_checksum_address() == (
        _SIGNER.address
    )
    assert recover_signer(_DIGEST, twin) is None


@pytest.mark.parametrize("v", [0, 1, 26, 29, 255])
def test_recover_signer_refuses_a_wrong_v(v: int) -> None:
    signature = sign_digest(_SIGNER, _DIGEST)
    assert recover_signer(_DIGEST, signature[:64] + bytes([v])) is None


@pytest.mark.parametrize("length", [0, 64, 66, 96])
def test_recover_signer_refuses_a_wrong_length(length: int) -> None:
    signature = sign_digest(_SIGNER, _DIGEST)
    assert recover_signer(_DIGEST, (signature * 2)[:length]) is None


@pytest.mark.parametrize("part", ["r", "s"])
def test_recover_signer_refuses_a_zero_r_or_s(part: str) -> None:
    signature = sign_digest(_SIGNER, _DIGEST)
    zeroed = bytes(32) + signature[32:] if part == "r" else signature[:32] + bytes(32) + signature[64:]
    assert recover_signer(_DIGEST, zeroed) is None


def test_recover_signer_of_another_digest_is_someone_else() -> None:
    assert recover_signer(keccak(text="another digest"), sign_digest(_SIGNER, _DIGEST)) != _SIGNER.address
