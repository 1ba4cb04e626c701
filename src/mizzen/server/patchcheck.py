"""Apply-time check of EnvoyPatch resources with the real Envoy.

For each applied EnvoyPatch, the would-be config of the proxies it selects (from Workloads and registered
instances; a stand-in proxy with the selector's labels when none runs yet) is rendered with the patch,
folded into a static bootstrap and given to `envoy --mode validate`, which fails with the same reason
Envoy would NACK with. Any failure refuses the whole apply.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import Callable

from ..api.base import Issue, Resource
from ..api.core import sidecar_enabled
from ..model.snapshot import ROOT_NAMESPACE, Snapshot, labels_match
from ..model.types import Instance, Proxy, labels_tuple
from ..translate import Renderer
from ..translate.static import static_bootstrap

MAX_PROXIES_PER_PATCH = 4


def _candidates(patch: Resource, resources: list[Resource], instances: list[Instance]) -> list[Proxy]:
    sel = patch.spec.workload_selector.labels if patch.spec.workload_selector else {}
    mesh_wide = patch.namespace == ROOT_NAMESPACE
    out: dict[tuple, Proxy] = {}
    ns_labels = {r.name: r.metadata.labels for r in resources if r.kind == "Namespace"}
    for w in resources:
        if w.kind != "Workload" or not sidecar_enabled(w.spec, ns_labels.get(w.namespace)):
            continue
        if (mesh_wide or w.namespace == patch.namespace) and labels_match(sel, w.metadata.labels):
            p = Proxy(id=f"validate~{w.namespace}~{w.name}", namespace=w.namespace, workload=w.name,
                      labels=labels_tuple(w.metadata.labels), ports=tuple(cp.container_port for cp in w.spec.ports))
            out.setdefault((p.namespace, p.labels, p.ports), p)
    for i in instances:
        if i.sidecar and (mesh_wide or i.namespace == patch.namespace) and labels_match(sel, i.label_dict):
            p = Proxy(id=f"validate~{i.id}", namespace=i.namespace, workload=i.workload, labels=i.labels,
                      ports=i.ports)
            out.setdefault((p.namespace, p.labels, p.ports), p)
    if not out:
        ns = "default" if mesh_wide else patch.namespace
        return [Proxy(id="validate~standin", namespace=ns, labels=labels_tuple(sel))]
    return list(out.values())[:MAX_PROXIES_PER_PATCH]


def _envoy_says(envoy: str, bootstrap: dict) -> str | None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(bootstrap, f)
        path = f.name
    try:
        p = subprocess.run([envoy, "--mode", "validate", "-c", path, "--log-level", "critical"],
                           capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(path)
    if p.returncode == 0:
        return None
    lines = [ln.strip() for ln in (p.stdout + "\n" + p.stderr).splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if "rror" in ln or "exception" in ln.lower()), lines[-1] if lines else "")
    return reason.split("] ", 1)[-1][:500]


def envoy_patch_validator(envoy_binary: Callable[[], str], instances: Callable[[], list[Instance]]):
    """A ControlPlaneCore validator: (applied, current) -> issues."""

    def check(applied: list[Resource], current: list[Resource]) -> list[Issue]:
        patches = [r for r in applied if r.kind == "EnvoyPatch"]
        if not patches:
            return []
        merged = {r.key: r for r in current}
        merged.update({r.key: r for r in applied})
        resources = list(merged.values())
        inst = instances()
        snap = Snapshot.build(resources, inst)
        renderer = Renderer(snap)
        issues: list[Issue] = []
        for patch in patches:
            bad = False
            for proxy in _candidates(patch, resources, inst):
                res = renderer.resources_for(proxy)
                errs = [e for e in renderer.patch_errors if e.resource.key == patch.key]
                if errs:
                    issues.extend(Issue(e.message, "<apply>", None, patch.kind, patch.namespace, patch.name,
                                        f"{e.path}.value") for e in errs)
                    bad = True
                    break
                reason = _envoy_says(envoy_binary(), static_bootstrap(res))
                if reason:
                    issues.append(Issue(f"Envoy would reject the patched config of {proxy.workload or 'a proxy'} "
                                        f"in {proxy.namespace}: {reason}", "<apply>", None, patch.kind,
                                        patch.namespace, patch.name, "spec.patches"))
                    bad = True
                    break
            if bad:
                continue
        return issues

    return check
