"""The SDK's rule evaluation: Istio's VirtualService/DestinationRule semantics (and `mode: local` RateLimits)
applied to one call, in process. PURE: no sockets, clocks, threads, files or randomness of its own — time
(`now`) and random draws (`u` in [0, 1)) are passed in, so every decision is reproducible in a test.

The rules are read from the same `model.Snapshot` the control plane builds (`Resolved.http_routes`,
`matches_for`, `destination`, `policy`, `endpoints_for`): a sidecar and an SDK client see one meaning of a
VirtualService, not two implementations of it.

    idx = ServiceIndex(snap, caller)                 # name forms → Service, per snapshot
    plan = plan_call(snap, caller, idx, call)        # None: not a mesh host (call it directly)
    dest = choose_destination(plan, u)               # weighted split
    ep = pick_endpoint(policy, eps, lb, cluster, plan.hash_key, u, u2, exclude=tried,
                       ejected=outliers.ejected(now))
    retryable(plan.retry, 503, None)                 # → retry on another endpoint ("failover")
    outliers.record(endpoint_key(ep), status, error, now, policy, cluster_keys)
    limiter.check(snap, plan, call, now)             # local rate limits: (allowed, status, body)

Statuses used when the SDK answers itself, as Envoy does: 404 no route (`NR`), 503 no healthy upstream
(`UH`), 504 timeout, 429 (or the RateLimit's status) rate limited, and the fault's abort status.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Mapping

from ..api.duration import duration_seconds
from ..api.virtual_service import HTTPFaultInjection, HTTPMatchRequest, HTTPRoute, StringMatch, split_retry_on
from ..model.policy import Policy
from ..model.resolved import Destination
from ..model.services import Service, is_http
from ..model.snapshot import Endpoint, Snapshot
from ..model.types import Proxy
from ..ratelimit.algorithms import Rate, TokenBucket

# Istio's default retries for a route that says nothing: 2 attempts on conditions where the request never
# reached the app (translate/routes.py's DEFAULT_RETRY_ON, for a sidecar)
DEFAULT_RETRY_ON = frozenset({"connect-failure", "refused-stream", "reset-before-request"})
DEFAULT_ATTEMPTS = 2
DEFAULT_BACKOFF = 0.025  # Envoy's default base interval
DEFAULT_MAX_EJECTION_PERCENT = 10
DEFAULT_BASE_EJECTION = 30.0
DEFAULT_CONSECUTIVE_ERRORS = 5  # Envoy's consecutive_5xx default when outlier detection is on


@dataclass(frozen=True)
class Call:
    """One outgoing request as the application wrote it."""

    host: str  # as written: "echo", "echo.ns", the FQDN, or the VIP
    port: int
    path: str = "/"
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    scheme: str = "http"
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Retry:
    attempts: int  # retries after the first try (0: fail fast)
    per_try_timeout: float | None = None
    conditions: frozenset[str] = DEFAULT_RETRY_ON
    codes: frozenset[int] = frozenset()
    backoff: float = DEFAULT_BACKOFF


@dataclass(frozen=True)
class Plan:
    """What the rules say about one call: where it may go and under which terms."""

    service: Service
    port: int
    route: str  # the route's name (or `<vs>.<index>`; "default" without a VirtualService)
    destinations: tuple[tuple[Destination, int], ...] = ()  # (destination, weight); empty with `direct`
    timeout: float | None = None  # the whole call, retries included (Istio: none unless asked)
    retry: Retry = Retry(DEFAULT_ATTEMPTS)
    fault: HTTPFaultInjection | None = None
    direct: tuple[int, str] | None = None  # the SDK answers (status, body): no route, directResponse
    hash_key: str | None = None  # consistent-hash key of this call (header/cookie/query), when the policy has one
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------- services

class ServiceIndex:
    """Every name form a caller in its namespace may use (`echo`, `echo:8080`, `echo.ns`, FQDN, VIP) → Service;
    built once per snapshot."""

    def __init__(self, snap: Snapshot, caller: Proxy):
        self.by_name: dict[str, Service] = {}
        for svc in snap.visible_services(caller):
            names = list(svc.short_names) if svc.namespace == caller.namespace else \
                [n for n in svc.short_names if "." in n]
            if svc.vip:
                names.append(svc.vip)
            for n in names:
                self.by_name.setdefault(n.lower(), svc)

    def find(self, host: str) -> Service | None:
        return self.by_name.get(host.lower().rstrip("."))


# -------------------------------------------------------------------------------------- matching

def string_matches(m: StringMatch, value: str | None, ignore_case: bool = False) -> bool:
    if value is None:
        return False
    if m.empty:
        return True  # {} : present
    if ignore_case:
        value = value.lower()
    if m.exact is not None:
        return value == (m.exact.lower() if ignore_case else m.exact)
    if m.prefix is not None:
        return value.startswith(m.prefix.lower() if ignore_case else m.prefix)
    return re.fullmatch(m.regex or "", value) is not None  # RE2 (Envoy) ≈ Python re for Istio's usual patterns


def request_matches(m: HTTPMatchRequest | None, call: Call) -> bool:
    """Istio's HTTPMatchRequest against a call (source labels/namespace/port were applied by `matches_for`)."""
    if m is None:
        return True
    path = call.path.split("?", 1)[0]
    if m.uri is not None and not string_matches(m.uri, path, m.ignore_uri_case):
        return False
    for name, sm in m.headers.items():
        if not string_matches(sm, call.headers.get(name.lower())):
            return False
    for name, sm in m.without_headers.items():
        if string_matches(sm, call.headers.get(name.lower())):
            return False
    if m.method is not None and not string_matches(m.method, call.method.upper()):
        return False
    if m.authority is not None and not string_matches(m.authority, call.headers.get("host", call.host)):
        return False
    if m.scheme is not None and not string_matches(m.scheme, call.scheme):
        return False
    for name, sm in m.query_params.items():
        if not string_matches(sm, call.query.get(name)):
            return False
    return True


