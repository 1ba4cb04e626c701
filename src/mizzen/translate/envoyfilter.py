"""Apply Istio EnvoyFilters to one proxy's rendered view. PURE (besides importing the protobuf modules of the
`@type`s a patch names, so that they parse).

Each configPatch selects objects of the view (listeners, filter chains, network and HTTP filters, listener
filters, route configurations — the RDS ones and the inbound ones inlined in HCMs —, virtual hosts, routes,
clusters) by its match (context, listener/filterChain/filter/subFilter, routeConfiguration/vhost/route,
cluster), then MERGEs into, ADDs, REMOVEs, INSERTs (BEFORE/AFTER/FIRST) or REPLACEs them, as Istio does.
EnvoyFilters of the root namespace apply first, then the proxy's namespace's; within each, by priority,
then age. Mizzen's listeners differ in shape from Istio's in one way: outbound (and inbound) traffic goes
through one capture listener (virtualOutbound/virtualInbound) with a filter chain per port, so a listener
`portNumber` selects that listener's filter chains for the port.

A patch whose value does not parse, or whose result does not, is an error naming the EnvoyFilter and the
patch (`spec.configPatches[i]`); the control plane refuses such an apply, and checks the rest with Envoy.
"""
from __future__ import annotations

import copy
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from ..api.base import Resource
from ..api.envoy_filter import HCM_NAMES, EnvoyConfigObjectPatch
from ..model.snapshot import ROOT_NAMESPACE, Snapshot, labels_match
from ..model.types import CLUSTER, LISTENER, ROUTE, Proxy, Rendered
from .consistency import dangling

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
VALUE_MESSAGE = {
    "LISTENER": listener_pb2.Listener, "FILTER_CHAIN": listener_components_pb2.FilterChain,
    "NETWORK_FILTER": listener_components_pb2.Filter, "HTTP_FILTER": hcm_pb2.HttpFilter,
    "LISTENER_FILTER": listener_components_pb2.ListenerFilter, "ROUTE_CONFIGURATION": route_pb2.RouteConfiguration,
    "VIRTUAL_HOST": route_components_pb2.VirtualHost, "HTTP_ROUTE": route_components_pb2.Route,
    "CLUSTER": cluster_pb2.Cluster,
}
INBOUND_LISTENERS = ("virtualInbound",)
Render = Callable[[str, str, Any], Rendered]


@dataclass(frozen=True)
class EnvoyFilterError:
    """Why one configPatch of an EnvoyFilter was not applied to a view (the shape of patches.PatchError)."""

    resource: Resource
    index: int
    message: str
    field: str = ""

    @property
    def path(self) -> str:
        return f"spec.configPatches[{self.index}]"

    def __str__(self) -> str:
        return f"EnvoyFilter {self.resource.namespace}/{self.resource.name} {self.path}: {self.message}"


def envoy_filters_for(snap: Snapshot, proxy: Proxy) -> list[Resource]:
    """The EnvoyFilters that select `proxy`, in the order Istio applies them."""
    labels = proxy.label_dict
    out: list[Resource] = []
    for ns in dict.fromkeys((ROOT_NAMESPACE, proxy.namespace)):
        chosen = [f for f in snap.config.by_kind.get("EnvoyFilter", ()) if f.namespace == ns and
                  not f.spec.target_refs and (f.spec.workload_selector is None or
                                              labels_match(f.spec.workload_selector.labels, labels))]
        out += sorted(chosen, key=lambda f: (f.spec.priority, f.revision, f.name))
    return out


# ------------------------------------------------------------------ protobuf types named by @type

_imported: set[str] = set()


