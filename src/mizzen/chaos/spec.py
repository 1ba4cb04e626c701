"""What a fault is, as data: parsing of the CLI's and scenario files' values, and the fault record.

Pure: no I/O and no clock (times are passed in). A `Fault` is what `mizzen chaos` recorded about one
fault: what (kind + params), where (targets), when (started/expires, wall-clock seconds), the seed that chose
the targets (and draws the jitter), its state, and what must be undone (`undo`, filled in by whoever applied
it). Records are JSON files in the state dir (`records.py`); `Fault.to_dict()`/`from_dict()` round-trip.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..api.duration import duration_seconds

KINDS = ("kill", "network", "partition", "stress")
KILL_TARGETS = ("app", "envoy", "agent", "controlplane", "pod")
STATES = ("applying", "active", "done", "expired", "stopped", "failed")
FINAL_STATES = ("done", "expired", "stopped", "failed")
SIGNALS = {"KILL": 9, "TERM": 15, "SIGKILL": 9, "SIGTERM": 15, "9": 9, "15": 15}

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)?\s*$", re.I)
_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}


class SpecError(ValueError):
    """A bad value; the message names the field and says what is expected."""


def parse_duration(value: Any, what: str = "duration") -> float:
    """"100ms", "20s", "1m30s", "2h" (Go/Istio syntax: the one parser, `api.duration`), or a plain number
    of seconds (20, "20") → seconds (float, ≥ 0)."""
    if isinstance(value, bool):
        raise SpecError(f"{what}: expected a duration like 100ms, 20s or 2m, got {value!r}")
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and _NUMBER.fullmatch(text):
        text = float(text)
    if isinstance(text, (int, float)):
        if text < 0:
            raise SpecError(f"{what}: must not be negative, got {value}")
        return float(text)
    try:
        secs = duration_seconds(text)
    except ValueError:
        raise SpecError(f"{what}: expected a duration like 100ms, 20s or 2m, got {value!r}") from None
    if secs < 0:
        raise SpecError(f"{what}: must not be negative, got {value!r}")
    return secs


def parse_percent(value: Any, what: str = "percentage") -> float:
    """"30%", "30", 30, 0.3 is *not* accepted as 30 % (ambiguous): → a fraction in [0, 1]."""
    if isinstance(value, bool):
        raise SpecError(f"{what}: expected a percentage like 30%, got {value!r}")
    text = str(value).strip()
    num = text[:-1].strip() if text.endswith("%") else text
    try:
        p = float(num)
    except ValueError:
        raise SpecError(f"{what}: expected a percentage like 30%, got {value!r}") from None
    if not 0 <= p <= 100:
        raise SpecError(f"{what}: must be between 0% and 100%, got {value!r}")
    return p / 100.0


def parse_rate(value: Any, what: str = "bandwidth") -> int:
    """"1mbit", "500kbit", "2mbps" (bytes), 1000000 (bits/s) → bits per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        bits = float(value)
    else:
        m = _RATE.match(str(value))
        if not m:
            raise SpecError(f"{what}: expected a rate like 1mbit, 500kbit or 2mbps, got {value!r}")
        bits = float(m.group(1)) * _RATE_UNITS[(m.group(2) or "bit").lower()]
    if bits < 8000:
        raise SpecError(f"{what}: at least 8kbit, got {value!r}")
    return int(bits)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1 and seconds > 0:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"


def parse_signal(value: Any) -> int:
    sig = SIGNALS.get(str(value).upper())
    if sig is None:
        raise SpecError(f"signal: expected KILL or TERM, got {value!r}")
    return sig


# ------------------------------------------------------------------------------------------ targets

@dataclass(frozen=True)
class Selection:
    """Which pods (or control-plane replicas) a fault picks from, and how many.

    `pods`: exact pod names; `workload`/`app`: every pod of that workload / `app` label; none of them: every
    pod with a sidecar (apps too for app kills). `count` or `percent` (a fraction) picks that many at random
    with `seed`; neither: all (a single named pod: that pod). `exclude`: pods never chosen (e.g. the load's)."""

    pods: tuple[str, ...] = ()
    workload: str | None = None
    app: str | None = None
    namespace: str | None = None
    count: int | None = None
    percent: float | None = None
    exclude: tuple[str, ...] = ()
    replica: int | None = None  # control-plane replica

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pods"], d["exclude"] = list(self.pods), list(self.exclude)
        return {k: v for k, v in d.items() if v not in (None, [], ())}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Selection":
        return cls(pods=tuple(d.get("pods") or ()), workload=d.get("workload"), app=d.get("app"),
                   namespace=d.get("namespace"), count=d.get("count"), percent=d.get("percent"),
                   exclude=tuple(d.get("exclude") or ()), replica=d.get("replica"))