# ----------------------------------------------------------------------------------------- plans

def _retry(r: HTTPRoute | None) -> Retry:
    rt = r.retries if r is not None else None
    if rt is None:
        return Retry(DEFAULT_ATTEMPTS)
    if rt.attempts <= 0:
        return Retry(0)
    conds, codes = split_retry_on(rt.retry_on) if rt.retry_on else (list(DEFAULT_RETRY_ON), [])
    backoff = DEFAULT_BACKOFF
    if rt.back_off is not None and rt.back_off[0]:
        backoff = duration_seconds(rt.back_off[0])
    return Retry(rt.attempts, duration_seconds(rt.per_try_timeout) if rt.per_try_timeout else None,
                 frozenset(conds), frozenset(codes), backoff)


def _hash_key(pol: Policy, call: Call) -> str | None:
    ch = pol.consistent_hash
    if ch is None:
        return None
    if ch.http_header_name:
        return call.headers.get(ch.http_header_name.lower())
    if ch.http_query_parameter_name:
        return call.query.get(ch.http_query_parameter_name)
    if ch.http_cookie is not None:
        for part in call.headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == ch.http_cookie.name:
                return v
        return None
    return None  # useSourceIp: one caller has one source: every call of this client hashes alike


def plan_call(snap: Snapshot, caller: Proxy, services: ServiceIndex, call: Call) -> Plan | None:
    """The plan for a call, or None when the host is not a mesh service with an HTTP port `call.port`."""
    svc = services.find(call.host)
    if svc is None:
        return None
    sp = svc.port(call.port)
    if sp is None or not is_http(sp.protocol):
        return None
    resolved = snap.config.resolved_for(caller.namespace)  # the VirtualService/DestinationRule it sees (exportTo)
    if resolved.virtual_service(svc.hostname) is None:
        dst = Destination(svc.hostname, None, call.port)
        return Plan(svc, call.port, "default", ((dst, 100),),
                    hash_key=_hash_key(resolved.policy(svc.hostname, None, call.port), call))
    for i, rr in enumerate(resolved.http_routes(svc.hostname)):
        r = rr.route
        if not any(request_matches(m, call) for m in resolved.matches_for(r, call.port, caller)):
            continue
        name = r.name or f"{rr.stem}.{i}"
        timeout = duration_seconds(r.timeout) if r.timeout else None
        if r.direct_response is not None:
            body = r.direct_response.body.string if r.direct_response.body and r.direct_response.body.string else ""
            return Plan(svc, call.port, name, direct=(r.direct_response.status, body))
        if r.redirect is not None:
            return Plan(svc, call.port, name, direct=(r.redirect.redirect_code, ""))
        if not r.route:
            continue
        dests = tuple((resolved.destination(d.destination, rr.owner.namespace, call.port),
                       d.weight if len(r.route) > 1 else 100) for d in r.route)
        dests = tuple((d, w) for d, w in dests if w > 0) or dests
        sets: list[tuple[str, str]] = []
        removes: list[str] = []
        for ops in [r.headers.request if r.headers else None] + \
                [d.headers.request if d.headers else None for d in r.route if len(r.route) == 1]:
            if ops is not None:
                sets += [(k.lower(), v) for k, v in {**ops.add, **ops.set}.items()]
                removes += [k.lower() for k in ops.remove]
        first = dests[0][0]
        return Plan(svc, call.port, name, dests, timeout, _retry(r), r.fault,
                    hash_key=_hash_key(resolved.policy(first.host, first.subset, first.port), call),
                    set_headers=tuple(sets), remove_headers=tuple(removes))
    return Plan(svc, call.port, "", direct=(404, "no route matched"))  # Envoy's NR


