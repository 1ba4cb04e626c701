"""Explaining a drill's failed requests. Pure (the access log's text and the fault records are passed in).

The load tags every request (`x-request-id: <run>-<i>`) and, with `accessLog`, its pod's sidecar logs each one
(translate/filters/accesslog.py's format: start time, response code and flags, duration, upstream host). A failed
request is then matched to what the faults did:

- `in-flight at a killed app`: its upstream pod's app was killed while it was in flight (start ≤ kill ≤ end);
  the app may have done the work, so no proxy may retry it — the one failure a kill must cost;
- `in-flight at a killed Envoy`: the upstream pod's Envoy died while it was in flight (an Envoy, agent or pod
  kill: an agent takes its Envoy with it) — same reasoning. This includes a request the caller's sidecar wrote
  on a pooled connection to that Envoy in the few milliseconds between its death and the caller noticing the
  connection's reset (`UC`/`UPE`, started at most `RACE` after the death): it was sent to a process that was
  gone, and no proxy can tell whether such a request was processed, so none may retry it;
- `the load's own sidecar was killed`: the load's pod lost its Envoy (the load's connection to it broke);
- `through a degraded network` / `in a CPU-stressed pod`: its upstream pod (or the load's) was under a network
  fault (latency, loss, bandwidth, partition) or a CPU stress while it was in flight — what the drill asked for;
- anything else is **unexplained**: the mesh failed a request it could have served (e.g. sent it to a pod
  known dead, or dropped it in a rollout). Each is listed with its access-log entry.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Iterable

APP_KILL = "in-flight at a killed app"
ENVOY_KILL = "in-flight at a killed Envoy"
OWN_SIDECAR = "the load's own sidecar was killed"
NETWORK = "through a degraded network"
STRESS = "in a CPU-stressed pod"
# A request was in flight at a kill if it started before it and ended after it. The three clocks (the load's,
# the kill's, Envoy's access log) are the same host's wall clock; the log rounds to the millisecond and the
# kill's time is taken just after the signal was sent.
BEFORE = 0.005  # a request may be logged as starting this much after the kill's recorded time
AFTER = 0.25  # ... and end (be reported failed) this much before it
# a request sent on a pooled connection to an Envoy this soon after its death met the reset: the caller's
# sidecar learns of the death only when its (single) worker reads the kernel's RST; on a loaded 2-core machine
# (load average 25) that took more than 50 ms -- two such UC failures 50-500 ms after the death were counted
# as unexplained. Still a request written to a process that was gone, which no proxy may retry.
RACE = 0.5
CONNECTION_DIED = ("UC", "UPE")

_LINE = re.compile(r'^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<proto>[^"]*)" (?P<code>\d+) '
                   r'(?P<flags>\S+) (?P<rx>\d+) (?P<tx>\d+) (?P<dur>\d+)ms "(?P<authority>[^"]*)" '
                   r'"(?P<upstream>[^"]*)" (?P<cluster>\S+) (?P<route>\S+) "(?P<rid>[^"]*)"')


def parse_time(s: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def access_entries(text: str, run_id: str) -> dict[str, dict[str, Any]]:
    """The access-log entries of one load run, by request id (the last entry wins)."""
    out: dict[str, dict[str, Any]] = {}
    prefix = f"{run_id}-"
    for line in text.splitlines():
        if prefix not in line:
            continue
        m = _LINE.match(line)
        if not m or not m.group("rid").startswith(prefix):
            continue
        out[m.group("rid")] = {"start": parse_time(m.group("start")), "code": int(m.group("code")),
                               "flags": m.group("flags"), "ms": int(m.group("dur")),
                               "upstream": m.group("upstream"), "cluster": m.group("cluster")}
    return out


def kill_events(faults: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process a kill fault hit: {pod, kind, at, fault} (pods' processes only)."""
    out = []
    for f in faults:
        if f.get("kind") != "kill":
            continue
        for t in f.get("targets") or []:
            if t.get("at") is not None:
                # the moment requests in flight failed: the process's death (an agent's Envoy dies after it)
                at = max(float(t["at"]), float(t.get("envoyDiedAt") or 0.0))
                out.append({"pod": t.get("pod"), "kind": t.get("kind"), "at": at, "fault": f.get("id")})
    return out


def fault_windows(faults: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Network, partition and stress faults on pods: {pods, kind, start, end}."""
    out = []
    for f in faults:
        if f.get("kind") in ("network", "partition", "stress") and f.get("started") and not \
                (f.get("params") or {}).get("controlplane"):
            out.append({"pods": {t.get("name") for t in f.get("targets") or []}, "kind": f["kind"],
                        "start": float(f["started"]), "end": float(f.get("ended") or 1e18)})
    return out


def classify(failures: list[dict[str, Any]], entries: dict[str, dict[str, Any]], kills: list[dict[str, Any]],
             pod_of_ip: dict[str, str], load_pod: str,
             windows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """{"categories": {category: n}, "explained": n, "unexplained": [failure + "entry" + "upstreamPod"]}."""
    cats: dict[str, int] = {}
    unexplained = []
    for fl in failures:
        t0 = float(fl["t"])
        t1 = t0 + float(fl.get("ms") or 0) / 1000.0
        e = entries.get(fl["id"])
        cat = None
        up_pod = None
        if e is not None:
            up_ip = (e.get("upstream") or "").rsplit(":", 1)[0]
            up_pod = pod_of_ip.get(up_ip)
            start = e.get("start") or t0
            end = start + e["ms"] / 1000.0
            died = any(f in (e.get("flags") or "").split(",") for f in CONNECTION_DIED)
            for k in kills:
                if k["pod"] != up_pod:
                    continue
                raced = died and k["kind"] != "app" and k["at"] <= start <= k["at"] + RACE
                if not (start - BEFORE <= k["at"] <= end + AFTER) and not raced:
                    continue
                cat = APP_KILL if k["kind"] == "app" else (ENVOY_KILL if k["kind"] in ("envoy", "agent") else cat)
                if cat == APP_KILL:
                    break
        if cat is None:
            for k in kills:
                if k["pod"] == load_pod and k["kind"] in ("envoy", "agent") and t0 - BEFORE <= k["at"] <= t1 + AFTER:
                    cat = OWN_SIDECAR
                    break
        if cat is None:
            for w in windows or []:
                if (up_pod in w["pods"] or load_pod in w["pods"]) and w["start"] - AFTER <= t1 and t0 <= w["end"] + AFTER:
                    cat = STRESS if w["kind"] == "stress" else NETWORK
                    break
        if cat is None:
            unexplained.append(dict(fl, entry=e, upstreamPod=up_pod))
        else:
            cats[cat] = cats.get(cat, 0) + 1
    return {"categories": cats, "explained": sum(cats.values()), "unexplained": unexplained}
