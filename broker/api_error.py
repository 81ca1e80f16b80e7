"""The refusal of an RP API request, as a type: no aiohttp here, so that modules the admin
CLI imports (broker.store and what it holds) can raise it without loading the HTTP
server (about 0.2 s of every `pushauth-broker rp ...` run). broker/problems.py turns
it into a problem document."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        *,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra  # RFC 9457 extension members of its problem document
