"""ledger.domain.merkle against @openzeppelin/merkle-tree itself (tests/js/merkle_reference.js):
same root, same proof for every value, same dump, byte for byte."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import merkle
from ledger.domain.merkle import MerkleError, StandardMerkleTree, process_proof

REPO = Path(__file__).resolve().parents[1]
LEAF_ENCODING = ["bytes32", "address", "uint8", "bytes32", "int256", "int256"]


def openzeppelin(values: list[list[Any]], leaf_encoding: list[str]) -> dict[str, Any]:
    """{root, proofs, dump} from the JavaScript library, for values in their JSON form."""
    completed = subprocess.run(
        ["node", "tests/js/merkle_reference.js"],
        input=json.dumps({"values": values, "leafEncoding": leaf_encoding}),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=120,
    )
    return json.loads(completed.stdout)


def settlement_like_values(count: int, seed: int) -> list[list[Any]]:
    """Leaves shaped like a run's lines, in the JSON form our dump writes."""
    rng = random.Random(seed)
    run_id = "0x" + rng.randbytes(32).hex()
    accounts = [to_checksum_address(rng.randbytes(20)) for _ in range(max(2, count // 3))]
    return [
        [
            run_id,
            rng.choice(accounts),
            str(rng.choice([1, 2, 3, 9])),
            "0x" + rng.randbytes(32).hex(),
            str(rng.randint(-(10**12), 10**12)),
            str(rng.randint(-(2**255), 2**255 - 1)),
        ]
        for _ in range(count)
    ]


def our_proofs(tree: StandardMerkleTree) -> list[list[str]]:
    return [tree.get_proof(i) for i in range(len(tree))]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 33, 200])
def test_root_proofs_and_dump_match_openzeppelin(count: int) -> None:
    values = settlement_like_values(count, seed=count)
    expected = openzeppelin(values, LEAF_ENCODING)

    tree = StandardMerkleTree.of(values, LEAF_ENCODING)

    assert tree.root == expected["root"]
    assert our_proofs(tree) == expected["proofs"]
    assert tree.dump() == expected["dump"]


def test_python_values_give_the_same_tree_as_their_json_form() -> None:
    values = settlement_like_values(20, seed=1)
    as_python = [[bytes.fromhex(v[0][2:]), v[1].lower(), int(v[2]), v[3], int(v[4]), int(v[5], 10)] for v in values]
    assert StandardMerkleTree.of(as_python, LEAF_ENCODING).dump() == StandardMerkleTree.of(values, LEAF_ENCODING).dump()


def test_duplicate_values_land_where_openzeppelin_puts_them() -> None:
    values = settlement_like_values(6, seed=2)
    values = [*values, values[1], values[4], values[1]]
    expected = openzeppelin(values, LEAF_ENCODING)

    tree = StandardMerkleTree.of(values, LEAF_ENCODING)

    assert tree.dump() == expected["dump"]
    assert our_proofs(tree) == expected["proofs"]


def test_dynamic_and_other_static_types_match_openzeppelin() -> None:
    # string, bytes and arrays go through eth_abi.encode; the rest through the word encoder.
    encoding = ["address", "uint256", "bool", "string", "bytes", "int8", "bytes4", "uint64[]", "bytes32[2]"]
    rng = random.Random(3)
    values = [
        [
            to_checksum_address(rng.randbytes(20)),
            str(rng.randint(0, 2**256 - 1)),
            rng.random() < 0.5,
            "période n°" + str(i),
            "0x" + rng.randbytes(rng.randint(0, 70)).hex(),
            str(rng.randint(-128, 127)),
            "0x" + rng.randbytes(4).hex(),
            [str(rng.randint(0, 2**64 - 1)) for _ in range(rng.randint(0, 3))],
            ["0x" + rng.randbytes(32).hex() for _ in range(2)],
        ]
        for i in range(9)
    ]
    expected = openzeppelin(values, encoding)

    tree = StandardMerkleTree.of(values, encoding)

    assert tree.root == expected["root"]
    assert our_proofs(tree) == expected["proofs"]
    assert tree.dump() == expected["dump"]


def test_load_takes_openzeppelins_dump_and_round_trips() -> None:
    values = settlement_like_values(25, seed=4)
    expected = openzeppelin(values, LEAF_ENCODING)

    loaded = StandardMerkleTree.load(expected["dump"])

    assert loaded.root == expected["root"]
    assert our_proofs(loaded) == expected["proofs"]
    assert loaded.dump() == expected["dump"]
    assert StandardMerkleTree.load(loaded.dump()).dump() == expected["dump"]


def test_load_refuses_a_tampered_dump() -> None:
    dump = StandardMerkleTree.of(settlement_like_values(5, seed=5), LEAF_ENCODING).dump()

    changed_value = json.loads(json.dumps(dump))
    changed_value["values"][0]["value"][5] = str(int(changed_value["values"][0]["value"][5]) + 1)
    with pytest.raises(MerkleError, match="does not contain the expected value"):
        StandardMerkleTree.load(changed_value)

    changed_node = json.loads(json.dumps(dump))
    changed_node["tree"][1] = "0x" + "00" * 32
    with pytest.raises(MerkleError, match="invalid"):
        StandardMerkleTree.load(changed_node)

    with pytest.raises(MerkleError, match="format"):
        StandardMerkleTree.load({**dump, "format": "simple-v1"})


def test_leaf_hash_is_double_keccak_of_the_abi_encoding() -> None:
    run, account, ref = "0x" + "ab" * 32, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x" + "00" * 31 + "01"
    value: list[Any] = [run, account, 2, ref, -5, 7]
    encoded = abi_encode(LEAF_ENCODING, [bytes.fromhex(run[2:]), account, 2, bytes.fromhex(ref[2:]), -5, 7])

    tree = StandardMerkleTree.of([value], LEAF_ENCODING)

    assert tree.leaf_hash(value) == "0x" + keccak(keccak(encoded)).hex()


def test_a_tree_of_one_leaf_is_its_leaf_hash_with_an_empty_proof() -> None:
    value = settlement_like_values(1, seed=6)[0]
    tree = StandardMerkleTree.of([value], LEAF_ENCODING)

    assert tree.root == tree.leaf_hash(value)
    assert tree.get_proof(0) == []
    assert tree.get_proof(value) == []
    assert StandardMerkleTree.verify(tree.root, LEAF_ENCODING, value, [])


def test_a_tree_of_two_leaves_hashes_the_sorted_pair() -> None:
    first, second = settlement_like_values(2, seed=7)
    tree = StandardMerkleTree.of([first, second], LEAF_ENCODING)
    a, b = bytes.fromhex(tree.leaf_hash(first)[2:]), bytes.fromhex(tree.leaf_hash(second)[2:])

    assert tree.root == "0x" + keccak(min(a, b) + max(a, b)).hex()
    assert tree.get_proof(0) == [tree.leaf_hash(second)]
    assert tree.get_proof(second) == [tree.leaf_hash(first)]


def test_process_proof_and_verify() -> None:
    values = settlement_like_values(11, seed=8)
    tree = StandardMerkleTree.of(values, LEAF_ENCODING)
    proof = tree.get_proof(values[3])

    assert process_proof(tree.leaf_hash(values[3]), proof) == tree.root
    assert StandardMerkleTree.verify(tree.root, LEAF_ENCODING, values[3], proof)
    assert not StandardMerkleTree.verify(tree.root, LEAF_ENCODING, values[4], proof)
    assert not StandardMerkleTree.verify(tree.root, LEAF_ENCODING, values[3], proof[:-1])


def test_lookups_and_values_that_do_not_fit() -> None:
    values = settlement_like_values(3, seed=9)
    tree = StandardMerkleTree.of(values, LEAF_ENCODING)
    absent = [*values[0][:5], str(int(values[0][5]) ^ 1)]

    with pytest.raises(MerkleError, match="not in the tree"):
        tree.get_proof(absent)
    with pytest.raises(MerkleError, match="out of bounds"):
        tree.get_proof(3)
    with pytest.raises(MerkleError, match="at least one leaf"):
        StandardMerkleTree.of([], LEAF_ENCODING)
    bad_values = [
        [*values[0][:2], "256", *values[0][3:]],  # uint8 out of range
        [*values[0][:2], "-1", *values[0][3:]],  # negative uint
        [*values[0][:4], str(2**255), values[0][5]],  # int256 out of range
        [*values[0][:4], "1_000", values[0][5]],  # not how JavaScript writes a number
        [values[0][0], "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed", *values[0][2:]],  # bad checksum
        ["0x" + "ab" * 31, *values[0][1:]],  # 31 bytes for a bytes32
        [values[0][0], values[0][1], True, *values[0][3:]],  # a bool for a uint8
        values[0][:5],  # too short
    ]
    for bad in bad_values:
        with pytest.raises(MerkleError):
            StandardMerkleTree.of([bad], LEAF_ENCODING)


# --- properties ----------------------------------------------------------------------------

leaf_values = st.tuples(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=20, max_size=20),
    st.integers(0, 255),
    st.binary(min_size=32, max_size=32),
    st.integers(-(2**255), 2**255 - 1),
    st.integers(-(2**255), 2**255 - 1),
).map(list)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(leaf_values, min_size=1, max_size=40), data=st.data())
def test_every_proof_verifies_and_a_tampered_value_does_not(values: list[list[Any]], data: st.DataObject) -> None:
    tree = StandardMerkleTree.of(values, LEAF_ENCODING)
    leaves = {tree.leaf_hash(value) for value in values}
    for i, value in enumerate(values):
        proof = tree.get_proof(i)
        assert StandardMerkleTree.verify(tree.root, LEAF_ENCODING, value, proof)
        position = data.draw(st.integers(0, len(LEAF_ENCODING) - 1), label="tampered field")
        tampered = list(value)
        if isinstance(tampered[position], bytes):
            tampered[position] = bytes([tampered[position][0] ^ 1]) + tampered[position][1:]
        else:
            tampered[position] = tampered[position] ^ 1
        if tree.leaf_hash(tampered) not in leaves:  # flipping a bit may give another leaf of the tree
            assert not StandardMerkleTree.verify(tree.root, LEAF_ENCODING, tampered, proof)


