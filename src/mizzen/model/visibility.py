"""exportTo: which namespaces see a Service or ServiceEntry (Istio's semantics). PURE.

`.` is the owner's own namespace, `*` every namespace, `~` (ServiceEntry) no one; no exportTo means every
namespace (Istio's default). A Service says it with the annotation `networking.istio.io/exportTo`
(comma-separated), a ServiceEntry with `spec.exportTo`. Routing (model.snapshot.visible_services) and
`mizzen analyze` both use it. VirtualService and DestinationRule exportTo are analyzed but do not yet change
which one a proxy uses (docs/istio-fidelity.md).
"""
from __future__ import annotations

from typing import Any

EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"


def export_to_of(resource: Any) -> tuple[str, ...]:
    """The exportTo list of a Service (annotation) or ServiceEntry (spec); () when not set."""
    if resource.kind == "Service":
        anno = resource.metadata.annotations.get(EXPORT_TO_ANNOTATION, "")
        return tuple(x.strip() for x in anno.split(",") if x.strip())
    return tuple(getattr(resource.spec, "export_to", ()) or ())


def exported_to(export_to: tuple[str, ...], owner_namespace: str, viewer_namespace: str) -> bool:
    """Does a resource of `owner_namespace` with this exportTo reach proxies of `viewer_namespace`?"""
    if not export_to:
        return True
    for e in export_to:
        if e == "*" or e == viewer_namespace or (e == "." and owner_namespace == viewer_namespace):
            return True
    return False