def choose_destination(plan: Plan, u: float) -> Destination:
    """Weighted choice with `u` in [0, 1)."""
    total = sum(w for _, w in plan.destinations)
    x = u * total
    for d, w in plan.destinations:
        if x < w:
            return d
        x -= w
    return plan.destinations[-1][0]


def fault_decision(fault: HTTPFaultInjection | None, u_delay: float, u_abort: float
                   ) -> tuple[float, int | None, bool]:
    """(delay seconds, abort status or None, abort is a gRPC status) for this call."""
    if fault is None:
        return 0.0, None, False
    delay = 0.0
    if fault.delay is not None and fault.delay.fixed_delay and u_delay * 100 < _pct(fault.delay):
        delay = duration_seconds(fault.delay.fixed_delay)
    if fault.abort is not None and u_abort * 100 < _pct(fault.abort):
        if fault.abort.http_status is not None:
            return delay, fault.abort.http_status, False
        return delay, fault.abort.grpc_code, True
    return delay, None, False


def _pct(x) -> float:
    if x.percentage is not None:
        return float(x.percentage.value)
    if x.percent is not None:
        return float(x.percent)
    return 100.0


# -------------------------------------------------------------------------------- load balancing

def endpoint_key(ep: Endpoint) -> tuple[str, int]:
    return ep.address, ep.port


class LbState:
    """Round-robin positions and in-flight counts (least request); no I/O, shared by one client's calls."""

    def __init__(self) -> None:
        self.position: dict[str, int] = {}
        self.inflight: dict[tuple[str, int], int] = {}

    def started(self, key: tuple[str, int]) -> None:
        self.inflight[key] = self.inflight.get(key, 0) + 1

    def finished(self, key: tuple[str, int]) -> None:
        self.inflight[key] = max(0, self.inflight.get(key, 0) - 1)


def _hrw(key: str, ep: Endpoint) -> int:
    """Highest-random-weight (rendezvous) score: consistent — a key moves only when its endpoint goes."""
    return int.from_bytes(hashlib.blake2b(f"{key}\0{ep.address}:{ep.port}".encode(), digest_size=8).digest(), "big")


