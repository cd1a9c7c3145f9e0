"""Issue, list and revoke the API tokens of auditors and operators (an operator's command).

Tokens carry scopes (`ledger.auth.scopes`): name a role (auditor, operator) or scopes, comma-
separated. The token is printed once, on standard output, and never stored: only its digest is.
Revocation takes effect at once in this database, and within a few seconds in a running service
(it caches a token's check for TOKEN_CACHE_SECONDS).

    python -m scripts.tokens issue --name "audit-firm-2026" --scopes auditor --expires-in-days 90
    python -m scripts.tokens list [--all]
    python -m scripts.tokens revoke 1f2e3d4c5b6a7980
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import timedelta

from ledger import logs
from ledger.auth.scopes import parse_scopes
from ledger.errors import LedgerError
from ledger.services.access import AccessService, TokenInfo
from ledger.store.db import make_engine, make_session_factory, migrate
from scripts.settings_flags import SettingsRefused, add_settings_flags, settings_from_flags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_flags(parser, ("database_url",))
    commands = parser.add_subparsers(dest="command", required=True)
    issue = commands.add_parser("issue", help="issue a token and print it (once)")
    issue.add_argument("--name", required=True, help="who holds it, e.g. the audit firm (shown in the access log)")
    issue.add_argument("--scopes", required=True, help="roles and/or scopes, comma-separated, e.g. auditor")
    issue.add_argument("--expires-in-days", type=float, help="default: never (revoke it when done)")
    listing = commands.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    revoke = commands.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    args = parser.parse_args(argv)
    logs.configure(level=logging.WARNING)  # problems only: the script prints its own results

    try:
        settings = settings_from_flags(args, needs_rpc=False)
    except SettingsRefused as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "issue":
        refusal = _refusal(args)
        if refusal:
            print(refusal, file=sys.stderr)
            return 2

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        access = AccessService(settings, make_session_factory(engine), make_session_factory(engine, read_only=True))
        if args.command == "issue":
            expires_in = None if args.expires_in_days is None else timedelta(days=args.expires_in_days)
            issued = access.issue(args.name, parse_scopes(args.scopes), expires_in=expires_in)
            print(
                f"issued token {issued.token_id} for {issued.name!r} with {', '.join(sorted(issued.scopes))}; "
                f"expires {issued.expires_at.isoformat() if issued.expires_at else 'never'}",
                file=sys.stderr,
            )
            print(issued.token)
        elif args.command == "list":
            for info in access.tokens(include_revoked=args.all):
                print(json.dumps(_described(info)))
        else:
            info = access.revoke(args.token_id)
            print(f"revoked token {info.token_id} ({info.name!r})", file=sys.stderr)
    except LedgerError as exc:
        print(f"{args.command} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _refusal(args: argparse.Namespace) -> str | None:
    """The message naming the first bad flag of `issue`, or None."""
    if not args.name.strip() or len(args.name.strip()) > 100:
        return "--name: must be 1 to 100 characters"
    try:
        if not parse_scopes(args.scopes):
            return "--scopes: name at least one role or scope"
    except ValueError as exc:
        return f"--scopes: {exc}"
    if args.expires_in_days is not None and args.expires_in_days <= 0:
        return "--expires-in-days: must be positive"
    return None


def _described(info: TokenInfo) -> dict[str, object]:
    return {
        "tokenId": info.token_id,
        "name": info.name,
        "scopes": sorted(info.scopes),
        "createdAt": info.created_at.isoformat(),
        "expiresAt": info.expires_at.isoformat() if info.expires_at else None,
        "revokedAt": info.revoked_at.isoformat() if info.revoked_at else None,
    }


if __name__ == "__main__":
    sys.exit(main())
