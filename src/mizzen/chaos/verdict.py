"""A drill's verdict: the steady-state checks against what was measured, and the timeline as text. Pure."""
from __future__ import annotations

from typing import Any

from .scenario import SteadyState
from .spec import format_duration


def checks(steady: SteadyState, load: dict[str, Any], explained: dict[str, Any] | None,
           synced_after: float | None, synced_known: bool) -> list[dict[str, Any]]:
    """[{"name", "value", "limit", "ok", "text"}] for every check the scenario asks for."""
    out = []
    total, failed = int(load.get("total") or 0), int(load.get("failed") or 0)
    if steady.max_error_ratio is not None:
        ratio = failed / total if total else 1.0
        ok = total > 0 and ratio <= steady.max_error_ratio
        out.append({"name": "errorRatio", "value": ratio, "limit": steady.max_error_ratio, "ok": ok,
                    "text": f"error ratio {ratio * 100:.3f}% ({failed} of {total}) "
                            f"{'≤' if ok else '>'} {steady.max_error_ratio * 100:g}%"
                            + ("" if total else " (no request completed)")})
    if steady.max_unexplained is not None:
        if explained is None:
            out.append({"name": "unexplained", "value": None, "limit": steady.max_unexplained, "ok": failed == 0,
                        "text": f"{failed} failed request(s) and no access log to explain them"
                        if failed else "no failed request"})
        else:
            n = len(explained.get("unexplained") or [])
            ok = n <= steady.max_unexplained
            cats = ", ".join(f"{v} {k}" for k, v in sorted((explained.get("categories") or {}).items()))
            out.append({"name": "unexplained", "value": n, "limit": steady.max_unexplained, "ok": ok,
                        "text": f"{n} unexplained failure(s) {'≤' if ok else '>'} {steady.max_unexplained}"
                                + (f" (explained: {cats})" if cats else "")})
    if steady.p99 is not None:
        p99 = float((load.get("latencyMs") or {}).get("p99") or 0.0) / 1000.0
        ok = total > 0 and p99 <= steady.p99
        out.append({"name": "p99", "value": p99, "limit": steady.p99, "ok": ok,
                    "text": f"p99 {p99 * 1000:.1f}ms {'≤' if ok else '>'} {steady.p99 * 1000:g}ms"})
    if steady.synced_within is not None:
        ok = synced_known and synced_after is not None and synced_after <= steady.synced_within
        text = (f"every proxy SYNCED {synced_after:.1f}s after the last fault ended "
                f"{'≤' if ok else '>'} {format_duration(steady.synced_within)}") if synced_after is not None else \
            f"proxies not all SYNCED within {format_duration(steady.synced_within)} after the last fault ended"
        out.append({"name": "syncedWithin", "value": synced_after, "limit": steady.synced_within, "ok": ok,
                    "text": text})
    return out


def summary_rows(buckets: list[list[Any]], every: int) -> list[dict[str, Any]]:
    """Load buckets (per second) merged into `every`-second rows: {"from", "to", "ok", "failed", "p99"}."""
    rows: dict[int, dict[str, Any]] = {}
    for sec, ok, failed, _p50, p99, _late in buckets:
        k = int(sec) // every
        r = rows.setdefault(k, {"from": k * every, "to": (k + 1) * every, "ok": 0, "failed": 0, "p99": 0.0})
        r["ok"] += ok
        r["failed"] += failed
        r["p99"] = max(r["p99"], p99)  # the worst second's p99
    return [rows[k] for k in sorted(rows)]


def render(result: dict[str, Any]) -> str:
    """The timeline and verdict as text."""
    lines = [f"scenario {result['scenario']} ({result['file']}), seed {result['seed']}"]
    events = list(result.get("timeline") or [])
    for r in result.get("loadRows") or []:
        events.append({"t": float(r["to"]), "kind": "load",
                       "text": f"{r['from']:>4}-{r['to']:<4}s  {r['ok']} ok, {r['failed']} failed, "
                               f"worst-second p99 {r['p99']:.1f}ms"})
    for e in sorted(events, key=lambda e: (e["t"], e["kind"] != "load")):
        lines.append(f"  {e['t']:+8.1f}s  {e['kind']:<9} {e['text']}")
    load = result.get("load") or {}
    lat = load.get("latencyMs") or {}
    lines.append(f"load: {load.get('total', 0)} requests at {load.get('rps', 0):g} rps, {load.get('ok', 0)} ok, "
                 f"{load.get('failed', 0)} failed {_failures(load)}; latency p50 {lat.get('p50', 0)}ms "
                 f"p99 {lat.get('p99', 0)}ms max {lat.get('max', 0)}ms")
    ex = result.get("explained")
    if ex is not None:
        for k, v in sorted((ex.get("categories") or {}).items()):
            lines.append(f"  explained: {v} {k}")
        for u in (ex.get("unexplained") or [])[:20]:
            e = u.get("entry") or {}
            lines.append(f"  unexplained: request {u['id']} at {u['t']:.3f}: status {u.get('status')} "
                         f"{u.get('error') or ''} upstream {u.get('upstreamPod') or e.get('upstream') or '?'} "
                         f"flags {e.get('flags', '?')}")
    verdict = "PASS" if result.get("pass") else "FAIL"
    lines.append(f"verdict: {verdict}")
    for c in result.get("checks") or []:
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['text']}")
    if result.get("error"):
        lines.append(f"  error: {result['error']}")
    return "\n".join(lines)


def _failures(load: dict[str, Any]) -> str:
    parts = [f"{v}×{k}" for k, v in sorted((load.get("status") or {}).items()) if k != "200"]
    parts += [f"{v}×{k}" for k, v in sorted((load.get("errors") or {}).items())]
    return f"({', '.join(parts)})" if parts else ""
