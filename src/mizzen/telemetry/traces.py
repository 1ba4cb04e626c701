"""Spans and a bounded in-memory trace store: the embedded trace backend of a mesh. PURE.

Spans arrive as OTLP (`ExportTraceServiceRequest`, from Envoy's OpenTelemetry tracer) or as Zipkin v2 JSON
(from Envoy's Zipkin tracer, the B3 + W3C mode); both become `Span`s. The store keeps at most `max_traces`
traces (the least recently updated one goes first) and `max_spans` spans per trace, so its memory is bounded
whatever arrives.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
MAX_ATTRIBUTES = 64
MAX_VALUE = 512


@dataclass(frozen=True)
class Span:
    trace_id: str  # 32 lower-case hex
    span_id: str  # 16 hex
    parent_id: str  # "" for a root span
    name: str
    service: str
    kind: str  # SERVER | CLIENT | ...
    start_ns: int
    end_ns: int
    error: bool = False
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def duration_ms(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / 1e6

    def attr(self, key: str, default: str = "") -> str:
        for k, v in self.attributes:
            if k == key:
                return v
        return default

    def to_dict(self) -> dict[str, Any]:
        return {"traceId": self.trace_id, "spanId": self.span_id, "parentId": self.parent_id, "name": self.name,
                "service": self.service, "kind": self.kind, "startNs": self.start_ns, "endNs": self.end_ns,
                "durationMs": round(self.duration_ms, 3), "error": self.error, "attributes": dict(self.attributes)}


def _value(v) -> str:  # opentelemetry.proto.common.v1.AnyValue
    which = v.WhichOneof("value")
    if which is None:
        return ""
    x = getattr(v, which)
    if which in ("array_value", "kvlist_value"):
        return str(x)[:MAX_VALUE]
    if which == "bytes_value":
        return x.hex()[:MAX_VALUE]
    return str(x)[:MAX_VALUE]


def scope_spans(rs):
    """A ResourceSpans' spans by scope. The `opentelemetry/proto` modules may be opentelemetry-proto's (field 2 is
    `scope_spans`) or the older copy xds-protos also installs at the same path (field 2 is
    `instrumentation_library_spans`, the same wire format): whichever pip installed last."""
    return rs.scope_spans if hasattr(rs, "scope_spans") else rs.instrumentation_library_spans


def spans_from_otlp(req) -> list[Span]:
    """An `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` -> spans."""
    out = []
    for rs in req.resource_spans:
        service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "unknown")
        for ss in scope_spans(rs):
            for s in ss.spans:
                attrs = tuple((a.key, _value(a.value)) for a in list(s.attributes)[:MAX_ATTRIBUTES])
                status_err = s.status.code == 2  # STATUS_CODE_ERROR
                code = dict(attrs).get("http.status_code", "") or dict(attrs).get("http.response.status_code", "")
                out.append(Span(
                    trace_id=s.trace_id.hex(), span_id=s.span_id.hex(), parent_id=s.parent_span_id.hex(),
                    name=s.name, service=service, kind=KINDS.get(s.kind, "UNSPECIFIED"),
                    start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                    error=status_err or code.startswith("5") or dict(attrs).get("error") == "true",
                    attributes=attrs))
    return out


def spans_from_zipkin(items: Iterable[Mapping[str, Any]]) -> list[Span]:
    """Zipkin v2 JSON spans (a list of objects) -> spans. Raises ValueError on a malformed span."""
    out = []
    for i, z in enumerate(items):
        if not isinstance(z, Mapping):
            raise ValueError(f"span {i}: not an object")
        try:
            trace_id, span_id = str(z["traceId"]).lower(), str(z["id"]).lower()
            start_us, dur_us = int(z.get("timestamp", 0)), int(z.get("duration", 0))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"span {i}: {e}") from e
        tags = {str(k): str(v)[:MAX_VALUE] for k, v in list((z.get("tags") or {}).items())[:MAX_ATTRIBUTES]}
        local = z.get("localEndpoint") or {}
        out.append(Span(
            trace_id=trace_id.rjust(32, "0"), span_id=span_id, parent_id=str(z.get("parentId") or "").lower(),
            name=str(z.get("name") or ""), service=str(local.get("serviceName") or "unknown"),
            kind=str(z.get("kind") or "UNSPECIFIED").upper(), start_ns=start_us * 1000,
            end_ns=(start_us + dur_us) * 1000,
            error="error" in tags or tags.get("http.status_code", "").startswith("5"),
            attributes=tuple(sorted(tags.items()))))
    return out


@dataclass
class Trace:
    trace_id: str
    spans: dict[str, Span] = field(default_factory=dict)
    dropped: int = 0

    @property
    def start_ns(self) -> int:
        return min((s.start_ns for s in self.spans.values()), default=0)

    @property
    def end_ns(self) -> int:
        return max((s.end_ns for s in self.spans.values()), default=0)

    def root(self) -> Span | None:
        ids = set(self.spans)
        roots = [s for s in self.spans.values() if not s.parent_id or s.parent_id not in ids]
        return min(roots, key=lambda s: s.start_ns) if roots else None

    def summary(self) -> dict[str, Any]:
        root = self.root()
        services = sorted({s.service for s in self.spans.values()})
        return {"traceId": self.trace_id, "root": root.name if root else "", "rootService": root.service if root else "",
                "services": services, "spans": len(self.spans), "startNs": self.start_ns,
                "durationMs": round((self.end_ns - self.start_ns) / 1e6, 3),
                "error": any(s.error for s in self.spans.values()), "dropped": self.dropped}


class TraceStore:
    def __init__(self, max_traces: int = 2000, max_spans: int = 500) -> None:
        self.max_traces, self.max_spans = max_traces, max_spans
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self.received = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._traces)

    def add(self, spans: Iterable[Span]) -> None:
        for s in spans:
            self.received += 1
            t = self._traces.get(s.trace_id)
            if t is None:
                t = self._traces[s.trace_id] = Trace(s.trace_id)
                while len(self._traces) > self.max_traces:
                    self._traces.popitem(last=False)
                    self.evicted += 1
            else:
                self._traces.move_to_end(s.trace_id)
            if s.span_id in t.spans or len(t.spans) < self.max_spans:
                t.spans[s.span_id] = s
            else:
                t.dropped += 1

    def get(self, trace_id: str) -> Trace | None:
        return self._traces.get(trace_id.lower())

    def recent(self, limit: int = 50, service: str = "", errors_only: bool = False,
               min_duration_ms: float = 0.0) -> list[dict[str, Any]]:
        """Summaries of the most recent traces (by start), newest first, filtered."""
        out = []
        for t in self._traces.values():
            sm = t.summary()
            if service and service not in sm["services"]:
                continue
            if errors_only and not sm["error"]:
                continue
            if sm["durationMs"] < min_duration_ms:
                continue
            out.append(sm)
        out.sort(key=lambda s: -s["startNs"])
        return out[:limit]

    def waterfall(self, trace_id: str) -> list[dict[str, Any]]:
        """The trace's spans depth-first in start order, each with `depth` and `offsetMs` from the trace start.
        Spans whose parent is missing are shown as roots."""
        t = self.get(trace_id)
        if t is None:
            return []
        children: dict[str, list[Span]] = {}
        ids = set(t.spans)
        roots = []
        for s in t.spans.values():
            if s.parent_id and s.parent_id in ids:
                children.setdefault(s.parent_id, []).append(s)
            else:
                roots.append(s)
        t0 = t.start_ns
        rows: list[dict[str, Any]] = []

        def walk(s: Span, depth: int) -> None:
            rows.append({**s.to_dict(), "depth": depth, "offsetMs": round((s.start_ns - t0) / 1e6, 3)})
            for c in sorted(children.get(s.span_id, ()), key=lambda x: x.start_ns):
                walk(c, depth + 1)

        for r in sorted(roots, key=lambda x: x.start_ns):
            walk(r, 0)
        return rows
