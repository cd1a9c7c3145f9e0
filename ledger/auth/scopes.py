"""Scopes: what a token may read or do, and the roles an operator issues tokens for.

Public data (the participant register, reference prices, settlement run headers, market
aggregates, EIP-712 domains) needs no token. Every scope below guards data about individual
participants or an operator action. A trader signed in with its own key holds no scope: it sees
its own trades, readings and statements (`Principal.sees`), and nobody else's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    TRADES_READ = "trades:read"  # every trade with its counterparties and history
    READINGS_READ = "readings:read"  # every meter reading
    STATEMENTS_READ = "statements:read"  # every settlement statement, line proof and dispute
    ACCESS_LOG_READ = "access-log:read"  # the log of who read what
    OPERATE = "operate"  # register/suspend participants, import readings and prices, settle, resolve disputes


ROLES: dict[str, frozenset[Scope]] = {
    "auditor": frozenset({Scope.TRADES_READ, Scope.READINGS_READ, Scope.STATEMENTS_READ, Scope.ACCESS_LOG_READ}),
    "operator": frozenset(Scope),
}


class PrincipalKind(StrEnum):
    PUBLIC = "public"  # no token
    TOKEN = "token"  # an operator-issued token with scopes (auditors, operators)
    TRADER = "trader"  # a participant signed in with its own key (SIWE)


@dataclass(frozen=True)
class Principal:
    """Who is asking. `token_id` is what the access log records; `address` is a trader's."""

    kind: PrincipalKind
    name: str
    scopes: frozenset[Scope] = frozenset()
    token_id: str | None = None
    address: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.kind is not PrincipalKind.PUBLIC

    def holds(self, scope: Scope) -> bool:
        return scope in self.scopes

    def sees(self, scope: Scope, *accounts: str | None) -> bool:
        """Whether this principal may read data of `accounts` guarded by `scope`: with the scope,
        or as a trader that is one of the accounts."""
        if scope in self.scopes:
            return True
        return self.address is not None and any(account == self.address for account in accounts)


PUBLIC = Principal(PrincipalKind.PUBLIC, "public")


def parse_scopes(names: str | list[str]) -> frozenset[Scope]:
    """Scopes and role names (comma-separated or a list) as a set of scopes; ValueError naming an
    unknown one."""
    items = names.split(",") if isinstance(names, str) else names
    scopes: set[Scope] = set()
    for item in (name.strip() for name in items):
        if not item:
            continue
        if item in ROLES:
            scopes |= ROLES[item]
        elif item in Scope._value2member_map_:
            scopes.add(Scope(item))
        else:
            known = ", ".join([*ROLES, *Scope])
            raise ValueError(f"unknown scope or role {item!r} (known: {known})")
    return frozenset(scopes)