# ------------------------------------------------------------------------------------- network params

@dataclass(frozen=True)
class NetworkParams:
    latency: float = 0.0  # seconds added to each packet the pod sends
    jitter: float = 0.0  # ± seconds, uniform
    loss: float = 0.0  # fraction of packets dropped, each direction
    bandwidth: int | None = None  # bits/s, each direction

    def validate(self) -> None:
        if self.jitter and not self.latency:
            raise SpecError("jitter: needs a latency (the jitter varies it)")
        if self.jitter > self.latency:
            raise SpecError(f"jitter: {format_duration(self.jitter)} is more than the latency "
                            f"{format_duration(self.latency)} (a delay cannot be negative)")
        if self.latency > 30:
            raise SpecError("latency: at most 30s")
        if self.loss >= 1.0:
            raise SpecError("loss: 100% is a partition; use `mizzen chaos partition`")
        if not (self.latency or self.loss or self.bandwidth):
            raise SpecError("give at least one of latency, loss, bandwidth")

    def describe(self) -> str:
        parts = []
        if self.latency:
            parts.append(f"latency {format_duration(self.latency)}"
                         + (f" ±{format_duration(self.jitter)}" if self.jitter else ""))
        if self.loss:
            parts.append(f"loss {self.loss * 100:g}%")
        if self.bandwidth:
            parts.append(f"bandwidth {self.bandwidth / 1e6:g}mbit")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------- the record

@dataclass
class Fault:
    id: str
    kind: str  # kill | network | partition | stress
    params: dict[str, Any]  # kind-specific: target/signal (kill), NetworkParams fields, sides, cpus ...
    selection: dict[str, Any]  # Selection.to_dict()
    seed: int
    created: float  # wall clock
    duration: float | None = None  # None: instantaneous (a kill)
    started: float | None = None
    expires: float | None = None
    ended: float | None = None
    state: str = "applying"
    targets: list[dict[str, Any]] = field(default_factory=list)  # what was hit: pod, process, pid, ip, netns
    undo: dict[str, Any] = field(default_factory=dict)  # what to remove: per netns chains, qdiscs, pids
    keeper_pid: int | None = None  # the process that holds the fault and undoes it at expiry
    runner_pid: int | None = None  # the mesh run the fault belongs to
    source: str = "cli"  # cli | scenario <name>
    error: str | None = None
    ended_by: str | None = None  # expiry | stop | teardown | keeper-lost | ...

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def describe(self) -> str:
        p = self.params
        if self.kind == "kill":
            what = f"kill {p.get('target')} (SIG{ {9: 'KILL', 15: 'TERM'}.get(p.get('signal', 9), p.get('signal'))})"
            if p.get("every"):
                what += f" every {format_duration(p['every'])}"
        elif self.kind == "network":
            what = "network " + NetworkParams(**{k: p[k] for k in ("latency", "jitter", "loss", "bandwidth")
                                                  if k in p}).describe()
        elif self.kind == "partition":
            what = f"partition {describe_side(p.get('a'))} | {describe_side(p.get('b'))}"
        else:
            what = f"stress {p.get('cpus', 1)} cpu hog(s)"
        return what

    def where(self) -> str:
        names = [t.get("name") or t.get("pod") or "" for t in self.targets]
        return ", ".join(n for n in dict.fromkeys(names) if n) or "-"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fault":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def describe_side(side: Any) -> str:
    if side == "controlplane" or (isinstance(side, dict) and side.get("controlplane")):
        return "controlplane"
    if isinstance(side, dict):
        return ",".join(side.get("pods") or []) or side.get("workload") or side.get("app") or "?"
    return str(side)


def chain_name(fault_id: str, suffix: str) -> str:
    """iptables chain of one fault (≤ 28 characters)."""
    name = f"MZC-{fault_id}-{suffix}"
    if len(name) > 28:
        raise SpecError(f"chain name {name} too long")
    return name
