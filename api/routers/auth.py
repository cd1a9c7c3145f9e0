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
from ledger.config import Settings

router = APIRouter(prefix="/auth", tags=["auth"], responses=problem_responses(422))

SIGN_IN_STATEMENT = "Sign in to GridLedger to read your trades, meter readings and statements."


def _domain(request: Request, settings: Settings) -> str:
    # Without a configured domain, the authority the client itself connected to: a message
    # signed for another site (phishing) names that site's domain and is refused.
    return settings.siwe_domain or request.headers.get("host", "")


@router.get("/siwe/nonce", operation_id="getSiweNonce", summary="A nonce (and the terms) for one sign-in")
def get_siwe_nonce(
    request: Request,
    access: AccessDep,
    settings: SettingsDep,
    address: Annotated[Address | None, Query(description="to get the whole message to sign back")] = None,
) -> SiweChallengeOut:
    """Sign an EIP-4361 message naming this nonce, `domain` and `chainId` and with an
    Expiration Time, then POST it to /auth/siwe within the nonce's lifetime."""
    challenge = access.challenge()
    domain = _domain(request, settings)
    uri = f"{request.url.scheme}://{domain}/"
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
def sign_in(body: SiweIn, request: Request, access: AccessDep, settings: SettingsDep) -> TokenOut:
    """422 `siwe_invalid` names the term at fault (`field`: message.nonce, message.domain,
    message.expirationTime, signature, ...); 403 `forbidden` for an address that is not a
    registered participant. The token lasts GRIDLEDGER_TRADER_TOKEN_TTL_SECONDS (15 minutes by
    default), never beyond the message's Expiration Time."""
    return TokenOut.of(access.sign_in(body.message, body.signature, domain=_domain(request, settings)))


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
