"""Decodes the ledger contracts' raw logs and custom errors with eth_abi, driven by the ABI.

One decoder serves TradeLedger, MeterData and Settlement together: pass the three ABIs
concatenated (`ledger.indexer.indexer.indexed_sources`); event topics and error selectors are keyed by signature, so the
events and errors the contracts share (OpenZeppelin's) simply coincide.

The topic0 table, each event's field order, which fields are indexed and how each value is
converted all come from the ABI passed in. The dataclasses below only name the fields (the ABI's
names in snake_case, checked when the decoder is built), so a changed event fails at start-up
instead of mis-decoding. Values: addresses EIP-55 checksummed, bytes32 as 0x lowercase hex,
integers as int, dynamic bytes as bytes.

eth_abi is called directly: web3's contract event processing costs ~20x more per log. Events
whose parameters are all static (every event but TradeRejected and TradeCancelRejected) are read
word by word with eth_abi's per-type decoders, which check padding as strictly: eth_abi.decode's
tuple decoder decodes every static word twice (once to validate offsets that static tuples do not
have), which costs half the decoder's throughput on the indexer's hot path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache
from typing import Any, cast, get_type_hints

from eth_abi import decode
from eth_abi.decoding import ContextFramesBytesIO
from eth_abi.exceptions import DecodingError
from eth_abi.registry import registry
from eth_typing import ABIEvent
from eth_utils import event_abi_to_log_topic
from eth_utils import to_checksum_address as _to_checksum_address
from eth_utils.abi import collapse_if_tuple

from ledger.chain.contract_errors import ErrorDecoder
from ledger.errors import ConfigurationError, LedgerError

AbiEntry = Mapping[str, Any]
RawLog = Mapping[str, Any]


class AbiDecodeError(LedgerError):
    """A log or error payload that does not match the ABI."""

    code = "abi_decode_error"


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a log sits on chain; `address` is the contract that emitted it."""

    address: str
    block_number: int
    block_hash: str
    transaction_hash: str
    transaction_index: int
    log_index: int


@dataclass(frozen=True, slots=True)
class TradeRecorded:
    provenance: Provenance
    trade_id: str
    seller: str
    buyer: str
    delivery_start: int
    delivery_end: int
    energy_per_interval_wh: int
    price_minor_per_mwh: int
    nonce: int
    deadline: int
    replaces: str  # the zero hash unless the trade amends another


@dataclass(frozen=True, slots=True)
class TradeRejected:
    provenance: Provenance
    trade_id: str
    reason: bytes  # an ABI-encoded custom error of ITradeLedger: decode with LogDecoder.decode_error


@dataclass(frozen=True, slots=True)
class TradeCancelRejected:
    provenance: Provenance
    trade_id: str
    reason: bytes  # as TradeRejected's: why `cancelTrades` refused one cancellation


@dataclass(frozen=True, slots=True)
class TradeCancelled:
    provenance: Provenance
    trade_id: str
    replaced_by: str  # the zero hash for a cancellation, else the amending trade


@dataclass(frozen=True, slots=True)
class TradeLimits:
    gate_closure_seconds: int
    horizon_seconds: int
    max_energy_per_interval_wh: int
    max_price_minor_per_mwh: int


@dataclass(frozen=True, slots=True)
class TradeLimitsUpdated:
    provenance: Provenance
    limits: TradeLimits


@dataclass(frozen=True, slots=True)
class ParticipantRegistered:
    provenance: Provenance
    account: str
    kind: int  # IParticipantRegistry.ParticipantKind
    identifier_hash: str


@dataclass(frozen=True, slots=True)
class ParticipantRejected:
    provenance: Provenance
    account: str
    reason: bytes  # an ABI-encoded custom error of IParticipantRegistry


@dataclass(frozen=True, slots=True)
class ParticipantSuspended:
    provenance: Provenance
    account: str


@dataclass(frozen=True, slots=True)
class ParticipantReinstated:
    provenance: Provenance
    account: str


# --- MeterData -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadingBatchCommitted:
    provenance: Provenance
    batch_id: str
    period_start: int
    period_end: int
    root: str
    reading_count: int
    supersedes: str  # the zero hash unless the batch corrects another
    committer: str


@dataclass(frozen=True, slots=True)
class PriceBatchCommitted:
    provenance: Provenance
    batch_id: str
    period_start: int
    period_end: int
    root: str
    price_count: int
    supersedes: str
    committer: str


@dataclass(frozen=True, slots=True)
class ReadingBatchSuperseded:
    provenance: Provenance
    batch_id: str
    superseded_by: str


