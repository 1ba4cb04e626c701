"""Golden metrics (request rate, success rate, latency percentiles) from the sidecars' windows. PURE.

Input: `Window.snapshot()` documents of any number of sidecars (the agent's `GET /telemetry/window`).
Output: rows for `mizzen stat -o json` — each with `name`, `namespace`, `requests`, `rps`, `success_rate`
(0..1, None without requests), `p50_ms`, `p95_ms`, `p99_ms` — and edges for the console's topology.

Which reports count (each request is reported up to twice, by the caller's and the callee's sidecar):
- a *workload* row counts what its own sidecars served (reporter=destination), as `linkerd viz stat`;
- a *service* row counts what callers experienced (reporter=source: includes failures that never reached a
  replica, e.g. no healthy upstream), plus destination reports from callers without a sidecar;
- an *edge* is source-reported when the caller has a sidecar, destination-reported otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .istio import DURATION_BUCKETS_MS, UNKNOWN
from .peers import service_parts


def quantile(q: float, bounds: Iterable[float], counts: Iterable[int]) -> float | None:
    """Prometheus' histogram_quantile over non-cumulative bucket counts (the last one is +Inf): linear
    interpolation inside the bucket holding the q-th observation; in the +Inf bucket, the highest bound."""
    bounds, counts = list(bounds), list(counts)
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cum = 0
    for i, c in enumerate(counts):
        if c and cum + c >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i]
            return lower + (upper - lower) * ((rank - cum) / c)
        cum += c
    return float(bounds[-1])


@dataclass
class Acc:
    requests: int = 0
    success: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_MS) + 1))
    sum_ms: float = 0.0

    def add(self, row: Mapping[str, Any]) -> None:
        self.requests += int(row.get("requests", 0))
        self.success += int(row.get("success", 0))
        for i, c in enumerate(row.get("durationCounts", ())[: len(self.counts)]):
            self.counts[i] += int(c)
        self.sum_ms += float(row.get("durationSum", 0.0))

    def golden(self, seconds: float) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)
        return {
            "requests": self.requests,
            "rps": round(self.requests / seconds, 3) if seconds > 0 else 0.0,
            "success_rate": round(self.success / self.requests, 4) if self.requests else None,
            "p50_ms": r(quantile(0.50, DURATION_BUCKETS_MS, self.counts)),
            "p95_ms": r(quantile(0.95, DURATION_BUCKETS_MS, self.counts)),
            "p99_ms": r(quantile(0.99, DURATION_BUCKETS_MS, self.counts)),
        }


def _rows(snapshots: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], float]:
    rows: list[Mapping[str, Any]] = []
    seconds = 0.0
    for s in snapshots:
        rows.extend(s.get("rows", ()))
        seconds = max(seconds, float(s.get("seconds", 0.0)))
    return rows, seconds


def _source_reporters(rows: list[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(r["source_workload"], r["source_workload_namespace"]) for r in rows if r["reporter"] == "source"}


def _service_rows(rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    reporters = _source_reporters(rows)
    return [r for r in rows if r["reporter"] == "source" or
            (r["source_workload"], r["source_workload_namespace"]) not in reporters]


def stat(snapshots: Iterable[Mapping[str, Any]], *, kind: str = "workload", by: str | None = None,
         namespace: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
    """Rows of `mizzen stat` (`kind` workload|service, `by` None|version|caller), sorted by namespace, name."""
    if kind not in ("workload", "service"):
        raise ValueError(f"kind must be workload or service, not {kind!r}")
    if by not in (None, "version", "caller"):
        raise ValueError(f"by must be version or caller, not {by!r}")
    rows, seconds = _rows(snapshots)
    if kind == "workload":
        rows = [r for r in rows if r["reporter"] == "destination"]
    else:
        rows = _service_rows(rows)
    groups: dict[tuple[str, ...], Acc] = {}
    for r in rows:
        if kind == "workload":
            n, ns = r["destination_workload"], r["destination_workload_namespace"]
        else:
            n, ns = service_parts(r["destination_service"])
        if (namespace and ns != namespace) or (name and n != name):
            continue
        extra: tuple[str, ...] = ()
        if by == "version":
            extra = (r["destination_version"],)
        elif by == "caller":
            extra = (r["source_workload"], r["source_workload_namespace"])
        groups.setdefault((ns, n) + extra, Acc()).add(r)
    out = []
    for key, acc in sorted(groups.items()):
        row: dict[str, Any] = {"name": key[1], "namespace": key[0]}
        if by == "version":
            row["version"] = key[2]
        elif by == "caller":
            row["caller"], row["caller_namespace"] = key[2], key[3]
        row.update(acc.golden(seconds))
        out.append(row)
    return out


EDGE_KEYS = {
    "full": ("source_workload", "source_workload_namespace", "destination_service", "destination_workload",
             "destination_workload_namespace", "destination_version"),
    "caller": ("source_workload", "source_workload_namespace", "destination_service"),
    "version": ("destination_service", "destination_workload", "destination_workload_namespace",
                "destination_version"),
}
_EDGE_NAMES = {"source_workload": "source", "source_workload_namespace": "source_namespace",
               "destination_service": "service", "destination_workload": "destination",
               "destination_workload_namespace": "destination_namespace", "destination_version": "version"}


def edges(snapshots: Iterable[Mapping[str, Any]], split: str = "full") -> list[dict[str, Any]]:
    """Edges with golden metrics, each request counted once: `full` caller -> service -> workload/version;
    `caller` caller -> service (all versions together); `version` service -> workload/version."""
    keys = EDGE_KEYS[split]
    rows, seconds = _rows(snapshots)
    groups: dict[tuple[str, ...], Acc] = {}
    for r in _service_rows(rows):
        groups.setdefault(tuple(r[k] for k in keys), Acc()).add(r)
    return [{**{_EDGE_NAMES[k]: v for k, v in zip(keys, key)}, **acc.golden(seconds)}
            for key, acc in sorted(groups.items())]


def table(rows: list[dict[str, Any]], by: str | None = None) -> list[list[str]]:
    """Rows as text cells for the CLI's table (header first)."""
    head = ["NAMESPACE", "NAME"] + (["VERSION"] if by == "version" else ["CALLER"] if by == "caller" else []) + \
        ["REQUESTS", "RPS", "SUCCESS", "P50", "P95", "P99"]
    out = [head]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}ms"
    for r in rows:
        extra = [r["version"]] if by == "version" else [f"{r['caller']}.{r['caller_namespace']}"] if by == "caller" else []
        sr = "-" if r["success_rate"] is None else f"{r['success_rate'] * 100:.2f}%"
        out.append([r["namespace"], r["name"], *extra, str(r["requests"]), f"{r['rps']:.1f}", sr,
                    ms(r["p50_ms"]), ms(r["p95_ms"]), ms(r["p99_ms"])])
    return out


__all__ = ["quantile", "stat", "edges", "table", "UNKNOWN"]
