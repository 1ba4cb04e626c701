"""Apply-time check of EnvoyPatch (and Istio EnvoyFilter) resources with the real Envoy.

For each applied EnvoyPatch or EnvoyFilter, the would-be config of the proxies it selects (from Workloads and registered
instances; a stand-in proxy with the selector's labels when none runs yet) is rendered with the patch. A
patch whose value does not parse or merge, or that would leave a view dangling (`translate/consistency.py`),
is refused with the reason and the field (`spec.patches[i]`, `spec.configPatches[i]`); so is an apply that
would make a patch already stored dangle. The patched view is then folded into a static bootstrap and given to `envoy --mode validate`,
which fails with the same reason Envoy would NACK with. Any failure refuses the whole apply.

The check is blocking (it renders and runs Envoy, up to MAX_PROXIES_PER_PATCH times per patch): the control
plane calls validators in a worker thread (`ControlPlaneCore.apply_async`), never on its event loop.
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
from ..translate.patches import PatchError
from ..translate.static import static_bootstrap

MAX_PROXIES_PER_PATCH = 4


def _candidates(patch: Resource, resources: list[Resource], instances: list[Instance], trust_domain: str = ""
                ) -> list[Proxy]:
    sel = patch.spec.workload_selector.labels if patch.spec.workload_selector else {}
    mesh_wide = patch.namespace == ROOT_NAMESPACE
    out: dict[tuple, Proxy] = {}
    ns_labels = {r.name: r.metadata.labels for r in resources if r.kind == "Namespace"}
    for w in resources:
        if w.kind != "Workload" or not sidecar_enabled(w.spec, ns_labels.get(w.namespace)):
            continue
        if (mesh_wide or w.namespace == patch.namespace) and labels_match(sel, w.metadata.labels):
            p = Proxy(id=f"validate~{w.namespace}~{w.name}", namespace=w.namespace, workload=w.name,
                      labels=labels_tuple(w.metadata.labels), ports=tuple(cp.container_port for cp in w.spec.ports),
                      trust_domain=trust_domain)
            out.setdefault((p.namespace, p.labels, p.ports), p)
    for i in instances:
        if i.sidecar and (mesh_wide or i.namespace == patch.namespace) and labels_match(sel, i.label_dict):
            p = Proxy(id=f"validate~{i.id}", namespace=i.namespace, workload=i.workload, labels=i.labels,
                      ports=i.ports, trust_domain=trust_domain)
            out.setdefault((p.namespace, p.labels, p.ports), p)
    if not out:
        ns = "default" if mesh_wide else patch.namespace
        return [Proxy(id="validate~standin", namespace=ns, labels=labels_tuple(sel), trust_domain=trust_domain)]
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


_PATCHES = {"EnvoyPatch": "spec.patches", "EnvoyFilter": "spec.configPatches"}  # where a kind's patches are


def _issue(e: PatchError, proxy: Proxy) -> Issue:
    r = e.resource
    who = f"{proxy.workload or 'a proxy'} in {proxy.namespace}"
    return Issue(f"{e.message} (for {who})" if not e.field else e.message, "<apply>", None, r.kind, r.namespace,
                 r.name, e.path)


def envoy_patch_validator(envoy_binary: Callable[[], str], instances: Callable[[], list[Instance]],
                          trust_domain: str = ""):
    """A ControlPlaneCore validator: (applied, current) -> issues. Blocking: run it off the event loop.
    `trust_domain`: the mesh's sidecars have certificates, so patches are checked against their mTLS config."""

    def check(applied: list[Resource], current: list[Resource]) -> list[Issue]:
        patches = [r for r in applied if r.kind in ("EnvoyPatch", "EnvoyFilter")]
        if not patches:
            return []
        merged = {r.key: r for r in current}
        merged.update({r.key: r for r in applied})
        resources = list(merged.values())
        inst = instances()
        renderer = Renderer(Snapshot.build(resources, inst))
        before: Renderer | None = None  # the config as stored, to tell new problems of stored patches
        applied_keys = {r.key for r in applied}
        issues: list[Issue] = []
        for patch in patches:
            for proxy in _candidates(patch, resources, inst, trust_domain):
                result = renderer.patched(proxy)
                own = [e for e in result.errors if e.resource.key == patch.key]
                others = [e for e in result.errors if e.resource.key not in applied_keys]
                if others:  # a stored patch this apply breaks (not one that was broken already)
                    before = before or Renderer(Snapshot.build(current, inst))
                    old = {(e.resource.key, e.message) for e in before.patched(proxy).errors}
                    others = [e for e in others if (e.resource.key, e.message) not in old]
                if own or others:
                    issues.extend(_issue(e, proxy) for e in own)
                    issues.extend(Issue(f"this apply would make {e.resource.kind} "
                                        f"{e.resource.namespace}/{e.resource.name} {e.path} dangle for "
                                        f"{proxy.workload or 'a proxy'} in {proxy.namespace}: {e.message}", "<apply>", None, patch.kind, patch.namespace, patch.name,
                                        _PATCHES[patch.kind]) for e in others)
                    break
                reason = _envoy_says(envoy_binary(), static_bootstrap(result.view))
                if reason:
                    issues.append(Issue(f"Envoy would reject the patched config of {proxy.workload or 'a proxy'} "
                                        f"in {proxy.namespace}: {reason}", "<apply>", None, patch.kind,
                                        patch.namespace, patch.name, _PATCHES[patch.kind]))
                    break
        return issues

    return check