@dataclass(frozen=True, slots=True)
class PriceBatchSuperseded:
    provenance: Provenance
    batch_id: str
    superseded_by: str


# --- Settlement ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunCommitted:
    provenance: Provenance
    run_id: str
    period_start: int
    period_end: int
    version: int
    root: str
    inputs_hash: str
    line_count: int
    total_receivable_minor: int
    total_payable_minor: int
    dispute_window_ends: int


@dataclass(frozen=True, slots=True)
class RunSuperseded:
    provenance: Provenance
    run_id: str
    superseded_by: str


@dataclass(frozen=True, slots=True)
class DisputeWindowUpdated:
    provenance: Provenance
    dispute_window_seconds: int


@dataclass(frozen=True, slots=True)
class DisputeOpened:
    provenance: Provenance
    dispute_id: str
    run_id: str
    account: str
    leaf_hash: str
    reason_hash: str


@dataclass(frozen=True, slots=True)
class DisputeResolved:
    provenance: Provenance
    dispute_id: str
    accepted: bool
    resolution_hash: str


LedgerEvent = (
    TradeRecorded
    | TradeRejected
    | TradeCancelRejected
    | TradeCancelled
    | TradeLimitsUpdated
    | ParticipantRegistered
    | ParticipantRejected
    | ParticipantSuspended
    | ParticipantReinstated
    | ReadingBatchCommitted
    | PriceBatchCommitted
    | ReadingBatchSuperseded
    | PriceBatchSuperseded
    | RunCommitted
    | RunSuperseded
    | DisputeWindowUpdated
    | DisputeOpened
    | DisputeResolved
)

EVENT_TYPES: dict[str, type[LedgerEvent]] = {
    cls.__name__: cls
    for cls in (
        TradeRecorded,
        TradeRejected,
        TradeCancelRejected,
        TradeCancelled,
        TradeLimitsUpdated,
        ParticipantRegistered,
        ParticipantRejected,
        ParticipantSuspended,
        ParticipantReinstated,
        ReadingBatchCommitted,
        PriceBatchCommitted,
        ReadingBatchSuperseded,
        PriceBatchSuperseded,
        RunCommitted,
        RunSuperseded,
        DisputeWindowUpdated,
        DisputeOpened,
        DisputeResolved,
    )
}

# The contracts whose events the indexer follows, in the order their ABIs are concatenated.
INDEXED_CONTRACTS = ("TradeLedger", "MeterData", "Settlement")


# Events the contract inherits from OpenZeppelin: role changes, pausing and EIP-712 domain
# changes are operational state, not ledger records, so the indexer skips them; so is a refused
# cancellation, which changed nothing (its outcome is the cancellation outbox's record). Any other
# event without a dataclass is an error when the decoder is built.
IGNORED_EVENTS = frozenset(
    {
        "RoleAdminChanged",
        "RoleGranted",
        "RoleRevoked",
        "Paused",
        "Unpaused",
        "EIP712DomainChanged",
        "TradeCancelRejected",
    }
)

ZERO_HASH = "0x" + "00" * 32


# --- value conversion ----------------------------------------------------------------------------

Convert = Callable[[Any], Any]

# Few distinct accounts appear in many logs, and checksumming costs a keccak per call.
_checksum: Convert = lru_cache(maxsize=1 << 16)(_to_checksum_address)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _same(value: Any) -> Any:
    return value


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _converter(param: AbiEntry, target: Any) -> Convert:
    abi_type: str = param["type"]
    if abi_type == "address":
        return _checksum
    if re.fullmatch(r"bytes([1-9]|[12][0-9]|3[0-2])", abi_type):
        return _hex
    if re.fullmatch(r"u?int\d*|bool|bytes|string", abi_type):
        return _same
    if abi_type == "tuple" and is_dataclass(target) and isinstance(target, type):
        return _struct_converter(param["components"], target)
    raise ConfigurationError(f"the decoder does not support ABI type {abi_type}", abi_type=abi_type)


def _struct_converter(components: Sequence[AbiEntry], cls: type) -> Convert:
    names, converts = _fields_for(components, cls)

    def convert(values: tuple[Any, ...]) -> Any:
        return cls(**{name: f(value) for name, f, value in zip(names, converts, values, strict=True)})

    return convert


def _fields_for(params: Sequence[AbiEntry], cls: type) -> tuple[list[str], list[Convert]]:
    """Field names and converters of `cls` for `params`; ConfigurationError if they disagree."""
    names = [_snake_case(param["name"]) for param in params]
    declared = [field.name for field in fields(cls) if field.name != "provenance"]
    if names != declared:
        raise ConfigurationError(
            f"{cls.__name__} declares fields {declared} but the ABI has {names}",
            declared=declared,
            abi=names,
        )
    hints = get_type_hints(cls)
    return names, [_converter(param, hints[name]) for param, name in zip(params, names, strict=True)]


