"""Access control: tokens an operator issues, traders' sign-in with their keys, and the access log.

- Operator-issued tokens carry scopes (`ledger.auth.scopes`); they are created and revoked by
  `scripts/tokens.py`, never over HTTP, so a stolen API credential cannot mint more.
- A trader signs an EIP-4361 message naming a nonce this service handed out, the service's
  domain and chain; the answer is a short-lived token bound to the trader's address.
- Every read of non-public data with a token is appended to the access log before the answer
  leaves (`AccessLog.append` waits for the commit), so an answer without its log entry never goes out.

Authentication results are cached per token for `TOKEN_CACHE_SECONDS`: a revocation made by
another process (the tokens script) takes effect within that time; one made here at once.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger.auth import access_chain, tokens
from ledger.auth.scopes import Principal, PrincipalKind, Scope
from ledger.auth.siwe import SiweError, SiweMessage, signer_of
from ledger.config import Settings
from ledger.errors import Forbidden, InvalidToken, NotFoundError, TokenExpired, TokenRevoked
from ledger.store import queries
from ledger.store.access_models import AccessLogEntry, ApiToken, SiweNonce

log = logging.getLogger(__name__)

TOKEN_CACHE_SECONDS = 2.0
# A bound on cached checks: random tokens sent by a client must not grow the cache without limit.
TOKEN_CACHE_ENTRIES = 10_000
# A signed message may name a time this far ahead of ours (clocks of wallets drift).
CLOCK_SKEW = timedelta(seconds=60)
# Entries written per access-log transaction, at most.
LOG_BATCH = 500


OPERATOR = Principal(PrincipalKind.TOKEN, "operator", frozenset(Scope), token_id="operator")


@dataclass(frozen=True)
class IssuedToken:
    """A token as issued: `token` is shown this once and never stored."""

    token: str
    token_id: str
    kind: PrincipalKind
    name: str
    scopes: frozenset[Scope]
    address: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    kind: PrincipalKind
    name: str
    scopes: frozenset[Scope]
    address: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class SiweChallenge:
    nonce: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AccessRecord:
    """What the access log keeps of one request (the row is `AccessLogEntry`)."""

    principal: Principal
    method: str
    path: str
    query: str
    status: int
    client: str | None
    at: datetime


class AccessService:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        log_engine: Engine | None = None,
    ) -> None:
        """`log_engine`: where the access log writes (default: the sessions' engine); a service
        gives it an engine of its own, so that requests holding their connections while they wait
        for the log never starve it."""
        self._settings = settings
        self._operator_token = settings.operator_token.get_secret_value().encode()
        self._sessions = sessions
        self._read_sessions = read_sessions
        self._now = now
        self._cache: dict[str, tuple[float, Principal | Exception]] = {}
        self._cache_lock = threading.Lock()
        bind = sessions.kw["bind"]
        self.log = AccessLog(log_engine if log_engine is not None else bind)

    # --- operator-issued tokens ------------------------------------------------------------------

    def issue(self, name: str, scopes: frozenset[Scope], *, expires_in: timedelta | None = None) -> IssuedToken:
        if not name.strip() or len(name) > 100 or not name.isprintable():
            raise ValueError("a token's name must be 1 to 100 printable characters")
        if not scopes:
            raise ValueError("a token needs at least one scope")
        expires_at = self._now() + expires_in if expires_in is not None else None
        return self._store(PrincipalKind.TOKEN, name.strip(), scopes, None, expires_at)

    def revoke(self, token_id: str) -> TokenInfo:
        """Revokes a token (a no-op for one already revoked); NotFoundError for an unknown id."""
        with self._sessions() as session, session.begin():
            row = session.get(ApiToken, token_id)
            if row is None:
                raise NotFoundError(f"no token has the id {token_id}", token_id=token_id)
            if row.revoked_at is None:
                row.revoked_at = self._now()
            info = _info(row)
        with self._cache_lock:
            self._cache = {key: value for key, value in self._cache.items() if tokens.token_id_of(key) != token_id}
        return info

    def tokens(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        with self._read_sessions() as session:
            query = select(ApiToken).where(ApiToken.kind == PrincipalKind.TOKEN).order_by(ApiToken.created_at)
            if not include_revoked:
                query = query.where(ApiToken.revoked_at.is_(None))
            return [_info(row) for row in session.scalars(query)]

    # --- authentication ----------------------------------------------------------------------------

    def cached(self, token: str) -> Principal | None:
        """The principal of a token checked less than TOKEN_CACHE_SECONDS ago, without any I/O;
        None when `authenticate` must look (or raise)."""
        if secrets.compare_digest(token.encode(), self._operator_token):
            return OPERATOR
        with self._cache_lock:
            cached = self._cache.get(token)
        if cached is None or cached[0] < time.monotonic() or isinstance(cached[1], Exception):
            return None
        return cached[1]

    def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token; InvalidToken, TokenExpired or TokenRevoked otherwise.
        The operator token of the settings is a principal with every scope."""
        if secrets.compare_digest(token.encode(), self._operator_token):
            return OPERATOR
        now = time.monotonic()
        with self._cache_lock:
            cached = self._cache.get(token)
        if cached is None or cached[0] < now:
            cached = (now + TOKEN_CACHE_SECONDS, self._lookup(token))
            with self._cache_lock:
                if len(self._cache) >= TOKEN_CACHE_ENTRIES:
                    self._cache = {key: value for key, value in self._cache.items() if value[0] >= now}
                    if len(self._cache) >= TOKEN_CACHE_ENTRIES:
                        self._cache.clear()
                self._cache[token] = cached
        outcome = cached[1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _lookup(self, token: str) -> Principal | Exception:
        token_id = tokens.token_id_of(token)
        row = None
        if token_id is not None:
            with self._read_sessions() as session:
                row = session.get(ApiToken, token_id)
        if row is None or not tokens.matches(token, row.digest):
            return InvalidToken("the bearer token is not one this service issued")
        if row.revoked_at is not None:
            return TokenRevoked(f"the token {row.id} was revoked", token_id=row.id)
        if row.expires_at is not None and row.expires_at <= self._now():
            return TokenExpired(f"the token {row.id} expired at {row.expires_at.isoformat()}", token_id=row.id)
        return Principal(row.kind, row.name, _scopes(row.scopes), token_id=row.id, address=row.address)

    # --- Sign-In with Ethereum -------------------------------------------------------------------

    def challenge(self) -> SiweChallenge:
        """A fresh nonce for one sign-in. Expired nonces are swept here, so the table stays small."""
        now = self._now()
        challenge = SiweChallenge(
            secrets.token_hex(16), now, now + timedelta(seconds=self._settings.siwe_nonce_ttl_seconds)
        )
        with self._sessions() as session, session.begin():
            session.execute(
                SiweNonce.__table__.delete().where(SiweNonce.expires_at < now - timedelta(days=1))  # type: ignore[attr-defined]
            )
            session.add(SiweNonce(nonce=challenge.nonce, issued_at=now, expires_at=challenge.expires_at))
        return challenge

    def sign_in_terms(self, served: str, scheme: str) -> tuple[str, str]:
        """(domain, URI origin) a sign-in message must name: the settings', else the authority
        this service serves (`served`: the address its socket took the request on, never the
        client's Host header, which a relaying phishing site chooses) with the request's scheme.
        Production always has them set (ledger.config)."""
        domain = self._settings.siwe_domain or served
        return domain, self._settings.siwe_uri or f"{scheme}://{domain}"

    def sign_in(self, message: str, signature: str, *, domain: str, origin: str) -> IssuedToken:
        """A trader's token for a signed EIP-4361 message naming `domain` and a URI of `origin`
        (`sign_in_terms`). SiweError (422, naming the term) for a message that does not conform
        or is not for us; Forbidden for a signer that is not a registered participant. The nonce
        is consumed in the same transaction that stores the token, so a message signs in once at
        most."""
        parsed = SiweMessage.parse(message)
        signer = signer_of(message, signature)
        if signer != parsed.address:
            raise SiweError("the signature is not the message's address's", field="signature", signer=signer)
        if parsed.domain != domain:
            raise SiweError(
                f"the message is for {parsed.domain}, not {domain}", field="message.domain", expected=domain
            )
        if uri_origin(parsed.uri) != origin.lower():
            raise SiweError(
                f"the message's URI is not on {origin}", field="message.uri", expected=origin, uri=parsed.uri
            )
        if parsed.chain_id != self._settings.chain_id:
            raise SiweError(
                f"the message is for chain {parsed.chain_id}, this ledger is on chain {self._settings.chain_id}",
                field="message.chainId",
            )
        now = self._now()
        if parsed.issued_at > now + CLOCK_SKEW:
            raise SiweError("the message is issued in the future", field="message.issuedAt")
        if parsed.expiration_time is None:
            raise SiweError("the message must carry an Expiration Time", field="message.expirationTime")
        if parsed.expiration_time <= now:
            raise SiweError("the message has expired", field="message.expirationTime")
        if parsed.not_before is not None and parsed.not_before > now + CLOCK_SKEW:
            raise SiweError("the message is not valid yet", field="message.notBefore")
        with self._read_sessions() as session:
            if queries.get_participant(session, parsed.address) is None:
                raise Forbidden(
                    f"{parsed.address} is not a registered participant",
                    address=parsed.address,
                    reason="not_a_participant",
                )
        # A session never outlives the message that opened it.
        expires_at = min(now + timedelta(seconds=self._settings.trader_token_ttl_seconds), parsed.expiration_time)
        return self._store(
            PrincipalKind.TRADER, parsed.address, frozenset(), parsed.address, expires_at, nonce=parsed.nonce
        )

    def sign_out(self, principal: Principal) -> None:
        if principal.token_id is not None and principal.kind is PrincipalKind.TRADER:
            self.revoke(principal.token_id)

    def _store(
        self,
        kind: PrincipalKind,
        name: str,
        scopes: frozenset[Scope],
        address: str | None,
        expires_at: datetime | None,
        *,
        nonce: str | None = None,
    ) -> IssuedToken:
        token_id, token = tokens.new_token()
        now = self._now()
        with self._sessions() as session, session.begin():
            if nonce is not None:
                consumed = session.execute(
                    update(SiweNonce)
                    .where(SiweNonce.nonce == nonce, SiweNonce.used_at.is_(None), SiweNonce.expires_at > now)
                    .values(used_at=now)
                )
                if consumed.rowcount != 1:  # type: ignore[attr-defined]
                    raise SiweError(
                        "the nonce is unknown, expired or already used: ask for a new one", field="message.nonce"
                    )
            session.add(
                ApiToken(
                    id=token_id,
                    kind=kind,
                    name=name,
                    address=address,
                    scopes=",".join(sorted(scopes)),
                    digest=tokens.digest(token),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return IssuedToken(token, token_id, kind, name, scopes, address, expires_at)

    # --- the access log ---------------------------------------------------------------------------

    def entries(
        self,
        session: Session,
        *,
        principal: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> Sequence[AccessLogEntry]:
        """Entries oldest first, from after `after_id` (keyset pagination)."""
        query = select(AccessLogEntry).order_by(AccessLogEntry.id).limit(limit)
        if principal is not None:
            query = query.where(AccessLogEntry.principal == principal)
        if since is not None:
            query = query.where(AccessLogEntry.at >= since)
        if until is not None:
            query = query.where(AccessLogEntry.at < until)
        if after_id is not None:
            query = query.where(AccessLogEntry.id > after_id)
        return session.scalars(query).all()


class AccessLog:
    """Group commit of access-log entries: callers append and wait; one thread writes whatever
    has queued up in one transaction, so a burst of reads costs one commit, not one each."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[tuple[AccessRecord, Future[None]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def append(self, record: AccessRecord) -> Future[None]:
        """A future that completes when the entry is committed (or fails with the write's error)."""
        self._ensure_started()
        done: Future[None] = Future()
        self._queue.put((record, done))
        return done

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=10)

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < LOG_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(batch)
                    return
                batch.append(more)
            self._write(batch)

    def _write(self, batch: list[tuple[AccessRecord, Future[None]]]) -> None:
        """One transaction for the batch; if it fails, one per entry, so that an entry the
        database refuses fails its own request only."""
        try:
            self._commit([record for record, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                log.exception("could not write an access-log entry")
                batch[0][1].set_exception(exc)  # the caller answers 503 instead of the data
                return
            for item in batch:
                self._write([item])
            return
        for _, done in batch:
            done.set_result(None)

    def _commit(self, records: list[AccessRecord]) -> None:
        # Core, not the ORM: this thread runs beside every request, and its cost is theirs.
        with self._engine.begin() as connection:
            previous = _chain_head(connection)
            rows = []
            for record in records:
                row = _entry(record)
                row["prev_hash"] = previous
                row["hash"] = previous = access_chain.link(previous, row)
                rows.append(row)
            connection.execute(_INSERT, rows)


_INSERT = insert(AccessLogEntry.__table__)  # type: ignore[arg-type]
_HEAD = select(AccessLogEntry.hash).order_by(AccessLogEntry.id.desc()).limit(1)
# Key of the PostgreSQL advisory lock that serialises the writers of the chain (one per API
# process): each reads the head and appends under it. SQLite's write transactions run one at a
# time already (BEGIN IMMEDIATE, ledger/store/db.py).
_CHAIN_LOCK = 0x616363657373  # "access"


def _chain_head(connection: Connection) -> str:
    """The hash the next entry follows, read under the chain's lock (held until the commit)."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_CHAIN_LOCK)))
    head = connection.execute(_HEAD).scalar_one_or_none()
    return access_chain.GENESIS if head is None else head


def _entry(record: AccessRecord) -> dict[str, object]:
    """The row of `record`: every text storable (see `storable`) and within its column."""
    principal = record.principal
    return {
        "at": record.at,
        "principal_kind": principal.kind,
        "principal": storable(principal.name)[:100],
        "token_id": principal.token_id,
        "method": storable(record.method)[:8],
        "path": quote(record.path, safe=_PATH_SAFE, errors="surrogatepass")[:512],
        "query": _query(record.query)[:1024],
        "status": record.status,
        "client": storable(record.client)[:64] if record.client else None,
    }


# RFC 3986 pchar and "/" (quote adds the unreserved characters): a path is logged as a URI path,
# percent-encoded, so a NUL or any other byte a client sends is kept without being stored raw.
_PATH_SAFE = "/!$&'()*+,;=:@"


def storable(text: str) -> str:
    """`text` with each character that is not printable percent-encoded (as UTF-8): NUL, which
    PostgreSQL's text cannot hold, and the other control characters, which no log should hold
    raw. Printable text, non-ASCII included, is kept as it is."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else quote(char, safe="", errors="surrogatepass") for char in text)


def _query(query: str) -> str:
    """A query string as sent: it comes decoded as Latin-1 (a character a byte), so each byte
    beyond printable ASCII is percent-encoded as itself."""
    if query.isascii() and query.isprintable():
        return query
    return "".join(char if " " <= char <= "~" else f"%{ord(char):02X}" for char in query)


def uri_origin(uri: str) -> str:
    """The origin (`scheme://authority`, lower case) of a URI."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _scopes(text: str) -> frozenset[Scope]:
    return frozenset(Scope(name) for name in text.split(",") if name)


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        row.id, row.kind, row.name, _scopes(row.scopes), row.address, row.created_at, row.expires_at, row.revoked_at
    )
