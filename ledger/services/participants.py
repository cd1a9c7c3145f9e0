"""Use cases of the market operator on the participant registry.

Registrations are queued (`ledger.store.registrations`) and sent in batches by the registrar
(`ledger.services.registrar`); what the service can know the contract would refuse (the zero
address, an account registered or queued already) is refused at once. Suspending and reinstating
are rare and wait for their block."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eth_utils import keccak, to_checksum_address
from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import Receipt
from ledger.domain.trade import ParticipantKind
from ledger.store import registrations
from ledger.store.registration_models import ParticipantRegistration

ZERO_ADDRESS = "0x" + "00" * 20  # checksummed as it is


@dataclass(frozen=True)
class OnChain:
    """Where an operator action landed."""

    transaction_hash: str
    block_number: int


@dataclass(frozen=True)
class RegistrationRequest:
    address: str
    kind: ParticipantKind
    identifier: str


@dataclass(frozen=True)
class Queued:
    """The answer to a registration: the same row for the same registration, however often it comes."""

    registration: ParticipantRegistration
    created: bool


def identifier_hash(identifier: str) -> bytes:
    """What the chain keeps of a licence or market identifier: its keccak-256, never the text."""
    return keccak(text=identifier.strip())


class ParticipantService:
    def __init__(self, operator: TradeLedgerContract, sessions: sessionmaker[Session]) -> None:
        self._operator = operator
        self._sessions = sessions

    def register(self, address: str, kind: ParticipantKind, identifier: str) -> OnChain:
        """Registers at once from the operator key, waiting for the block (set-up scripts and tests)."""
        _check_identifier(identifier)
        receipt = self._operator.register_participant(to_checksum_address(address), kind, identifier_hash(identifier))
        return OnChain(receipt.transaction_hash, receipt.block_number)

    def queue(self, request: RegistrationRequest) -> Queued:
        outcome = self.queue_many([request])[0]
        if isinstance(outcome, errors.LedgerError):
            raise outcome
        return outcome

    def queue_many(self, requests: Sequence[RegistrationRequest]) -> list[Queued | errors.LedgerError]:
        """Checks each registration as the contract will and queues the ones that pass, in one
        database transaction: a refused one gets its typed error in place and writes nothing."""
        if not requests:
            raise errors.EmptyBatch("a batch needs at least one registration")
        results: list[Queued | errors.LedgerError | None] = []
        passed: list[tuple[int, registrations.Entry]] = []
        with self._sessions.begin() as session:
            addresses = [to_checksum_address(r.address) for r in requests]
            indexed = registrations.indexed_addresses(session, set(addresses))
            queued = registrations.get_by_addresses(session, indexed)
            for request, address in zip(requests, addresses, strict=True):
                try:
                    _check_identifier(request.identifier)
                    if address == ZERO_ADDRESS:
                        raise errors.ValidationError("the zero address cannot be a participant", field="address")
                    if address in indexed and address not in queued:
                        raise errors.ParticipantAlreadyRegistered("the account is registered already")
                except errors.LedgerError as exc:
                    exc.context.setdefault("address", address)
                    results.append(exc)
                    continue
                passed.append((len(results), (address, request.kind, "0x" + identifier_hash(request.identifier).hex())))
                results.append(None)
            added = registrations.add_registrations(session, [entry for _, entry in passed])
            for (index, _), outcome in zip(passed, added, strict=True):
                results[index] = outcome if isinstance(outcome, errors.LedgerError) else Queued(*outcome)
        return [r for r in results if r is not None]

    def registration(self, registration_id: str) -> ParticipantRegistration:
        with self._sessions() as session:
            row = registrations.get_registration(session, registration_id)
        if row is None:
            raise errors.NotFoundError("no such registration", registration_id=registration_id)
        return row

    def suspend(self, address: str) -> OnChain:
        account = to_checksum_address(address)
        return _on_chain(account, lambda: self._operator.suspend_participant(account))

    def reinstate(self, address: str) -> OnChain:
        account = to_checksum_address(address)
        return _on_chain(account, lambda: self._operator.reinstate_participant(account))


def _check_identifier(identifier: str) -> None:
    if not identifier.strip():
        raise errors.ValidationError("the identifier must not be blank", field="identifier")


def _on_chain(account: str, send: Callable[[], Receipt]) -> OnChain:
    """Sends an action on a registered participant; an unregistered one is NotFoundError here
    (for a trade, an unknown party is a reason to refuse the trade, hence UnknownParticipant)."""
    try:
        receipt = send()
    except errors.UnknownParticipant as exc:
        raise errors.NotFoundError("no such participant is registered", address=account) from exc
    return OnChain(receipt.transaction_hash, receipt.block_number)
