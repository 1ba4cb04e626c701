"""A small synchronous etcd v3 client over grpcio: KV, transactions, watches, leases, with failover across
the cluster's endpoints.

Why our own: the Python etcd v3 clients on PyPI either ship protobuf code generated for one protobuf
major (Mizzen runs protobuf 7 with grpcio 1.85), are asyncio-only (the store and registry protocols are
synchronous and called from several threads), or fail over with a fixed multi-minute quarantine per
endpoint; none tells "the write was never sent" apart from "the write may have been committed", which
the store needs to keep acknowledged writes and unknown outcomes apart. etcd's gRPC API is stable and
small; `messages.py` declares the part we use.

Errors: `EtcdUnavailable` (a `StoreUnavailable`) when no endpoint answers within the deadline, with each
endpoint's reason; `outcome_unknown=True` when a write was sent and no answer came. `EtcdError` for an
answer that refuses the request (too many operations, request too large, compacted revision).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit

import grpc

from ..store.base import StoreUnavailable
from . import messages as pb

log = logging.getLogger(__name__)

# methods whose repetition is harmless: reads, and lease calls (a duplicate grant only leaks a lease that
# expires by itself; revoke and keep-alive are idempotent)
_IDEMPOTENT = {"/etcdserverpb.KV/Range", "/etcdserverpb.Maintenance/Status", "/etcdserverpb.Lease/LeaseGrant",
               "/etcdserverpb.Lease/LeaseRevoke", "/etcdserverpb.Lease/LeaseKeepAlive"}
# an answer or error text that proves the request was not executed
_NOT_SENT = ("failed to connect", "connection refused", "etcdserver: no leader", "connect failed",
             "name resolution", "dns resolution failed")
_REFUSED = ("failed to connect", "connection refused", "connect failed")
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),       # above etcd's --grpc-keepalive-min-time (5 s)
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
REQUIRE_LEADER = (("hasleader", "true"),)  # a member cut off from its leader ends our watch instead of idling


class EtcdUnavailable(StoreUnavailable):
    pass


class EtcdError(Exception):
    """etcd answered and refused the request (not a connectivity problem)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        self.code = code
        super().__init__(message)


class EtcdCompacted(Exception):
    """The revisions asked for are older than etcd's compacted history."""

    def __init__(self, compact_revision: int):
        self.compact_revision = compact_revision
        super().__init__(f"etcd history before revision {compact_revision} is compacted")


@dataclass(frozen=True)
class TLS:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a range cover every key starting with `prefix`."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[:i + 1])
    return b"\0"


def normalize_endpoint(e: str) -> str:
    e = e.strip()
    if "://" in e:
        u = urlsplit(e)
        if not u.hostname or not u.port:
            raise ValueError(f"etcd endpoint {e!r}: expected [http[s]://]host:port")
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        return f"{host}:{u.port}"
    if not e or ":" not in e:
        raise ValueError(f"etcd endpoint {e!r}: expected host:port")
    return e


def _details(e: grpc.RpcError) -> str:
    try:
        return str(e.details() or e.code().name)
    except Exception:  # not a call error (a channel error raised as RpcError)
        return str(e)


