"""What the console's pages show, computed from REST answers and telemetry windows. PURE (dicts in, dicts out).

- `topology`: the graph — workload nodes, service nodes, caller -> service edges (rps, success rate, p99)
  and service -> workload edges (the version split: share of the service's traffic per version);
- `service_detail`: a service's ports, versions, endpoints with health, the routing rules that apply and its
  golden metrics;
- `proxy_rows`: sync state per xDS type with Envoy's NACK error.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..telemetry import golden
from ..telemetry.istio import UNKNOWN
from ..telemetry.peers import DOMAIN, service_parts

WARN_BELOW, FAIL_BELOW = 1.0, 0.95  # success rates that color an edge amber / red
XDS_TYPES = ("CDS", "EDS", "LDS", "RDS")


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_members(service: Mapping[str, Any], instances: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Instances a v1 Service resource selects (same namespace, labels match its selector)."""
    ns = service["metadata"].get("namespace", "default")
    sel = (service.get("spec") or {}).get("selector") or {}
    return [i for i in instances if i.get("namespace") == ns and _matches(sel, i.get("labels") or {})]


def health_class(success_rate: float | None, requests: int) -> str:
    if not requests or success_rate is None:
        return "idle"
    if success_rate < FAIL_BELOW:
        return "fail"
    if success_rate < WARN_BELOW:
        return "warn"
    return "ok"


def _fmt_ms(x: float | None) -> str:
    return "-" if x is None else (f"{x:.0f}ms" if x >= 10 else f"{x:.1f}ms")


def edge_label(e: Mapping[str, Any]) -> str:
    sr = "-" if e.get("success_rate") is None else f"{e['success_rate'] * 100:.1f}%"
    return f"{e['rps']:.1f} rps · {sr} · p99 {_fmt_ms(e.get('p99_ms'))}"


def topology(instances: list[Mapping[str, Any]], services: list[Mapping[str, Any]],
             service_resources: list[Mapping[str, Any]], windows: list[Mapping[str, Any]]) -> dict[str, Any]:
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []

    def workload_node(name: str, ns: str) -> str:
        nid = f"w:{ns}/{name}"
        if nid not in nodes:
            label = name if name != UNKNOWN else "unknown (outside the mesh)"
            nodes[nid] = {"id": nid, "type": "workload", "label": label, "namespace": ns, "instances": 0,
                          "healthy": 0, "versions": []}
        return nid

    def service_node(host: str) -> str:
        nid = f"s:{host}"
        if nid not in nodes:
            name, ns = service_parts(host)
            nodes[nid] = {"id": nid, "type": "service", "label": name, "namespace": ns, "host": host}
        return nid

    for inst in instances:
        nid = workload_node(str(inst.get("workload") or inst.get("id")), str(inst.get("namespace") or "default"))
        n = nodes[nid]
        n["instances"] += 1
        n["healthy"] += bool(inst.get("healthy", True))
        v = (inst.get("labels") or {}).get("version")
        if v and v not in n["versions"]:
            n["versions"].append(v)
    for svc in services:
        if svc.get("hostname"):
            service_node(str(svc["hostname"]))
    # static membership edges (dashed until traffic flows)
    members: set[tuple[str, str]] = set()
    for res in service_resources:
        host = f"{res['metadata']['name']}.{res['metadata'].get('namespace', 'default')}.{DOMAIN}"
        sid = service_node(host)
        for inst in service_members(res, instances):
            wid = workload_node(str(inst.get("workload")), str(inst.get("namespace")))
            members.add((sid, wid))
    caller = golden.edges(windows, "caller")
    split = golden.edges(windows, "version")
    for e in caller:
        src = workload_node(e["source"], e["source_namespace"])
        sid = service_node(e["service"])
        edges.append({**e, "id": f"{src}->{sid}", "source": src, "target": sid, "kind": "call",
                      "health": health_class(e["success_rate"], e["requests"]), "label": edge_label(e)})
    totals: dict[str, float] = {}
    for e in split:
        totals[e["service"]] = totals.get(e["service"], 0.0) + e["rps"]
    seen = set()
    for e in split:
        sid = service_node(e["service"])
        wid = workload_node(e["destination"], e["destination_namespace"])
        share = e["rps"] / totals[e["service"]] if totals[e["service"]] else 0.0
        seen.add((sid, wid))
        version = e["version"] if e["version"] != UNKNOWN else ""
        edges.append({**e, "id": f"{sid}->{wid}", "source": sid, "target": wid, "kind": "split",
                      "share": round(share, 4), "health": health_class(e["success_rate"], e["requests"]),
                      "label": f"{version + ' ' if version else ''}{share * 100:.0f}% · {e['rps']:.1f} rps"})
    for sid, wid in sorted(members - seen):
        edges.append({"id": f"{sid}->{wid}", "source": sid, "target": wid, "kind": "member", "health": "idle",
                      "label": ""})
    return {"nodes": sorted(nodes.values(), key=lambda n: n["id"]), "edges": edges}


