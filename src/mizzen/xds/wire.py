"""Marshal once: build DiscoveryResponse / DeltaDiscoveryResponse bytes from pre-serialized resources.

A `Rendered` resource is shared by every proxy that receives it, so its `google.protobuf.Any` encoding (and
the Delta `Resource` wrapper around it) is computed once and cached on the `Rendered` object itself; a response
is then only the concatenation of a few field encodings.  The output is byte-for-byte what protobuf's
deterministic serializer produces for the same message (fields in field-number order, proto3 defaults omitted).

Field numbers (envoy/service/discovery/v3/discovery.proto):
  DiscoveryResponse:      version_info=1, resources=2 (Any), type_url=4, nonce=5
  DeltaDiscoveryResponse: system_version_info=1, resources=2 (Resource), type_url=4, nonce=5, removed_resources=6
  Resource:               version=1, resource=2 (Any), name=3
  google.protobuf.Any:    type_url=1, value=2
"""
from __future__ import annotations

from typing import Iterable

from mizzen.model.types import Rendered

__all__ = ["varint", "field_bytes", "any_bytes", "delta_resource_bytes", "sotw_response", "delta_response"]

_ANY_ATTR = "_mizzen_any"
_DELTA_ATTR = "_mizzen_delta_resource"
_ANY_FIELD_ATTR = "_mizzen_any_field"
_DELTA_FIELD_ATTR = "_mizzen_delta_field"
# Fallback cache for Rendered-like objects that refuse attributes (e.g. __slots__); bounded.
_FALLBACK: dict[tuple[str, str, str, str], bytes] = {}
_FALLBACK_MAX = 50_000


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field_number: int) -> bytes:  # wire type 2 (length-delimited)
    return varint((field_number << 3) | 2)


_TAGS = {n: _tag(n) for n in range(1, 16)}


def field_bytes(field_number: int, value: bytes | str) -> bytes:
    """Encoding of one length-delimited field (string, bytes or embedded message)."""
    if isinstance(value, str):
        value = value.encode()
    tag = _TAGS.get(field_number) or _tag(field_number)
    return tag + varint(len(value)) + value


def _opt(field_number: int, value: str) -> bytes:
    """A proto3 string field: omitted when empty."""
    return field_bytes(field_number, value) if value else b""


def _cached(r: Rendered, attr: str, kind: str, build) -> bytes:
    d = getattr(r, "__dict__", None)
    if d is not None:
        b = d.get(attr)
        if b is None:
            b = build()
            d[attr] = b  # frozen dataclass: write through __dict__, the value is derived from immutable fields
        return b
    key = (kind, r.type_url, r.name, r.version)
    b = _FALLBACK.get(key)
    if b is None:
        if len(_FALLBACK) >= _FALLBACK_MAX:
            _FALLBACK.clear()
        b = _FALLBACK[key] = build()
    return b


def any_bytes(r: Rendered) -> bytes:
    """The serialized `google.protobuf.Any{type_url, value=payload}` of a rendered resource (cached)."""
    return _cached(r, _ANY_ATTR, "any", lambda: _opt(1, r.type_url) + (field_bytes(2, r.payload) if r.payload else b""))


def delta_resource_bytes(r: Rendered) -> bytes:
    """The serialized `envoy.service.discovery.v3.Resource{version, resource: Any, name}` (cached)."""
    return _cached(r, _DELTA_ATTR, "delta",
                   lambda: _opt(1, r.version) + field_bytes(2, any_bytes(r)) + _opt(3, r.name))


def _any_field(r: Rendered) -> bytes:
    """`resources` field (2) of a DiscoveryResponse holding this resource's Any: tag + length + Any (cached)."""
    return _cached(r, _ANY_FIELD_ATTR, "anyf", lambda: field_bytes(2, any_bytes(r)))


def _delta_field(r: Rendered) -> bytes:
    """`resources` field (2) of a DeltaDiscoveryResponse holding this resource's Resource (cached)."""
    return _cached(r, _DELTA_FIELD_ATTR, "deltaf", lambda: field_bytes(2, delta_resource_bytes(r)))


class _BodyCache:
    """Bounded LRU of encoded `resources` runs, keyed by (type_url, version_info).

    A SotW version is a hash of the (name, content version) pairs, so equal keys mean equal bytes: proxies that
    get the same set share one concatenation (1000 sidecars with the same 100 endpoints join it once).
    Like `shared.IdentityMemo`, an entry not used in this generation or the one before (`advance()`, once per
    pushed snapshot) is dropped: old versions are not asked for again."""

    def __init__(self, max_entries: int = 512, max_bytes: int = 128 * 1024 * 1024) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._d: dict[tuple[str, str], tuple[bytes, int]] = {}
        self._bytes = 0
        self.gen = 0

    def get(self, key: tuple[str, str]) -> bytes | None:
        e = self._d.pop(key, None)
        if e is None:
            return None
        self._d[key] = (e[0], self.gen)  # most recently used last
        return e[0]

    def put(self, key: tuple[str, str], b: bytes) -> None:
        if len(b) > self.max_bytes // 4:
            return
        old = self._d.pop(key, None)
        if old is not None:
            self._bytes -= len(old[0])
        self._d[key] = (b, self.gen)
        self._bytes += len(b)
        while len(self._d) > self.max_entries or self._bytes > self.max_bytes:
            first = next(iter(self._d))
            self._bytes -= len(self._d.pop(first)[0])

    def advance(self) -> None:
        self.gen += 1
        floor = self.gen - 1
        for k in [k for k, e in self._d.items() if e[1] < floor]:
            self._bytes -= len(self._d.pop(k)[0])


SOTW_BODIES = _BodyCache()


def sotw_response(type_url: str, version_info: str, resources: Iterable[Rendered], nonce: str,
                  shared: bool = True) -> bytes:
    """Serialized `DiscoveryResponse`.

    With `shared` (the default), `version_info` must identify the resource set (as `xds.stream.version_of`
    does): the encoded resources are then reused for every response with the same type and version."""
    key = (type_url, version_info)
    body = SOTW_BODIES.get(key) if shared and version_info else None
    if body is None:
        body = b"".join([_any_field(r) for r in resources])
        if shared and version_info:
            SOTW_BODIES.put(key, body)
    return b"".join((_opt(1, version_info), body, _opt(4, type_url), _opt(5, nonce)))


def delta_response(type_url: str, system_version_info: str, resources: Iterable[Rendered],
                   removed: Iterable[str], nonce: str) -> bytes:
    """Serialized `DeltaDiscoveryResponse`."""
    parts = [_opt(1, system_version_info)]
    parts.extend([_delta_field(r) for r in resources])
    parts.append(_opt(4, type_url))
    parts.append(_opt(5, nonce))
    for name in removed:
        parts.append(field_bytes(6, name))
    return b"".join(parts)
