"""Counters of the rate-limit service (pure; the server exposes them as JSON and Prometheus text).

Per limit (as envoyproxy/ratelimit names them where it has a name): `total_hits`, `within_limit`,
`over_limit`, `near_limit` (admitted with < 20% left), `shadow_mode` (over a shadow limit, admitted),
`delayed` and `delay_seconds`, `failure_mode_allowed` / `failure_mode_denied` (backend unreachable).
Service-wide: `requests`, `unknown_descriptors`, `backend_errors`, `backend_up` (gauge).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from .engine import Answer, Check, is_near

LIMIT_COUNTERS = ("total_hits", "within_limit", "over_limit", "near_limit", "shadow_mode", "delayed",
                  "delay_seconds", "failure_mode_allowed", "failure_mode_denied")


class Stats:
    def __init__(self) -> None:
        self.service: dict[str, float] = defaultdict(float)
        self.limits: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(LIMIT_COUNTERS, 0.0))
        self.service["backend_up"] = 1

    def record(self, checks: list[Check], answer: Answer, *, failed: bool = False) -> None:
        self.service["requests"] += 1
        for c, s in zip(checks, answer.statuses):
            if c.limit is None:
                self.service["unknown_descriptors"] += 1
                continue
            m = self.limits[c.limit.id]
            m["total_hits"] += c.hits
            if failed:
                m["failure_mode_denied" if s.over else "failure_mode_allowed"] += c.hits
                continue
            d = s.decision
            if d is None:
                continue
            if not d.allowed:
                m["shadow_mode" if c.limit.shadow else "over_limit"] += c.hits
                continue
            m["within_limit"] += c.hits
            if is_near(d):
                m["near_limit"] += c.hits
            if d.delay > 0 and not c.limit.shadow:
                m["delayed"] += c.hits
                m["delay_seconds"] += d.delay

    def to_dict(self) -> dict[str, Any]:
        return {"service": dict(self.service), "limits": {k: dict(v) for k, v in sorted(self.limits.items())}}

    def prometheus(self, prefix: str = "mizzen_ratelimit") -> str:
        lines = []
        for k, v in sorted(self.service.items()):
            kind = "gauge" if k == "backend_up" else "counter"
            name = f"{prefix}_{k}" + ("_total" if kind == "counter" else "")
            lines += [f"# TYPE {name} {kind}", f"{name} {v:g}"]
        for counter in LIMIT_COUNTERS:
            name = f"{prefix}_{counter}_total"
            lines.append(f"# TYPE {name} counter")
            for lid, m in sorted(self.limits.items()):
                esc = lid.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'{name}{{limit="{esc}"}} {m[counter]:g}')
        return "\n".join(lines) + "\n"