def pick_endpoint(pol: Policy, endpoints: tuple[Endpoint, ...], lb: LbState, cluster: str, hash_key: str | None,
                  u: float, u2: float = 0.0, *, exclude: frozenset | set = frozenset(),
                  ejected: frozenset | set = frozenset()) -> Endpoint | None:
    """One healthy endpoint: not ejected, not tried yet (`exclude`, for retries) when others remain. Falls back
    to ejected ones when every endpoint is (Envoy's panic mode at 0% healthy) and to tried ones on a retry
    with nowhere else to go."""
    live = [e for e in endpoints if e.healthy]
    pool = [e for e in live if endpoint_key(e) not in ejected] or live
    fresh = [e for e in pool if endpoint_key(e) not in exclude] or pool
    if not fresh:
        return None
    fresh.sort(key=endpoint_key)
    lbs = pol.load_balancer
    if pol.consistent_hash is not None:
        if hash_key is None:
            return fresh[int(u * len(fresh)) % len(fresh)]
        return max(fresh, key=lambda e: _hrw(hash_key, e))
    simple = lbs.simple if lbs is not None else None
    if simple in ("LEAST_REQUEST", "LEAST_CONN"):  # power of two choices, as Envoy's least_request
        a = fresh[int(u * len(fresh)) % len(fresh)]
        b = fresh[int(u2 * len(fresh)) % len(fresh)]
        return a if lb.inflight.get(endpoint_key(a), 0) <= lb.inflight.get(endpoint_key(b), 0) else b
    if simple == "RANDOM":
        return fresh[int(u * len(fresh)) % len(fresh)]
    i = lb.position.get(cluster, int(u * len(fresh)))  # round robin from a random start
    lb.position[cluster] = i + 1
    return fresh[i % len(fresh)]


# ------------------------------------------------------------------------------------------ retries

_GATEWAY = {502, 503, 504}


GRPC_RETRY_ON = frozenset({"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"})


def retryable(r: Retry, status: int | None, error: str | None, grpc: str | None = None) -> bool:
    """Whether an attempt's outcome may be retried: `error` is "connect-failure", "reset" or "timeout" when
    there was no response, else `status` is the response's; `grpc` the gRPC status name of a failed gRPC call
    (retried when `retryOn` names it, as Envoy's `retry_on: unavailable,...`)."""
    c = r.conditions
    if grpc is not None and grpc in c and grpc in GRPC_RETRY_ON:
        return True
    if error is not None:
        if error == "connect-failure":
            return bool(c & {"connect-failure", "reset-before-request", "5xx", "gateway-error", "reset"})
        if error == "timeout":
            return bool(c & {"5xx", "gateway-error"})
        return bool(c & {"reset", "5xx"})
    if status is None:
        return False
    if status in r.codes:
        return True
    if status >= 500 and "5xx" in c:
        return True
    if status in _GATEWAY and "gateway-error" in c:
        return True
    return False


# ------------------------------------------------------------------------------------ outlier detection

