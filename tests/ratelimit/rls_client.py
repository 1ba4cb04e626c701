"""A real gRPC client of envoy.service.ratelimit.v3 (what Envoy's rate-limit filter sends)."""
from __future__ import annotations

from typing import Sequence

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT


def request(limit: str, entries: Sequence[tuple[str, str]] = (), hits: int = 0, domain: str = "mizzen",
            descriptor_hits: int | None = None) -> rls_pb2.RateLimitRequest:
    d = ratelimit_pb2.RateLimitDescriptor(entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v)
                                                   for k, v in [("mizzen_limit", limit), *entries]])
    if descriptor_hits is not None:
        d.hits_addend.value = descriptor_hits
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=[d], hits_addend=hits)


class Client:
    def __init__(self, target: str):
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = rls_pb2_grpc.RateLimitServiceStub(self.channel)

    async def check(self, limit: str, entries: Sequence[tuple[str, str]] = (), **kw) -> rls_pb2.RateLimitResponse:
        return await self.stub.ShouldRateLimit(request(limit, entries, **kw), timeout=5)

    async def close(self) -> None:
        await self.channel.close()


def headers(resp: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in resp.response_headers_to_add}