def _ensure_types(value: Any) -> None:
    """Import the protobuf modules of every `@type` in `value`, so json_format can parse them."""
    if isinstance(value, dict):
        t = value.get("@type")
        if isinstance(t, str) and "/" in t:
            package = t.rsplit("/", 1)[1].rsplit(".", 1)[0]
            if package not in _imported:
                _imported.add(package)
                try:
                    mod = importlib.import_module(package)
                    for m in pkgutil.iter_modules(getattr(mod, "__path__", [])):
                        if m.name.endswith("_pb2"):
                            importlib.import_module(f"{package}.{m.name}")
                except ImportError:
                    pass  # json_format then says which type it cannot resolve
        for v in value.values():
            _ensure_types(v)
    elif isinstance(value, list):
        for v in value:
            _ensure_types(v)


def normalize(apply_to: str, value: dict) -> dict:
    """The patch value parsed as its object's message and back (validates, canonical field names)."""
    _ensure_types(value)
    try:
        msg = json_format.ParseDict(value, VALUE_MESSAGE[apply_to]())
    except json_format.ParseError as e:
        raise ValueError(f"not a valid {VALUE_MESSAGE[apply_to].DESCRIPTOR.name}: {e}") from None
    return _as_dict(msg)


def _as_dict(msg) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def merge(base: dict, patch: dict, replace_lists: bool = False) -> dict:
    """Istio's MERGE: objects key by key (an Any of another @type is replaced), lists appended (or replaced
    with MERGE_AND_REPLACE_LIST), scalars replaced."""
    out = dict(base)
    for k, v in patch.items():
        cur = out.get(k)
        if isinstance(v, dict) and isinstance(cur, dict) and cur.get("@type") == v.get("@type"):
            out[k] = merge(cur, v, replace_lists)
        elif isinstance(v, list) and isinstance(cur, list) and not replace_lists:
            out[k] = cur + copy.deepcopy(v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ------------------------------------------------------------------ matching

def _context_ok(patch: EnvoyConfigObjectPatch, inbound: bool | None, gateway: bool = False) -> bool:
    """Does a patch's `match.context` apply: GATEWAY (and ANY) on gateway proxies (docs/gateway.md),
    SIDECAR_INBOUND/OUTBOUND (and ANY) on sidecars; WAYPOINT never (Mizzen runs no waypoints)."""
    ctx = patch.match.context if patch.match else "ANY"
    if ctx == "WAYPOINT":
        return False
    if gateway:
        return ctx in ("GATEWAY", "ANY")
    if ctx == "GATEWAY":
        return False
    if ctx == "ANY" or inbound is None:
        return ctx == "ANY"
    return ctx == ("SIDECAR_INBOUND" if inbound else "SIDECAR_OUTBOUND")


def _listener_inbound(lst: dict) -> bool:
    return lst.get("traffic_direction") == "INBOUND" or lst.get("name", "").startswith(("virtualInbound", "inbound"))


def _chain_port(fc: dict) -> int | None:
    port = (fc.get("filter_chain_match") or {}).get("destination_port")
    return int(port) if port is not None else None


def _listener_matches(lm, lst: dict) -> bool:
    if lm is None:
        return True
    if lm.name and lm.name != lst.get("name"):
        return False
    if lm.port_number:
        own = (lst.get("address", {}).get("socket_address") or {}).get("port_value")
        chains = [_chain_port(fc) for fc in lst.get("filter_chains", [])]
        if own != lm.port_number and lm.port_number not in chains:
            return False
    if lm.listener_filter and not any(f.get("name") == lm.listener_filter for f in lst.get("listener_filters", [])):
        return False
    return True


def _chain_matches(lm, lst: dict, fc: dict) -> bool:
    if lm is None:
        return True
    own = (lst.get("address", {}).get("socket_address") or {}).get("port_value")
    if lm.port_number and own != lm.port_number and _chain_port(fc) != lm.port_number:
        return False
    cm = lm.filter_chain
    if cm is None:
        return True
    fcm = fc.get("filter_chain_match") or {}
    if cm.name and cm.name != fc.get("name"):
        return False
    if cm.sni and cm.sni not in fcm.get("server_names", []):
        return False
    if cm.transport_protocol and cm.transport_protocol != fcm.get("transport_protocol", "raw_buffer"):
        return False
    if cm.application_protocols and not set(cm.application_protocols.split(",")) <= set(
            fcm.get("application_protocols", [])):
        return False
    if cm.destination_port and cm.destination_port != _chain_port(fc):
        return False
    if cm.filter is not None and cm.filter.name and not any(_filter_name_is(f, cm.filter.name)
                                                          for f in fc.get("filters", [])):
        return False
    return True


def _filter_name_is(f: dict, name: str) -> bool:
    n = f.get("name")
    return n == name or (name in HCM_NAMES and n in HCM_NAMES)


def _chains(lst: dict) -> list[dict]:
    out = list(lst.get("filter_chains", []))
    if "default_filter_chain" in lst:
        out.append(lst["default_filter_chain"])
    return out


# ------------------------------------------------------------------ list operations

def _insert(items: list, value: Any, op: str, at: int | None) -> None:
    if op == "INSERT_FIRST" or (op == "INSERT_BEFORE" and at is None):
        items.insert(0, value)
    elif op == "INSERT_BEFORE":
        items.insert(at, value)
    elif op == "INSERT_AFTER" and at is not None:
        items.insert(at + 1, value)
    else:  # ADD, or INSERT_AFTER without an anchor: at the end
        items.append(value)


def _list_op(items: list[dict], op: str, value: dict | None, target: str | None, key: str = "name",
             replace_lists: bool = False, before_terminal: str | None = None) -> list[dict]:
    """One patch on a list of named objects (filters, chains, routes); `target` names the matched one."""
    at = next((i for i, x in enumerate(items) if target and x.get(key) == target), None)
    out = list(items)
    if op == "REMOVE":
        return [x for x in out if not (target is None or x.get(key) == target)]
    if op in ("MERGE", "MERGE_AND_REPLACE_LIST"):
        return [merge(x, value, op == "MERGE_AND_REPLACE_LIST") if target is None or x.get(key) == target else x
                for x in out]
    if op == "REPLACE":
        return [copy.deepcopy(value) if x.get(key) == target else x for x in out] if at is not None else out
    if op == "ADD" and before_terminal and out and out[-1].get(key) == before_terminal:
        out.insert(len(out) - 1, copy.deepcopy(value))  # keep the router last, as Envoy requires
        return out
    if target is not None and at is None and op in ("INSERT_BEFORE", "INSERT_AFTER"):
        return out  # Istio: the anchor is not there, nothing to insert relative to
    _insert(out, copy.deepcopy(value), op, at)
    return out


# ------------------------------------------------------------------ one patch

class _Applier:
    def __init__(self, view: dict[str, dict[str, Rendered]], render: Render, gateway: bool = False):
        self.view = view
        self.render = render
        self.gateway = gateway
        self.dicts: dict[tuple[str, str], dict] = {}  # decoded resources, re-rendered at the end
        self.removed: set[tuple[str, str]] = set()
        self.modified: set[tuple[str, str]] = set()

    def table(self, t: str) -> list[tuple[str, dict]]:
        names = [n for n in self.view[t] if (t, n) not in self.removed]
        names += [n for (tt, n) in self.modified if tt == t and n not in self.view[t] and (tt, n) not in self.removed]
        return [(n, self.get(t, n)) for n in dict.fromkeys(names)]

    def get(self, t: str, name: str) -> dict:
        key = (t, name)
        if key not in self.dicts:
            from .patches import MESSAGE

            self.dicts[key] = _as_dict(MESSAGE[t].FromString(self.view[t][name].payload))
        return self.dicts[key]

    def put(self, t: str, name: str, d: dict) -> None:
        self.dicts[(t, name)] = d
        self.removed.discard((t, name))
        self.modified.add((t, name))

    def result(self) -> dict[str, dict[str, Rendered]]:
        from .patches import MESSAGE

        out = {t: dict(v) for t, v in self.view.items()}
        for t, name in self.removed:
            out[t].pop(name, None)
        for (t, name) in self.modified:
            if (t, name) in self.removed:
                continue
            d = self.dicts[(t, name)]
            try:
                msg = json_format.ParseDict(d, MESSAGE[t]())
            except json_format.ParseError as e:
                raise ValueError(f"the patched {t.rsplit('.', 1)[1]} {name!r} is not valid: {e}") from None
            new_name = getattr(msg, "name", "") or name
            out[t][new_name] = self.render(t, new_name, msg)
        return out

    # -- per object class ------------------------------------------------------------------------
    def apply(self, p: EnvoyConfigObjectPatch) -> None:
        at, op = p.apply_to, p.patch.operation
        value = normalize(at, p.patch.value) if p.patch.value is not None and at in VALUE_MESSAGE else None
        m = p.match
        if at == "CLUSTER":
            self._clusters(p, op, value)
        elif at in ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"):
            self._routes(p, op, value)
        elif at in ("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "LISTENER_FILTER"):
            self._listeners(p, op, value, m.listener if m else None)
        # EXTENSION_CONFIG, BOOTSTRAP: no effect in Mizzen (accepted with a warning, see api/envoy_filter.py)

    def _clusters(self, p, op, value) -> None:
        cm = p.match.cluster if p.match else None
        if op == "ADD":
            ctx = p.match.context if p.match else "ANY"
            if ctx in (("GATEWAY", "ANY") if self.gateway else ("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND")):
                self.put(CLUSTER, value.get("name", ""), value)
            return
        for name, c in self.table(CLUSTER):
            parts = name.split("|")
            inbound = parts[0] == "inbound" if len(parts) == 4 else None
            if not _context_ok(p, inbound, self.gateway):
                continue
            if cm is not None:
                if cm.name and cm.name != name:
                    continue
                if len(parts) == 4:
                    if cm.port_number and str(cm.port_number) != parts[1]:
                        continue
                    if cm.subset and cm.subset != parts[2]:
                        continue
                    if cm.service and not _host_match(cm.service, parts[3]):
                        continue
                elif cm.port_number or cm.subset or cm.service:
                    continue
            if op == "REMOVE":
                self.removed.add((CLUSTER, name))
            elif op in ("MERGE", "MERGE_AND_REPLACE_LIST"):
                self.put(CLUSTER, name, merge(c, value, op == "MERGE_AND_REPLACE_LIST"))

    def _route_configs(self, p) -> Iterable[tuple[bool, dict, Callable[[dict], None]]]:
        """(inbound, route config dict, setter) for the RDS route configs and the inbound inline ones."""
        for name, rc in self.table(ROUTE):
            yield False, rc, (lambda d, n=name: self.put(ROUTE, n, d))
        for lname, lst in self.table(LISTENER):
            if not _listener_inbound(lst):
                continue
            for ci, fc in enumerate(_chains(lst)):
                for fi, f in enumerate(fc.get("filters", [])):
                    tc = f.get("typed_config") or {}
                    if tc.get("@type") == HCM_TYPE and "route_config" in tc:
                        def setter(d, lname=lname, ci=ci, fi=fi):
                            lst2 = self.get(LISTENER, lname)
                            chain = _chains(lst2)[ci]
                            chain["filters"][fi]["typed_config"]["route_config"] = d
                            self.put(LISTENER, lname, lst2)
                        yield True, tc["route_config"], setter

    def _routes(self, p, op, value) -> None:
        rm = p.match.route_configuration if p.match else None
        if p.apply_to == "ROUTE_CONFIGURATION" and op == "ADD":
            self.put(ROUTE, value.get("name", ""), value)
            return
        for inbound, rc, setter in list(self._route_configs(p)):
            if not _context_ok(p, inbound, self.gateway) or not _rc_matches(rm, rc, inbound):
                continue
            rc = copy.deepcopy(rc)
            if p.apply_to == "ROUTE_CONFIGURATION":
                if op == "REMOVE" and not inbound:
                    self.removed.add((ROUTE, rc.get("name", "")))
                    continue
                if op in ("MERGE", "MERGE_AND_REPLACE_LIST"):
                    setter(merge(rc, value, op == "MERGE_AND_REPLACE_LIST"))
                continue
            vm = rm.vhost if rm else None
            vhosts = rc.get("virtual_hosts", [])
            if p.apply_to == "VIRTUAL_HOST":
                if op == "ADD":
                    rc["virtual_hosts"] = vhosts + [copy.deepcopy(value)]
                else:
                    keep = []
                    for vh in vhosts:
                        if _vh_matches(vm, vh):
                            if op == "REMOVE":
                                continue
                            if op in ("MERGE", "MERGE_AND_REPLACE_LIST"):
                                vh = merge(vh, value, op == "MERGE_AND_REPLACE_LIST")
                        keep.append(vh)
                    rc["virtual_hosts"] = keep
                setter(rc)
                continue
            routes_match = vm.route if vm else None  # HTTP_ROUTE
            action = {"ROUTE": "route", "REDIRECT": "redirect", "DIRECT_RESPONSE": "direct_response"}.get(
                routes_match.action if routes_match else "ANY")
            target = routes_match.name if routes_match and routes_match.name else None
            for vh in vhosts:
                if not _vh_matches(vm, vh):
                    continue
                routes = vh.get("routes", [])
                if action is None:
                    vh["routes"] = _list_op(routes, op, value, target)
                    continue
                for n in [r.get("name") for r in routes if action in r and (target is None or r.get("name") == target)]:
                    routes = _list_op(routes, op, value, n)
                vh["routes"] = routes
            setter(rc)

    def _listeners(self, p, op, value, lm) -> None:
        at = p.apply_to
        if at == "LISTENER" and op == "ADD":
            self.put(LISTENER, value.get("name", ""), value)
            return
        for name, lst in self.table(LISTENER):
            if not _context_ok(p, _listener_inbound(lst), self.gateway) or not _listener_matches(lm, lst):
                continue
            lst = copy.deepcopy(lst)
            if at == "LISTENER":
                if op == "REMOVE":
                    self.removed.add((LISTENER, name))
                elif op in ("MERGE", "MERGE_AND_REPLACE_LIST"):
                    self.put(LISTENER, name, merge(lst, value, op == "MERGE_AND_REPLACE_LIST"))
                continue
            if at == "LISTENER_FILTER":
                target = lm.listener_filter if lm else None
                lst["listener_filters"] = _list_op(lst.get("listener_filters", []), op, value, target)
                self.put(LISTENER, name, lst)
                continue
            if at == "FILTER_CHAIN" and op == "ADD":
                lst["filter_chains"] = lst.get("filter_chains", []) + [copy.deepcopy(value)]
                self.put(LISTENER, name, lst)
                continue
            changed = False
            chains_key = [("filter_chains", i) for i in range(len(lst.get("filter_chains", [])))]
            if "default_filter_chain" in lst:
                chains_key.append(("default_filter_chain", None))
            removed_chains: set[int] = set()
            for key, i in chains_key:
                fc = lst[key] if i is None else lst[key][i]
                if not _chain_matches(lm, lst, fc):
                    continue
                changed = True
                if at == "FILTER_CHAIN":
                    if op == "REMOVE":
                        if i is None:
                            del lst[key]
                        else:
                            removed_chains.add(i)
                    elif op in ("MERGE", "MERGE_AND_REPLACE_LIST"):
                        new = merge(fc, value, op == "MERGE_AND_REPLACE_LIST")
                        if i is None:
                            lst[key] = new
                        else:
                            lst[key][i] = new
                    continue
                fm = lm.filter_chain.filter if lm and lm.filter_chain else None
                if at == "NETWORK_FILTER":
                    target = fm.name if fm and fm.name else None
                    fc["filters"] = _list_op(fc.get("filters", []), op, value, _real_name(fc, target))
                    continue
                # HTTP_FILTER: inside each HCM of the chain (the matched one, if a filter name is given)
                for f in fc.get("filters", []):
                    tc = f.get("typed_config") or {}
                    if tc.get("@type") != HCM_TYPE or (fm and fm.name and not _filter_name_is(f, fm.name)):
                        continue
                    sub = fm.sub_filter.name if fm and fm.sub_filter and fm.sub_filter.name else None
                    if sub is not None and not any(h.get("name") == sub for h in tc.get("http_filters", [])):
                        continue
                    tc["http_filters"] = _list_op(tc.get("http_filters", []), op, value, sub,
                                                  before_terminal="envoy.filters.http.router")
            if removed_chains:
                lst["filter_chains"] = [fc for i, fc in enumerate(lst["filter_chains"]) if i not in removed_chains]
            if changed:
                self.put(LISTENER, name, lst)


def _real_name(fc: dict, target: str | None) -> str | None:
    if target is None:
        return None
    for f in fc.get("filters", []):
        if _filter_name_is(f, target):
            return f.get("name")
    return target


def _host_match(pattern: str, host: str) -> bool:
    return pattern == host or (pattern.startswith("*") and host.endswith(pattern[1:]))


def _rc_matches(rm, rc: dict, inbound: bool) -> bool:
    if rm is None:
        return True
    name = rc.get("name", "")
    if rm.name and rm.name != name:
        return False
    gateway_rc = name.startswith(("http.", "https."))  # a gateway's: http.<port>, https.<port>.<port name>.<gw>.<ns>
    if rm.port_number:
        port = name.split("|")[1] if inbound and name.count("|") == 3 else name.split(".")[1] if gateway_rc else name
        if port != str(rm.port_number):
            return False
    if rm.gateway:  # `<namespace>/<name>` of the Gateway an HTTPS server's route config was made for
        ns, _, gw = rm.gateway.partition("/")
        if not (name.startswith("https.") and name.endswith(f".{gw}.{ns}")):
            return False
    vhosts = rc.get("virtual_hosts", [])
    if rm.vhost is not None and rm.vhost.name and not any(_vh_matches(rm.vhost, vh) for vh in vhosts):
        return False
    return True


def _vh_matches(vm, vh: dict) -> bool:
    if vm is None:
        return True
    if vm.name and vm.name != vh.get("name"):
        return False
    if vm.domain_name and vm.domain_name not in vh.get("domains", []):
        return False
    return True


# ------------------------------------------------------------------ entry point

def apply_envoy_filters(view: dict[str, dict[str, Rendered]], filters: list[Resource], render: Render,
                        gateway: bool = False) -> tuple[dict[str, dict[str, Rendered]], list[EnvoyFilterError]]:
    """A new view with the EnvoyFilters applied, and the errors (a failing patch is skipped). `gateway`: the
    view is a gateway proxy's (patches with context GATEWAY apply, SIDECAR_* ones do not)."""
    errors: list[EnvoyFilterError] = []
    current, dangles = view, dangling(view)
    for res in filters:
        for i, p in enumerate(res.spec.config_patches):
            if p.patch is None or (p.match is not None and p.match.context == "WAYPOINT"):
                continue
            applier = _Applier(current, render, gateway)
            try:
                applier.apply(p)
                cand = applier.result()
            except (ValueError, KeyError, TypeError) as e:
                errors.append(EnvoyFilterError(res, i, f"{p.apply_to} {p.patch.operation}: {e}"))
                continue
            after = dangling(cand)  # as EnvoyPatches: a patch that would leave the view dangling is skipped
            new = sorted(after - dangles)
            if new:
                errors.extend(EnvoyFilterError(res, i, str(d)) for d in new)
                continue
            current, dangles = cand, after
    return current, errors
