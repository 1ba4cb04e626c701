"""The Prometheus text exposition format (version 0.0.4) of a sidecar's Istio series. PURE."""
from __future__ import annotations

from typing import Iterable, Mapping

from . import istio
from .aggregate import Aggregator, Histogram, HttpSeries, TcpSeries, sum_http

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    body = ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values))
    if extra:
        body = f"{body},{extra}" if body else extra
    return "{" + body + "}"


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def _histogram(out: list[str], fam: istio.Family, key: tuple[str, ...], h: Histogram) -> None:
    cum = 0
    for bound, c in zip(list(fam.buckets) + [float("inf")], h.counts):
        cum += c
        le = 'le="' + _num(bound) + '"'
        out.append(f"{fam.name}_bucket{_labels(fam.labels, key, le)} {cum}")
    out.append(f"{fam.name}_sum{_labels(fam.labels, key)} {_num(round(h.sum, 6))}")
    out.append(f"{fam.name}_count{_labels(fam.labels, key)} {h.count}")


def _header(out: list[str], fam: istio.Family) -> None:
    name = fam.name + ("_total" if fam.kind == "counter" else "")
    out.append(f"# HELP {name} {fam.help}")
    out.append(f"# TYPE {name} {fam.kind}")


def render(agg: Aggregator, native: Mapping[tuple[str, ...], HttpSeries] | None = None) -> str:
    """All Istio families with at least one series (a family with none is left out, as Envoy does). `native`:
    HTTP series converted from Envoy's own stats (`native.Converter`), added to the aggregator's label set by
    label set, so that each family is rendered once."""
    return render_series(sum_http(agg.http, native) if native else agg.http, agg.tcp)


def render_series(http: Mapping[tuple[str, ...], HttpSeries], tcp: Mapping[tuple[str, ...], TcpSeries]) -> str:
    out: list[str] = []
    http_rows = sorted(http.items())
    tcp_rows = sorted(tcp.items())
    if http_rows:
        _header(out, istio.REQUESTS)
        for key, s in http_rows:
            out.append(f"istio_requests_total{_labels(istio.HTTP_LABELS, key)} {s.requests}")
        for fam, attr in ((istio.DURATION, "duration"), (istio.REQUEST_BYTES, "request_bytes"),
                          (istio.RESPONSE_BYTES, "response_bytes")):
            _header(out, fam)
            for key, s in http_rows:
                _histogram(out, fam, key, getattr(s, attr))
    if tcp_rows:
        for fam, attr in ((istio.TCP_SENT, "sent"), (istio.TCP_RECEIVED, "received"),
                          (istio.TCP_OPENED, "opened"), (istio.TCP_CLOSED, "closed")):
            _header(out, fam)
            for key, s in tcp_rows:
                out.append(f"{fam.name}_total{_labels(istio.TCP_LABELS, key)} {getattr(s, attr)}")
    return "\n".join(out) + ("\n" if out else "")


def render_gauges(prefix: str, values: Iterable[tuple[str, str, float]]) -> str:
    """Simple untyped self-metrics: (name, help, value) -> `prefix_name value`."""
    out = []
    for name, help_, value in values:
        out.append(f"# HELP {prefix}_{name} {help_}")
        out.append(f"# TYPE {prefix}_{name} gauge")
        out.append(f"{prefix}_{name} {_num(value)}")
    return "\n".join(out) + ("\n" if out else "")


def merge(*texts: str) -> str:
    """Concatenate expositions (Envoy's, the agent's, the app's): each ends with a newline."""
    return "".join(t if t.endswith("\n") or not t else t + "\n" for t in texts if t)
