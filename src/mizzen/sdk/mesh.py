"""`Mesh`: the SDK's per-process state and the call loop around the pure rules (`sdk/rules.py`).

    mesh = Mesh(state_dir="/run/mizzen", namespace="default", workload="web", labels={"app": "web"},
                snapshot_file="/var/lib/web/mesh.json").start()
    mesh.register(pod="web-0", address="10.244.0.7", ports=[8080], health=lambda: app.ready)
    client = httpx.Client(transport=mesh.httpx_transport())     # the one-line change for HTTP
    channel = mesh.grpc_channel("echo:50051")                    # ... and for gRPC
    mesh.close()

In a `mizzen up` pod the SDK authenticates with the pod app's own read-only credential ($MIZZEN_TOKEN_FILE)
on the pods' socket (`pod-api.sock`); see `_api_client`.

`execute(call, send)` runs one call: plan (VirtualService), local rate limit, fault, weighted destination,
endpoint choice (DestinationRule load balancer, outlier ejection, previous hosts on retries), attempts with
the per-try timeout inside the route's timeout, retries with exponential back-off — `send(address, port,
timeout, plan)` does one attempt and returns an `Outcome`. The caller's identity (namespace, labels) is the
`Proxy` the rules see, so `sourceLabels` and `sourceNamespace` matches apply to SDK callers as to sidecars.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from typing import Any, Awaitable, Callable, Generator, Mapping, Sequence

from ..client import ApiClient, ClientError, StateLayout
from ..client.auth import FileToken
from ..model.types import Instance, Proxy, labels_tuple
from . import rules as R
from .feed import Feed
from .outcome import Outcome, Synthetic

log = logging.getLogger("mizzen.sdk")


class Mesh:
    def __init__(self, *, state_dir: str | None = None, api_addresses: Sequence[str] | None = None,
                 namespace: str | None = None, workload: str = "", labels: Mapping[str, str] | None = None,
                 snapshot_file: str | None = None, interval: float = 0.5, seed: int | None = None,
                 token_file: str | None = None, watch: bool = True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.api = api = _api_client(state_dir, api_addresses, token_file or os.environ.get("MIZZEN_TOKEN_FILE"))
        namespace = namespace or os.environ.get("POD_NAMESPACE", "default")
        # `watch`: follow the control plane with its REST watch (False: poll every `interval`; docs/sdk.md)
        self.feed = Feed(api, snapshot_file=snapshot_file, interval=interval, watch=watch)
        self.proxy = Proxy(id=f"sdk~{workload}.{namespace}", namespace=namespace, workload=workload,
                           labels=labels_tuple(labels), kind="sdk")
        self.clock, self.sleep = clock, sleep
        self.rand = random.Random(seed)
        self.lb = R.LbState()
        self.outliers = R.Outliers()
        self.limits = R.RateLimits()
        self._lock = threading.Lock()
        self._index: tuple[int, R.ServiceIndex] | None = None
        self._clusters: dict[tuple, tuple] = {}
        self._registration: _Registration | None = None
        self.stats = {"calls": 0, "attempts": 0, "retries": 0, "synthetic": 0, "direct": 0}

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, wait: float = 5.0) -> "Mesh":
        self.feed.start(wait)
        return self

    def close(self) -> None:
        if self._registration is not None:
            self._registration.stop()
        self.feed.stop()

    # -- registration ----------------------------------------------------------------------------------
    def register(self, *, pod: str, address: str, ports: Sequence[int], health: Callable[[], bool] | None = None,
                 locality: str = "", service_account: str = "default", port_map: Mapping[int, int] | None = None,
                 interval: float = 1.0) -> None:
        """Register this process as an instance of its workload (`<namespace>.<pod>`) and keep its health
        current: `health()` is asked every `interval`; a change is sent at once (an unhealthy instance leaves
        every caller's endpoints), and the registration is repeated every 10 s (a control plane that lost it
        gets it back). `close()` withdraws it."""
        inst = Instance(id=f"{self.proxy.namespace}.{pod}", namespace=self.proxy.namespace,
                        workload=self.proxy.workload, address=address, ports=tuple(ports), labels=self.proxy.labels,
                        healthy=True, sidecar=False, locality=locality, service_account=service_account,
                        source="sdk", port_map=tuple(sorted((port_map or {}).items())))
        self._registration = _Registration(self.api, inst, health, interval)
        self._registration.start()

    # -- the rules -------------------------------------------------------------------------------------
    def plan(self, call: R.Call) -> R.Plan | None:
        snap = self.feed.snapshot
        idx = self._index
        if idx is None or idx[0] != snap.generation:
            idx = self._index = (snap.generation, R.ServiceIndex(snap, self.proxy))
        return R.plan_call(snap, self.proxy, idx[1], call)

    def execute(self, call: R.Call, send: Callable[[str, int, float | None, R.Plan], Outcome],
                close: Callable[[Any], None] = lambda v: None) -> Outcome | Synthetic | None:
        """Run one call by the rules; None when the host is not in the mesh (the caller sends it as is)."""
        steps = self._steps(call)
        try:
            step = next(steps)
            while True:
                if step[0] == "send":
                    try:
                        out = send(*step[1:])
                    except BaseException as e:  # the loop's bookkeeping (in-flight counts) sees it too
                        step = steps.throw(e)
                        continue
                    step = steps.send(out)
                elif step[0] == "sleep":
                    self.sleep(step[1])
                    step = steps.send(None)
                else:
                    close(step[1])
                    step = steps.send(None)
        except StopIteration as done:
            return done.value

    async def execute_async(self, call: R.Call, send: Callable[..., Awaitable[Outcome]],
                            close: Callable[[Any], Awaitable[None]] | None = None) -> Outcome | Synthetic | None:
        """`execute` for asyncio: `send` and `close` are coroutines; waits are `asyncio.sleep`."""
        steps = self._steps(call)
        try:
            step = next(steps)
            while True:
                if step[0] == "send":
                    try:
                        out = await send(*step[1:])
                    except BaseException as e:
                        step = steps.throw(e)
                        continue
                    step = steps.send(out)
                elif step[0] == "sleep":
                    await asyncio.sleep(step[1])
                    step = steps.send(None)
                else:
                    if close is not None:
                        await close(step[1])
                    step = steps.send(None)
        except StopIteration as done:
            return done.value

    def _steps(self, call: R.Call) -> Generator[tuple, Any, Outcome | Synthetic | None]:
        """The call loop as a generator (the same for threads and asyncio): yields ("send", address, port,
        timeout, plan) and gets the Outcome back, ("sleep", seconds), ("close", response)."""
        snap = self.feed.snapshot
        plan = self.plan(call)
        self.stats["calls"] += 1
        if plan is None:
            self.stats["direct"] += 1
            return None
        if plan.direct is not None:
            return self._synthetic(plan.direct[0], plan.direct[1], "NR" if plan.direct[0] == 404 else "DR")
        start = self.clock()
        with self._lock:
            allowed, status, body = self.limits.check(snap, plan, call, start)
            u_delay, u_abort, u_dest = self.rand.random(), self.rand.random(), self.rand.random()
        if not allowed:
            return self._synthetic(status, body, "RL")
        delay, abort, grpc_abort = R.fault_decision(plan.fault, u_delay, u_abort)
        if delay:
            yield ("sleep", delay)
        if abort is not None:
            return self._synthetic(abort, "fault filter abort", "FI", grpc_abort)
        dest = R.choose_destination(plan, u_dest)
        target = self._cluster(snap, dest)
        if target is None:
            return self._synthetic(503, "no healthy upstream", "NC")
        cluster, endpoints, keys, pol = target
        deadline = start + plan.timeout if plan.timeout else None
        tried: set = set()
        last: Outcome | None = None
        for attempt in range(1 + plan.retry.attempts):
            now = self.clock()
            if deadline is not None and now >= deadline:
                break
            with self._lock:
                ep = R.pick_endpoint(pol, endpoints, self.lb, cluster, plan.hash_key, self.rand.random(),
                                     self.rand.random(), exclude=tried, ejected=self.outliers.ejected(now))
                if ep is not None:
                    self.lb.started(R.endpoint_key(ep))
            if ep is None:
                return self._synthetic(503, "no healthy upstream", "UH")
            key = R.endpoint_key(ep)
            per_try = plan.retry.per_try_timeout
            if deadline is not None:
                left = deadline - now
                per_try = left if per_try is None else min(per_try, left)
            self.stats["attempts"] += 1
            try:
                out = yield ("send", ep.address, ep.port, per_try, plan)
            finally:
                with self._lock:
                    self.lb.finished(key)
            with self._lock:
                if self.outliers.record(key, out.status, out.error, self.clock(), pol, keys):
                    log.warning("%s:%d of %s ejected (outlier detection)", ep.address, ep.port, cluster)
            if not R.retryable(plan.retry, out.status, out.error, out.grpc) \
                    or attempt == plan.retry.attempts:
                return self._final(out)
            tried.add(key)
            if last is not None and last.value is not None:
                yield ("close", last.value)
            last = out
            self.stats["retries"] += 1
            backoff = min(plan.retry.backoff * (2 ** attempt), 10 * plan.retry.backoff)
            with self._lock:
                backoff *= self.rand.random() + 0.5  # jitter, as Envoy's fully jittered back-off
            if deadline is not None:
                backoff = min(backoff, max(0.0, deadline - self.clock()))
            yield ("sleep", backoff)
        if last is not None and (deadline is None or self.clock() < deadline):
            return self._final(last)
        if last is not None and last.value is not None:
            yield ("close", last.value)
        return self._synthetic(504, "upstream request timeout", "UT")

    def _cluster(self, snap, dest) -> tuple | None:
        """(cluster name, healthy endpoints, their keys, policy) of a destination; cached per snapshot."""
        key = (snap.generation, dest)
        hit = self._clusters.get(key)
        if hit is None:
            svc = snap.services.get(dest.host)
            resolved = snap.config.resolved_for(self.proxy.namespace)  # exportTo: this caller's rules
            subsets = dict(resolved.subsets(dest.host))
            if svc is None or (dest.subset and dest.subset not in subsets):
                return None
            eps = tuple(e for e in snap.endpoints_for(svc, dest.port, subsets.get(dest.subset, ())) if e.healthy)
            hit = (f"outbound|{dest.port}|{dest.subset or ''}|{dest.host}", eps,
                   frozenset(R.endpoint_key(e) for e in eps), resolved.policy(dest.host, dest.subset, dest.port))
            if len(self._clusters) > 1000 or any(k[0] != snap.generation for k in list(self._clusters)[:1]):
                self._clusters.clear()
            self._clusters[key] = hit
        return hit

    def _final(self, out: Outcome) -> Outcome | Synthetic:
        """An attempt that got no response ends as Envoy ends it: 504 UT (timeout), 503 UF (connect failure),
        503 UC (reset); a response, even an error, is the answer."""
        if out.error is None:
            return out
        if out.error == "timeout":
            return self._synthetic(504, "upstream request timeout", "UT")
        if out.error == "connect-failure":
            return self._synthetic(503, f"upstream connect error: {out.exc}", "UF")
        return self._synthetic(503, f"upstream connection reset: {out.exc}", "UC")

    def _synthetic(self, status: int, body: str, flag: str, grpc: bool = False) -> Synthetic:
        self.stats["synthetic"] += 1
        return Synthetic(status, body, flag, grpc)

    # -- adapters --------------------------------------------------------------------------------------
    def httpx_transport(self, inner: Any = None) -> Any:
        from .httpx_transport import MeshTransport
        return MeshTransport(self, inner)

    def httpx_async_transport(self, inner: Any = None) -> Any:
        """For `httpx.AsyncClient(transport=...)`."""
        from .httpx_transport import AsyncMeshTransport
        return AsyncMeshTransport(self, inner)

    def grpc_channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> Any:
        from .grpc_channel import MeshChannel
        return MeshChannel(self, target, options)


def _api_client(state_dir: str | None, api_addresses: Sequence[str] | None, token_file: str | None) -> ApiClient:
    """The control plane's REST API as this process reaches it. In a `mizzen up` pod (the runner sets
    $MIZZEN_STATE_DIR, $MIZZEN_TOKEN_FILE; a host runner's pod also $MIZZEN_API): the pod app's own read-only
    credential, on the pods' socket(s) of the state dir (`pod-api.sock`: the app's uid cannot reach `api.sock`).
    Elsewhere (an operator's process, no token file): the state dir's api.sock with its admin credential."""
    if state_dir is None and api_addresses is None:  # in a `mizzen up` pod: its mesh (the runner sets it)
        if os.environ.get("MIZZEN_API"):  # a host runner's pod: the control planes over TCP
            api_addresses = os.environ["MIZZEN_API"].split(",")
        else:
            state_dir = os.environ.get("MIZZEN_STATE_DIR", ".mizzen")
    if not token_file:
        return ApiClient(state_dir, timeout=2.0) if api_addresses is None else \
            ApiClient(addresses=list(api_addresses), timeout=2.0)
    if api_addresses is None:
        assert state_dir is not None
        api_addresses = [f"unix:{p}" for p in StateLayout(state_dir).pod_api_sockets()]
    return ApiClient(state_dir, addresses=list(api_addresses), timeout=2.0, token=FileToken(token_file))


class _Registration:
    def __init__(self, api: ApiClient, inst: Instance, health: Callable[[], bool] | None, interval: float):
        self.api, self.inst, self.health, self.interval = api, inst, health, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mizzen-sdk-registration", daemon=True)
        self.sent: bool | None = None
        self.sent_at = 0.0

    def start(self) -> None:
        self._put(self._healthy())
        self._thread.start()

    def _healthy(self) -> bool:
        if self.health is None:
            return True
        try:
            return bool(self.health())
        except Exception as e:
            log.warning("health check of %s raised %r: reported unhealthy", self.inst.id, e)
            return False

    def _put(self, healthy: bool) -> None:
        inst = Instance.from_dict({**self.inst.to_dict(), "healthy": healthy})
        try:
            self.api.put_instance(inst)
            if self.sent is not None and healthy != self.sent:
                log.info("instance %s is now %s", inst.id, "healthy" if healthy else "unhealthy")
            self.sent, self.sent_at = healthy, time.monotonic()
        except ClientError as e:
            log.warning("registering %s failed (%s): retrying in %.0fs", inst.id, e, self.interval)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            h = self._healthy()
            if h != self.sent or time.monotonic() - self.sent_at > 10.0:
                self._put(h)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.api.delete_instance(self.inst.id)
        except ClientError as e:
            log.warning("withdrawing %s failed (%s): the control plane keeps it until it is deleted", self.inst.id, e)