def routing_for(host: str, resources: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """VirtualServices, DestinationRules and Routers that apply to `host` (any name form in its namespace)."""
    name, ns = service_parts(host)
    forms = {host, name, f"{name}.{ns}", f"{name}.{ns}.svc"}
    out = []
    for r in resources:
        spec, meta = r.get("spec") or {}, r.get("metadata") or {}
        same_ns = meta.get("namespace") == ns
        if r.get("kind") == "VirtualService":
            hosts = set(spec.get("hosts") or ())
            if host in hosts or (same_ns and hosts & forms):
                out.append(r)
        elif r.get("kind") == "DestinationRule":
            h = spec.get("host")
            if h == host or (same_ns and h in forms):
                out.append(r)
        elif r.get("kind") == "Router":
            h = spec.get("host") or meta.get("name")
            if same_ns and h in forms:
                out.append(r)
    return out


def service_detail(host: str, services: list[Mapping[str, Any]], service_resources: list[Mapping[str, Any]],
                   instances: list[Mapping[str, Any]], resources: list[Mapping[str, Any]],
                   windows: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    svc = next((s for s in services if s.get("hostname") == host), None)
    if svc is None:
        return None
    name, ns = service_parts(host)
    res = next((r for r in service_resources if r["metadata"]["name"] == name
                and r["metadata"].get("namespace", "default") == ns), None)
    endpoints = service_members(res, instances) if res else []
    versions = sorted({(e.get("labels") or {}).get("version", UNKNOWN) for e in endpoints})
    return {
        "service": svc, "name": name, "namespace": ns, "versions": versions,
        "endpoints": sorted(endpoints, key=lambda e: str(e.get("id"))),
        "routing": routing_for(host, resources),
        "golden": golden.stat(windows, kind="service", name=name, namespace=ns),
        "by_version": golden.stat(windows, kind="service", by="version", name=name, namespace=ns),
    }


def proxy_rows(proxies: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per proxy: overall state (NACKED > STALE > SYNCED) and each type's state and error."""
    rows = []
    for p in proxies:
        types = p.get("types") or {}
        states = {t: (types.get(t) or {}).get("state", "-") for t in XDS_TYPES}
        errors = {t: (types.get(t) or {}).get("error") for t in XDS_TYPES if (types.get(t) or {}).get("error")}
        if not p.get("connected", True):
            overall = "DISCONNECTED"
        elif any(s == "NACKED" for s in states.values()):
            overall = "NACKED"
        elif any(s not in ("SYNCED", "NOT_SENT", "-") for s in states.values()):
            overall = "STALE"
        else:
            overall = "SYNCED"
        rows.append({"id": p.get("id", ""), "workload": p.get("workload", ""), "namespace": p.get("namespace", ""),
                     "protocol": p.get("protocol", ""), "controlPlane": p.get("controlPlane", ""),
                     "overall": overall, "states": states, "errors": errors})
    return sorted(rows, key=lambda r: (r["namespace"], r["workload"], r["id"]))
