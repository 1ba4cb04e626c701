"""Consul-shaped views of the registry's instances (pure: instances in, JSON-shaped dicts out)."""
from __future__ import annotations

import json
from typing import Any, Iterable

from ..model.types import Instance
from .agent import CHECKS_LABEL, SERVICE_LABEL


def service_name(inst: Instance) -> str:
    d = inst.label_dict
    if SERVICE_LABEL in d:
        try:
            return str(json.loads(d[SERVICE_LABEL])["Service"])
        except (ValueError, KeyError, TypeError):
            pass
    return d.get("app") or inst.workload


def service_of(inst: Instance) -> dict[str, Any]:
    """The Consul AgentService form of an instance."""
    d = inst.label_dict
    if SERVICE_LABEL in d:
        try:
            s = json.loads(d[SERVICE_LABEL])
            return {"ID": s["ID"], "Service": s["Service"], "Tags": list(s.get("Tags") or []),
                    "Meta": dict(s.get("Meta") or {}), "Address": s.get("Address") or inst.address,
                    "Port": int(s.get("Port") or 0), "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": False, "Namespace": inst.namespace, "Datacenter": None}
        except (ValueError, KeyError, TypeError):
            pass
    port = inst.reachable_port(inst.ports[0]) if inst.ports else 0
    meta = {k: v for k, v in d.items() if k not in (SERVICE_LABEL, CHECKS_LABEL)}
    return {"ID": inst.id, "Service": service_name(inst), "Tags": [], "Meta": meta, "Address": inst.address,
            "Port": port, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
            "Namespace": inst.namespace, "Datacenter": None}


def checks_of(inst: Instance, node: str) -> list[dict[str, Any]]:
    svc = service_of(inst)
    base = {"Node": node, "Notes": "", "Output": "", "ServiceTags": svc["Tags"], "CreateIndex": 1,
            "ModifyIndex": 1, "ServiceName": svc["Service"]}
    out = [{**base, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing", "ServiceID": "",
            "ServiceName": "", "ServiceTags": [], "Type": ""}]
    d = inst.label_dict
    if CHECKS_LABEL in d:
        try:
            for c in json.loads(d[CHECKS_LABEL]):
                out.append({**base, "CheckID": c["CheckID"], "Name": c["Name"], "Status": c["Status"],
                            "ServiceID": c.get("ServiceID") or "", "Type": c.get("Type") or ""})
            return out
        except (ValueError, KeyError, TypeError):
            pass
    out.append({**base, "CheckID": f"mizzen:{inst.id}", "Name": "Mizzen instance health",
                "Status": "passing" if inst.healthy else "critical", "ServiceID": svc["ID"],
                "Output": "registered by " + inst.source, "Type": "mizzen"})
    return out


def node_of(node: str, address: str, datacenter: str) -> dict[str, Any]:
    return {"ID": "", "Node": node, "Address": address, "Datacenter": datacenter,
            "TaggedAddresses": {"lan": address, "wan": address}, "Meta": {}, "CreateIndex": 1, "ModifyIndex": 1}


def health_entries(instances: Iterable[Instance], service: str, *, node: str, address: str, datacenter: str,
                   passing: bool = False, tags: list[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for inst in instances:
        if service_name(inst) != service:
            continue
        svc = service_of(inst)
        if tags and not all(t in svc["Tags"] for t in tags):
            continue
        checks = checks_of(inst, node)
        if passing and any(c["Status"] != "passing" for c in checks):
            continue
        out.append({"Node": node_of(node, address, datacenter), "Service": svc, "Checks": checks})
    out.sort(key=lambda e: e["Service"]["ID"])
    return out


def catalog_services(instances: Iterable[Instance]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for inst in instances:
        svc = service_of(inst)
        out.setdefault(svc["Service"], set()).update(svc["Tags"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def catalog_service(instances: Iterable[Instance], service: str, *, node: str, address: str, datacenter: str,
                    tags: list[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for e in health_entries(instances, service, node=node, address=address, datacenter=datacenter, tags=tags):
        s = e["Service"]
        out.append({"ID": "", "Node": node, "Address": address, "Datacenter": datacenter,
                    "TaggedAddresses": {"lan": address, "wan": address}, "NodeMeta": {},
                    "ServiceID": s["ID"], "ServiceName": s["Service"], "ServiceTags": s["Tags"],
                    "ServiceAddress": s["Address"], "ServicePort": s["Port"], "ServiceMeta": s["Meta"],
                    "ServiceWeights": s["Weights"], "ServiceEnableTagOverride": False,
                    "CreateIndex": 1, "ModifyIndex": 1})
    return out
