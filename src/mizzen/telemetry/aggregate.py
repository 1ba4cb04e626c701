"""From access-log records to Istio's series, and to short time windows for golden metrics. PURE.

Cardinality is bounded by construction: labels are peers (workloads, services, versions), response code,
gRPC status, flags and protocol — never a path, a query, a header value or an address. A cap on the
number of series (`max_series`) protects memory against anything else (e.g. many passthrough hosts):
label sets beyond it are counted in `dropped_records` and not stored.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from . import istio
from .istio import UNKNOWN
from .peers import Directory, WorkloadInfo, parse_cluster, service_parts, split_host
from .records import INBOUND, OUTBOUND, TCP_CONNECTED, TCP_END, RequestRecord, TcpRecord

REPORTER = {OUTBOUND: "source", INBOUND: "destination"}


@dataclass(frozen=True)
class SelfInfo:
    """The reporting sidecar: its workload, and the service hostname each of its ports serves — for requests
    (`port_services`: a service declaring an HTTP-family protocol on the port first) and for TCP connections
    (`tcp_port_services`, a TCP-family one first; empty: the same as `port_services`)."""

    workload: WorkloadInfo
    port_services: Mapping[int, str] = field(default_factory=dict)
    principal: str = ""  # this sidecar's own SPIFFE identity (its workload certificate), "" if it has none
    tcp_port_services: Mapping[int, str] = field(default_factory=dict)


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    """Index of the first bucket whose upper bound (le) is >= value; len(bounds) is +Inf."""
    return bisect_left(bounds, value)


class Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self, nbuckets: int) -> None:
        self.counts = [0] * (nbuckets + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[_bucket(bounds, value)] += 1
        self.sum += value
        self.count += 1

    def add(self, other: "Histogram") -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.sum += other.sum
        self.count += other.count


class HttpSeries:
    __slots__ = ("requests", "duration", "request_bytes", "response_bytes")

    def __init__(self) -> None:
        self.requests = 0
        self.duration = Histogram(len(istio.DURATION_BUCKETS_MS))
        self.request_bytes = Histogram(len(istio.BYTES_BUCKETS))
        self.response_bytes = Histogram(len(istio.BYTES_BUCKETS))

    def add(self, other: "HttpSeries") -> None:
        self.requests += other.requests
        self.duration.add(other.duration)
        self.request_bytes.add(other.request_bytes)
        self.response_bytes.add(other.response_bytes)


def sum_http(*tables: Mapping[tuple[str, ...], HttpSeries]) -> dict[tuple[str, ...], HttpSeries]:
    """Several tables of HTTP series as one, added label set by label set (the inputs are left unchanged)."""
    out: dict[tuple[str, ...], HttpSeries] = {}
    shared: set[tuple[str, ...]] = set()  # keys whose series in `out` is a new sum, not an input's object
    for table in tables:
        for key, s in table.items():
            mine = out.get(key)
            if mine is None:
                out[key] = s
                continue
            if key not in shared:
                mine = out[key] = _copy(mine)
                shared.add(key)
            mine.add(s)
    return out


def _copy(s: HttpSeries) -> HttpSeries:
    c = HttpSeries()
    c.add(s)
    return c


class TcpSeries:
    __slots__ = ("sent", "received", "opened", "closed")

    def __init__(self) -> None:
        self.sent = self.received = self.opened = self.closed = 0


def _peer_labels(reporter: str, src: WorkloadInfo, src_principal: str, dst: WorkloadInfo, dst_principal: str,
                 service: str) -> tuple[str, ...]:
    name, ns = service_parts(service) if service else (UNKNOWN, UNKNOWN)
    return (reporter,
            src.workload, src.namespace, src_principal, src.app, src.version, "Kubernetes" if src.workload != UNKNOWN else UNKNOWN,
            dst.workload, dst.namespace, dst_principal, dst.app, dst.version, service or UNKNOWN, name, ns,
            "Kubernetes" if dst.workload != UNKNOWN else UNKNOWN)


def _outbound_service(cluster: str, authority: str, directory: Directory, namespace: str) -> str:
    parsed = parse_cluster(cluster)
    if parsed and parsed[0] == "outbound":
        return parsed[3]
    found = directory.service_for_authority(authority, namespace) if authority else ""
    if found:
        return found
    host = split_host(authority)[0] if authority else ""
    return host or UNKNOWN  # a passthrough call: the host the app asked for, as Istio reports it


def peers_of(rec: RequestRecord | TcpRecord, me: SelfInfo, directory: Directory,
             authority: str = "") -> tuple[str, ...]:
    """The peer part of the labels (PEER_LABELS order) of a record reported by `me`."""
    w = me.workload
    if rec.direction == OUTBOUND:
        host, port = split_host(rec.upstream_host)
        dst = directory.workload_at(host, port) if host else WorkloadInfo()
        service = _outbound_service(rec.upstream_cluster, authority, directory, w.namespace)
        # principals only from the certificates of a mutual-TLS hop (as Istio): the server's, and ours
        src_p = (rec.local_principal or me.principal or UNKNOWN) if rec.peer_principal else UNKNOWN
        return _peer_labels("source", w, src_p, dst, rec.peer_principal or UNKNOWN, service)
    src = directory.workload_at(rec.downstream_ip)
    parsed = parse_cluster(rec.upstream_cluster)
    service = directory.service_for_authority(authority, w.namespace) if authority else ""
    if not service and parsed:
        ports = me.tcp_port_services if isinstance(rec, TcpRecord) and me.tcp_port_services else me.port_services
        service = ports.get(parsed[1], "")
    src_p = rec.peer_principal or UNKNOWN
    # a request that came over mutual TLS was answered with our own certificate: our identity is proven
    dst_p = (rec.local_principal or me.principal or UNKNOWN) if rec.peer_principal else UNKNOWN
    return _peer_labels("destination", src, src_p, w, dst_p, service)


def http_labels(rec: RequestRecord, me: SelfInfo, directory: Directory) -> tuple[str, ...]:
    security = UNKNOWN if rec.direction == OUTBOUND else ("mutual_tls" if rec.peer_principal else "none")
    return peers_of(rec, me, directory, rec.authority) + (
        rec.protocol, str(rec.response_code), rec.grpc_status, rec.response_flags, security)


def tcp_labels(rec: TcpRecord, me: SelfInfo, directory: Directory) -> tuple[str, ...]:
    security = UNKNOWN if rec.direction == OUTBOUND else ("mutual_tls" if rec.peer_principal else "none")
    return peers_of(rec, me, directory) + ("tcp", rec.response_flags, security)


# The window key: who called whom (no code/flags: success is counted inside).
WINDOW_LABELS = ("reporter", "source_workload", "source_workload_namespace", "destination_workload",
                 "destination_workload_namespace", "destination_service", "destination_version")
_WINDOW_IDX = tuple(istio.HTTP_LABELS.index(n) for n in WINDOW_LABELS)


def window_key(labels: tuple[str, ...]) -> tuple[str, ...]:
    """The window key (WINDOW_LABELS order) of a series' labels (HTTP_LABELS order)."""
    return tuple(labels[i] for i in _WINDOW_IDX)


