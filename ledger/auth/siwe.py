"""Sign-In with Ethereum (EIP-4361) messages: their exact text, parsing, and the signer's address.

Pure: no clock, no storage. `ledger.services.access` decides whether a parsed, signed message is
acceptable (domain, chain, nonce, times); this module only answers "what does it say and who
signed it". The text follows the EIP's ABNF byte for byte, so a message built here is the one
`siwe` (JavaScript) and `viem/siwe` build from the same fields, and either side can parse the
other's (tests/test_siwe.py checks both directions through Node).

Only EIP-191 signatures of externally owned accounts are accepted: EIP-1271 contract wallets would
need a chain call per sign-in, and no participant uses one today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address

from ledger.errors import ValidationError

HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"
# The longest message we parse; a sign-in body is a few hundred bytes.
MAX_MESSAGE_BYTES = 4096

_NONCE = re.compile(r"[A-Za-z0-9]{8,}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_DOMAIN = re.compile(r"[^\s/?#@]+(?:@[^\s/?#@]+)?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")


class SiweError(ValidationError):
    """A message that is not EIP-4361, or a signature that does not match it. `field` names the
    term at fault (`message.nonce`, `signature`, ...)."""

    code = "siwe_invalid"


@dataclass(frozen=True)
class SiweMessage:
    domain: str  # the RFC 3986 authority, without the optional scheme
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    version: str = "1"
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default_factory=tuple)
    scheme: str | None = None

    def text(self) -> str:
        """The message as the wallet shows and signs it (EIP-4361 ABNF)."""
        origin = f"{self.scheme}://{self.domain}" if self.scheme else self.domain
        lines = [origin + HEADER_SUFFIX, self.address, ""]
        if self.statement is not None:
            lines += [self.statement, ""]
        else:
            lines += [""]
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {_iso(self.issued_at)}",
        ]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {_iso(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {_iso(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {resource}" for resource in self.resources]
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> SiweMessage:
        """The terms of an EIP-4361 message; SiweError naming the first term that does not conform."""
        if len(text.encode()) > MAX_MESSAGE_BYTES:
            raise SiweError(f"the message is longer than {MAX_MESSAGE_BYTES} bytes", field="message")
        lines = text.split("\n")
        reader = _Lines(lines)
        header = reader.next("domain")
        if not header.endswith(HEADER_SUFFIX):
            raise SiweError(f"the first line must end with '{HEADER_SUFFIX.strip()}'", field="message.domain")
        scheme, separator, domain = header[: -len(HEADER_SUFFIX)].rpartition("://")
        if separator and not _SCHEME.fullmatch(scheme):
            raise SiweError("the scheme before the domain is not an RFC 3986 scheme", field="message.scheme")
        if not _DOMAIN.fullmatch(domain):
            raise SiweError("the domain is not an RFC 3986 authority", field="message.domain")
        address = reader.next("address")
        if not _ADDRESS.fullmatch(address) or not is_checksum_address(address):
            raise SiweError("the address must be an EIP-55 checksummed address", field="message.address")
        reader.expect_blank("address")
        statement: str | None = None
        if reader.peek() != "":
            statement = reader.next("statement")
            if statement.startswith("URI: "):
                raise SiweError("a blank line must separate the address and the URI", field="message.statement")
        reader.expect_blank("statement")
        uri = reader.tagged("URI", "uri")
        if not _URI.fullmatch(uri):
            raise SiweError("the URI is not an RFC 3986 URI", field="message.uri")
        version = reader.tagged("Version", "version")
        if version != "1":
            raise SiweError("the version must be 1", field="message.version")
        chain_text = reader.tagged("Chain ID", "chainId")
        if not chain_text.isdigit():
            raise SiweError("the chain id must be a decimal number", field="message.chainId")
        nonce = reader.tagged("Nonce", "nonce")
        if not _NONCE.fullmatch(nonce):
            raise SiweError("the nonce must be at least 8 letters or digits", field="message.nonce")
        issued_at = _datetime(reader.tagged("Issued At", "issuedAt"), "issuedAt")
        expiration = reader.optional("Expiration Time")
        not_before = reader.optional("Not Before")
        request_id = reader.optional("Request ID")
        resources: list[str] = []
        if reader.peek() == "Resources:":
            reader.next("resources")
            while reader.peek() is not None:
                line = reader.next("resources")
                if not line.startswith("- ") or not _URI.fullmatch(line[2:]):
                    raise SiweError("each resource must be '- ' followed by a URI", field="message.resources")
                resources.append(line[2:])
        if reader.peek() is not None:
            raise SiweError(f"unexpected line {reader.position + 1}: {reader.peek()!r}", field="message")
        return cls(
            domain=domain,
            address=address,
            uri=uri,
            chain_id=int(chain_text),
            nonce=nonce,
            issued_at=issued_at,
            statement=statement,
            version=version,
            expiration_time=_datetime(expiration, "expirationTime") if expiration is not None else None,
            not_before=_datetime(not_before, "notBefore") if not_before is not None else None,
            request_id=request_id,
            resources=tuple(resources),
            scheme=scheme or None,
        )


def signer_of(text: str, signature: str) -> str:
    """The address whose key made `signature` (EIP-191 personal_sign) over `text`."""
    if not _SIGNATURE.fullmatch(signature):
        raise SiweError("the signature must be 0x followed by 130 hex digits", field="signature")
    try:
        address: str = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as exc:  # eth-keys raises several types for malformed (r, s, v)
        raise SiweError("the signature is not a valid secp256k1 signature", field="signature") from exc
    return address


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("SIWE times must be aware datetimes")
    return moment.isoformat().replace("+00:00", "Z")


def _datetime(value: str, name: str) -> datetime:
    # RFC 3339 needs a date, a time and an offset; Python accepts more, so check the offset here.
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in value:
        raise SiweError(f"{name} must be an RFC 3339 date-time with an offset", field=f"message.{name}")
    return moment


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self._lines = lines
        self.position = 0

    def peek(self) -> str | None:
        return self._lines[self.position] if self.position < len(self._lines) else None

    def next(self, name: str) -> str:
        line = self.peek()
        if line is None:
            raise SiweError(f"the message ends before its {name}", field=f"message.{name}")
        self.position += 1
        return line

    def expect_blank(self, after: str) -> None:
        if self.next(after) != "":
            raise SiweError(f"a blank line must follow the {after}", field=f"message.{after}")

    def tagged(self, tag: str, name: str) -> str:
        line = self.next(name)
        if not line.startswith(f"{tag}: "):
            raise SiweError(f"expected '{tag}: ' on line {self.position}", field=f"message.{name}")
        return line[len(tag) + 2 :]

    def optional(self, tag: str) -> str | None:
        line = self.peek()
        if line is not None and line.startswith(f"{tag}: "):
            self.position += 1
            return line[len(tag) + 2 :]
        return None
