"""Label selectors and the root namespace: the two rules every namespace- or workload-scoped kind shares."""
from __future__ import annotations

from typing import Iterable, Mapping

ROOT_NAMESPACE = "istio-system"  # mesh-wide defaults (Sidecar, Telemetry, EnvoyPatch) live here, as in Istio


def labels_match(selector: Mapping[str, str] | Iterable[tuple[str, str]], labels: Mapping[str, str]) -> bool:
    items = selector.items() if isinstance(selector, Mapping) else selector
    return all(labels.get(k) == v for k, v in items)


def scoped_to(namespace: str, selector: Mapping[str, str] | None, proxy_namespace: str,
              proxy_labels: Mapping[str, str]) -> bool:
    """Does a resource of `namespace` with a workload `selector` (None or empty: all) apply to a proxy?
    A resource in the root namespace applies mesh-wide, else only in its own namespace (Istio's rule for
    Sidecar, Telemetry, EnvoyFilter and the security policies)."""
    if namespace != ROOT_NAMESPACE and namespace != proxy_namespace:
        return False
    return not selector or labels_match(selector, proxy_labels)