class Outliers:
    """Istio's outlierDetection for one client: consecutive 5xx (`consecutive5xxErrors`, or
    `consecutiveGatewayErrors` for 502/503/504, connection failures counting as both), ejection for
    baseEjectionTime × times ejected, at most maxEjectionPercent of a cluster's endpoints at once."""

    def __init__(self) -> None:
        self.errors: dict[tuple[str, int], int] = {}
        self.gateway: dict[tuple[str, int], int] = {}
        self.until: dict[tuple[str, int], float] = {}
        self.times: dict[tuple[str, int], int] = {}

    def record(self, key: tuple[str, int], status: int | None, error: str | None, now: float, pol: Policy,
               cluster: frozenset) -> bool:
        """Count one outcome of the endpoint `key` of a cluster (`cluster`: its endpoints' keys); True if it
        ejected the endpoint."""
        od = pol.outlier_detection
        if od is None:
            return False
        bad5 = error is not None or (status is not None and status >= 500)
        badgw = error is not None or status in _GATEWAY
        self.errors[key] = self.errors.get(key, 0) + 1 if bad5 else 0
        self.gateway[key] = self.gateway.get(key, 0) + 1 if badgw else 0
        n5 = od.consecutive_5xx_errors if od.consecutive_5xx_errors is not None else od.consecutive_errors
        ngw = od.consecutive_gateway_errors
        trip = (n5 is None and ngw is None and self.errors[key] >= DEFAULT_CONSECUTIVE_ERRORS) or \
            (bool(n5) and self.errors[key] >= n5) or (bool(ngw) and self.gateway[key] >= ngw)
        if not trip or self.until.get(key, 0.0) > now:
            return False
        max_pct = od.max_ejection_percent if od.max_ejection_percent is not None else DEFAULT_MAX_EJECTION_PERCENT
        ejected_now = sum(1 for k in cluster if self.until.get(k, 0.0) > now)
        if not cluster or ejected_now * 100 >= max_pct * len(cluster):
            return False  # as Envoy: no ejection once the ejected share reaches maxEjectionPercent
        base = duration_seconds(od.base_ejection_time) if od.base_ejection_time else DEFAULT_BASE_EJECTION
        self.times[key] = self.times.get(key, 0) + 1
        self.until[key] = now + base * self.times[key]
        self.errors[key] = self.gateway[key] = 0
        return True

    def ejected(self, now: float) -> frozenset[tuple[str, int]]:
        return frozenset(k for k, t in self.until.items() if t > now)


# ----------------------------------------------------------------------------------- local rate limits

class RateLimits:
    """`mizzen.dev/v1 RateLimit` with `mode: local` and a `host`: enforced by the calling SDK, one token bucket
    per (RateLimit, limit, key values) — as each caller's sidecar enforces them."""

    def __init__(self) -> None:
        self.state: dict[tuple, object] = {}

    def check(self, snap: Snapshot, plan: Plan, call: Call, now: float) -> tuple[bool, int, str]:
        for rl in snap.config.by_kind.get("RateLimit", ()):
            spec = rl.spec
            if spec.mode != "local" or not spec.host:
                continue
            if snap.config.resolve(spec.host, rl.namespace) != plan.service.hostname:
                continue
            if spec.port is not None and spec.port != plan.port:
                continue
            for lim in spec.limits:
                if lim.match is not None and not request_matches(lim.match, call):
                    continue
                rate = _rate(lim)
                if rate is None:
                    continue
                k = (rl.namespace, rl.name, lim.name, _key_values(lim.key, call))
                st, d = TokenBucket(rate).decide(self.state.get(k), now)  # type: ignore[arg-type]
                self.state[k] = st
                if not d.allowed and not lim.shadow:
                    status = spec.response.status if spec.response else 429
                    body = spec.response.body if spec.response and spec.response.body else "local_rate_limited"
                    return False, status, body
        return True, 200, ""


def _rate(lim) -> Rate | None:
    if lim.rate is not None:
        return Rate(max(1, int(round(lim.rate * 1000))), 1000.0, lim.burst or max(1, int(round(lim.rate))))
    if lim.requests_per_unit and lim.unit:
        return Rate(lim.requests_per_unit, {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[lim.unit],
                    lim.burst or 0)
    return None


def _key_values(key: list, call: Call) -> tuple:
    out = []
    for k in key:
        if isinstance(k, dict) and "header" in k:
            out.append(call.headers.get(str(k["header"]).lower(), ""))
        elif isinstance(k, dict) and "query" in k:
            out.append(call.query.get(str(k["query"]), ""))
        elif k == "path":
            out.append(call.path.split("?", 1)[0])
        else:
            out.append(str(k))
    return tuple(out)


__all__ = ["Call", "LbState", "Outliers", "Plan", "RateLimits", "Retry", "ServiceIndex", "choose_destination",
           "endpoint_key", "fault_decision", "pick_endpoint", "plan_call", "request_matches", "retryable"]
