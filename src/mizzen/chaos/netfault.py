"""Network faults inside a pod's namespace: latency + jitter, loss, bandwidth, partitions.

Semantics (the same whichever mechanism the kernel allows):
- latency ± jitter: added to every packet the pod *sends* on eth0 (as `tc netem delay` on its eth0), so each
  request/response exchange with the pod takes one latency longer;
- loss: that share of packets dropped in *each* direction on the pod's eth0;
- bandwidth: the pod's eth0 rate-limited in *each* direction (what it sends: on its eth0; what it receives: on
  its veth's bridge side, in the mesh's bridge namespace);
- partition: every packet between two sets of pods dropped, both ways, in each pod of both sets.

Mechanisms. With `sch_netem` (probed on the pod's own eth0 the first time: "Specified qdisc kind is
unknown" means the kernel has none), latency, jitter, loss and rate are one netem qdisc on the pod's eth0 (loss
and rate also on the bridge side). Without it (this project's test machine: no netem, no fq, no NFQUEUE):
latency is a userspace relay (`relay.py`) started inside the pod's namespace, which iptables points the pod's
TCP connections at (nat REDIRECT; only TCP is delayed — the mesh carries nothing else); loss is iptables
`-m statistic --mode random` DROP in the pod's filter INPUT/OUTPUT (a dropped outgoing packet is retransmitted
by TCP like one lost on the wire); bandwidth is `tbf`. Partitions are iptables DROP in both sets' pods.

Everything is a chain or qdisc named after the fault (`MZC-<id>-*`), jumped to from the top of a built-in
chain, and recorded as undo actions (actions.py) as it is made. The runner reloads a pod's whole nat table when
service endpoints change (plainroutes.py, iptables-restore), which drops the relay's nat rules: the keeper
checks them every second and puts them back (connections already relayed keep their conntrack NAT).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any

from ..client import ENVOY_UID
from .actions import ChaosError, in_netns, iptables, run
from .spec import NetworkParams, chain_name

log = logging.getLogger("mizzen.chaos")

RELAY_PORT_IN = 15070  # reserved in a faulted pod: the relay's listeners (docs/chaos.md)
RELAY_PORT_OUT = 15071
MARK_IN = 0x4D5A01  # SO_MARK of the relay's onward connections (inbound: to the sidecar's inbound port)
MARK_OUT = 0x4D5A02  # (outbound: through the service-VIP chain, then out)
VIP_RANGE = "10.96.0.0/16"
_netem: dict[str, bool] = {}


# ------------------------------------------------------------------------------------------- netem

def netem_available(netns: str) -> bool:
    """Does the kernel have sch_netem? Probed once per process on a pod's eth0 (a no-op change: added, then
    removed at once), remembered. MIZZEN_CHAOS_NETEM=0|1 overrides (tests of the fallback)."""
    forced = os.environ.get("MIZZEN_CHAOS_NETEM")
    if forced in ("0", "1"):
        return forced == "1"
    if "k" in _netem:
        return _netem["k"]
    p = run(["tc", "-n", netns, "qdisc", "add", "dev", "eth0", "root", "handle", "4d5a:", "netem", "delay", "0ms"],
            check=False)
    ok = p.returncode == 0
    if ok:
        run(["tc", "-n", netns, "qdisc", "del", "dev", "eth0", "root"], check=False)
    elif "unknown" not in (p.stderr or "").lower() and "not supported" not in (p.stderr or "").lower():
        log.warning("netem probe on %s failed for another reason (%s); using the fallbacks", netns, p.stderr.strip())
    _netem["k"] = ok
    log.info("tc netem %s: %s", "available" if ok else "not in this kernel",
             "using it" if ok else "latency by a relay, loss by iptables, bandwidth by tbf")
    return ok


def _netem_args(p: NetworkParams, *, delay: bool) -> list[str]:
    args = ["netem"]
    if delay and p.latency:
        args += ["delay", f"{p.latency * 1000:.3f}ms"] + ([f"{p.jitter * 1000:.3f}ms"] if p.jitter else [])
    if p.loss:
        args += ["loss", f"{p.loss * 100:.4f}%"]
    if p.bandwidth:
        args += ["rate", f"{p.bandwidth}bit"]
    return args


def _tbf_args(bits: int) -> list[str]:
    burst = max(1600, bits // 8 // 100)  # 10 ms worth of bytes, at least one packet
    return ["tbf", "rate", f"{bits}bit", "burst", str(burst), "latency", "200ms"]


# ----------------------------------------------------------------------------------- bridge side

def bridge_peer(netns: str, bridge_ns: str) -> str:
    """The bridge-side name of a pod's veth (its eth0's peer), found by interface index."""
    out = run(["ip", "-n", netns, "-o", "link", "show", "eth0"]).stdout
    try:
        peer_index = int(out.split(":", 2)[1].split("@if", 1)[1])
    except (IndexError, ValueError):
        raise ChaosError(f"{netns}: cannot find eth0's peer in {out.strip()!r}") from None
    for line in run(["ip", "-n", bridge_ns, "-o", "link", "show"]).stdout.splitlines():
        idx, _, rest = line.partition(":")
        if idx.strip() == str(peer_index):
            return rest.split(":", 1)[0].strip().split("@", 1)[0]
    raise ChaosError(f"{netns}: eth0's peer (index {peer_index}) is not in {bridge_ns}")


# ------------------------------------------------------------------------------------------- apply

def _chain(netns: str, table: str, name: str, rules: list[list[str]], undo: list[dict[str, Any]]) -> None:
    iptables(netns, table, "-N", name)
    undo.append({"op": "chain", "netns": netns, "table": table, "name": name})
    for r in rules:
        iptables(netns, table, "-A", name, *r)


def _jump(netns: str, table: str, chain: str, rule: list[str], undo: list[dict[str, Any]]) -> None:
    undo.append({"op": "jump", "netns": netns, "table": table, "chain": chain, "rule": rule})
    iptables(netns, table, "-I", chain, "1", *rule)


def relay_nat(fault_id: str, pod: dict[str, Any]) -> list[tuple[str, list[list[str]], str, list[str]]]:
    """The nat chains that send a pod's TCP through the relay: [(chain, its rules, built-in chain, jump)]."""
    name_in, name_out = chain_name(fault_id, "NI"), chain_name(fault_id, "NO")
    mark_in, mark_out = f"{MARK_IN:#x}", f"{MARK_OUT:#x}"
    # connections arriving on eth0
    pre = [["-p", "tcp", "-j", "REDIRECT", "--to-ports", str(RELAY_PORT_IN)]]
    # the relay's own onward connections go where the intercepted connection was going anyway ...
    out = [["-m", "mark", "--mark", mark_out, "-d", VIP_RANGE, "-j", "MIZZEN_SERVICES"],
           ["-m", "mark", "--mark", mark_out, "-j", "ACCEPT"]]
    if pod.get("sidecar"):
        out.append(["-m", "mark", "--mark", mark_in, "-j", "MIZZEN_INBOUND"])
    out.append(["-m", "mark", "--mark", mark_in, "-j", "ACCEPT"])
    # ... and connections leaving by eth0 go to the relay (with a sidecar only Envoy's: the app's own go to
    # Envoy on lo first, and Envoy's onward connection is the one that leaves)
    owner = ["-m", "owner", "--uid-owner", str(ENVOY_UID)] if pod.get("sidecar") else []
    out.append(["-o", "eth0", "-p", "tcp", *owner, "-j", "REDIRECT", "--to-ports", str(RELAY_PORT_OUT)])
    return [(name_in, pre, "PREROUTING", ["-i", "eth0", "-p", "tcp", "-j", name_in]),
            (name_out, out, "OUTPUT", ["-p", "tcp", "-j", name_out])]


