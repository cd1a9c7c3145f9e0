"""Bodies of sign-in, the access log and the public market aggregates."""

from __future__ import annotations

from pydantic import Field

from api.schemas import RequestModel, ResponseModel
from api.types import Timestamp, UtcTime
from ledger.auth.scopes import Principal
from ledger.domain.market import IntervalAggregate
from ledger.services.access import IssuedToken
from ledger.store.access_models import AccessLogEntry


class SiweChallengeOut(ResponseModel):
    nonce: str = Field(description="put it in the message's `Nonce:`; it works once, until expiresAt")
    domain: str = Field(description="the message's domain (first line) must be this")
    uri: str = Field(description="a suitable `URI:`")
    chain_id: int = Field(description="the message's `Chain ID:` must be this")
    issued_at: Timestamp
    expires_at: Timestamp = Field(description="the nonce's expiry; the message needs its own Expiration Time")
    message: str | None = Field(
        default=None, description="with ?address=: the whole EIP-4361 message to sign (personal_sign), ready to go"
    )


class SiweIn(RequestModel):
    message: str = Field(max_length=4096, description="the EIP-4361 message, exactly as signed")
    signature: str = Field(max_length=200, description="its EIP-191 (personal_sign) signature, 0x + 130 hex")


class TokenOut(ResponseModel):
    access_token: str = Field(description="send as `Authorization: Bearer <accessToken>`; shown once")
    token_type: str = "Bearer"
    token_id: str
    address: str | None
    expires_at: Timestamp | None

    @classmethod
    def of(cls, issued: IssuedToken) -> TokenOut:
        return cls(
            access_token=issued.token,
            token_id=issued.token_id,
            address=issued.address,
            expires_at=issued.expires_at,
        )


class WhoAmIOut(ResponseModel):
    kind: str = Field(description="public, token or trader")
    name: str
    token_id: str | None
    address: str | None = Field(description="a trader's address")
    scopes: list[str]

    @classmethod
    def of(cls, principal: Principal) -> WhoAmIOut:
        return cls(
            kind=principal.kind.value,
            name=principal.name,
            token_id=principal.token_id,
            address=principal.address,
            scopes=sorted(principal.scopes),
        )


class AccessLogEntryOut(ResponseModel):
    id: int
    at: Timestamp
    principal_kind: str
    principal: str = Field(description="the token's name or the trader's address")
    token_id: str | None
    method: str
    path: str
    query: str
    status: int
    client: str | None

    @classmethod
    def from_row(cls, row: AccessLogEntry) -> AccessLogEntryOut:
        return cls.model_validate(row, from_attributes=True)


class AccessLogPage(ResponseModel):
    items: list[AccessLogEntryOut]
    next_cursor: str | None = Field(description="the `cursor` of the next page; null on the last")


class IntervalAggregateOut(ResponseModel):
    interval_start: UtcTime
    trade_count: int
    volume_wh: int
    value_wh_minor_per_mwh: int = Field(
        alias="valueWhMinorPerMWh", description="sum of energy (Wh) x price (minor/MWh): the VWAP's numerator"
    )
    vwap_minor_per_mwh: int | None = Field(
        alias="vwapMinorPerMWh", description="volume-weighted price, half to even; null without trades"
    )
    low_minor_per_mwh: int | None = Field(alias="lowMinorPerMWh")
    high_minor_per_mwh: int | None = Field(alias="highMinorPerMWh")

    @classmethod
    def of(cls, aggregate: IntervalAggregate) -> IntervalAggregateOut:
        return cls.model_validate(aggregate, from_attributes=True)


class MarketIntervalsOut(ResponseModel):
    start: UtcTime
    end: UtcTime
    intervals: list[IntervalAggregateOut]
