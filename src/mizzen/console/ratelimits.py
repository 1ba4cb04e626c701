"""The console's Rate limits page: every RateLimit with its target, mode, limits and what `mizzen analyze`
says about it (a limit that can never match, a local limit meant to be service-wide). PURE: the resources as
the REST API lists them in, HTML out."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..analyze import ratelimit as analyzer
from ..api import InvalidConfig, from_dict
from .views import h, page, q, table

RELEVANT = ("RateLimit", "Service", "ServiceEntry", "VirtualService", "Workload")


def _limit_text(lim: Mapping[str, Any]) -> str:
    rate = f"{lim['requestsPerUnit']}/{lim.get('unit', 'second')}" if "requestsPerUnit" in lim else \
        f"{float(lim.get('rate') or 0):g}/s"
    bits = [rate, lim.get("algorithm", "token_bucket")]
    if lim.get("burst"):
        bits.append(f"burst {lim['burst']}")
    if lim.get("strategy") == "delay":
        bits.append(f"delay ≤ {lim.get('maxDelay')}")
    if lim.get("key"):
        bits.append("per " + "+".join(k if isinstance(k, str) else f"{next(iter(k))}:{next(iter(k.values()))}"
                                       for k in lim["key"]))
    if lim.get("priority"):
        bits.append("classes " + ", ".join(f"{c} {p}%" for c, p in lim["priority"].get("classes", {}).items()))
    if lim.get("shadow"):
        bits.append("shadow")
    return f"{lim.get('name')}: " + ", ".join(str(b) for b in bits)


def findings(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    by_kind: dict[str, list[Any]] = {}
    for d in items:
        if d.get("kind") in RELEVANT:
            try:
                r = from_dict(d)
            except (InvalidConfig, ValueError, KeyError):
                continue
            by_kind.setdefault(r.kind, []).append(r)
    return analyzer.findings(by_kind)


def ratelimits_page(items: Sequence[Mapping[str, Any]], banner: str = "") -> str:
    rls = sorted((d for d in items if d.get("kind") == "RateLimit"),
                 key=lambda d: (d["metadata"].get("namespace", ""), d["metadata"]["name"]))
    notes: dict[str, list[tuple[str, ...]]] = {}
    for f in findings(items):
        notes.setdefault(f[2], []).append(f)
    rows = []
    for d in rls:
        ns, name, spec = d["metadata"].get("namespace", "default"), d["metadata"]["name"], d.get("spec") or {}
        sel = (spec.get("workloadSelector") or {}).get("labels")
        target = f"host {spec['host']} (at the callers)" if spec.get("host") else \
            "workloads " + ",".join(f"{k}={v}" for k, v in sorted((sel or {}).items())) + " (at the callee)"
        if spec.get("port"):
            target += f", port {spec['port']}"
        mode = spec.get("mode", "local") + (" (service-wide)" if spec.get("scope") == "service" else "")
        if spec.get("mode") == "global":
            mode += f", failure {spec.get('failureMode', 'allow')}"
        limits = "<br>".join(h(_limit_text(lim)) for lim in spec.get("limits") or [])
        msgs = "<br>".join(f'<span class="finding">{h(f[0])} {h(f[3])} ({h(f[5])})</span>'
                           for f in notes.get(f"RateLimit {ns}/{name}", [])) or "-"
        link = f'<a href="/config/RateLimit/{q(ns)}/{q(name)}">{h(name)}</a>'
        rows.append([link, h(ns), h(target), h(mode), limits, msgs])
    body = table(["name", "namespace", "target", "mode", "limits", "analysis"], rows, id="ratelimits",
                 empty="No rate limits.")
    body += ('<p>Global limits are decided by the rate-limit service (<code>mizzen ratelimit</code>); its '
             'counters are at its admin socket (<code>STATE/ratelimit-admin.sock</code>: /stats, /limits).</p>')
    return page("Rate limits", "ratelimits", body, banner=banner)
