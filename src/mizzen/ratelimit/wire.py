"""A hand-written protobuf encoder for the rate-limit service's answer (pure): an `engine.Answer` →
`RateLimitResponse` bytes, without building message objects (as `server/ads.py` writes xDS responses).

The service serves `ShouldRateLimit` through a generic gRPC handler on raw bytes: requests are parsed by
protobuf's C runtime (faster than any Python-level decoder, measured) and the plan is memoized per request
bytes; answers are written here, from cached pieces (each limit's `current_limit`, each header line), about
twice as fast as filling and serializing the generated classes. Equivalence with them is tested
(`tests/ratelimit/test_wire.py`); `encode_descriptors` writes requests for tests and the benchmark's clients.

    RateLimitRequest   1 domain (string), 2 descriptors (RateLimitDescriptor: 1 entries (Entry: 1 key, 2 value)),
                       3 hits_addend (uint32)
    RateLimitResponse  1 overall_code (enum), 2 statuses, 3 response_headers_to_add (HeaderValue: 1 key,
                       2 value), 4 request_headers_to_add, 5 raw_body (bytes)
    DescriptorStatus   1 code, 2 current_limit (RateLimit: 1 requests_per_unit, 2 unit, 3 name),
                       3 limit_remaining, 4 duration_until_reset (Duration: 1 seconds, 2 nanos)
"""
from __future__ import annotations

import math
from typing import Sequence

from .engine import Answer
from .table import CompiledLimit

OK, OVER_LIMIT = 1, 2
SECOND, MINUTE, HOUR, DAY = 1, 2, 3, 4
_UNITS = ((1.0, SECOND), (60.0, MINUTE), (3600.0, HOUR), (86400.0, DAY))

# ------------------------------------------------------------------------------------------ encoding

_SMALL = [bytes((i,)) for i in range(128)]


def _enc_varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while True:
        c = n & 0x7F
        n >>= 7
        if n:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


_TAG_LD = [bytes((fn << 3 | 2,)) for fn in range(16)]
_TAG_VI = [bytes((fn << 3,)) for fn in range(16)]


def _ld(fn: int, payload: bytes) -> bytes:
    n = len(payload)
    return _TAG_LD[fn] + (_SMALL[n] if n < 128 else _enc_varint(n)) + payload


def _vi(fn: int, n: int) -> bytes:
    if not n:
        return b""
    return _TAG_VI[fn] + (_SMALL[n] if n < 128 else _enc_varint(n))


_HEADER_CACHE: dict[tuple[int, str, str], bytes] = {}


def _header(fn: int, k: str, v: str) -> bytes:
    key = (fn, k, v)
    hit = _HEADER_CACHE.get(key)
    if hit is None:  # a few hundred distinct (name, value) pairs in practice: limits, remaining counts, resets
        if len(_HEADER_CACHE) > 8192:
            _HEADER_CACHE.clear()
        hit = _HEADER_CACHE[key] = _ld(fn, _ld(1, k.encode()) + _ld(2, v.encode()))
    return hit


_LIMIT_CACHE: dict[tuple[str, int, float], bytes] = {}


def current_limit_fields(lim: CompiledLimit) -> tuple[int, int]:
    """The limit as Envoy's (requests_per_unit, unit): the user's unit, else the smallest whole one."""
    per_s = lim.quota / lim.rate.period
    for secs, u in _UNITS:
        if abs(lim.rate.period - secs) < 1e-9:
            return lim.quota, u
    for secs, u in _UNITS:
        n = per_s * secs
        if n >= 1 and abs(n - round(n)) < 1e-6:
            return int(round(n)), u
    return max(1, int(per_s * 86400)), DAY


def current_limit(lim: CompiledLimit) -> bytes:
    """The encoded RateLimit message of `current_limit_fields` plus the limit's name."""
    key = (lim.id, lim.quota, lim.rate.period)
    hit = _LIMIT_CACHE.get(key)
    if hit is not None:
        return hit
    rpu, unit = current_limit_fields(lim)
    out = _vi(1, rpu) + _vi(2, unit) + _ld(3, lim.id.encode())
    if len(_LIMIT_CACHE) > 4096:
        _LIMIT_CACHE.clear()
    _LIMIT_CACHE[key] = out
    return out


def _duration(seconds: float) -> bytes:
    if not math.isfinite(seconds):
        return _vi(1, 86400)
    ns = int(max(0.0, seconds) * 1e9)
    return _vi(1, ns // 1_000_000_000) + _vi(2, ns % 1_000_000_000)


_OK_STATUS = _ld(2, _vi(1, OK))


def encode_response(answer: Answer) -> bytes:
    parts = [_vi(1, OK if answer.ok else OVER_LIMIT)]
    for s in answer.statuses:
        if s.limit is not None and s.decision is not None and not s.limit.shadow:
            st = _vi(1, OVER_LIMIT if s.over else OK) + _ld(2, current_limit(s.limit)) + \
                _vi(3, max(0, s.decision.remaining)) + _ld(4, _duration(s.decision.reset_after))
            parts.append(_ld(2, st))
        elif s.over:
            parts.append(_ld(2, _vi(1, OVER_LIMIT)))
        else:
            parts.append(_OK_STATUS)
    parts += [_header(3, k, v) for k, v in answer.response_headers]
    parts += [_header(4, k, v) for k, v in answer.request_headers]
    if not answer.ok and answer.body:
        parts.append(_ld(5, answer.body.encode()))
    return b"".join(parts)


def encode_descriptors(domain: str, descriptors: Sequence[Sequence[tuple[str, str]]], hits: int = 0) -> bytes:
    """A RateLimitRequest (for tests and the benchmark's clients)."""
    parts = [_ld(1, domain.encode())]
    for d in descriptors:
        parts.append(_ld(2, b"".join(_ld(1, _ld(1, k.encode()) + _ld(2, v.encode())) for k, v in d)))
    if hits:
        parts.append(_vi(3, hits))
    return b"".join(parts)