class EtcdClient:
    """Thread-safe. Every call tries the endpoint that answered last, then the others, until `timeout`."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0, tls: TLS | None = None):
        if not endpoints:
            raise ValueError("etcd: no endpoints given")
        self.endpoints = [normalize_endpoint(e) for e in endpoints]
        self.timeout = timeout
        self.tls = tls
        self._preferred = 0
        self._lock = threading.Lock()
        self._closed = False
        creds = None
        if tls is not None:
            def _read(p: str | None) -> bytes | None:
                if p is None:
                    return None
                with open(p, "rb") as f:
                    return f.read()
            creds = grpc.ssl_channel_credentials(_read(tls.ca_file), _read(tls.key_file), _read(tls.cert_file))
        self._channels = [grpc.secure_channel(e, creds, options=_GRPC_OPTIONS) if creds else
                          grpc.insecure_channel(e, options=_GRPC_OPTIONS) for e in self.endpoints]
        self._calls: dict[tuple[int, str], Any] = {}

    # ------------------------------------------------------------------ plumbing

    def _callable(self, i: int, method: str) -> Any:
        key = (i, method)
        fn = self._calls.get(key)
        if fn is None:
            req, resp, streaming = pb.METHODS[method]
            req_cls, resp_cls = pb.message_class(req), pb.message_class(resp)
            make = self._channels[i].stream_stream if streaming else self._channels[i].unary_unary
            fn = self._calls[key] = make(method, request_serializer=req_cls.SerializeToString,
                                         response_deserializer=resp_cls.FromString)
        return fn

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._preferred + k) % n for k in range(n)]

    def call(self, method: str, request: Any, *, timeout: float | None = None, retry_sent: bool | None = None) -> Any:
        """One unary call with failover. A write (`retry_sent` False) whose request may have reached etcd is
        not repeated: EtcdUnavailable(outcome_unknown=True) says so."""
        if self._closed:
            raise EtcdUnavailable("etcd client is closed")
        if retry_sent is None:
            retry_sent = method in _IDEMPOTENT
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        reasons: dict[str, str] = {}
        refused_rounds = 0
        backoff = 0.05
        while True:
            refused = 0
            order = self._order()
            for k, i in enumerate(order):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # a hung member must not eat the whole budget: give each attempt its share of what is left
                per_try = max(left / max(1, len(order) - k), min(left, 0.5))
                try:
                    resp = self._callable(i, method)(request, timeout=per_try, metadata=REQUIRE_LEADER)
                except grpc.RpcError as e:
                    code, text = e.code(), _details(e)
                    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                                grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                                grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS):
                        raise EtcdError(f"etcd {self.endpoints[i]} refused {method.rsplit('/', 1)[1]}: {text}",
                                        code) from None
                    low = text.lower()
                    reasons[self.endpoints[i]] = text
                    if any(s in low for s in _REFUSED):
                        refused += 1
                    not_sent = any(s in low for s in _NOT_SENT)
                    if not retry_sent and not not_sent:
                        raise EtcdUnavailable(
                            f"store unavailable: etcd {self.endpoints[i]} did not answer "
                            f"{method.rsplit('/', 1)[1]} ({text}); the write may or may not have been applied",
                            outcome_unknown=True) from None
                    continue
                if i != self._preferred:
                    log.info("etcd: now using %s", self.endpoints[i])
                    self._preferred = i
                return resp
            refused_rounds = refused_rounds + 1 if refused == len(order) else 0
            now = time.monotonic()
            # every member refused connections twice in a row: the cluster is down, fail fast
            if now >= deadline or refused_rounds >= 2:
                raise EtcdUnavailable(self._unavailable_text(reasons))
            time.sleep(min(backoff, max(0.0, deadline - now)))
            backoff = min(backoff * 2, 0.5)

    def _unavailable_text(self, reasons: dict[str, str]) -> str:
        detail = "; ".join(f"{e}: {r}" for e, r in reasons.items()) or "no answer within the deadline"
        return (f"store unavailable: no etcd endpoint answered ({detail}). Check that the etcd cluster is "
                f"running and has a quorum (mizzen etcd up, or the endpoints given)")

    # ------------------------------------------------------------------ KV

    def range(self, key: bytes, range_end: bytes = b"", *, revision: int = 0, limit: int = 0,
              keys_only: bool = False, serializable: bool = False, timeout: float | None = None) -> Any:
        return self.call("/etcdserverpb.KV/Range", pb.RangeRequest(
            key=key, range_end=range_end, revision=revision, limit=limit, keys_only=keys_only,
            serializable=serializable), timeout=timeout)

    def get(self, key: bytes, **kw: Any) -> Any | None:
        r = self.range(key, **kw)
        return r.kvs[0] if r.kvs else None

    def range_prefix(self, prefix: bytes, *, page: int = 1000, timeout: float | None = None) -> tuple[int, list[Any]]:
        """Every key under `prefix` at one revision (paged): (revision, [KeyValue])."""
        end = prefix_end(prefix)
        out: list[Any] = []
        start, rev = prefix, 0
        while True:
            r = self.range(start, end, revision=rev, limit=page, timeout=timeout)
            if rev == 0:
                rev = r.header.revision
            out.extend(r.kvs)
            if not r.more or not r.kvs:
                return rev, out
            start = r.kvs[-1].key + b"\0"

    def put(self, key: bytes, value: bytes, *, lease: int = 0, retry_sent: bool = False,
            timeout: float | None = None) -> Any:
        return self.call("/etcdserverpb.KV/Put", pb.PutRequest(key=key, value=value, lease=lease),
                         retry_sent=retry_sent, timeout=timeout)

    def delete(self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False, retry_sent: bool = False,
               timeout: float | None = None) -> Any:
        return self.call("/etcdserverpb.KV/DeleteRange",
                         pb.DeleteRangeRequest(key=key, range_end=range_end, prev_kv=prev_kv),
                         retry_sent=retry_sent, timeout=timeout)

    def txn(self, compare: list[Any], success: list[Any], failure: list[Any] | None = None, *,
            retry_sent: bool = False, timeout: float | None = None) -> Any:
        return self.call("/etcdserverpb.KV/Txn", pb.TxnRequest(compare=compare, success=success,
                                                               failure=failure or []),
                         retry_sent=retry_sent, timeout=timeout)

    def status(self, endpoint: int, *, timeout: float = 2.0) -> Any:
        """Maintenance.Status of one member (no failover): its id, the leader's id, the raft term."""
        try:
            return self._callable(endpoint, "/etcdserverpb.Maintenance/Status")(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError as e:
            raise EtcdUnavailable(f"etcd {self.endpoints[endpoint]}: {_details(e)}") from None

    # ------------------------------------------------------------------ leases

    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> int:
        r = self.call("/etcdserverpb.Lease/LeaseGrant", pb.LeaseGrantRequest(TTL=int(ttl)), timeout=timeout)
        if r.error:
            raise EtcdError(f"etcd refused a lease: {r.error}")
        return int(r.ID)

    def lease_revoke(self, lease: int, *, timeout: float | None = None) -> bool:
        """Revoke (deletes the keys attached at once). False if the lease was already gone."""
        try:
            self.call("/etcdserverpb.Lease/LeaseRevoke", pb.LeaseRevokeRequest(ID=lease), timeout=timeout)
        except EtcdError as e:
            if e.code == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    def lease_keepalive(self, leases: Sequence[int], *, timeout: float | None = None) -> dict[int, int]:
        """Refresh leases once (one stream, one request each): {lease: remaining TTL}; TTL <= 0 = expired."""
        if not leases:
            return {}
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        reasons: dict[str, str] = {}
        for i in self._order():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            reqs = [pb.LeaseKeepAliveRequest(ID=lid) for lid in leases]
            try:
                call = self._callable(i, "/etcdserverpb.Lease/LeaseKeepAlive")(
                    iter(reqs), timeout=left, metadata=REQUIRE_LEADER)
                out: dict[int, int] = {}
                for resp in call:
                    out[int(resp.ID)] = int(resp.TTL)
                    if len(out) >= len(set(leases)):
                        break
                call.cancel()
                return out
            except grpc.RpcError as e:
                reasons[self.endpoints[i]] = _details(e)
        raise EtcdUnavailable(self._unavailable_text(reasons))

    # ------------------------------------------------------------------ watches

    def history(self, key: bytes, range_end: bytes, start_revision: int, stop: Callable[[Any], bool], *,
                timeout: float | None = None) -> list[Any]:
        """The events on [key, range_end) from `start_revision` on, oldest first, up to and including the
        first for which `stop(event)` is true (etcd's MVCC history, read through a watch).
        Raises EtcdCompacted when that history is gone."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        reasons: dict[str, str] = {}
        while time.monotonic() < deadline:
            for i in self._order():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                create = pb.WatchRequest(create_request=pb.WatchCreateRequest(
                    key=key, range_end=range_end, start_revision=start_revision))
                gate = threading.Event()

                def reqs() -> Iterator[Any]:
                    yield create
                    gate.wait(left + 1)

                out: list[Any] = []
                try:
                    call = self._callable(i, "/etcdserverpb.Watch/Watch")(reqs(), timeout=left,
                                                                         metadata=REQUIRE_LEADER)
                    try:
                        for resp in call:
                            if resp.compact_revision:
                                raise EtcdCompacted(int(resp.compact_revision))
                            if resp.canceled:
                                raise grpc.RpcError(resp.cancel_reason or "watch canceled")
                            for ev in resp.events:
                                out.append(ev)
                                if stop(ev):
                                    return out
                    finally:
                        gate.set()
                        call.cancel()
                except grpc.RpcError as e:
                    reasons[self.endpoints[i]] = _details(e) if hasattr(e, "code") else str(e)
            time.sleep(0.1)
        raise EtcdUnavailable(self._unavailable_text(reasons))

    def watch(self, key: bytes, range_end: bytes, start_revision: int,
              on_events: Callable[[list[Any], int], None], *,
              on_compacted: Callable[[int], int] | None = None,
              on_state: Callable[[bool, str], None] | None = None, name: str = "etcd-watch") -> "Watch":
        w = Watch(self, key, range_end, start_revision, on_events, on_compacted, on_state, name)
        w.start()
        return w

    def close(self) -> None:
        self._closed = True
        for ch in self._channels:
            ch.close()


class Watch:
    """One watch kept alive across member failures: on a broken stream it reconnects (to the next endpoint
    when the current one fails) from the revision after the last event it delivered, so no revision is
    missed or repeated. When etcd has compacted that history, `on_compacted(compact_revision)` is asked to
    resynchronise (reload) and returns the revision to continue from.

    Callbacks run in the watch thread: `on_events(events, header_revision)` per response,
    `on_state(connected, reason)` when the stream goes up or down."""

    def __init__(self, client: EtcdClient, key: bytes, range_end: bytes, start_revision: int,
                 on_events: Callable[[list[Any], int], None], on_compacted: Callable[[int], int] | None,
                 on_state: Callable[[bool, str], None] | None, name: str):
        self.client = client
        self.key, self.range_end = key, range_end
        self.next_revision = start_revision
        self.on_events, self.on_compacted, self.on_state = on_events, on_compacted, on_state
        self._stop = threading.Event()
        self._call: Any = None
        self._requests: queue.Queue[Any] = queue.Queue()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _request_iter(self, q: queue.Queue[Any]) -> Iterator[Any]:
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    def _state(self, up: bool, reason: str) -> None:
        was = self.connected.is_set()
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        if was != up and self.on_state is not None:
            try:
                self.on_state(up, reason)
            except Exception:
                log.exception("etcd watch state callback failed")

    def _run(self) -> None:
        backoff = 0.1
        client = self.client
        while not self._stop.is_set():
            i = client._preferred
            q: queue.Queue[Any] = queue.Queue()
            self._requests = q
            q.put(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=self.key, range_end=self.range_end, start_revision=self.next_revision, progress_notify=True)))
            reason = ""
            try:
                call = client._callable(i, "/etcdserverpb.Watch/Watch")(self._request_iter(q), metadata=REQUIRE_LEADER)
                self._call = call
                if self._stop.is_set():
                    call.cancel()
                    break
                for resp in call:
                    if resp.compact_revision:
                        log.warning("etcd watch %s: history before revision %d is compacted; resynchronising",
                                    self.key.decode(errors="replace"), resp.compact_revision)
                        if self.on_compacted is None:
                            raise RuntimeError("history compacted")
                        self.next_revision = self.on_compacted(int(resp.compact_revision))
                        break  # reconnect from the reloaded revision
                    if resp.canceled:
                        reason = resp.cancel_reason or "watch canceled by etcd"
                        break
                    if resp.created:
                        self._state(True, "")
                        backoff = 0.1
                    if resp.events:
                        self.on_events(list(resp.events), int(resp.header.revision))
                        self.next_revision = int(resp.events[-1].kv.mod_revision) + 1
                else:
                    reason = reason or "stream ended"
            except grpc.RpcError as e:
                reason = _details(e)
            except Exception as e:  # a callback's failure must not stop watching
                log.exception("etcd watch %s: callback failed", self.key.decode(errors="replace"))
                reason = str(e)
            finally:
                q.put(None)
            if self._stop.is_set():
                break
            was_up = self.connected.is_set()
            self._state(False, reason)
            (log.warning if was_up else log.debug)(
                "etcd watch %s on %s broke (%s); reconnecting from revision %d",
                self.key.decode(errors="replace"), client.endpoints[i], reason, self.next_revision)
            # let the next attempt go to another member
            client._preferred = (i + 1) % len(client.endpoints)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def cancel(self) -> None:
        self._stop.set()
        self._requests.put(None)
        call = self._call
        if call is not None:
            call.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


@dataclass(frozen=True)
class EtcdURL:
    """`etcd://host:port[,host:port...][/prefix][?ca=FILE&cert=FILE&key=FILE&timeout=S&ttl=S]`
    (`etcds://` = TLS with the system's roots unless `ca` is given)."""

    endpoints: tuple[str, ...]
    prefix: str = "/mizzen/"
    tls: TLS | None = None
    timeout: float = 5.0
    ttl: float = 30.0

    def client(self) -> EtcdClient:
        return EtcdClient(self.endpoints, timeout=self.timeout, tls=self.tls)


def parse_url(url: str) -> EtcdURL:
    from urllib.parse import parse_qs

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise ValueError(f"{url!r}: an etcd store is named etcd://host:port[,host:port...][/prefix][?options]")
    hosts, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in hosts:
        hosts, _, query = hosts.partition("?")
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(q) - {"ca", "cert", "key", "timeout", "ttl"}
    if unknown:
        raise ValueError(f"{url!r}: unknown option(s) {', '.join(sorted(unknown))} (known: ca, cert, key, timeout, ttl)")
    endpoints = tuple(normalize_endpoint(h) for h in hosts.split(",") if h.strip())
    if not endpoints:
        raise ValueError(f"{url!r}: no endpoint")
    tls = TLS(q.get("ca"), q.get("cert"), q.get("key")) if scheme == "etcds" or "ca" in q else None
    prefix = "/" + path.strip("/") + "/" if path.strip("/") else "/mizzen/"
    try:
        timeout, ttl = float(q.get("timeout", 5.0)), float(q.get("ttl", 30.0))
    except ValueError:
        raise ValueError(f"{url!r}: timeout and ttl are seconds") from None
    return EtcdURL(endpoints, prefix, tls, timeout, ttl)
