"""Sign-in: traders get a short-lived token by signing an EIP-4361 (SIWE) message with their key.

Auditor and operator tokens are not issued here: `scripts/tokens.py` issues and revokes them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from api.access_schemas import SiweChallengeOut, SiweIn, TokenOut, WhoAmIOut
from api.auth import AccessDep, CallerDep, ReaderDep
from api.deps import SettingsDep
from api.problems import problem_responses
from api.types import Address
from ledger.auth.siwe import SiweMessage
from ledger.services.access import AccessService

router = APIRouter(prefix="/auth", tags=["auth"], responses=problem_responses(422))

SIGN_IN_STATEMENT = "Sign in to GridLedger to read your trades, meter readings and statements."


def _terms(request: Request, access: AccessService) -> tuple[str, str]:
    """(domain, URI origin) of this service's sign-in messages (`AccessService.sign_in_terms`)."""
    return access.sign_in_terms(_served(request), request.url.scheme)


def _served(request: Request) -> str:
    """The authority of the address the request came in on (the socket's, not the Host header)."""
    server = request.scope.get("server")
    if server is None or server[1] is None:  # a Unix socket: only a proxy in front knows the name
        return request.headers.get("host", "")
    host, port = server
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(request.url.scheme)
    return host if port == default else f"{host}:{port}"


@router.get("/siwe/nonce", operation_id="getSiweNonce", summary="A nonce (and the terms) for one sign-in")
def get_siwe_nonce(
    request: Request,
    access: AccessDep,
    settings: SettingsDep,
    address: Annotated[Address | None, Query(description="to get the whole message to sign back")] = None,
) -> SiweChallengeOut:
    """Sign an EIP-4361 message naming this nonce, `domain`, a URI on `uri` and `chainId`, with an
    Expiration Time, then POST it to /auth/siwe within the nonce's lifetime."""
    challenge = access.challenge()
    domain, origin = _terms(request, access)
    uri = f"{origin}/"
    message = None
    if address is not None:
        message = SiweMessage(
            domain=domain,
            address=address,
            statement=SIGN_IN_STATEMENT,
            uri=uri,
            chain_id=settings.chain_id,
            nonce=challenge.nonce,
            issued_at=challenge.issued_at.replace(microsecond=0),
            # The session's end: the token lasts until then (trader_token_ttl_seconds), while
            # the nonce only bounds when the message may be posted.
            expiration_time=(challenge.issued_at + timedelta(seconds=settings.trader_token_ttl_seconds)).replace(
                microsecond=0
            ),
        ).text()
    return SiweChallengeOut(
        nonce=challenge.nonce,
        domain=domain,
        uri=uri,
        chain_id=settings.chain_id,
        issued_at=challenge.issued_at,
        expires_at=challenge.expires_at,
        message=message,
    )


@router.post(
    "/siwe",
    operation_id="signInWithEthereum",
    status_code=status.HTTP_201_CREATED,
    summary="Exchange a signed EIP-4361 message for a trader's token",
    responses=problem_responses(403),
)
def sign_in(body: SiweIn, request: Request, access: AccessDep) -> TokenOut:
    """422 `siwe_invalid` names the term at fault (`field`: message.nonce, message.domain,
    message.uri, message.expirationTime, signature, ...); 403 `forbidden` for an address that is not a
    registered participant. The token lasts GRIDLEDGER_TRADER_TOKEN_TTL_SECONDS (15 minutes by
    default), never beyond the message's Expiration Time."""
    domain, origin = _terms(request, access)
    return TokenOut.of(access.sign_in(body.message, body.signature, domain=domain, origin=origin))


@router.get(
    "/me",
    operation_id="whoAmI",
    summary="Who the bearer token says you are",
    # Appended to the bearer scheme FastAPI declares: the token is optional (without one, the public).
    openapi_extra={"security": [{}]},
)
def who_am_i(caller: CallerDep) -> WhoAmIOut:
    return WhoAmIOut.of(caller)


@router.post(
    "/sign-out",
    operation_id="signOut",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the trader's token now",
    responses=problem_responses(401),
)
def sign_out(caller: ReaderDep, access: AccessDep) -> Response:
    """Operator-issued tokens are revoked by `scripts/tokens.py revoke`, not here."""
    access.sign_out(caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