@settings(max_examples=200, deadline=None)
@given(value=leaf_values)
def test_the_word_encoder_is_eth_abi_encode(value: list[Any]) -> None:
    codec = merkle._LeafCodec(LEAF_ENCODING)
    canonical = codec.canonical(value)
    python_value = [value[0], to_checksum_address(value[1]), value[2], value[3], value[4], value[5]]
    assert codec.encode(canonical) == abi_encode(LEAF_ENCODING, python_value)


@settings(max_examples=100, deadline=None)
@given(
    value=st.tuples(
        st.booleans(), st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**256 - 1), st.binary(min_size=7, max_size=7)
    )
)
def test_the_word_encoder_handles_other_static_types_like_eth_abi(value: tuple[bool, int, int, bytes]) -> None:
    encoding = ["bool", "int64", "uint", "bytes7"]
    codec = merkle._LeafCodec(encoding)
    assert codec.encode(codec.canonical(value)) == abi_encode(["bool", "int64", "uint256", "bytes7"], list(value))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_the_batch_keccak_is_keccak256(data: bytes) -> None:
    assert merkle._batch_keccak256()(data) == keccak(data)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(leaf_values, min_size=1, max_size=30), seed=st.randoms())
def test_the_root_does_not_depend_on_the_order_of_values(values: list[list[Any]], seed: random.Random) -> None:
    shuffled = list(values)
    seed.shuffle(shuffled)
    assert StandardMerkleTree.of(shuffled, LEAF_ENCODING).root == StandardMerkleTree.of(values, LEAF_ENCODING).root
