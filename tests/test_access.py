"""Access control without HTTP: SIWE messages, scopes, tokens, sign-in rules, market aggregates."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from ledger.auth import tokens
from ledger.auth.scopes import PUBLIC, ROLES, Principal, PrincipalKind, Scope, parse_scopes
from ledger.auth.siwe import SiweError, SiweMessage, signer_of
from ledger.chain.compiler import PROJECT_ROOT
from ledger.config import Settings
from ledger.domain.market import TradeVolume, interval_aggregates
from ledger.domain.settlement import round_half_even
from ledger.domain.trade import ParticipantKind
from ledger.errors import Forbidden, InvalidToken, TokenExpired, TokenRevoked
from ledger.services.access import OPERATOR, AccessRecord, AccessService, _entry, storable
from ledger.store.models import Participant, ParticipantStatus
from tests.store_fixtures import *  # noqa: F403

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
DOMAIN = "ledger.example:8000"
ORIGIN = f"https://{DOMAIN}"
CHAIN_ID = 31337


def message_for(account: LocalAccount, nonce: str, **terms: object) -> SiweMessage:
    base = SiweMessage(
        domain=DOMAIN,
        address=account.address,
        statement="Sign in to GridLedger.",
        uri=f"https://{DOMAIN}/",
        chain_id=CHAIN_ID,
        nonce=nonce,
        issued_at=T0,
        expiration_time=T0 + timedelta(minutes=5),
    )
    return replace(base, **terms)  # type: ignore[arg-type]


def signed(account: LocalAccount, text: str) -> str:
    return account.sign_message(encode_defunct(text=text)).signature.to_0x_hex()


# --- EIP-4361 messages -----------------------------------------------------------------------------

ALICE: LocalAccount = Account.from_key("0x" + "a1" * 32)

EIP_EXAMPLE = (
    "service.org wants you to sign in with your Ethereum account:\n"
    f"{ALICE.address}\n"
    "\n"
    "I accept the ServiceOrg Terms of Service: https://service.org/tos\n"
    "\n"
    "URI: https://service.org/login\n"
    "Version: 1\n"
    "Chain ID: 1\n"
    "Nonce: 32891756\n"
    "Issued At: 2021-09-30T16:25:24Z\n"
    "Resources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
    "- https://example.com/my-web2-claim.json"
)


def test_the_eips_example_parses_and_prints_back_byte_for_byte() -> None:
    message = SiweMessage.parse(EIP_EXAMPLE)
    assert (message.domain, message.address, message.chain_id, message.nonce) == (
        "service.org",
        ALICE.address,
        1,
        "32891756",
    )
    assert message.statement == "I accept the ServiceOrg Terms of Service: https://service.org/tos"
    assert message.issued_at == datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)
    assert message.expiration_time is None and len(message.resources) == 2
    assert message.text() == EIP_EXAMPLE


def test_every_optional_term_round_trips() -> None:
    full = message_for(
        ALICE,
        "abcdefgh12",
        statement=None,
        not_before=T0,
        request_id="req-1",
        resources=("https://a.example/x",),
        scheme="https",
    )
    text = full.text()
    # Without a statement, the ABNF puts two blank lines between the address and the URI.
    assert f"{ALICE.address}\n\n\nURI: " in text
    assert text.startswith(f"https://{DOMAIN} wants you")
    assert SiweMessage.parse(text) == full


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda t: t.replace(" wants you to sign in", " would like you to sign in"), "message.domain"),
        (lambda t: t.replace(ALICE.address, ALICE.address.lower()), "message.address"),
        (lambda t: t.replace("Version: 1", "Version: 2"), "message.version"),
        (lambda t: t.replace("Chain ID: 31337", "Chain ID: x"), "message.chainId"),
        (lambda t: t.replace("Nonce: abcdefgh12", "Nonce: short"), "message.nonce"),
        (lambda t: t.replace("Issued At: 2026-11-27T08:00:00Z", "Issued At: 2026-11-27T08:00:00"), "message.issuedAt"),
        (lambda t: t.replace("URI: https", "URI https"), "message.uri"),
        (lambda t: t + "\nExtra: line", "message"),
        (lambda t: t.split("\nURI")[0], "message.uri"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_term(change: object, field: str) -> None:
    text = change(message_for(ALICE, "abcdefgh12").text())  # type: ignore[operator]
    with pytest.raises(SiweError) as refused:
        SiweMessage.parse(text)
    assert refused.value.field == field


def test_the_signer_is_recovered_from_a_personal_sign_signature() -> None:
    text = message_for(ALICE, "abcdefgh12").text()
    assert signer_of(text, signed(ALICE, text)) == ALICE.address
    assert signer_of(text + " ", signed(ALICE, text)) != ALICE.address
    for bad in ("0x1234", "0x" + "00" * 65):
        with pytest.raises(SiweError) as refused:
            signer_of(text, bad)
        assert refused.value.field == "signature"


# --- scopes ---------------------------------------------------------------------------------------


def test_roles_and_scopes_parse_and_unknown_names_are_refused() -> None:
    assert parse_scopes("auditor") == ROLES["auditor"]
    assert Scope.OPERATE not in ROLES["auditor"] and ROLES["operator"] == frozenset(Scope)
    assert parse_scopes("trades:read, readings:read") == {Scope.TRADES_READ, Scope.READINGS_READ}
    with pytest.raises(ValueError, match="'trades:write'"):
        parse_scopes("trades:write")


def test_a_trader_sees_its_own_accounts_and_a_scope_sees_all() -> None:
    trader = Principal(PrincipalKind.TRADER, ALICE.address, address=ALICE.address)
    other = "0x" + "22" * 20
    assert trader.sees(Scope.TRADES_READ, other, ALICE.address)
    assert not trader.sees(Scope.TRADES_READ, other)
    auditor = Principal(PrincipalKind.TOKEN, "auditor", ROLES["auditor"])
    assert auditor.sees(Scope.TRADES_READ, other) and not auditor.sees(Scope.OPERATE, other)
    assert not PUBLIC.authenticated and not PUBLIC.sees(Scope.TRADES_READ, other)


def test_tokens_are_matched_by_digest_only() -> None:
    token_id, token = tokens.new_token()
    assert tokens.token_id_of(token) == token_id
    assert tokens.matches(token, tokens.digest(token)) and not tokens.matches(token + "x", tokens.digest(token))
    assert tokens.token_id_of("glt_" + token_id) is None and tokens.token_id_of("Bearer") is None


# --- the access service on a database ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def access(store_session_factory: sessionmaker[Session]) -> Iterator[tuple[AccessService, Clock]]:
    clock = Clock()
    settings = Settings(_env_file=None, chain_id=CHAIN_ID)  # type: ignore[call-arg]
    service = AccessService(settings, store_session_factory, store_session_factory, now=clock)
    with store_session_factory.begin() as session:
        session.execute(
            insert(Participant),
            [
                {
                    "address": ALICE.address,
                    "kind": ParticipantKind.PROSUMER,
                    "status": ParticipantStatus.ACTIVE,
                    "identifier_hash": "0x" + "00" * 32,
                    "registered_at": 0,
                    "block_number": 1,
                    "block_hash": "0x" + "11" * 32,
                    "transaction_hash": "0x" + "12" * 32,
                    "transaction_index": 0,
                    "log_index": 0,
                }
            ],
        )
    yield service, clock
    service.log.close()


def test_issued_tokens_authenticate_until_revoked_or_expired(access: tuple[AccessService, Clock]) -> None:
    service, clock = access
    issued = service.issue("audit firm", ROLES["auditor"], expires_in=timedelta(days=1))
    principal = service.authenticate(issued.token)
    assert (principal.kind, principal.name, principal.scopes, principal.token_id) == (
        PrincipalKind.TOKEN,
        "audit firm",
        ROLES["auditor"],
        issued.token_id,
    )
    with pytest.raises(InvalidToken):
        service.authenticate(issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B"))
    assert [info.token_id for info in service.tokens()] == [issued.token_id]

    service.revoke(issued.token_id)
    with pytest.raises(TokenRevoked):
        service.authenticate(issued.token)
    assert service.tokens() == [] and len(service.tokens(include_revoked=True)) == 1

    short = service.issue("short", frozenset({Scope.TRADES_READ}), expires_in=timedelta(hours=1))
    clock.now += timedelta(hours=2)
    with pytest.raises(TokenExpired):
        service.authenticate(short.token)


def test_a_signed_in_trader_gets_a_short_token_and_a_nonce_works_once(access: tuple[AccessService, Clock]) -> None:
    service, _ = access
    challenge = service.challenge()
    text = message_for(ALICE, challenge.nonce, expiration_time=T0 + timedelta(hours=8)).text()
    issued = service.sign_in(text, signed(ALICE, text), domain=DOMAIN, origin=ORIGIN)
    assert issued.kind is PrincipalKind.TRADER and issued.address == ALICE.address
    assert issued.expires_at == T0 + timedelta(seconds=900)  # the trader token's lifetime, not the message's
    principal = service.authenticate(issued.token)
    assert principal.address == ALICE.address and principal.scopes == frozenset()

    with pytest.raises(SiweError) as replayed:
        service.sign_in(text, signed(ALICE, text), domain=DOMAIN, origin=ORIGIN)
    assert replayed.value.field == "message.nonce"

    service.sign_out(principal)
    with pytest.raises(TokenRevoked):
        service.authenticate(issued.token)


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"domain": "phishing.example"}, "message.domain"),
        ({"uri": "https://phishing.example/"}, "message.uri"),
        ({"uri": "http://ledger.example:8000/"}, "message.uri"),
        ({"chain_id": 1}, "message.chainId"),
        ({"expiration_time": None}, "message.expirationTime"),
        ({"expiration_time": T0 - timedelta(seconds=1)}, "message.expirationTime"),
        ({"issued_at": T0 + timedelta(minutes=5)}, "message.issuedAt"),
        ({"not_before": T0 + timedelta(minutes=5)}, "message.notBefore"),
        ({"nonce": "neverissued1"}, "message.nonce"),
    ],
)
def test_sign_in_refuses_a_message_not_for_us_or_not_now(
    access: tuple[AccessService, Clock], terms: dict[str, object], field: str
) -> None:
    service, _ = access
    text = message_for(ALICE, service.challenge().nonce).text()
    text = replace(SiweMessage.parse(text), **terms).text()  # type: ignore[arg-type]
    with pytest.raises(SiweError) as refused:
        service.sign_in(text, signed(ALICE, text), domain=DOMAIN, origin=ORIGIN)
    assert refused.value.field == field


def test_sign_in_refuses_another_signer_a_stranger_and_an_expired_nonce(access: tuple[AccessService, Clock]) -> None:
    service, clock = access
    text = message_for(ALICE, service.challenge().nonce).text()
    with pytest.raises(SiweError) as forged:
        service.sign_in(text, signed(Account.create(), text), domain=DOMAIN, origin=ORIGIN)
    assert forged.value.field == "signature"

    stranger = Account.create()
    text = message_for(stranger, service.challenge().nonce).text()
    with pytest.raises(Forbidden):
        service.sign_in(text, signed(stranger, text), domain=DOMAIN, origin=ORIGIN)

    nonce = service.challenge().nonce
    clock.now += timedelta(minutes=6)
    text = message_for(ALICE, nonce, issued_at=clock.now, expiration_time=clock.now + timedelta(minutes=5)).text()
    with pytest.raises(SiweError) as stale:
        service.sign_in(text, signed(ALICE, text), domain=DOMAIN, origin=ORIGIN)
    assert stale.value.field == "message.nonce"


# --- public aggregates -------------------------------------------------------------------------

Q = 900


def test_interval_aggregates_count_a_trade_in_every_interval_it_delivers() -> None:
    trades = [
        TradeVolume(0, 4 * Q, 100_000, 40_000),  # 100 kWh per interval for an hour
        TradeVolume(Q, 2 * Q, 300_000, 50_001),
        TradeVolume(3 * Q, 8 * Q, 1, 7),  # starts inside, ends after the span
    ]
    aggregates = interval_aggregates(trades, 0, 4 * Q)
    assert [a.interval_start for a in aggregates] == [0, Q, 2 * Q, 3 * Q]
    assert [a.trade_count for a in aggregates] == [1, 2, 1, 2]
    assert [a.volume_wh for a in aggregates] == [100_000, 400_000, 100_000, 100_001]
    second = aggregates[1]
    assert second.value_wh_minor_per_mwh == 100_000 * 40_000 + 300_000 * 50_001
    # (4,000,000,000 + 15,000,300,000) / 400,000 = 47,500.75 -> 47,501
    assert second.vwap_minor_per_mwh == round_half_even(Fraction(second.value_wh_minor_per_mwh, 400_000)) == 47_501
    assert (second.low_minor_per_mwh, second.high_minor_per_mwh) == (40_000, 50_001)
    assert aggregates[3].vwap_minor_per_mwh == round_half_even(Fraction(100_000 * 40_000 + 7, 100_001))


def test_an_interval_without_trades_has_no_price() -> None:
    (empty,) = interval_aggregates([], 0, Q)
    assert (empty.trade_count, empty.volume_wh, empty.vwap_minor_per_mwh, empty.low_minor_per_mwh) == (0, 0, None, None)
    with pytest.raises(ValueError):
        interval_aggregates([], 1, Q)


# --- interop with the reference implementation (npm `siwe`, ethers 6) -----------------------------


def test_messages_interoperate_with_the_siwe_reference_library() -> None:
    ours = message_for(ALICE, "abcdefgh12", resources=("https://ledger.example/terms",))
    text = ours.text()
    build = {
        "domain": DOMAIN,
        "statement": "Sign in to GridLedger.",
        "uri": f"https://{DOMAIN}/",
        "version": "1",
        "chainId": CHAIN_ID,
        "nonce": "zyxwvuts98",
        "issuedAt": "2026-11-27T08:00:00.000Z",
        "expirationTime": "2026-11-27T08:05:00.000Z",
        "privateKey": "0x" + "b2" * 32,
    }
    done = subprocess.run(
        [
            "node",
            str(PROJECT_ROOT / "tests" / "js" / "siwe_interop.js"),
            json.dumps(
                {
                    "ours": {"text": text, "signature": signed(ALICE, text)},
                    "build": build,
                }
            ),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # The reference library reads our text as we meant it, and verifies our signature over it.
    assert seen["parsedOurs"] == {
        "domain": DOMAIN,
        "address": ALICE.address,
        "statement": "Sign in to GridLedger.",
        "uri": f"https://{DOMAIN}/",
        "version": "1",
        "chainId": CHAIN_ID,
        "nonce": "abcdefgh12",
        "issuedAt": "2026-11-27T08:00:00Z",
        "expirationTime": "2026-11-27T08:05:00Z",
        "resources": ["https://ledger.example/terms"],
    }
    assert seen["oursVerified"] is True
    # And we read the library's message and recover its signer (an ethers wallet).
    theirs = SiweMessage.parse(seen["theirs"]["text"])
    assert (theirs.address, theirs.nonce, theirs.chain_id) == (seen["theirs"]["address"], "zyxwvuts98", CHAIN_ID)
    assert theirs.expiration_time == T0 + timedelta(minutes=5)
    assert signer_of(seen["theirs"]["text"], seen["theirs"]["signature"]) == theirs.address


def test_logged_texts_are_storable_and_keep_what_was_sent() -> None:
    record = AccessRecord(OPERATOR, "GET", "/trades/\x00/é/%", "a=%00&b=\xe9\x80", 200, "10.0.0.1\x00", T0)
    row = _entry(record)
    assert (row["path"], row["query"], row["client"]) == ("/trades/%00/%C3%A9/%25", "a=%00&b=%E9%80", "10.0.0.1%00")
    assert storable("Prüfer GmbH") == "Prüfer GmbH" and storable("a\nb") == "a%0Ab"
