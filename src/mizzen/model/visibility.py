"""exportTo: which namespaces see a Service, ServiceEntry, VirtualService or DestinationRule, and which
VirtualService and DestinationRule of a host a proxy uses (Istio's semantics). PURE.

`.` is the owner's own namespace, `*` every namespace, `~` (ServiceEntry) no one; no exportTo means every
namespace (Istio's default, `defaultVirtualServiceExportTo`/`defaultDestinationRuleExportTo` = `*`). A
Service says it with the annotation `networking.istio.io/exportTo` (comma-separated), the others with
`spec.exportTo`. Routing (`ConfigIndex.visible_services`, `virtual_service_for`, `destination_rule_for`) and
`mizzen analyze` use the same rules.

Which VirtualService of a host a proxy in namespace N uses (Istio's `VirtualServicesForGateway`): those of
N exported to N ("private") first, then those other namespaces export to N by name, then the public ones
(`*` or no exportTo); oldest first in each group; the first one that has the host wins.

Which DestinationRule (Istio's `PushContext.destinationRule`): 1. one in N that N sees (for a proxy of the
root namespace: only the root namespace's private ones); 2. else one in the service's namespace exported to
N; 3. else one in the root namespace exported to N; oldest first in each. A DestinationRule with a
workloadSelector is private to its namespace, as in Istio.
"""
from __future__ import annotations

from typing import Any, Iterable

from .labels import ROOT_NAMESPACE

EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"


def export_to_of(resource: Any) -> tuple[str, ...]:
    """The exportTo list of a Service (annotation) or ServiceEntry/VirtualService/DestinationRule (spec); ()
    when not set. A DestinationRule with a workloadSelector is private (`.`)."""
    if resource.kind == "Service":
        anno = resource.metadata.annotations.get(EXPORT_TO_ANNOTATION, "")
        return tuple(x.strip() for x in anno.split(",") if x.strip())
    if resource.kind == "DestinationRule" and getattr(resource.spec, "workload_selector", None) is not None:
        return (".",)
    return tuple(getattr(resource.spec, "export_to", ()) or ())


def exported_to(export_to: tuple[str, ...], owner_namespace: str, viewer_namespace: str) -> bool:
    """Does a resource of `owner_namespace` with this exportTo reach proxies of `viewer_namespace`?"""
    if not export_to:
        return True
    for e in export_to:
        if e == "*" or e == viewer_namespace or (e == "." and owner_namespace == viewer_namespace):
            return True
    return False


def _vs_group(vs: Any, viewer: str) -> int | None:
    """0: private to the viewer's namespace, 1: exported to it by name, 2: public; None: not visible."""
    e = export_to_of(vs)
    if not e or "*" in e:
        return 2
    if not exported_to(e, vs.namespace, viewer):
        return None
    return 0 if vs.namespace == viewer else 1


def virtual_services_seen(candidates: Iterable[Any], viewer: str) -> list[Any]:
    """The VirtualServices of one host (oldest first) that proxies of `viewer` see, in Istio's order of
    preference: private, exported to the namespace, public."""
    ranked = [(g, i, vs) for i, vs in enumerate(candidates) for g in [_vs_group(vs, viewer)] if g is not None]
    return [vs for _, _, vs in sorted(ranked, key=lambda t: (t[0], t[1]))]


def _private_only(dr: Any) -> bool:
    e = export_to_of(dr)
    return len(e) == 1 and e[0] in (".", dr.namespace)


def destination_rule_seen(candidates: Iterable[Any], service_namespace: str | None, viewer: str) -> Any | None:
    """The DestinationRule of one host (candidates oldest first) that proxies of `viewer` use, or None."""
    drs = list(candidates)
    if viewer != ROOT_NAMESPACE:
        local = [d for d in drs if d.namespace == viewer and exported_to(export_to_of(d), d.namespace, viewer)]
    else:
        local = [d for d in drs if d.namespace == ROOT_NAMESPACE and _private_only(d)]
    if local:
        return local[0]
    for ns in dict.fromkeys(n for n in (service_namespace, ROOT_NAMESPACE) if n):
        found = [d for d in drs if d.namespace == ns and not _private_only(d)
                 and exported_to(export_to_of(d), d.namespace, viewer)]
        if found:
            return found[0]
    return None
