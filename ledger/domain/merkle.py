"""OpenZeppelin `StandardMerkleTree`, byte for byte (SETTLEMENT.md, "Merkle commitment").

Same tree as `@openzeppelin/merkle-tree` 1.x (`dist/core.js`, `dist/merkletree.js`), so a root,
a proof or a dump made here is accepted by the JavaScript library and by Solidity `MerkleProof`:

- leaf hash = `keccak256(keccak256(abi.encode(types, value)))`: double hashing keeps a leaf
  from ever being mistaken for an inner node (64-byte preimage) in a second-preimage attack;
- node hash = `keccak256(min(a, b) ‖ max(a, b))`: sorted pairs, so a proof needs no left/right
  flags;
- the leaf hashes are sorted ascending and laid out, reversed, at the end of an array-backed
  complete binary tree of `2n - 1` nodes: node `i` has children `2i + 1` and `2i + 2`, the root is
  node 0. The `k`-th smallest leaf sits at `tree[2n - 2 - k]`.

Building is O(n log n) (the sort) and hashes each node once; proofs are built on demand by
walking from a leaf to the root, O(log n).

Values are held in a canonical, JSON-safe form, which is also what `dump()` writes so that
JavaScript's `StandardMerkleTree.load` takes it as it is:

| type | accepted | canonical | in `dump()` |
| --- | --- | --- | --- |
| `uintN`, `intN` | int, decimal or `0x` string | int | decimal string (JSON numbers lose precision past 2**53) |
| `address` | `0x` string (a mixed-case one must be a valid EIP-55 checksum), 20 bytes | EIP-55 string | same |
| `bytesN`, `bytes` | bytes, `0x` string | lower-case `0x` string | same |
| `bool`, `string` | bool, str | as is | same |
| `T[]`, `T[k]` | a sequence of `T` | list | list |
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from ledger.errors import ValidationError

DUMP_FORMAT = "standard-v1"

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_INTEGER_TYPE = re.compile(r"(u?)int([0-9]*)")
_FIXED_BYTES_TYPE = re.compile(r"bytes([0-9]+)")
_ARRAY_TYPE = re.compile(r"(.+)\[([0-9]*)\]")
_INTEGER_TEXT = re.compile(r"(-?)(?:0[xX]([0-9a-fA-F]+)|([0-9]+))")


class MerkleError(ValidationError):
    """A value that does not fit its leaf type, a proof node that is not 32 bytes, a dump that
    is not a valid tree, or a leaf looked up that the tree does not hold."""

    code = "merkle_invalid"


# --- hashing -------------------------------------------------------------------------------

Keccak256 = Callable[[bytes], bytes]
_KECCAK_OF_EMPTY = bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")


def node_hash(a: bytes, b: bytes, keccak256: Keccak256 = keccak) -> bytes:
    """`standardNodeHash`: the hash of the two children in ascending order."""
    return keccak256(a + b) if a <= b else keccak256(b + a)


@lru_cache(maxsize=1)
def _pycryptodome_keccak_library() -> Any:
    """pycryptodome's Keccak C functions, loaded anew so that we can declare their argument types.

    Why: hashing 64-byte inputs, `eth_hash` (on pycryptodome over ctypes) spends ~4.5 µs per hash
    in Python wrappers around ~0.3 µs of C; calling the same C functions directly takes ~1.5 µs, and
    a tree of n leaves needs 3n hashes. None if pycryptodome is not there or not on ctypes."""
    try:
        from Crypto.Hash import keccak as pycryptodome_keccak

        library = ctypes.CDLL(pycryptodome_keccak._raw_keccak_lib._name)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):
        return None
    library.keccak_absorb.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    library.keccak_digest.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_ubyte]
    library.keccak_reset.argtypes = [ctypes.c_void_p]
    return library


def _batch_keccak256() -> Keccak256:
    """A keccak256 for one build of a tree, on its own hash state (so not to be shared between
    threads). Falls back to `eth_hash` unless the direct path gives the known digest of b""."""
    library = _pycryptodome_keccak_library()
    if library is None:
        return keccak
    from Crypto.Hash import keccak as pycryptodome_keccak

    owner = pycryptodome_keccak.new(digest_bits=256)  # owns the C state and frees it when collected
    state = owner._state.get()  # type: ignore[attr-defined]
    if not isinstance(state, ctypes.c_void_p):
        return keccak
    out = ctypes.create_string_buffer(32)
    absorb, digest, reset = library.keccak_absorb, library.keccak_digest, library.keccak_reset

    def keccak256(data: bytes) -> bytes:
        if absorb(state, data, len(data)) or digest(state, out, 32, 1) or reset(state):
            raise RuntimeError("keccak256 failed in pycryptodome")
        _ = owner  # keeps the state alive as long as this function
        return out.raw

    return keccak256 if keccak256(b"") == _KECCAK_OF_EMPTY else keccak


def process_proof(leaf_hash: str | bytes, proof: Sequence[str | bytes]) -> str:
    """The root that `proof` leads to from `leaf_hash` (`processProof` in core.js)."""
    node = _node_bytes(leaf_hash)
    for sibling in proof:
        node = node_hash(node, _node_bytes(sibling))
    return _hex(node)


# --- value codecs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Codec:
    """How one ABI type's values are checked, rendered and encoded.

    `word` is set for the static 32-byte types: a leaf made only of those is the concatenation
    of its words (the ABI encoding of a static tuple), which is ~8x faster than a general
    `eth_abi.encode` call and is what makes 100k-leaf trees quick. Tests prove the two equal."""

    abi_type: str
    canonical: Callable[[Any], Any]
    render: Callable[[Any], Any]
    abi_value: Callable[[Any], Any]
    word: Callable[[Any], bytes] | None


def _identity(value: Any) -> Any:
    return value


def _hex_to_bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def _parse_hex(value: Any, length: int | None, what: str) -> str:
    """A lower-case `0x` string of `length` bytes (any length if None) from bytes or hex."""
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise MerkleError(f"{what}: not a hex string", field="value", value=value) from None
        if 2 * len(raw) != len(value) - 2:  # bytes.fromhex skips whitespace; we do not
            raise MerkleError(f"{what}: not a hex string", field="value", value=value)
    elif isinstance(value, bytes | bytearray):
        raw = bytes(value)
    else:
        raise MerkleError(f"{what}: expected bytes or a 0x hex string", field="value", value=repr(value))
    if length is not None and len(raw) != length:
        raise MerkleError(f"{what}: expected {length} bytes, got {len(raw)}", field="value", value=_hex(raw))
    return "0x" + raw.hex()


@lru_cache(maxsize=65536)
def _checksummed(value: str) -> str:
    # Cached: a settlement has ~1,000 accounts but 100,000s of leaves naming them.
    hex_part = value[2:]
    if value[:2] != "0x" or len(hex_part) != 40 or not _HEX_DIGITS.issuperset(hex_part):
        raise MerkleError("address: expected a 0x string of 20 bytes", field="value", value=value)
    checksummed = to_checksum_address(value)
    mixed_case = hex_part != hex_part.lower() and hex_part != hex_part.upper()
    if mixed_case and checksummed != value:
        # A mixed-case address asserts an EIP-55 checksum; a wrong one is almost always a typo.
        raise MerkleError("address: invalid EIP-55 checksum", field="value", value=value)
    return checksummed


def _canonical_address(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return _checksummed(_parse_hex(value, 20, "address"))
    if not isinstance(value, str):
        raise MerkleError("address: expected a 0x string", field="value", value=repr(value))
    return _checksummed(value)


def _parse_integer(text: str, abi_type: str) -> int:
    """Decimal as JavaScript's BigInt reads it (leading zeros allowed), or 0x hex; either signed.
    Stricter than Python's `int()`, which would also take "1_000" and surrounding blanks."""
    match = _INTEGER_TEXT.fullmatch(text)
    if match is None:
        raise MerkleError(f"{abi_type}: not a number", field="value", value=text)
    sign, hex_digits, decimal_digits = match.groups()
    magnitude = int(hex_digits, 16) if hex_digits else int(decimal_digits, 10)
    return -magnitude if sign else magnitude


