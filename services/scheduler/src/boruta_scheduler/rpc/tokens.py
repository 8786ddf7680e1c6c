"""Servicer of boruta.v1.Tokens: admins issue, list and revoke bearer tokens."""

from __future__ import annotations

from typing import Any

import grpc
from boruta.v1 import tokens_pb2, tokens_pb2_grpc

from boruta_scheduler.app.tokens import TokenAuthority
from boruta_scheduler.listing import PageTokens
from boruta_scheduler.rpc import convert
from boruta_scheduler.rpc.calls import current_identity

Context = grpc.aio.ServicerContext[Any, Any]


class TokensServicer(tokens_pb2_grpc.TokensServicer):
    def __init__(self, authority: TokenAuthority, page_tokens: PageTokens) -> None:
        self._authority = authority
        self._page_tokens = page_tokens

    async def IssueToken(
        self, request: tokens_pb2.IssueTokenRequest, context: Context
    ) -> tokens_pb2.IssueTokenResponse:
        ttl = convert.optional_duration(request, "ttl")
        record, secret = await self._authority.issue(
            current_identity(),
            request.user,
            request.groups,
            request.admin,
            ttl,
            request.description,
            request.idempotency_key,
        )
        return tokens_pb2.IssueTokenResponse(token=convert.token_info(record), secret=secret)

    async def ListTokens(
        self, request: tokens_pb2.ListTokensRequest, context: Context
    ) -> tokens_pb2.ListTokensResponse:
        query, scope = convert.token_query(request, self._page_tokens)
        # Read from the authority's copy of the committed tokens (see TokenAuthority.select),
        # lazily and before any await: a page costs what it returns, not every token.
        records = self._authority.select(current_identity(), query)
        infos, after = convert.fitted_run(
            records, convert.token_info, lambda t: (t.id, 0), query.limit
        )
        return tokens_pb2.ListTokensResponse(
            tokens=infos, next_page_token=self._page_tokens.encode(scope, after)
        )

    async def RevokeToken(
        self, request: tokens_pb2.RevokeTokenRequest, context: Context
    ) -> tokens_pb2.RevokeTokenResponse:
        record = await self._authority.revoke(current_identity(), request.token_id)
        return tokens_pb2.RevokeTokenResponse(token=convert.token_info(record))