# --- logs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EventSpec:
    cls: type[LedgerEvent]
    topic_types: tuple[str, ...]
    data_types: tuple[str, ...]
    # In ABI order: (field name, value is in a topic, converter).
    fields: tuple[tuple[str, bool, Convert], ...]
    # When every parameter is static: one decoder per word, topics then data (see module doc).
    word_decoders: tuple[Callable[[ContextFramesBytesIO], Any], ...] | None
    # When every parameter is one elementary word (address, uintN, intN, bool, bytesN): in ABI
    # order, each field's word (its offset in topics + data) and the function that decodes it by
    # hand and converts it, several times faster than eth_abi's stream decoders.
    words: tuple[tuple[int, Callable[[bytes], Any]], ...] | None


def _event_spec(entry: AbiEntry, cls: type[LedgerEvent]) -> _EventSpec:
    params = entry["inputs"]
    names, converts = _fields_for(params, cls)
    for param in params:
        abi_type: str = param["type"]
        if param["indexed"] and (abi_type in ("bytes", "string") or abi_type.startswith("tuple") or "[" in abi_type):
            # The topic holds only the hash of an indexed dynamic value: there is nothing to decode.
            raise ConfigurationError(f"{entry['name']}.{param['name']}: indexed {abi_type} cannot be decoded")
    topic_types = tuple(collapse_if_tuple(param) for param in params if param["indexed"])
    data_types = tuple(collapse_if_tuple(param) for param in params if not param["indexed"])
    decoders = tuple(registry.get_decoder(abi_type) for abi_type in topic_types + data_types)
    return _EventSpec(
        cls=cls,
        topic_types=topic_types,
        data_types=data_types,
        fields=tuple((name, bool(param["indexed"]), f) for name, param, f in zip(names, params, converts, strict=True)),
        word_decoders=None if any(getattr(d, "is_dynamic", False) for d in decoders) else decoders,
        words=_field_words(params, converts, _word_decoders(topic_types + data_types)),
    )


def _field_words(
    params: Sequence[AbiEntry], converts: Sequence[Convert], decoders: Sequence[Callable[[bytes], Any]] | None
) -> tuple[tuple[int, Callable[[bytes], Any]], ...] | None:
    """(offset, decode and convert) of each parameter, in ABI order; `decoders` are per word,
    topics first (indexed parameters), then data."""
    if decoders is None:
        return None
    topics = [index for index, param in enumerate(params) if param["indexed"]]
    data = [index for index, param in enumerate(params) if not param["indexed"]]
    word_of = {param: word for word, param in enumerate(topics + data)}
    return tuple(
        (32 * word_of[index], _then(decoders[word_of[index]], convert)) for index, convert in enumerate(converts)
    )


def _then(decode_word: Callable[[bytes], Any], convert: Convert) -> Callable[[bytes], Any]:
    if convert is _same:
        return decode_word
    return lambda word: convert(decode_word(word))


_ZERO_WORD = bytes(32)


def _word_decoders(abi_types: Sequence[str]) -> tuple[Callable[[bytes], Any], ...] | None:
    decoders = [_word_decoder(abi_type) for abi_type in abi_types]
    return None if any(d is None for d in decoders) else tuple(d for d in decoders if d is not None)


def _word_decoder(abi_type: str) -> Callable[[bytes], Any] | None:
    """What eth_abi decodes from one 32-byte word of `abi_type` (with its padding checks), or None
    for a type that is not one elementary word. tests/test_indexer.py checks both agree."""
    if abi_type == "address":

        def address(word: bytes) -> str:
            if word[:12] != _ZERO_WORD[:12]:
                raise DecodingError(f"address word with non-zero padding: 0x{word.hex()}")
            return "0x" + word[12:].hex()

        return address
    if abi_type == "bool":

        def boolean(word: bytes) -> bool:
            if word[:31] != _ZERO_WORD[:31] or word[31] > 1:
                raise DecodingError(f"bool word that is neither 0 nor 1: 0x{word.hex()}")
            return word[31] == 1

        return boolean
    match = re.fullmatch(r"(u?)int(\d*)", abi_type)
    if match:
        bits = int(match[2] or 256)
        signed = match[1] == ""
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

        def integer(word: bytes) -> int:
            value = int.from_bytes(word, "big", signed=signed)
            if not low <= value <= high:
                raise DecodingError(f"{abi_type} word out of range: 0x{word.hex()}")
            return value

        return integer
    match = re.fullmatch(r"bytes([1-9]|[12][0-9]|3[0-2])", abi_type)
    if match:
        size = int(match[1])

        def fixed_bytes(word: bytes) -> bytes:
            if word[size:] != _ZERO_WORD[size:]:
                raise DecodingError(f"{abi_type} word with non-zero padding: 0x{word.hex()}")
            return word[:size]

        return fixed_bytes
    return None