def nat_present(fault_id: str, netns: str) -> bool:
    return iptables(netns, "nat", "-C", "OUTPUT", "-p", "tcp", "-j", chain_name(fault_id, "NO"),
                    check=False).returncode == 0


def install_relay_nat(fault_id: str, pod: dict[str, Any], undo: list[dict[str, Any]]) -> None:
    netns = pod["netns"]
    has_services = iptables(netns, "nat", "-S", "MIZZEN_SERVICES", check=False).returncode == 0
    for name, rules, builtin, jump in relay_nat(fault_id, pod):
        rules = [r for r in rules if has_services or "MIZZEN_SERVICES" not in r]
        while iptables(netns, "nat", "-D", builtin, *jump, check=False).returncode == 0:
            pass  # a stale jump (put back after the runner's reload)
        iptables(netns, "nat", "-F", name, check=False)
        iptables(netns, "nat", "-X", name, check=False)
        _chain(netns, "nat", name, rules, undo)
        _jump(netns, "nat", builtin, jump, undo)


def start_relay(fault_id: str, pod: dict[str, Any], p: NetworkParams, seed: int, log_path: str, ready_path: str,
                undo: list[dict[str, Any]]) -> int:
    netns = pod["netns"]
    if set(pod.get("ports") or []) & {RELAY_PORT_IN, RELAY_PORT_OUT}:
        raise ChaosError(f"{pod['name']} uses port {RELAY_PORT_IN} or {RELAY_PORT_OUT}, which the latency relay "
                         f"needs")
    try:
        os.unlink(ready_path)
    except FileNotFoundError:
        pass
    argv = [sys.executable, "-m", "mizzen.chaos.relay", "--port-in", str(RELAY_PORT_IN),
            "--port-out", str(RELAY_PORT_OUT), "--latency-ms", f"{p.latency * 1000:g}",
            "--jitter-ms", f"{p.jitter * 1000:g}", "--seed", str(seed), "--mark-in", hex(MARK_IN),
            "--mark-out", hex(MARK_OUT), "--ready-file", ready_path]
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(in_netns(netns, argv), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True)
    deadline = time.monotonic() + 15
    while not os.path.exists(ready_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise ChaosError(f"the latency relay in {pod['name']} did not start (see {log_path})")
        time.sleep(0.05)
    undo.append({"op": "kill", "pid": proc.pid, "cmdline": argv, "drain": True})
    return proc.pid


def reset_idle_connections(netns: str, ip: str) -> int:
    """Abort (SOCK_DESTROY, `ss -K`) the pod's established TCP connections on eth0 that have nothing queued
    either way: pooled keep-alive connections, which would otherwise never meet the relay (its nat rules only
    catch new connections). Their owners see a reset and reconnect — through the relay. Returns how many."""
    out = run(in_netns(netns, ["ss", "-tnH", "state", "established", "src", ip]), check=False).stdout
    idle = []
    relay_ports = {str(RELAY_PORT_IN), str(RELAY_PORT_OUT)}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "0" and parts[1] == "0":
            local, peer = parts[2], parts[3]
            if local.rsplit(":", 1)[-1] in relay_ports or peer.rsplit(":", 1)[0] == ip:
                continue  # the relay's own connections (accepted, or onward to the pod itself)
            idle.append((local, peer))
    for i in range(0, len(idle), 40):
        expr = " or ".join(f"( src {a} and dst {b} )" for a, b in idle[i:i + 40])
        run(in_netns(netns, ["ss", "-K", "-tn", "state", "established", expr]), check=False)
    return len(idle)


def apply_network(fault_id: str, pod: dict[str, Any], bridge_ns: str, p: NetworkParams, seed: int,
                  log_path: str, ready_path: str, undo: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply one pod's network fault; undo actions are appended as each change is made. Returns what was
    used ({"netem": bool, "relayPid": ...})."""
    netns = pod["netns"]
    used: dict[str, Any] = {"netem": netem_available(netns)}
    peer = bridge_peer(netns, bridge_ns) if (p.bandwidth or (p.loss and used["netem"])) else None
    if used["netem"]:
        undo.append({"op": "qdisc", "netns": netns, "dev": "eth0"})
        run(["tc", "-n", netns, "qdisc", "add", "dev", "eth0", "root", *_netem_args(p, delay=True)])
        if peer and (p.loss or p.bandwidth):
            undo.append({"op": "qdisc", "netns": bridge_ns, "dev": peer})
            run(["tc", "-n", bridge_ns, "qdisc", "add", "dev", peer, "root", *_netem_args(p, delay=False)])
        return used
    if p.bandwidth:
        undo.append({"op": "qdisc", "netns": netns, "dev": "eth0"})
        run(["tc", "-n", netns, "qdisc", "add", "dev", "eth0", "root", *_tbf_args(p.bandwidth)])
        assert peer is not None
        undo.append({"op": "qdisc", "netns": bridge_ns, "dev": peer})
        run(["tc", "-n", bridge_ns, "qdisc", "add", "dev", peer, "root", *_tbf_args(p.bandwidth)])
    if p.loss:
        name = chain_name(fault_id, "LOSS")
        _chain(netns, "filter", name, [["-m", "statistic", "--mode", "random", "--probability",
                                        f"{p.loss:.6f}", "-j", "DROP"]], undo)
        _jump(netns, "filter", "INPUT", ["-i", "eth0", "-j", name], undo)
        _jump(netns, "filter", "OUTPUT", ["-o", "eth0", "-j", name], undo)
    if p.latency:
        used["relayPid"] = start_relay(fault_id, pod, p, seed, log_path, ready_path, undo)
        install_relay_nat(fault_id, pod, undo)
        used["reset"] = reset_idle_connections(netns, pod["ip"])
    return used


def apply_partition(fault_id: str, pod: dict[str, Any], peers: list[str], undo: list[dict[str, Any]]) -> None:
    """Drop every packet between this pod and the peer addresses, both ways."""
    netns = pod["netns"]
    name_in, name_out = chain_name(fault_id, "PIN"), chain_name(fault_id, "POUT")
    _chain(netns, "filter", name_in, [["-s", ip, "-j", "DROP"] for ip in peers], undo)
    _chain(netns, "filter", name_out, [["-d", ip, "-j", "DROP"] for ip in peers], undo)
    _jump(netns, "filter", "INPUT", ["-i", "eth0", "-j", name_in], undo)
    _jump(netns, "filter", "OUTPUT", ["-o", "eth0", "-j", name_out], undo)


def qdisc_busy(netns: str, dev: str = "eth0") -> str | None:
    """The kind of a root qdisc someone put on dev (None: the default)."""
    out = run(["tc", "-n", netns, "qdisc", "show", "dev", dev, "root"], check=False).stdout.split()
    if len(out) >= 2 and out[0] == "qdisc" and out[1] in ("netem", "tbf", "htb"):
        return out[1]
    return None