def _integer_codec(abi_type: str, signed: bool, bits: int) -> _Codec:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def canonical(value: Any) -> int:
        if type(value) is not int:
            if isinstance(value, int) and not isinstance(value, bool):  # an IntEnum; a bool means something else
                value = int(value)
            elif not isinstance(value, str):
                raise MerkleError(f"{abi_type}: expected an integer", field="value", value=repr(value))
            else:
                value = _parse_integer(value, abi_type)
        if not low <= value <= high:
            raise MerkleError(f"{abi_type}: {value} out of range", field="value", value=str(value))
        return value

    def word(value: int) -> bytes:
        return value.to_bytes(32, "big", signed=signed)

    return _Codec(abi_type, canonical, str, _identity, word)


def _bool_canonical(value: Any) -> bool:
    if not isinstance(value, bool):
        raise MerkleError("bool: expected true or false", field="value", value=repr(value))
    return value


def _string_canonical(value: Any) -> str:
    if not isinstance(value, str):
        raise MerkleError("string: expected a string", field="value", value=repr(value))
    return value


def _array_codec(abi_type: str, element: _Codec, length: int | None) -> _Codec:
    def canonical(value: Any) -> list[Any]:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise MerkleError(f"{abi_type}: expected a list", field="value", value=repr(value))
        if length is not None and len(value) != length:
            raise MerkleError(f"{abi_type}: expected {length} elements", field="value", value=repr(value))
        return [element.canonical(item) for item in value]

    return _Codec(
        abi_type,
        canonical,
        lambda value: [element.render(item) for item in value],
        lambda value: [element.abi_value(item) for item in value],
        None,
    )