class Cell:
    __slots__ = ("requests", "success", "duration")

    def __init__(self) -> None:
        self.requests = 0
        self.success = 0
        self.duration = Histogram(len(istio.DURATION_BUCKETS_MS))


class Window:
    """Requests of the last `slots * slot_seconds` seconds per edge, in a ring of time slots (time is
    passed in). Memory: slots x edges x buckets."""

    def __init__(self, slots: int = 6, slot_seconds: float = 10.0, started: float = 0.0) -> None:
        self.slots, self.slot_seconds = slots, slot_seconds
        self._ring: list[tuple[int, dict[tuple[str, ...], Cell]]] = [(-1, {}) for _ in range(slots)]
        self.started = started

    def _slot(self, now: float) -> dict[tuple[str, ...], Cell]:
        n = int(now // self.slot_seconds)
        i = n % self.slots
        if self._ring[i][0] != n:
            self._ring[i] = (n, {})
        return self._ring[i][1]

    def observe(self, key: tuple[str, ...], ok: bool, duration_ms: float, now: float) -> None:
        slot = self._slot(now)
        cell = slot.get(key)
        if cell is None:
            cell = slot[key] = Cell()
        cell.requests += 1
        cell.success += ok
        cell.duration.observe(istio.DURATION_BUCKETS_MS, duration_ms)

    def observe_many(self, key: tuple[str, ...], requests: int, successes: int, duration_counts: Sequence[int],
                     duration_sum: float, now: float) -> None:
        """`requests` requests at once, as if observed at `now` (e.g. what a cumulative histogram grew by since
        its last reading): `duration_counts` per bucket of DURATION_BUCKETS_MS, +Inf last, and their sum."""
        if len(duration_counts) != len(istio.DURATION_BUCKETS_MS) + 1:
            raise ValueError(f"{len(duration_counts)} duration buckets, not {len(istio.DURATION_BUCKETS_MS) + 1}")
        if requests <= 0:
            return
        slot = self._slot(now)
        cell = slot.get(key)
        if cell is None:
            cell = slot[key] = Cell()
        cell.requests += requests
        cell.success += min(max(successes, 0), requests)
        counts = cell.duration.counts
        for i, c in enumerate(duration_counts):
            counts[i] += c
        cell.duration.sum += duration_sum
        cell.duration.count += requests

    def snapshot(self, now: float) -> dict:
        """JSON-ready: {"seconds": covered time, "buckets": [...], "rows": [{labels..., requests, success,
        durationCounts, durationSum}]}. Rows of several sidecars merge by adding (see golden.merge)."""
        n = int(now // self.slot_seconds)
        merged: dict[tuple[str, ...], Cell] = {}
        for slot_n, cells in self._ring:
            if slot_n < 0 or n - slot_n >= self.slots:
                continue
            for key, c in cells.items():
                m = merged.get(key)
                if m is None:
                    m = merged[key] = Cell()
                m.requests += c.requests
                m.success += c.success
                for i, v in enumerate(c.duration.counts):
                    m.duration.counts[i] += v
                m.duration.sum += c.duration.sum
        span = (self.slots - 1) * self.slot_seconds + (now - n * self.slot_seconds)
        covered = max(min(span, now - self.started), 1e-3)
        rows = [dict(zip(WINDOW_LABELS, key), requests=c.requests, success=c.success,
                     durationCounts=list(c.duration.counts), durationSum=round(c.duration.sum, 3))
                for key, c in sorted(merged.items())]
        return {"seconds": round(covered, 3), "buckets": list(istio.DURATION_BUCKETS_MS), "rows": rows}


def unknown_peer_address(rec: RequestRecord | TcpRecord, directory: Directory) -> str:
    """The peer address of a record (the caller's IP inbound, the picked upstream `ip:port` outbound) when
    `directory` does not know it, else "" (known, or no address: e.g. no upstream was picked)."""
    if rec.direction == OUTBOUND:
        host, port = split_host(rec.upstream_host)
        return rec.upstream_host if host and directory.workload_at(host, port).workload == UNKNOWN else ""
    ip = rec.downstream_ip
    return ip if ip and directory.workload_at(ip).workload == UNKNOWN else ""


class Aggregator:
    """Istio's series of one sidecar, plus its golden-metrics window."""

    def __init__(self, me: SelfInfo, directory: Directory | None = None, *, max_series: int = 5000,
                 max_connections: int = 65536, window: Window | None = None) -> None:
        self.me = me
        self.directory = directory if directory is not None else Directory()
        self.max_series = max_series
        self.http: dict[tuple[str, ...], HttpSeries] = {}
        self.tcp: dict[tuple[str, ...], TcpSeries] = {}
        self.window = window or Window()
        self._conns: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.max_connections = max_connections
        self.records = 0
        self._labels: dict[tuple, tuple[str, ...]] = {}  # a request's label-relevant fields -> its labels
        self.dropped_records = 0
        self.unknown_peers = 0  # records whose peer address the directory did not know (refresh it)

    def set_directory(self, directory: Directory) -> None:
        self.directory = directory
        self._labels.clear()

    def unknown_peer_address(self, rec: RequestRecord | TcpRecord) -> str:
        return unknown_peer_address(rec, self.directory)

    def _series(self, table: dict, key: tuple[str, ...], make) -> object | None:
        s = table.get(key)
        if s is None:
            if len(self.http) + len(self.tcp) >= self.max_series:
                self.dropped_records += 1
                return None
            s = table[key] = make()
        return s

    def labels_of(self, rec: RequestRecord) -> tuple[str, ...]:
        """A request's Istio labels (HTTP_LABELS order), without counting it."""
        # requests of one edge share their labels: compute them once per distinct input (bounded cache)
        ck = (rec.direction, rec.downstream_ip, rec.upstream_host, rec.upstream_cluster, rec.authority, rec.protocol,
              rec.response_code, rec.grpc_status, rec.response_flags, rec.peer_principal, rec.local_principal)
        key = self._labels.get(ck)
        if key is None:
            if len(self._labels) >= 4096:
                self._labels.clear()
            key = self._labels[ck] = http_labels(rec, self.me, self.directory)
        return key

    def add_request(self, rec: RequestRecord, now: float) -> tuple[str, ...]:
        """Count one request; returns its labels (HTTP_LABELS order)."""
        self.records += 1
        key = self.labels_of(rec)
        peer_workload = key[1] if rec.direction == INBOUND else key[7]
        if peer_workload == UNKNOWN:
            self.unknown_peers += 1
        s = self._series(self.http, key, HttpSeries)
        if s is not None:
            s.requests += 1
            s.duration.observe(istio.DURATION_BUCKETS_MS, rec.duration_ms)
            s.request_bytes.observe(istio.BYTES_BUCKETS, rec.request_bytes)
            s.response_bytes.observe(istio.BYTES_BUCKETS, rec.response_bytes)
        self.window.observe(window_key(key), istio.is_success(rec.response_code, rec.grpc_status),
                            rec.duration_ms, now)
        return key

    def add_tcp(self, rec: TcpRecord) -> None:
        self.records += 1
        key = tcp_labels(rec, self.me, self.directory)
        s = self._series(self.tcp, key, TcpSeries)
        prev = self._conns.pop(rec.connection, None) if rec.connection else None
        if prev is None and rec.event != TCP_CONNECTED and rec.connection:
            prev = (0, 0)
            if s is not None:
                s.opened += 1  # its "connected" entry was not seen (e.g. the agent restarted)
        if rec.event == TCP_CONNECTED and s is not None and prev is None:
            s.opened += 1
        prev = prev or (0, 0)
        if s is not None:
            s.received += max(rec.received_bytes - prev[0], 0)
            s.sent += max(rec.sent_bytes - prev[1], 0)
            if rec.event == TCP_END:
                s.closed += 1
        if rec.event != TCP_END and rec.connection:
            self._conns[rec.connection] = (rec.received_bytes, rec.sent_bytes)
            while len(self._conns) > self.max_connections:
                self._conns.popitem(last=False)

    @property
    def series_count(self) -> int:
        return len(self.http) + len(self.tcp)
