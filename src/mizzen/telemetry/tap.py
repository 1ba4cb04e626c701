"""Live requests through Envoy's tap filter (`envoy.filter.http.tap` with an admin config id). PURE.

The agent (the only one talking to its Envoy's admin socket) POSTs `tap_request(...)` to `/tap`; Envoy then
streams one JSON `TraceWrapper` per matching request for as long as the HTTP response is read, and taps
nothing once it is closed. `TapStream` splits that byte stream into traces; `event_of` turns one into the
row `mizzen tap` prints. Bounds: `max_events` and `max_seconds` are enforced by the caller (see the agent);
bodies are never recorded (`max_buffered_*_bytes` 0).
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Mapping

from .envoy import TAP_CONFIG_ID
from .peers import Directory, split_host

METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
MAX_EVENTS = 10000
MAX_SECONDS = 600.0


class TapError(ValueError):
    pass


def tap_request(path_prefix: str = "", method: str = "", authority: str = "",
                config_id: str = TAP_CONFIG_ID) -> dict[str, Any]:
    """The admin `/tap` body: match on path prefix / method / authority (all optional: all requests)."""
    rules = []
    if path_prefix:
        if not path_prefix.startswith("/"):
            raise TapError(f"--path must start with '/': {path_prefix!r}")
        rules.append({"http_request_headers_match": {"headers": [
            {"name": ":path", "string_match": {"prefix": path_prefix}}]}})
    if method:
        if method.upper() not in METHODS:
            raise TapError(f"--method must be an HTTP method ({', '.join(sorted(METHODS))}): {method!r}")
        rules.append({"http_request_headers_match": {"headers": [
            {"name": ":method", "string_match": {"exact": method.upper()}}]}})
    if authority:
        rules.append({"http_request_headers_match": {"headers": [
            {"name": ":authority", "string_match": {"prefix": authority}}]}})
    match: dict[str, Any] = {"any_match": True} if not rules else rules[0] if len(rules) == 1 else \
        {"and_match": {"rules": rules}}
    return {"config_id": config_id, "tap_config": {
        "match": match,
        "output_config": {"sinks": [{"format": "JSON_BODY_AS_STRING", "streaming_admin": {}}],
                          "max_buffered_rx_bytes": 0, "max_buffered_tx_bytes": 0},
    }}


class TapStream:
    """Feed bytes as they arrive; iterate the complete JSON documents found so far."""

    def __init__(self, max_buffer: int = 1 << 20) -> None:
        self._buf = ""
        self._dec = json.JSONDecoder()
        self.max_buffer = max_buffer

    def feed(self, data: bytes | str) -> Iterator[dict[str, Any]]:
        self._buf += data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        while True:
            s = self._buf.lstrip()
            if not s:
                self._buf = ""
                return
            try:
                obj, end = self._dec.raw_decode(s)
            except json.JSONDecodeError:
                self._buf = s
                if len(self._buf) > self.max_buffer:
                    raise TapError(f"tap stream: a trace larger than {self.max_buffer} bytes")
                return
            self._buf = s[end:]
            if isinstance(obj, dict):
                yield obj


def _headers(msg: Mapping[str, Any]) -> dict[str, str]:
    return {h.get("key", "").lower(): h.get("value", "") for h in msg.get("headers", ())}


def _addr(conn: Mapping[str, Any] | None, key: str) -> str:
    sa = ((conn or {}).get(key) or {}).get("socket_address") or {}
    return f"{sa['address']}:{sa.get('port_value', 0)}" if sa.get("address") else ""


def _ts(value: str | None) -> float | None:
    """RFC 3339 timestamp (proto JSON) -> epoch seconds."""
    if not value:
        return None
    from datetime import datetime
    v = value.rstrip("Z")
    frac = ""
    if "." in v:
        v, frac = v.split(".", 1)
    try:
        base = datetime.fromisoformat(v + "+00:00").timestamp()
    except ValueError:
        return None
    return base + (float("0." + frac) if frac.isdigit() else 0.0)


def event_of(trace: Mapping[str, Any], directory: Directory | None = None, reporter: str = "") -> dict[str, Any] | None:
    """One `TraceWrapper` -> {method, path, authority, status, latencyMs, source, destination, ...}."""
    t = trace.get("http_buffered_trace")
    if not t:
        return None
    rq, rs = t.get("request") or {}, t.get("response") or {}
    h, rh = _headers(rq), _headers(rs)
    src = _addr(t.get("downstream_connection"), "remote_address")
    dst = _addr(t.get("upstream_connection"), "remote_address")
    t0, t1 = _ts(rq.get("headers_received_time")), _ts(rs.get("headers_received_time"))

    def name(hostport: str) -> str:
        if not hostport or directory is None:
            return hostport
        host, port = split_host(hostport)
        w = directory.workload_at(host, port)
        return f"{w.workload}.{w.namespace}" if w.workload != "unknown" else hostport
    return {
        "reporter": reporter, "method": h.get(":method", ""), "path": h.get(":path", "")[:1024],
        "authority": h.get(":authority", ""), "status": int(rh.get(":status", "0") or 0),
        "grpcStatus": _headers({"headers": rs.get("trailers", ())}).get("grpc-status", rh.get("grpc-status", "")),
        "latencyMs": round((t1 - t0) * 1000, 3) if t0 is not None and t1 is not None else None,
        "source": name(src), "destination": name(dst), "requestId": h.get("x-request-id", ""),
        "traceparent": h.get("traceparent", ""),
    }