@lru_cache(maxsize=256)
def _codec(abi_type: str) -> _Codec:
    """The codec of one type string of a leaf encoding (tuples are not supported)."""
    if match := _ARRAY_TYPE.fullmatch(abi_type):
        element = _codec(match.group(1))
        length = int(match.group(2)) if match.group(2) else None
        return _array_codec(f"{element.abi_type}[{match.group(2)}]", element, length)
    if match := _INTEGER_TYPE.fullmatch(abi_type):
        bits = int(match.group(2) or 256)
        if bits % 8 or not 8 <= bits <= 256:
            raise MerkleError(f"invalid integer type {abi_type!r}", field="leaf_encoding")
        signed = not match.group(1)
        return _integer_codec(f"{match.group(1)}int{bits}", signed, bits)
    if match := _FIXED_BYTES_TYPE.fullmatch(abi_type):
        size = int(match.group(1))
        if not 1 <= size <= 32:
            raise MerkleError(f"invalid fixed bytes type {abi_type!r}", field="leaf_encoding")
        return _Codec(
            abi_type,
            lambda value: _parse_hex(value, size, abi_type),
            _identity,
            _hex_to_bytes,
            lambda value: bytes.fromhex(value[2:]).ljust(32, b"\0"),
        )
    if abi_type == "address":
        return _Codec(
            abi_type, _canonical_address, _identity, _identity, lambda value: bytes.fromhex(value[2:]).rjust(32, b"\0")
        )
    if abi_type == "bool":
        return _Codec(abi_type, _bool_canonical, _identity, _identity, lambda value: (31 * b"\0") + bytes((value,)))
    if abi_type == "bytes":
        return _Codec(abi_type, lambda value: _parse_hex(value, None, "bytes"), _identity, _hex_to_bytes, None)
    if abi_type == "string":
        return _Codec(abi_type, _string_canonical, _identity, _identity, None)
    raise MerkleError(f"unsupported leaf type {abi_type!r}", field="leaf_encoding")


