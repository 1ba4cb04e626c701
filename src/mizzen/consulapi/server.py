"""Consul's HTTP API (the subset real clients use), as an aiohttp application the control plane mounts, over
the Registry and a KV store.

Endpoints: agent (self, services, service/:id, service/register, service/deregister/:id,
service/maintenance/:id, maintenance, checks, check/register|deregister|pass|warn|fail|update/:id),
health/service/:svc (passing, tag, filter), health/checks/:svc, catalog (services, service/:svc, nodes,
datacenters), kv/<key> (GET recurse|keys|separator|raw, PUT cas|flags, DELETE recurse|cas), status/leader,
status/peers. Reads answer with X-Consul-Index, X-Consul-KnownLeader, X-Consul-LastContact; with `index`
(+ `wait`, default 5 min, at most 10) they block until the index moves (a blocking query) — woken by the
registry's or KV store's change notification, which on etcd comes from its watch.

ACLs (`acl=ConsulAcl(authenticator.authenticate)`): Consul's token headers carry Mizzen API tokens; a tenant
token sees and changes only its namespaces (acl.py). Without `acl`, ACLs are off.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..registry.base import Registry
from ..store.base import StoreUnavailable
from . import views
from .acl import ConsulAcl, PermissionDenied, kv_may_write, kv_visible, may_write, need_admin, sees
from .agent import BadRequest, ConsulAgent, fields, parse_duration
from .bexpr import FilterError, compile_filter
from .kv import KVStore

log = logging.getLogger(__name__)

CALLER: web.RequestKey[Any] = web.RequestKey("consul.caller", object)
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() not in ("0", "false", "no")


class ConsulAPI:
    def __init__(self, registry: Registry, kv: KVStore, *, node: str = "mizzen", datacenter: str = "dc1",
                 advertise: str = "127.0.0.1:8500", default_address: str = "127.0.0.1", refresh: float = 10.0,
                 acl: ConsulAcl | None = None):
        self.registry, self.kv = registry, kv
        self.acl = acl
        self.node, self.datacenter, self.advertise = node, datacenter, advertise
        self.address = advertise.rpartition(":")[0] or "127.0.0.1"
        self.agent = ConsulAgent(registry, node=node, datacenter=datacenter, default_address=default_address,
                                 refresh=refresh)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ app and blocking queries

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._acl])
        r = app.router
        r.add_get("/v1/agent/self", self.agent_self)
        r.add_get("/v1/agent/services", self.agent_services)
        r.add_get("/v1/agent/service/{id}", self.agent_service)
        r.add_put("/v1/agent/service/register", self.service_register)
        r.add_put("/v1/agent/service/deregister/{id}", self.service_deregister)
        r.add_put("/v1/agent/service/maintenance/{id}", self.service_maintenance)
        r.add_put("/v1/agent/maintenance", self.node_maintenance)
        r.add_get("/v1/agent/checks", self.agent_checks)
        r.add_put("/v1/agent/check/register", self.check_register)
        r.add_put("/v1/agent/check/deregister/{id}", self.check_deregister)
        for status, path in (("passing", "pass"), ("warning", "warn"), ("critical", "fail")):
            r.add_put(f"/v1/agent/check/{path}/{{id}}", self._check_status(status))
        r.add_put("/v1/agent/check/update/{id}", self.check_update)
        r.add_get("/v1/health/service/{service}", self.health_service)
        r.add_get("/v1/health/checks/{service}", self.health_checks)
        r.add_get("/v1/catalog/services", self.catalog_services)
        r.add_get("/v1/catalog/service/{service}", self.catalog_service)
        r.add_get("/v1/catalog/nodes", self.catalog_nodes)
        r.add_get("/v1/catalog/datacenters", self.catalog_datacenters)
        r.add_get("/v1/status/leader", self.status_leader)
        r.add_get("/v1/status/peers", self.status_peers)
        r.add_route("*", "/v1/kv/{key:.*}", self.kv_handler)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._unsubscribe = [self.registry.subscribe(self._wake_threadsafe), self.kv.subscribe(self._wake_threadsafe)]
        self.agent.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        for u in self._unsubscribe:
            u()
        await asyncio.to_thread(self.agent.stop)

    def _wake_threadsafe(self, _: int) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    async def _block(self, request: web.Request, current: Callable[[], int]) -> int:
        """Consul's blocking query: return at once without `index`, or when the index differs from it; else
        wait until it moves or `wait` runs out. Indexes are never 0 (clients treat 0 as "no index"): the
        registry's views use version + 1, since an empty SQLite registry is at version 0."""
        def idx() -> int:
            return max(1, current())

        if "index" not in request.query:
            return idx()
        try:
            index = int(request.query["index"])
        except ValueError:
            raise BadRequest("index must be a number") from None
        wait = min(parse_duration(request.query.get("wait"), "wait") or DEFAULT_WAIT, MAX_WAIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            cur = idx()
            left = deadline - loop.time()
            if cur != index or left <= 0:
                return cur
            ev = self._changed
            try:  # also look every second: a replica in another process may have changed a SQLite backend
                await asyncio.wait_for(ev.wait(), min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    def _json(self, body: Any, index: int | None = None, status: int = 200) -> web.Response:
        headers = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0",
                   "X-Consul-Effective-Consistency": "leader"}
        if index is not None:
            headers["X-Consul-Index"] = str(index)
        return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=headers)

    @web.middleware
    async def _acl(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.acl is not None:
            request[CALLER] = self.acl.caller(request)
        return await handler(request)

    @staticmethod
    def _caller(request: web.Request) -> Any:
        return request.get(CALLER)

    def _visible(self, request: web.Request) -> list[Any]:
        """The registry's instances the caller may see (all, without ACLs)."""
        caller = self._caller(request)
        return [i for i in self.registry.list() if sees(caller, i.namespace)]

    def _service_ns(self, sid: str) -> str | None:
        s = self.agent.services.get(sid)
        return s.namespace if s is not None else None

    def _may_change_service(self, request: web.Request, sid: str, what: str = "service:write") -> None:
        ns = self._service_ns(sid)
        if ns is not None:
            may_write(self._caller(request), ns, what)
        elif self._caller(request) is not None and not self._caller(request).admin:
            raise PermissionDenied(f"Permission denied: token lacks '{what}' permission")

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except PermissionDenied as e:
            return web.Response(status=403, text=str(e))
        except (BadRequest, FilterError) as e:
            return web.Response(status=400, text=str(e))
        except StoreUnavailable as e:
            log.warning("consul API %s %s: %s", request.method, request.path, e)
            return web.Response(status=503, text=f"{e}")

    async def _body(self, request: web.Request) -> Any:
        text = await request.text()
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except ValueError as e:
            raise BadRequest(f"request body is not JSON: {e}") from None

    def _filter(self, request: web.Request) -> Callable[[Any], bool]:
        return compile_filter(request.query.get("filter", ""))

    # ------------------------------------------------------------------ agent

    async def agent_self(self, request: web.Request) -> web.Response:
        host, _, port = self.advertise.rpartition(":")
        return self._json({"Config": {"Datacenter": self.datacenter, "NodeName": self.node, "NodeID": "",
                                      "Server": True, "Revision": "mizzen", "Version": "1.17.0+mizzen"},
                           "Member": {"Name": self.node, "Addr": host, "Port": int(port or 8301), "Tags": {
                               "dc": self.datacenter, "role": "consul"}, "Status": 1},
                           "Meta": {}, "DebugConfig": {}, "Coord": None, "Stats": {}})

    async def agent_services(self, request: web.Request) -> web.Response:
        pred = self._filter(request)
        caller = self._caller(request)
        with self.agent._lock:
            svcs = [s for s in self.agent.services.values() if sees(caller, s.namespace)]
        out = {}
        for s in svcs:
            d = views.service_of(self.agent.instance_of(s))
            if pred(d):
                out[s.id] = d
        return self._json(out)

    async def agent_service(self, request: web.Request) -> web.Response:
        s = self.agent.services.get(request.match_info["id"])
        if s is None or not sees(self._caller(request), s.namespace):
            return web.Response(status=404, text="unknown service ID")
        return self._json(views.service_of(self.agent.instance_of(s)))

    async def service_register(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        reg = fields(body, "a service registration")
        may_write(self._caller(request), str(reg.get("namespace") or "default"), "service:write")
        self._may_replace(request, str(reg.get("id") or reg.get("name") or ""))
        await asyncio.to_thread(self.agent.register_service, body,
                                replace_checks=_truthy(request.query.get("replace-existing-checks")))
        return web.Response(text="")

    def _may_replace(self, request: web.Request, sid: str) -> None:
        """Re-registering an ID that exists replaces that service: the caller must be allowed to change it."""
        if sid and sid in self.agent.services:
            self._may_change_service(request, sid)

    async def service_deregister(self, request: web.Request) -> web.Response:
        self._may_change_service(request, request.match_info["id"])
        if not await asyncio.to_thread(self.agent.deregister_service, request.match_info["id"]):
            return web.Response(status=404, text="Unknown service ID")
        return web.Response(text="")

    async def service_maintenance(self, request: web.Request) -> web.Response:
        if "enable" not in request.query:
            raise BadRequest("missing value for enable")
        self._may_change_service(request, request.match_info["id"])
        try:
            await asyncio.to_thread(self.agent.set_service_maintenance, request.match_info["id"],
                                    _truthy(request.query["enable"]), request.query.get("reason", ""))
        except KeyError:
            return web.Response(status=404, text="Unknown service ID")
        return web.Response(text="")

    async def node_maintenance(self, request: web.Request) -> web.Response:
        if "enable" not in request.query:
            raise BadRequest("missing value for enable")
        need_admin(self._caller(request), "node:write")
        await asyncio.to_thread(self.agent.set_node_maintenance, _truthy(request.query["enable"]),
                                request.query.get("reason", ""))
        return web.Response(text="")

    async def agent_checks(self, request: web.Request) -> web.Response:
        pred = self._filter(request)
        caller = self._caller(request)
        out = {}
        with self.agent._lock:
            sids = [s for s in self.agent.services if sees(caller, self.agent.services[s].namespace)]
            for sid in sids + ([""] if caller is None or caller.admin else []):
                name = self.agent.services[sid].name if sid else ""
                for c in (self.agent.service_checks(sid) if sid else
                          [c for c in self.agent.checks.values() if not c.service_id]):
                    d = c.to_consul(self.node, name)
                    if pred(d):
                        out[c.id] = d
        return self._json(out)

    async def check_register(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        sid = str(fields(body, "a check registration").get("serviceid") or "")
        if sid:
            self._may_change_service(request, sid)
        else:
            need_admin(self._caller(request), "node:write")
        await asyncio.to_thread(self.agent.register_check, body)
        return web.Response(text="")

    def _may_change_check(self, request: web.Request, cid: str) -> None:
        c = self.agent.checks.get(cid)
        if c is None:
            return  # 404 from the handler
        if c.service_id:
            self._may_change_service(request, c.service_id)
        else:
            need_admin(self._caller(request), "node:write")

    async def check_deregister(self, request: web.Request) -> web.Response:
        self._may_change_check(request, request.match_info["id"])
        if not await asyncio.to_thread(self.agent.deregister_check, request.match_info["id"]):
            return web.Response(status=404, text="Unknown check ID")
        return web.Response(text="")

    def _check_status(self, status: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            self._may_change_check(request, request.match_info["id"])
            try:
                await asyncio.to_thread(self.agent.update_check, request.match_info["id"], status,
                                        request.query.get("note", ""))
            except KeyError:
                return web.Response(status=404, text="Unknown check ID")
            return web.Response(text="")
        return handler

    async def check_update(self, request: web.Request) -> web.Response:
        body = fields(await self._body(request), "a check update")
        self._may_change_check(request, request.match_info["id"])
        try:
            await asyncio.to_thread(self.agent.update_check, request.match_info["id"], str(body.get("status", "")),
                                    str(body.get("output", "")))
        except KeyError:
            return web.Response(status=404, text="Unknown check ID")
        return web.Response(text="")

    # ------------------------------------------------------------------ health and catalog

    def _entries(self, request: web.Request) -> list[dict[str, Any]]:
        pred = self._filter(request)
        entries = views.health_entries(self._visible(request), request.match_info["service"], node=self.node,
                                       address=self.address, datacenter=self.datacenter,
                                       passing=_truthy(request.query.get("passing")) if "passing" in request.query
                                       else False, tags=request.query.getall("tag", []))
        return [e for e in entries if pred(e)]

    async def health_service(self, request: web.Request) -> web.Response:
        index = await self._block(request, lambda: self.registry.version + 1)
        return self._json(self._entries(request), index)

    async def health_checks(self, request: web.Request) -> web.Response:
        index = await self._block(request, lambda: self.registry.version + 1)
        out = [c for e in views.health_entries(self._visible(request), request.match_info["service"], node=self.node,
                                               address=self.address, datacenter=self.datacenter)
               for c in e["Checks"] if c["ServiceID"]]
        pred = self._filter(request)
        return self._json([c for c in out if pred(c)], index)

    async def catalog_services(self, request: web.Request) -> web.Response:
        index = await self._block(request, lambda: self.registry.version + 1)
        return self._json(views.catalog_services(self._visible(request)), index)

    async def catalog_service(self, request: web.Request) -> web.Response:
        index = await self._block(request, lambda: self.registry.version + 1)
        pred = self._filter(request)
        out = views.catalog_service(self._visible(request), request.match_info["service"], node=self.node,
                                    address=self.address, datacenter=self.datacenter,
                                    tags=request.query.getall("tag", []))
        return self._json([e for e in out if pred(e)], index)

    async def catalog_nodes(self, request: web.Request) -> web.Response:
        index = await self._block(request, lambda: self.registry.version + 1)
        return self._json([views.node_of(self.node, self.address, self.datacenter)], index)

    async def catalog_datacenters(self, request: web.Request) -> web.Response:
        return self._json([self.datacenter])

    async def status_leader(self, request: web.Request) -> web.Response:
        return self._json(f"{self.address}:8300")

    async def status_peers(self, request: web.Request) -> web.Response:
        return self._json([f"{self.address}:8300"])

    # ------------------------------------------------------------------ KV

    async def kv_handler(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        q = request.query
        caller = self._caller(request)
        if request.method == "GET":
            index = await self._block(request, lambda: self.kv.index)
            if "keys" in q:
                sep = q.get("separator", "")
                keys: list[str] = []
                for e in kv_visible(caller, self.kv.list(key), lambda e: e.key):
                    k = e.key
                    if sep:
                        cut = k.find(sep, len(key))
                        if cut >= 0:
                            k = k[:cut + len(sep)]
                    if not keys or keys[-1] != k:
                        keys.append(k)
                return self._json(keys, index) if keys else self._json(None, index, 404)
            if "recurse" in q:
                entries = [e.to_consul() for e in kv_visible(caller, self.kv.list(key), lambda e: e.key)]
                return self._json(entries, index) if entries else self._json(None, index, 404)
            e = self.kv.get(key)
            if e is None or not kv_visible(caller, [e], lambda e: e.key):
                return self._json(None, index, 404)
            if "raw" in q:
                return web.Response(body=e.value, headers={"X-Consul-Index": str(index)})
            return self._json([e.to_consul()], index)
        if request.method == "PUT":
            if not key:
                raise BadRequest("missing key name")
            kv_may_write(caller, key)
            body = await request.read()
            cas = int(q["cas"]) if "cas" in q else None
            flags = int(q.get("flags", 0))
            ok = await asyncio.to_thread(self.kv.put, key, body, flags=flags, cas=cas)
            return self._json(ok)
        if request.method == "DELETE":
            kv_may_write(caller, key)
            cas = int(q["cas"]) if "cas" in q else None
            ok = await asyncio.to_thread(self.kv.delete, key, recurse="recurse" in q, cas=cas)
            return self._json(ok)
        return web.Response(status=405, text="method not allowed")
