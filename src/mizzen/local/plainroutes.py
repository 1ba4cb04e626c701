"""Service VIPs for pods without a sidecar — kube-proxy's job, done inside the pod's own namespace.

A pod with a sidecar reaches `http://web:9080` because its Envoy captures the connection to web's VIP and
routes it. A pod without one (a Workload with `sidecar: false`, or in a namespace labelled
`mizzen.dev/inject: "false"`) has nobody behind the VIP: the runner gives it, in its own network namespace
only, one nat OUTPUT rule per (VIP, port) that DNATs a new connection to one of the service's healthy
endpoints (pod IP : target port), picked at random (`-m statistic`), as kube-proxy's iptables mode does.
The endpoint's sidecar accepts the plain connection (PERMISSIVE), so a workload outside the mesh still
reaches meshed services by name. Rules are rewritten atomically (`iptables-restore` of the pod's nat table,
which holds nothing else: there is no capture without a sidecar) when services or instances change, and
before a replica is stopped, so new connections never go to a withdrawn pod.

A pod with a sidecar gets the same chain for Envoy's own connections (uid 1337) to the VIP range only
(netns.capture_rules): what Envoy forwards to the address the app dialled (PassthroughCluster,
`loadBalancer.simple: PASSTHROUGH`) reaches the service when that address is a VIP, as kube-proxy makes
it in Kubernetes. Everything else Envoy sends goes to pod IPs (EDS) and is not touched.

Only Kubernetes-style Services (with a selector) are mapped; ServiceEntry hosts need a sidecar.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

Endpoint = tuple[str, int]
VipPort = tuple[str, int]


def _selected(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def vip_table(services: Iterable[Mapping[str, Any]], instances: Iterable[Mapping[str, Any]]
              ) -> dict[VipPort, list[Endpoint]]:
    """(VIP, service port) -> sorted healthy endpoints (pod address, target port) of the service."""
    insts = [i for i in instances if i.get("healthy", True) and i.get("address")]
    table: dict[VipPort, list[Endpoint]] = {}
    for svc in services:
        vip, selector = svc.get("vip"), svc.get("selector") or {}
        if not vip or svc.get("source", "service") != "service" or not selector:
            continue
        members = [i for i in insts if i.get("namespace") == svc.get("namespace")
                   and _selected(selector, i.get("labels") or {})]
        for p in svc.get("ports") or []:
            port, target = int(p["port"]), int(p.get("targetPort") or p["port"])
            eps = sorted({(str(i["address"]), target) for i in members if target in (i.get("ports") or [])})
            table[(str(vip), port)] = eps
    return table


def service_chain(table: Mapping[VipPort, Sequence[Endpoint]]) -> list[str]:
    """The nat chain MIZZEN_SERVICES (iptables-restore lines): one DNAT per endpoint, the i-th of n taken with
    probability 1/(n-i), so each is picked with probability 1/n. A VIP port without endpoints gets no rule
    (the connection fails as it would with kube-proxy)."""
    lines = [":MIZZEN_SERVICES - [0:0]"]
    for (vip, port), eps in sorted(table.items()):
        n = len(eps)
        for i, (ip, target) in enumerate(eps):
            match = f"-A MIZZEN_SERVICES -d {vip}/32 -p tcp --dport {port}"
            if i < n - 1:
                match += f" -m statistic --mode random --probability {1.0 / (n - i):.8f}"
            lines.append(f"{match} -j DNAT --to-destination {ip}:{target}")
    return lines


def plain_rules(chain: Sequence[str]) -> str:
    """The iptables-restore input (nat table) of a pod without a sidecar: every tcp connection it opens
    goes through the MIZZEN_SERVICES `chain` (service_chain)."""
    return "\n".join(["*nat", *chain, "-A OUTPUT -p tcp -j MIZZEN_SERVICES", "COMMIT", ""])


def vip_rules(table: Mapping[VipPort, Sequence[Endpoint]]) -> str:
    """plain_rules for a vip_table."""
    return plain_rules(service_chain(table))