class _LeafCodec:
    """Checks, encodes and hashes whole leaf values of one leaf encoding."""

    def __init__(self, leaf_encoding: Sequence[str]) -> None:
        if isinstance(leaf_encoding, str) or not leaf_encoding:
            raise MerkleError("a leaf encoding is a non-empty list of ABI types", field="leaf_encoding")
        codecs = tuple(_codec(abi_type) for abi_type in leaf_encoding)
        self._codecs = codecs
        # Unpacked once: a tree of 100k leaves runs these loops 600k times.
        self._canonicals = tuple(codec.canonical for codec in codecs)
        self._renders = tuple(codec.render for codec in codecs)
        words = tuple(codec.word for codec in codecs)
        self._words: tuple[Callable[[Any], bytes], ...] | None = (
            words if all(word is not None for word in words) else None  # type: ignore[assignment]
        )

    def canonical(self, value: Sequence[Any]) -> tuple[Any, ...]:
        functions = self._canonicals
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != len(functions):
            raise MerkleError(f"a leaf value is a list of {len(functions)} items", field="value", value=repr(value))
        return tuple([canonical(item) for canonical, item in zip(functions, value, strict=True)])

    def encode(self, canonical: tuple[Any, ...]) -> bytes:
        """`abi.encode(types, value)` of a canonical value."""
        if self._words is not None:
            return b"".join([word(item) for word, item in zip(self._words, canonical, strict=True)])
        codecs = self._codecs
        types = [codec.abi_type for codec in codecs]
        return abi_encode(types, [codec.abi_value(item) for codec, item in zip(codecs, canonical, strict=True)])

    def leaf_hash(self, canonical: tuple[Any, ...], keccak256: Keccak256 = keccak) -> bytes:
        return keccak256(keccak256(self.encode(canonical)))

    def render(self, canonical: tuple[Any, ...]) -> list[Any]:
        return [render(item) for render, item in zip(self._renders, canonical, strict=True)]


# --- the tree ------------------------------------------------------------------------------


