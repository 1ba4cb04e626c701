"""The one duration parser: Go's `time.ParseDuration` syntax, which is what Istio accepts for its duration
fields ('30s', '1.5s', '100ms', '1m30s', '1h2m', '300us', '300µs', '10ns', '0').

Istio reads its CRDs' `google.protobuf.Duration` fields with Go's duration syntax, so a value lies in Go's
range (an int64 of nanoseconds, about 292 years); anything longer is rejected here, as Istio does, before
protobuf's own range could matter. Values are kept as the user wrote them (the stored document round-trips);
`duration_ns` / `duration_seconds` give the number.

`Duration`, `ZeroOkDuration` and `duration_type()` are the pydantic field types every kind uses.
"""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

NS_PER = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}
MAX_NS = 2**63 - 1  # Go's time.Duration
MILLISECOND = 1_000_000
_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")
_MAX_TEXT = 64  # no valid duration is longer; bounds the work on hostile input


def _show(text: object) -> str:
    r = repr(text)
    return r if len(r) <= 40 else r[:37] + "...'"


def duration_ns(text: str) -> int:
    """A Go/Istio duration in nanoseconds (may be negative); ValueError with a clear message otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {_show(text)}: a string with a unit, e.g. '500ms', '1.5s', '1m30s'")
    t = text
    if len(t) > _MAX_TEXT:
        raise ValueError(f"invalid duration {_show(text)}: too long")
    sign = 1
    if t[:1] in ("+", "-"):
        sign = -1 if t[0] == "-" else 1
        t = t[1:]
    if t == "0":
        return 0
    if not t:
        raise ValueError(f"invalid duration {_show(text)}: use a number with a unit, e.g. 500ms, 1.5s, 1m30s")
    pos, total = 0, 0
    while pos < len(t):
        m = _PART.match(t, pos)
        if m is None or (not m.group(1) and not m.group(2)):
            rest = t[pos:]
            if re.fullmatch(r"\d+(\.\d*)?|\.\d+", rest):
                raise ValueError(f"invalid duration {_show(text)}: missing unit (ns, us, ms, s, m or h)")
            raise ValueError(f"invalid duration {_show(text)}: use a number with a unit "
                             f"(ns, us, ms, s, m, h), e.g. 500ms, 1.5s, 1m30s")
        whole, frac, unit = m.group(1) or "0", m.group(2) or "", m.group(3)
        scale = NS_PER[unit]
        part = int(whole) * scale
        if frac:
            # Go keeps the fraction's digits exactly, truncating below a nanosecond
            part += int(frac) * scale // 10 ** len(frac)
        total += part
        if total > MAX_NS:
            raise ValueError(f"invalid duration {_show(text)}: out of range (at most about 2562047h)")
        pos = m.end()
    return sign * total


def duration_seconds(text: str) -> float:
    """A Go/Istio duration in seconds."""
    return duration_ns(text) / 1e9


def seconds_or_none(text: str | None) -> float | None:
    """None or '' stays None; otherwise the duration in seconds."""
    if not text:
        return None
    return duration_seconds(text)


def check_duration(v: str | None, *, minimum_ns: int = MILLISECOND, maximum_ns: int = MAX_NS,
                   what: str = "duration", step_ns: int = 1) -> str | None:
    """Validate a duration field's value, keeping the text. Istio requires most durations to be ≥ 1ms."""
    if v is None:
        return v
    ns = duration_ns(v)
    if ns < minimum_ns:
        if minimum_ns == 0:
            raise ValueError(f"{what} {_show(v)} must not be negative")
        raise ValueError(f"{what} {_show(v)} must be at least {_human(minimum_ns)}")
    if ns > maximum_ns:
        raise ValueError(f"{what} {_show(v)} must be at most {_human(maximum_ns)}")
    if ns % step_ns:
        raise ValueError(f"{what} {_show(v)} must be a multiple of {_human(step_ns)} (Istio's precision)")
    return v


def _human(ns: int) -> str:
    for unit in ("h", "m", "s", "ms", "us"):
        if ns % NS_PER[unit] == 0:
            return f"{ns // NS_PER[unit]}{unit}"
    return f"{ns}ns"


def duration_type(minimum_ns: int = MILLISECOND, maximum_ns: int = MAX_NS, what: str = "duration",
                  step_ns: int = 1):
    """A pydantic string field type holding a duration in [minimum, maximum] (a multiple of step_ns)."""
    # before pydantic's own str check, so that `30` or `1.5` (YAML numbers) get the duration message
    return Annotated[str, BeforeValidator(lambda v: check_duration(v, minimum_ns=minimum_ns, maximum_ns=maximum_ns,
                                                                   what=what, step_ns=step_ns))]


Duration = duration_type()  # ≥ 1ms, as Istio's `duration(self) >= duration('1ms')` rules
# Istio's ValidateDuration (route timeouts, retries): at least 1ms and a whole number of milliseconds
MsDuration = duration_type(MILLISECOND, step_ns=MILLISECOND)
ZeroOkDuration = duration_type(0)  # ≥ 0, e.g. a cookie TTL of 0s (session cookie), a timeout of 0s (none)