def _quantity(value: str | int) -> int:
    return value if isinstance(value, int) else int(value, 16)


def _bytes(value: str | bytes) -> bytes:
    return bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)


def _concatenated(topics: Sequence[str | bytes], data: str | bytes) -> bytes:
    """The words of topics[1:] then data: hex from the node is converted in one call."""
    try:
        return bytes.fromhex("".join([topic[2:] for topic in topics[1:]]) + data[2:])  # type: ignore[operator,misc]
    except TypeError:  # bytes, not hex strings (an in-process source)
        return b"".join(_bytes(topic) for topic in topics[1:]) + _bytes(data)


class LogDecoder:
    """Decodes raw logs (as eth_getLogs returns them) of a contract with the given ABI."""

    def __init__(self, abi: Sequence[AbiEntry]) -> None:
        self._events: dict[str, _EventSpec | None] = {}
        for entry in abi:
            if entry["type"] != "event":
                continue
            name = entry["name"]
            topic = _hex(event_abi_to_log_topic(cast(ABIEvent, entry)))
            if name in EVENT_TYPES:
                self._events[topic] = _event_spec(entry, EVENT_TYPES[name])
            elif name in IGNORED_EVENTS:
                self._events[topic] = None
            else:
                raise ConfigurationError(
                    f"event {name} in the ABI has no decoder: add a dataclass or list it in IGNORED_EVENTS",
                    event=name,
                )
        self._errors = ErrorDecoder([dict(entry) for entry in abi])

    def decode(self, log: RawLog) -> LedgerEvent | None:
        """The typed event of `log`, or None for an event in IGNORED_EVENTS."""
        topics: Sequence[str] = log["topics"]
        topic0 = topics[0].lower() if topics else None
        if topic0 not in self._events:
            raise AbiDecodeError(
                f"log {log.get('logIndex')} of block {log.get('blockNumber')} has an event the ABI "
                f"does not declare (topic0 {topic0})",
                topic0=topic0,
            )
        spec = self._events[topic0]
        if spec is None:
            return None
        if len(topics) != 1 + len(spec.topic_types):
            raise AbiDecodeError(f"{spec.cls.__name__} log with {len(topics)} topics", topics=list(topics))
        provenance = Provenance(
            address=_checksum(log["address"]),
            block_number=_quantity(log["blockNumber"]),
            block_hash=log["blockHash"].lower(),
            transaction_hash=log["transactionHash"].lower(),
            transaction_index=_quantity(log["transactionIndex"]),
            log_index=_quantity(log["logIndex"]),
        )
        try:
            if spec.words is not None:
                buffer = _concatenated(topics, log["data"])
                if len(buffer) != 32 * len(spec.words):
                    raise DecodingError(f"{len(buffer)} bytes of topics and data, not {32 * len(spec.words)}")
                # The dataclass fields are the ABI's parameters in order (checked by _fields_for).
                return spec.cls(provenance, *[read(buffer[start : start + 32]) for start, read in spec.words])
            if spec.word_decoders is None:
                indexed = decode(spec.topic_types, b"".join(_bytes(topic) for topic in topics[1:]))
                data = decode(spec.data_types, _bytes(log["data"]))
            else:
                words = ContextFramesBytesIO(b"".join(_bytes(topic) for topic in topics[1:]) + _bytes(log["data"]))
                values = [decode_word(words) for decode_word in spec.word_decoders]
                indexed, data = tuple(values[: len(topics) - 1]), tuple(values[len(topics) - 1 :])
        except DecodingError as exc:
            raise AbiDecodeError(f"{spec.cls.__name__} log does not match the ABI: {exc}") from exc
        return spec.cls(provenance, **_merge(spec.fields, iter(indexed), iter(data)))  # type: ignore[arg-type]

    def decode_error(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """(error name, arguments) of a `TradeRejected` reason; UndecodableRevert if unknown."""
        return self._errors.describe(data)


def _merge(spec: Sequence[tuple[str, bool, Convert]], indexed: Iterator[Any], data: Iterator[Any]) -> dict[str, Any]:
    return {name: convert(next(indexed if in_topic else data)) for name, in_topic, convert in spec}