class StandardMerkleTree:
    """A built tree: its nodes, its values in input order, and where each value's leaf sits."""

    def __init__(
        self,
        tree: list[bytes],
        values: list[tuple[Any, ...]],
        tree_indices: list[int],
        leaf_encoding: Sequence[str],
    ) -> None:
        self._tree = tree
        self._values = values
        self._tree_indices = tree_indices
        self._leaf_encoding = list(leaf_encoding)
        self._leaf_codec = _LeafCodec(leaf_encoding)
        # Leaf hash -> value index; with duplicate values the last one wins, as in JavaScript.
        self._value_index_by_hash = {tree[tree_index]: i for i, tree_index in enumerate(tree_indices)}

    @classmethod
    def of(cls, values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str]) -> StandardMerkleTree:
        """Builds the tree of `values` (any order; the tree sorts the leaves)."""
        if not values:
            raise MerkleError("a Merkle tree needs at least one leaf", field="values")
        leaf_codec = _LeafCodec(leaf_encoding)
        canonical = [leaf_codec.canonical(value) for value in values]
        keccak256 = _batch_keccak256()
        hashes = [leaf_codec.leaf_hash(value, keccak256) for value in canonical]
        # A stable sort of value indices by leaf hash, as JavaScript's stable Array.sort does:
        # equal leaves keep their input order, so duplicates land on the same tree indices.
        order = sorted(range(len(hashes)), key=hashes.__getitem__)
        tree = _build([hashes[i] for i in order], keccak256)
        last = len(tree) - 1
        tree_indices = [0] * len(values)
        for leaf_position, value_index in enumerate(order):
            tree_indices[value_index] = last - leaf_position
        return cls(tree, canonical, tree_indices, leaf_encoding)

    @classmethod
    def load(cls, dump: dict[str, Any]) -> StandardMerkleTree:
        """The tree of a `dump()` (ours or JavaScript's), checked node by node before use."""
        if dump.get("format") != DUMP_FORMAT:
            raise MerkleError(f"unknown format {dump.get('format')!r}", field="format")
        if dump.get("leafEncoding") is None:
            raise MerkleError("expected a leaf encoding", field="leafEncoding")
        leaf_codec = _LeafCodec(dump["leafEncoding"])
        tree = [_node_bytes(node) for node in dump["tree"]]
        if not tree:
            raise MerkleError("a Merkle tree needs at least one node", field="tree")
        values = [leaf_codec.canonical(entry["value"]) for entry in dump["values"]]
        tree_indices = [int(entry["treeIndex"]) for entry in dump["values"]]
        keccak256 = _batch_keccak256()
        for value, tree_index in zip(values, tree_indices, strict=True):
            if not 0 <= tree_index < len(tree) or tree[tree_index] != leaf_codec.leaf_hash(value, keccak256):
                raise MerkleError("the tree does not contain the expected value", field="values", tree_index=tree_index)
        if not _is_valid_tree(tree, keccak256):
            raise MerkleError("the Merkle tree is invalid", field="tree")
        return cls(tree, values, tree_indices, dump["leafEncoding"])

    @staticmethod
    def verify(
        root: str | bytes, leaf_encoding: Sequence[str], value: Sequence[Any], proof: Sequence[str | bytes]
    ) -> bool:
        """Whether `proof` proves `value` under `root`, without the tree."""
        leaf_codec = _LeafCodec(leaf_encoding)
        leaf = leaf_codec.leaf_hash(leaf_codec.canonical(value))
        return _hex(_node_bytes(root)) == process_proof(leaf, proof)

    @property
    def root(self) -> str:
        return _hex(self._tree[0])

    @property
    def leaf_encoding(self) -> list[str]:
        return list(self._leaf_encoding)

    @property
    def values(self) -> list[tuple[Any, ...]]:
        """The values in input order, in canonical form."""
        return list(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._values)

    def leaf_hash(self, value: Sequence[Any]) -> str:
        return _hex(self._leaf_codec.leaf_hash(self._leaf_codec.canonical(value)))

    def get_proof(self, index_or_value: int | Sequence[Any]) -> list[str]:
        """The sibling hashes from the leaf up to (not including) the root. An int is the value's
        position in the input list, as in JavaScript; anything else is looked up by its hash."""
        if isinstance(index_or_value, bool):
            raise MerkleError("expected an index or a leaf value", field="index", value=index_or_value)
        if isinstance(index_or_value, int):
            value_index = index_or_value
            if not 0 <= value_index < len(self._values):
                raise MerkleError("index out of bounds", field="index", index=value_index)
        else:
            leaf = self._leaf_codec.leaf_hash(self._leaf_codec.canonical(index_or_value))
            if leaf not in self._value_index_by_hash:
                raise MerkleError("leaf is not in the tree", field="value", leaf_hash=_hex(leaf))
            value_index = self._value_index_by_hash[leaf]
        index = self._tree_indices[value_index]
        proof: list[str] = []
        while index > 0:
            sibling = index + 1 if index % 2 else index - 1
            proof.append(_hex(self._tree[sibling]))
            index = (index - 1) // 2
        return proof

    def dump(self) -> dict[str, Any]:
        """`{format, leafEncoding, tree, values: [{value, treeIndex}]}` as JavaScript's `dump()`."""
        render = self._leaf_codec.render
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(self._leaf_encoding),
            "tree": [_hex(node) for node in self._tree],
            "values": [
                {"value": render(value), "treeIndex": tree_index}
                for value, tree_index in zip(self._values, self._tree_indices, strict=True)
            ],
        }


def _build(sorted_leaves: list[bytes], keccak256: Keccak256) -> list[bytes]:
    """`makeMerkleTree`: leaves reversed into the tail of the array, parents filled backwards."""
    size = 2 * len(sorted_leaves) - 1
    tree: list[bytes] = [b""] * (size - len(sorted_leaves)) + sorted_leaves[::-1]
    for i in range(size - 1 - len(sorted_leaves), -1, -1):
        left, right = tree[2 * i + 1], tree[2 * i + 2]
        tree[i] = keccak256(left + right) if left <= right else keccak256(right + left)
    return tree


def _is_valid_tree(tree: list[bytes], keccak256: Keccak256) -> bool:
    """`isValidMerkleTree`: every inner node is the hash of its two children."""
    for i, node in enumerate(tree):
        left, right = 2 * i + 1, 2 * i + 2
        if right >= len(tree):
            if left < len(tree):
                return False
        elif node != node_hash(tree[left], tree[right], keccak256):
            return False
    return True


def _node_bytes(node: str | bytes) -> bytes:
    return bytes.fromhex(_parse_hex(node, 32, "Merkle node")[2:])


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()
