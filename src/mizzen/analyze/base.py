"""What every analyzer shares: the Message (Istio's codes, levels and wording), and the Context — the config
being analyzed, indexed: resources by kind, workloads (Mizzen Workloads and, for files written for
Kubernetes, Pods and the pod templates of Deployments & co.), services with their exportTo scopes. PURE."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..api.base import CLUSTER_DOMAIN, Resource
from ..api.fields import host_matches

ERROR, WARNING, INFO = "Error", "Warning", "Info"
K8S_GATEWAY = "Gateway.gateway.networking.k8s.io"  # a Kubernetes Gateway API gateway, kept among workloads
LEVELS = {ERROR: 0, WARNING: 1, INFO: 2}
DOC_URL = "https://istio.io/latest/docs/reference/config/analysis"


@dataclass(frozen=True)
class Message:
    code: str
    level: str
    resource: str  # "VirtualService default/reviews", as istioctl names the origin
    message: str
    hint: str = ""
    path: str = ""

    def __str__(self) -> str:
        where = f" field {self.path}" if self.path else ""
        hint = f" (fix: {self.hint})" if self.hint else ""
        return f"{self.level} [{self.code}] ({self.resource}{where}) {self.message}{hint}"

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}

    def istioctl(self) -> dict:
        """The shape of one `istioctl analyze -o json` item."""
        out = {"code": self.code, "level": self.level, "message": self.message, "origin": self.resource}
        if self.path:
            out["reference"] = self.path
        if self.code.startswith("IST"):
            out["documentationUrl"] = f"{DOC_URL}/{self.code.lower()}/?ref=mizzen"
        if self.hint:
            out["hint"] = self.hint
        return out


def ref(r: Resource) -> str:
    return f"{r.kind} {r.namespace}/{r.name}"


@dataclass(frozen=True)
class Workload:
    """Something that runs pods with labels: a Mizzen Workload, or (in Kubernetes manifests) a Pod or the pod
    template of a Deployment, StatefulSet, DaemonSet, ReplicaSet or Job."""
    kind: str
    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def selector_string(selector: dict[str, str]) -> str:
    """Kubernetes' label selector text (`app=a,version=v1`), as istioctl prints selectors."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def fqdn(host: str, namespace: str) -> str:
    """Istio's ConvertHostToFQDN: a short name (no dot, no wildcard) is a Service of the namespace."""
    if host.startswith("*") or "." in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


@dataclass
class ServiceInfo:
    host: str  # FQDN or wildcard
    scopes: tuple[str, ...]  # namespaces that see it; "*" = all
    ports: tuple[tuple[int, str, str], ...]  # (number, name, protocol)
    source: Resource

    def visible_from(self, namespace: str) -> bool:
        return "*" in self.scopes or namespace in self.scopes


def _scopes(export_to: Iterable[str], namespace: str) -> tuple[str, ...]:
    out = []
    for e in export_to:
        out.append(namespace if e == "." else e)
    return tuple(out) or ("*",)


@dataclass
class Context:
    resources: list[Resource]
    workloads: list[Workload] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_kind: dict[str, list[Resource]] = {}
        for r in sorted(self.resources, key=lambda r: (r.revision, r.kind, r.namespace, r.name)):
            self.by_kind.setdefault(r.kind, []).append(r)
        self.workloads = [w for w in self.workloads]
        for w in self.kind("Workload"):
            self.workloads.append(Workload("Workload", w.namespace, w.name, tuple(sorted(w.metadata.labels.items()))))
        self.services: list[ServiceInfo] = []
        for s in self.kind("Service"):
            anno = s.metadata.annotations.get("networking.istio.io/exportTo", "")
            scopes = _scopes([x.strip() for x in anno.split(",") if x.strip()], s.namespace)
            ports = tuple((p.port, p.name, p.app_protocol or p.protocol) for p in s.spec.ports)
            self.services.append(ServiceInfo(fqdn(s.name, s.namespace), scopes, ports, s))
        for se in self.kind("ServiceEntry"):
            scopes = _scopes(se.spec.export_to, se.namespace)
            ports = tuple((p.number, p.name, p.protocol or "") for p in se.spec.ports)
            for h in se.spec.hosts:
                self.services.append(ServiceInfo(fqdn(h, se.namespace), scopes, ports, se))

    def kind(self, kind: str) -> list[Resource]:
        return self.by_kind.get(kind, [])

    def find_service(self, host: str, namespace: str, export_to: Iterable[str] = ()) -> ServiceInfo | None:
        """The Service or ServiceEntry a destination `host` of a resource in `namespace` refers to, as Istio's
        analyzers look it up: visible to every namespace, or to each namespace the referring resource is
        exported to (its own by default); exact names first, then wildcard ServiceEntries (`*.eu.example.com`
        covers `a.eu.example.com`)."""
        name = fqdn(host, namespace)
        scopes = [namespace if e == "." else e for e in export_to] or [namespace]

        def visible(s: ServiceInfo) -> bool:
            return "*" in s.scopes or ("*" not in scopes and any(x in s.scopes for x in scopes)) or \
                ("*" in scopes and namespace in s.scopes)

        exact = [s for s in self.services if s.host == name and visible(s)]
        if exact:
            return exact[0]
        for s in self.services:
            if visible(s) and (s.host.startswith("*") or name.startswith("*")) and host_matches(s.host, name):
                return s
        return None

    def workloads_in(self, namespace: str) -> list[Workload]:
        return [w for w in self.workloads if w.namespace == namespace and w.kind != K8S_GATEWAY]

    def kubernetes_gateway_hosts(self, namespace: str, name: str) -> list[str] | None:
        for w in self.workloads:
            if w.kind == K8S_GATEWAY and (w.namespace, w.name) == (namespace, name):
                return [h for _, h in w.labels]
        return None


Analyzer = Callable[[Context], Iterable[Message]]
ANALYZERS: list[Analyzer] = []


def analyzer(fn: Analyzer) -> Analyzer:
    ANALYZERS.append(fn)
    return fn


def sort_messages(messages: Iterable[Message]) -> list[Message]:
    return sorted(set(messages), key=lambda m: (LEVELS[m.level], m.resource, m.code, m.path, m.message))


def as_list(v: Any) -> list:
    return v if isinstance(v, list) else []
