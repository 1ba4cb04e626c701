"""A hand-written protobuf codec for the rate-limit service's one call (pure): `RateLimitRequest` bytes → what
`engine.plan` needs, and an `engine.Answer` → `RateLimitResponse` bytes, without building message objects.

The service serves `ShouldRateLimit` through a generic gRPC handler on raw bytes with this codec (as
`server/ads.py` does for xDS): the request is walked once, the response written once. Fields the service does
not use (descriptor `limit` overrides, `dynamic_metadata`, `quota`) are skipped or never written. Equivalence
with the generated classes is tested both ways (`tests/ratelimit/test_wire.py`).

    RateLimitRequest   1 domain (string), 2 descriptors (RateLimitDescriptor), 3 hits_addend (uint32)
    RateLimitDescriptor  1 entries (Entry: 1 key, 2 value), 2 limit (skipped), 3 hits_addend (UInt32Value: 1)
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

Descriptor = tuple[list[tuple[str, str]], "int | None"]


class DecodeError(ValueError):
    pass


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = out = 0
    while True:
        if i >= len(b):
            raise DecodeError("truncated varint")
        c = b[i]
        i += 1
        out |= (c & 0x7F) << shift
        if c < 0x80:
            return out, i
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def _skip(b: bytes, i: int, wt: int) -> int:
    if wt == 0:
        return _varint(b, i)[1]
    if wt == 1:
        return i + 8
    if wt == 2:
        n, i = _varint(b, i)
        return i + n
    if wt == 5:
        return i + 4
    raise DecodeError(f"unsupported wire type {wt}")


def _fields(b: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value) where value is an int (varint) or (start, end) of a length-delimited."""
    i, end = start, len(b) if end is None else end
    while i < end:
        key, i = _varint(b, i)
        fn, wt = key >> 3, key & 7
        if wt == 2:
            n, i = _varint(b, i)
            if i + n > end:
                raise DecodeError("truncated field")
            yield fn, wt, (i, i + n)
            i += n
        elif wt == 0:
            v, i = _varint(b, i)
            yield fn, wt, v
        else:
            i = _skip(b, i, wt)
    if i != end:
        raise DecodeError("truncated message")


def decode_request(b: bytes) -> tuple[str, list[Descriptor], int]:
    """(domain, [(entries, descriptor hits_addend or None)], request hits_addend)."""
    domain, descs, hits = "", [], 0
    for fn, wt, v in _fields(b):
        if fn == 1 and wt == 2:
            domain = b[v[0]:v[1]].decode()
        elif fn == 2 and wt == 2:
            descs.append(_descriptor(b, *v))
        elif fn == 3 and wt == 0:
            hits = v
    return domain, descs, hits


def _descriptor(b: bytes, start: int, end: int) -> Descriptor:
    entries: list[tuple[str, str]] = []
    hits = None
    for fn, wt, v in _fields(b, start, end):
        if fn == 1 and wt == 2:
            key = value = ""
            for efn, ewt, ev in _fields(b, *v):
                if ewt == 2 and efn == 1:
                    key = b[ev[0]:ev[1]].decode()
                elif ewt == 2 and efn == 2:
                    value = b[ev[0]:ev[1]].decode()
            entries.append((key, value))
        elif fn == 3 and wt == 2:
            hits = 0
            for hfn, hwt, hv in _fields(b, *v):
                if hfn == 1 and hwt == 0:
                    hits = hv
    return entries, hits


# ------------------------------------------------------------------------------------------ encoding

def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        c = n & 0x7F
        n >>= 7
        if n:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def _ld(fn: int, payload: bytes) -> bytes:
    return _enc_varint(fn << 3 | 2) + _enc_varint(len(payload)) + payload


def _vi(fn: int, n: int) -> bytes:
    return _enc_varint(fn << 3) + _enc_varint(n) if n else b""


def _header(fn: int, k: str, v: str) -> bytes:
    return _ld(fn, _ld(1, k.encode()) + _ld(2, v.encode()))


_LIMIT_CACHE: dict[tuple[str, int, float], bytes] = {}


def current_limit(lim: CompiledLimit) -> bytes:
    """The limit as Envoy's (requests_per_unit, unit, name): the user's unit, else the smallest whole one."""
    key = (lim.id, lim.quota, lim.rate.period)
    hit = _LIMIT_CACHE.get(key)
    if hit is not None:
        return hit
    per_s = lim.quota / lim.rate.period
    rpu, unit = max(1, int(per_s * 86400)), DAY
    for secs, u in _UNITS:
        if abs(lim.rate.period - secs) < 1e-9:
            rpu, unit = lim.quota, u
            break
    else:
        for secs, u in _UNITS:
            n = per_s * secs
            if n >= 1 and abs(n - round(n)) < 1e-6:
                rpu, unit = int(round(n)), u
                break
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
