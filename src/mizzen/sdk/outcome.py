"""What one attempt of a call gave (`Outcome`), and the answers the SDK gives itself (`Synthetic`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Outcome:
    """One attempt: a response (`status`, `value`: the transport's response object) or an error kind
    ("connect-failure", "reset", "timeout") with the exception."""

    status: int | None = None
    value: Any = None
    error: str | None = None
    exc: BaseException | None = None
    grpc: str | None = None  # the gRPC status of a failed gRPC call, as retryOn names it ("unavailable" ...)


@dataclass(frozen=True)
class Synthetic:
    """An answer the SDK gives itself, as Envoy would (its response flag: NR, UH, URX, UT, RL, FI, DR, NC)."""

    status: int
    body: str
    flag: str
    grpc: bool = False
