"""RateLimit resources → the table of global limits the rate-limit service enforces, and the descriptor scheme.

Descriptor scheme (the contract between the sidecars' `envoy.filters.http.ratelimit` filter and the RLS)
- domain `mizzen`;
- one descriptor per limit that matches the request; its entries, in any order:
  - `mizzen_limit` = `<namespace>/<RateLimit name>/<limit name>` (Envoy: a `generic_key` action with
    `descriptor_key: mizzen_limit`) — required, it selects the limit;
  - one entry per element of the limit's `key` (ENTRY_KEYS below; Envoy action in brackets):
    sourceWorkload → `source_workload`, sourceNamespace → `source_namespace`,
    sourcePrincipal → `source_principal` (request_headers of a header the sidecar sets, or metadata),
    sourceIp → `remote_address` (remote_address), path → `path` (request_headers `:path`),
    {header: H} → `header:h` (request_headers, `skip_if_absent: true`), {query: Q} → `query:q`
    (query_parameters, `skip_if_absent: true`); {value: C} needs no entry (the RLS knows the constant);
  - `mizzen_class` = the caller's priority class (priority limits only; request_headers of the class
    header, or the source identity).
  An entry that is absent counts as the empty value (all requests without that header share one counter).
- `hits_addend` of the descriptor (or of the request; 0 means 1) is the cost of the request.
Descriptors of another domain or naming no known limit are answered OK and counted as unknown.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable

from ..api.ratelimit import UNITS, Limit, RateLimitSpec
from .algorithms import Rate
from .priority import PriorityClasses

DOMAIN = "mizzen"
LIMIT_ENTRY = "mizzen_limit"
CLASS_ENTRY = "mizzen_class"
ENTRY_KEYS = {"sourceWorkload": "source_workload", "sourceNamespace": "source_namespace",
              "sourcePrincipal": "source_principal", "sourceIp": "remote_address", "path": "path"}
PRIORITY_SOURCE_ENTRY = {"workload": "source_workload", "namespace": "source_namespace",
                         "principal": "source_principal"}


def entry_key(form: str, arg: str) -> str | None:
    """The descriptor entry key for one element of a limit's key (None: a constant, not sent)."""
    if form in ENTRY_KEYS:
        return ENTRY_KEYS[form]
    if form == "header":
        return f"header:{arg}"
    if form == "query":
        return f"query:{arg}"
    return None


def limit_id(namespace: str, resource: str, limit: str) -> str:
    return f"{namespace}/{resource}/{limit}"


@dataclass(frozen=True)
class CompiledLimit:
    id: str
    algorithm: str
    rate: Rate
    strategy: str = "reject"
    max_delay: float | None = None
    shadow: bool = False
    key: tuple[tuple[str, str], ...] = ()
    priority: PriorityClasses | None = None
    failure_mode: str = "allow"
    status: int = 429
    body: str | None = None
    unit: str | None = None  # the unit the user wrote (for X-RateLimit-Limit's window and current_limit)

    @property
    def delay(self) -> bool:
        return self.strategy == "delay"

    @property
    def state_kind(self) -> str:
        """The algorithm as its state is stored (the leaky bucket's queue keeps another state than its meter).
        Counters are keyed by it and the key values, not by the rate: a changed rate applies to the running
        counters (a token bucket keeps its tokens up to the new capacity) instead of starting afresh."""
        return "leaky_bucket_queue" if self.algorithm == "leaky_bucket" and self.delay else self.algorithm

    @property
    def quota(self) -> int:
        """The `limit` its decisions report: the bucket capacity for buckets, the count per window else."""
        return self.rate.capacity if self.state_kind in ("token_bucket", "leaky_bucket", "gcra") else self.rate.limit

    def state_key(self, counter_key: str, klass: str | None = None) -> str:
        base = f"{self.state_kind}:{counter_key}"
        return base if klass is None else f"{base}#class={klass}"

    def class_rate(self, klass: str) -> Rate | None:
        """The reserved rate of a priority class (None: no reserved share, it can only borrow)."""
        assert self.priority is not None
        share = self.priority.share(klass)
        return self.rate.scaled(share) if share > 0 else None

    def counter_key(self, entries: dict[str, str]) -> str:
        """The storage key of one counter: the limit id plus the values of its key elements."""
        parts = [self.id]
        for form, arg in self.key:
            ek = entry_key(form, arg)
            parts.append(arg if ek is None else entries.get(ek, ""))
        return "|".join(p.replace("\\", "\\\\").replace("|", "\\|") for p in parts)

    def class_of(self, entries: dict[str, str]) -> str | None:
        if self.priority is None:
            return None
        return self.priority.classify(entries.get(CLASS_ENTRY))


def _rate(lim: Limit) -> tuple[Rate, str | None]:
    if lim.rate is not None:
        f = Fraction(lim.rate).limit_denominator(3600)
        return Rate(f.numerator, float(f.denominator), lim.burst or 0), None
    unit = lim.unit or "second"
    return Rate(lim.requests_per_unit or 1, float(UNITS[unit]), lim.burst or 0), unit


def compile_limit(namespace: str, resource: str, spec: RateLimitSpec, lim: Limit) -> CompiledLimit:
    from ..api.virtual_service import duration_seconds

    rate, unit = _rate(lim)
    prio = None
    if lim.priority is not None:
        prio = PriorityClasses(lim.priority.header or f"source:{lim.priority.source}",
                               tuple(sorted(lim.priority.classes.items(), key=lambda kv: -kv[1])))
    resp = spec.response
    return CompiledLimit(
        id=limit_id(namespace, resource, lim.name), algorithm=lim.algorithm, rate=rate, strategy=lim.strategy,
        max_delay=duration_seconds(lim.max_delay) if lim.max_delay else None, shadow=lim.shadow,
        key=tuple((f, a) for f, a in lim.key_parts()), priority=prio, failure_mode=spec.failure_mode or "allow",
        status=resp.status if resp else 429, body=resp.body if resp else None, unit=unit)


@dataclass(frozen=True)
class LimitTable:
    limits: dict[str, CompiledLimit] = field(default_factory=dict)
    version: str = "empty"

    def get(self, lid: str) -> CompiledLimit | None:
        return self.limits.get(lid)

    def __len__(self) -> int:
        return len(self.limits)


def limits_body(table: LimitTable) -> dict[str, Any]:
    """The rate-limit service's admin `/limits` (both engines)."""
    return {"version": table.version, "items": [
        {"id": lim.id, "algorithm": lim.algorithm, "limit": lim.rate.limit, "period": lim.rate.period,
         "burst": lim.rate.capacity, "strategy": lim.strategy, "maxDelay": lim.max_delay, "shadow": lim.shadow,
         "failureMode": lim.failure_mode, "key": [list(k) for k in lim.key],
         "priority": None if lim.priority is None else dict(lim.priority.classes)}
        for lim in table.limits.values()]}


def build_table(resources: Iterable[Any]) -> LimitTable:
    """From validated `Resource`s (any kind; only RateLimits in mode global are kept)."""
    limits: dict[str, CompiledLimit] = {}
    for res in resources:
        if getattr(res, "kind", None) != "RateLimit" or res.spec.mode != "global":
            continue
        for lim in res.spec.limits:
            c = compile_limit(res.namespace, res.name, res.spec, lim)
            limits[c.id] = c
    digest = hashlib.sha256(json.dumps(sorted((k, repr(v)) for k, v in limits.items())).encode()).hexdigest()
    return LimitTable(dict(sorted(limits.items())), digest[:12])
