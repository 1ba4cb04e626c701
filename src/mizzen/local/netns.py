"""Network namespaces of a local mesh: one bridge namespace, one namespace ("pod") per workload replica.

Layout (see docs/internals.md):
- `mizzen-<meshid>-net` holds the bridge `mzbr0`: no address, no uplink, no NAT, no default route;
- each pod `mizzen-<meshid>-<pod>` has `lo` up and `eth0` (the pod side of a veth pair whose other
  side, `m<meshid>-<hash6>`, is attached to `mzbr0`) with `10.244.x.y/16`, a route to the service
  VIP range `10.96.0.0/16` via `eth0` and no default route;
- iptables (nat) in a pod with a sidecar: tcp leaving the pod (not on lo, not uid 1337, not to
  127.0.0.0/8) is redirected to 15001; tcp arriving on eth0 to 15006 (except the agent's and
  Envoy's own ports 15020/15021/15090, as Istio does);
- `/etc/netns/<ns>/hosts` maps every service VIP to its names; `ip netns exec` bind-mounts it over
  /etc/hosts, so it is rewritten in place.

The veth pair is created directly inside the namespaces (never in the host's), so deleting the
namespaces deletes everything; `cleanup_mesh(meshid)` removes what a dead runner left behind.
Everything here needs root and the `ip` and `iptables` binaries.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..client import ENVOY_UID
from .plainroutes import plain_rules
from .procs import alive

BRIDGE = "mzbr0"
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
VIP_NETWORK = ipaddress.ip_network("10.96.0.0/16")
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
# Ports of the sidecar itself that inbound capture leaves alone (agent health/metrics, Envoy stats).
INBOUND_EXCLUDED_PORTS = (15020, 15021, 15090)
NETNS_DIR = "/run/netns"
ETC_NETNS = "/etc/netns"
MAX_NS_NAME = 64
CLUSTER_DOMAIN = "svc.cluster.local"

INSTALL_HINT = "install them with `make sysdeps` or `apt-get install iptables iproute2`"


class NetnsError(RuntimeError):
    """A namespace operation failed; the message carries the command and its stderr."""


# ---------------------------------------------------------------------------------------------- names

def mesh_id(state_dir: str) -> str:
    """First 6 hex digits of the sha1 of the absolute state dir: names every object of one mesh."""
    return hashlib.sha1(os.path.abspath(state_dir).encode()).hexdigest()[:6]


def _h(s: str, n: int) -> str:
    return hashlib.sha1(s.encode()).hexdigest()[:n]


def prefix(meshid: str) -> str:
    return f"mizzen-{meshid}-"


def bridge_ns_name(meshid: str) -> str:
    return f"mizzen-{meshid}-net"


def pod_ns_name(meshid: str, pod: str) -> str:
    name = f"mizzen-{meshid}-{pod}"
    if len(name) <= MAX_NS_NAME and "/" not in pod:
        return name
    return f"mizzen-{meshid}-{pod[:40].replace('/', '-')}-{_h(pod, 8)}"


def uplink_name(meshid: str) -> str:
    """The host side of a multi-host runner's uplink into its bridge namespace: `u<meshid>`."""
    return f"u{meshid}"


def veth_name(meshid: str, pod: str) -> str:
    """Bridge-side veth name: `m<meshid>-<6 hex>`, 14 characters (interface names are ≤ 15)."""
    return f"m{meshid}-{_h(pod, 6)}"


def pod_ip(index: int) -> str:
    """The index-th pod address: 10.244.<i/250>.<i%250+2>."""
    if index < 0 or index >= 250 * 256:
        raise ValueError(f"pod index {index} out of range")
    return f"10.244.{index // 250}.{index % 250 + 2}"


# ------------------------------------------------------------------------------------------- commands

def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command; on failure raise NetnsError with the command line and its stderr."""
    try:
        p = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise NetnsError(f"{argv[0]} not found; {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"timed out after {timeout}s: {' '.join(argv)}") from None
    if check and p.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The command line running argv inside a namespace (hosts file bind-mounted)."""
    return ["ip", "netns", "exec", netns, *argv]


NEEDED_TOOLS = ("ip", "iptables", "iptables-restore")
_availability: str | None | bool = False  # False = not checked yet


def missing_tools(path: str | None = None) -> list[str]:
    """The commands netns mode needs that are not found on PATH (or on `path`, a PATH-style string)."""
    return [t for t in NEEDED_TOOLS if shutil.which(t, path=path) is None]


def unavailable_reason(*, euid: int | None = None, path: str | None = None) -> str | None:
    """Why netns mode cannot work here (None if it can): not root, a missing command (named), or `ip netns`
    failing. Checked once per process for the real uid and PATH; `euid`/`path` check another (tests)."""
    global _availability
    default = euid is None and path is None
    if default and _availability is not False:
        return _availability  # type: ignore[return-value]
    reason: str | None = None
    missing = missing_tools(path)
    if (os.geteuid() if euid is None else euid) != 0:
        reason = "network namespaces need root"
    elif missing:
        which = ", ".join(f"`{t}`" for t in missing)
        reason = f"the {which} command{'s are' if len(missing) > 1 else ' is'} missing; {INSTALL_HINT}"
    else:
        ip = shutil.which("ip", path=path) or "ip"
        p = subprocess.run([ip, "netns", "list"], capture_output=True, text=True)
        if p.returncode != 0:
            reason = f"`ip netns` does not work here: {p.stderr.strip()}"
    if default:
        _availability = reason
    return reason


def list_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def namespace_pids(netns: str) -> list[int]:
    p = run(["ip", "netns", "pids", netns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def kill_namespace(netns: str, sig: int = signal.SIGKILL, wait: float = 3.0) -> list[int]:
    """Signal every process in a namespace; with SIGKILL also wait (briefly) until they are gone."""
    pids = namespace_pids(netns) if netns in list_namespaces() else []
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    if sig == signal.SIGKILL and pids:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.05)
    return pids


def delete_namespace(netns: str) -> None:
    if netns in list_namespaces():
        run(["ip", "netns", "del", netns], check=False)
    shutil.rmtree(os.path.join(ETC_NETNS, netns), ignore_errors=True)


# ------------------------------------------------------------------------------------------- iptables

def capture_rules(*, outbound_port: int = OUTBOUND_PORT, inbound_port: int = INBOUND_PORT,
                  envoy_uid: int = ENVOY_UID,
                  inbound_excluded: Iterable[int] = INBOUND_EXCLUDED_PORTS,
                  services: Sequence[str] = (), outbound_excluded: Sequence[str] = ()) -> str:
    """The iptables-restore input (nat table) of a pod with a sidecar; `services`: the MIZZEN_SERVICES chain
    (plainroutes.service_chain) that Envoy's own connections to the VIP range go through;
    `outbound_excluded`: destinations (CIDRs) never captured — the control plane's hosts, which the agent
    reaches over TCP on a multi-host mesh (Istio's excludeOutboundIPRanges)."""
    lines = [
        "*nat",
        ":MIZZEN_INBOUND - [0:0]",
        ":MIZZEN_OUTPUT - [0:0]",
        *services[:1],
        "-A PREROUTING -p tcp -i eth0 -j MIZZEN_INBOUND",
        "-A OUTPUT -p tcp -j MIZZEN_OUTPUT",
    ]
    for port in inbound_excluded:
        lines.append(f"-A MIZZEN_INBOUND -p tcp --dport {port} -j RETURN")
    lines += [
        f"-A MIZZEN_INBOUND -p tcp -j REDIRECT --to-ports {inbound_port}",
        "-A MIZZEN_OUTPUT -o lo -j RETURN",
        *(f"-A MIZZEN_OUTPUT -d {cidr} -j RETURN" for cidr in outbound_excluded),
    ]
    if services:
        lines.append(f"-A MIZZEN_OUTPUT -m owner --uid-owner {envoy_uid} -d {VIP_NETWORK} -j MIZZEN_SERVICES")
    lines += [
        f"-A MIZZEN_OUTPUT -m owner --uid-owner {envoy_uid} -j RETURN",
        "-A MIZZEN_OUTPUT -d 127.0.0.0/8 -j RETURN",
        f"-A MIZZEN_OUTPUT -p tcp -j REDIRECT --to-ports {outbound_port}",
    ]
    lines += [*services[1:], "COMMIT", ""]
    return "\n".join(lines)


def inbound_only_rules(*, inbound_port: int = INBOUND_PORT, inbound_excluded: Iterable[int] = INBOUND_EXCLUDED_PORTS,
                       services: Sequence[str] = ()) -> str:
    """The nat table of a sidecar pod half-way through a bypass switch (local/bypass.py): what it sends goes
    straight out (service VIPs through the MIZZEN_SERVICES chain, as in a pod without a sidecar), what
    arrives is still captured by its sidecar."""
    chain = list(services) or [":MIZZEN_SERVICES - [0:0]"]
    lines = ["*nat", ":MIZZEN_INBOUND - [0:0]", chain[0],
             "-A PREROUTING -p tcp -i eth0 -j MIZZEN_INBOUND", "-A OUTPUT -p tcp -j MIZZEN_SERVICES"]
    lines += [f"-A MIZZEN_INBOUND -p tcp --dport {port} -j RETURN" for port in inbound_excluded]
    lines += [f"-A MIZZEN_INBOUND -p tcp -j REDIRECT --to-ports {inbound_port}", *chain[1:], "COMMIT", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- hosts file

def _service_names(svc: Mapping[str, Any], pod_namespace: str) -> list[str]:
    name, ns, host = svc.get("name") or "", svc.get("namespace") or "", svc.get("hostname") or ""
    out: list[str] = []
    if name and ns and (not host or host == f"{name}.{ns}.{CLUSTER_DOMAIN}"):
        out += [f"{name}.{ns}.{CLUSTER_DOMAIN}", f"{name}.{ns}.svc", f"{name}.{ns}"]
        if ns == pod_namespace:
            out.append(name)
    elif host:
        out.append(host)
    seen: set[str] = set()
    return [n for n in out if not (n in seen or seen.add(n))]


def render_hosts(services: Iterable[Mapping[str, Any]], *, pod_namespace: str,
                 pod: str | None = None, ip: str | None = None) -> str:
    """The /etc/hosts of a pod: localhost, the pod itself, every service VIP with every name form."""
    lines = [
        "# written by mizzen (local runner); rewritten when services change",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    if pod and ip:
        lines.append(f"{ip}\t{pod}")
    rows = []
    for svc in services:
        vip = svc.get("vip")
        if not vip:
            continue
        names = _service_names(svc, pod_namespace)
        if names:
            rows.append((str(vip), names))
    for vip, names in sorted(rows, key=lambda r: r[1][0]):
        lines.append(f"{vip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def write_in_place(path: str, text: str) -> bool:
    """Replace a file's content without replacing its inode (it is bind-mounted). True if changed."""
    data = text.encode()
    try:
        with open(path, "r+b") as f:
            if f.read() == data:
                return False
            f.seek(0)
            f.write(data)
            f.truncate(len(data))
            f.flush()
        return True
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return True


# ---------------------------------------------------------------------------------------------- mesh

@dataclass
class PodNet:
    pod: str
    namespace: str  # the mesh namespace of the workload (for short service names)
    netns: str
    ip: str
    veth: str
    capture: bool
    hosts_path: str
    nat: str = ""  # the nat table last loaded with service-VIP rules (plainroutes.py)
    nat_mode: str = ""  # the capture state (bypass value) that table was fully loaded for
    chain: tuple[str, ...] = ()  # the service-VIP chain last loaded
    bypass: str = "off"  # off (captured) | outbound (sends direct, inbound captured) | on (no capture): bypass.py
    outbound_port: int = OUTBOUND_PORT
    inbound_port: int = INBOUND_PORT
    envoy_uid: int = ENVOY_UID
    outbound_excluded: tuple[str, ...] = ()

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return exec_argv(self.netns, argv)

    def to_dict(self) -> dict[str, Any]:
        return {"pod": self.pod, "namespace": self.namespace, "netns": self.netns, "ip": self.ip,
                "veth": self.veth, "capture": self.capture, "hostsPath": self.hosts_path}


@dataclass
class MeshNet:
    """The namespaces of one mesh. Create with `create()`, add pods, `teardown()` at the end."""

    meshid: str
    pods: dict[str, PodNet] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    created: bool = False
    # One host of a multi-host mesh (local/hosts.py): its pods live in `subnet` (e.g. 10.244.3.0/24) and reach
    # other hosts through an uplink into the runner's own namespace, which holds the gateway (.1) and routes
    # `routed` (other hosts' pods, the hosts' network) onward; capture leaves `outbound_excluded` alone.
    subnet: str | None = None
    routed: tuple[str, ...] = ()
    outbound_excluded: tuple[str, ...] = ()

    @property
    def gateway(self) -> str | None:
        return str(ipaddress.ip_network(self.subnet).network_address + 1) if self.subnet else None

    def pod_address(self, index: int) -> tuple[str, int]:
        """(IP, prefix length) of the index-th pod."""
        if self.subnet is None:
            return pod_ip(index), POD_NETWORK.prefixlen
        net = ipaddress.ip_network(self.subnet)
        if index < 0 or index + 2 >= net.num_addresses - 1:
            raise NetnsError(f"pod index {index} does not fit in {self.subnet}")
        return str(net.network_address + 2 + index), net.prefixlen

    @classmethod
    def for_state_dir(cls, state_dir: str) -> "MeshNet":
        return cls(mesh_id(state_dir))

    @property
    def bridge_ns(self) -> str:
        return bridge_ns_name(self.meshid)

    def create(self) -> None:
        """Create the bridge namespace (removing leftovers of this mesh first)."""
        reason = unavailable_reason()
        if reason:
            raise NetnsError(reason)
        cleanup_mesh(self.meshid)
        ns = self.bridge_ns
        run(["ip", "netns", "add", ns])
        self.created = True
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "-n", ns, "link", "set", BRIDGE, "up"])
        if self.subnet:  # the uplink: the gateway lives in the runner's own namespace (the host)
            up = uplink_name(self.meshid)
            run(["ip", "link", "del", up], check=False)
            run(["ip", "link", "add", up, "type", "veth", "peer", "name", "uplink", "netns", ns])
            run(["ip", "-n", ns, "link", "set", "uplink", "master", BRIDGE, "up"])
            run(["ip", "addr", "add", f"{self.gateway}/{ipaddress.ip_network(self.subnet).prefixlen}", "dev", up])
            run(["ip", "link", "set", up, "up"])

    def add_pod(self, pod: str, index: int, *, namespace: str = "default", capture: bool = True,
                outbound_port: int = OUTBOUND_PORT, inbound_port: int = INBOUND_PORT,
                envoy_uid: int = ENVOY_UID) -> PodNet:
        if pod in self.pods:
            raise NetnsError(f"pod {pod} exists")
        netns = pod_ns_name(self.meshid, pod)
        veth = veth_name(self.meshid, pod)
        ip, plen = self.pod_address(index)
        hosts = os.path.join(ETC_NETNS, netns, "hosts")
        pn = PodNet(pod, namespace, netns, ip, veth, capture, hosts, outbound_port=outbound_port,
                    inbound_port=inbound_port, envoy_uid=envoy_uid, outbound_excluded=self.outbound_excluded)
        # the hosts file must exist before any `ip netns exec` so that it gets bind-mounted
        write_in_place(hosts, render_hosts(self.services, pod_namespace=namespace, pod=pod, ip=ip))
        write_in_place(os.path.join(ETC_NETNS, netns, "resolv.conf"),
                       f"# written by mizzen: service names are in /etc/hosts\n"
                       f"search {namespace}.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN} cluster.local\n"
                       f"nameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n")
        run(["ip", "netns", "add", netns])
        self.pods[pod] = pn
        try:
            run(["ip", "-n", self.bridge_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                 "netns", netns])
            run(["ip", "-n", self.bridge_ns, "link", "set", veth, "master", BRIDGE, "up"])
            run(["ip", "-n", netns, "link", "set", "lo", "up"])
            run(["ip", "-n", netns, "addr", "add", f"{ip}/{plen}", "dev", "eth0"])
            run(["ip", "-n", netns, "link", "set", "eth0", "up"])
            run(["ip", "-n", netns, "route", "add", str(VIP_NETWORK), "dev", "eth0"])
            for cidr in self.routed:
                run(["ip", "-n", netns, "route", "add", cidr, "via", str(self.gateway)])
            if capture:
                run(exec_argv(netns, ["iptables-restore"]),
                    input=capture_rules(outbound_port=outbound_port, inbound_port=inbound_port,
                                        envoy_uid=envoy_uid, outbound_excluded=self.outbound_excluded))
        except NetnsError:
            self.remove_pod(pod)
            raise
        return pn

    def remove_pod(self, pod: str) -> None:
        pn = self.pods.pop(pod, None)
        if pn is None:
            return
        kill_namespace(pn.netns)
        run(["ip", "-n", self.bridge_ns, "link", "del", pn.veth], check=False)
        delete_namespace(pn.netns)

    def set_services(self, services: Iterable[Mapping[str, Any]]) -> bool:
        """Record the services and rewrite every pod's hosts file in place. True if any changed."""
        self.services = [dict(s) for s in services]
        changed = False
        for pn in self.pods.values():
            text = render_hosts(self.services, pod_namespace=pn.namespace, pod=pn.pod, ip=pn.ip)
            changed |= write_in_place(pn.hosts_path, text)
        return changed

    def set_vip_rules(self, pod: str, chain: Sequence[str]) -> bool:
        """Load a pod's nat table with the service-VIP `chain` (plainroutes.service_chain, computed once for
        all pods): for a pod without a sidecar every connection goes through it, for one with a sidecar only
        Envoy's own to the VIP range, next to the capture rules. Atomic: the first time one iptables-restore of
        the whole table, from then on of the service chain alone (`--noflush`: the rest of the table, and rules
        others added to it, stay); nothing is run when the pod already has exactly these rules. True if changed."""
        pn = self.pods.get(pod)
        if pn is None:
            return False
        if not pn.capture or pn.bypass == "on":
            rules = plain_rules(chain)
        elif pn.bypass == "outbound":
            rules = inbound_only_rules(inbound_port=pn.inbound_port, services=chain)
        else:
            rules = capture_rules(outbound_port=pn.outbound_port, inbound_port=pn.inbound_port,
                                  envoy_uid=pn.envoy_uid, services=chain, outbound_excluded=pn.outbound_excluded)
        pn.chain = tuple(chain)
        if pn.nat == rules:
            return False
        mode = pn.bypass if pn.capture else "plain"
        if pn.nat and pn.nat_mode == mode:  # only the service chain changed: rewrite it alone, leave the rest of
            # the table (and whatever else is in it, e.g. a `mizzen chaos` fault's rules) untouched; one atomic commit
            run(exec_argv(pn.netns, ["iptables-restore", "--noflush"]), input="\n".join(["*nat", *chain, "COMMIT", ""]))
        else:  # first load, or the capture rules change (a bypass switch): the whole table, atomically
            run(exec_argv(pn.netns, ["iptables-restore"]), input=rules)
        pn.nat, pn.nat_mode = rules, mode
        return True

    def set_bypass(self, pod: str, state: str) -> bool:
        """Switch a sidecar pod's capture (local/bypass.py): off | outbound | on. True if its rules changed."""
        pn = self.pods.get(pod)
        if pn is None or not pn.capture:
            return False
        pn.bypass = state
        return self.set_vip_rules(pod, pn.chain)

    def exec_argv(self, pod: str, argv: Sequence[str]) -> list[str]:
        return self.pods[pod].exec_argv(argv)

    def teardown(self) -> None:
        """Kill whatever still runs in the pods, delete every namespace and /etc/netns dir."""
        for pod in list(self.pods):
            self.remove_pod(pod)
        kill_namespace(self.bridge_ns)
        delete_namespace(self.bridge_ns)  # the uplink's other end goes with it
        self.created = False
        cleanup_mesh(self.meshid)


_ROOT_VETH = re.compile(r"^\d+:\s+([^:@\s]+)")


def cleanup_mesh(meshid: str) -> list[str]:
    """Remove every namespace, /etc/netns dir and stray veth named after this mesh, killing the
    processes still inside. Works without any record of what was made (e.g. the runner died)."""
    removed: list[str] = []
    pre = prefix(meshid)
    names = [n for n in list_namespaces() if n.startswith(pre)]
    # pods first, the bridge last (deleting it removes the bridge-side veths)
    names.sort(key=lambda n: n == bridge_ns_name(meshid))
    for ns in names:
        kill_namespace(ns)
        delete_namespace(ns)
        removed.append(f"netns {ns}")
    try:
        for d in os.listdir(ETC_NETNS):
            if d.startswith(pre):
                shutil.rmtree(os.path.join(ETC_NETNS, d), ignore_errors=True)
                removed.append(f"{ETC_NETNS}/{d}")
    except FileNotFoundError:
        pass
    # veths are made inside the namespaces, but one could be stranded in the host's by a crash
    if shutil.which("ip"):
        p = run(["ip", "-o", "link", "show"], check=False)
        for line in p.stdout.splitlines():
            m = _ROOT_VETH.match(line)
            if m and m.group(1).startswith(f"m{meshid}-"):
                run(["ip", "link", "del", m.group(1)], check=False)
                removed.append(f"link {m.group(1)}")
    return removed


def mesh_leftovers(meshid: str) -> list[str]:
    """What of this mesh still exists (namespaces, /etc/netns dirs, host veths); [] when clean."""
    out = [f"netns {n}" for n in list_namespaces() if n.startswith(prefix(meshid))]
    try:
        out += [f"{ETC_NETNS}/{d}" for d in os.listdir(ETC_NETNS) if d.startswith(prefix(meshid))]
    except FileNotFoundError:
        pass
    if shutil.which("ip"):
        p = run(["ip", "-o", "link", "show"], check=False)
        for line in p.stdout.splitlines():
            m = _ROOT_VETH.match(line)
            if m and m.group(1).startswith(f"m{meshid}-"):
                out.append(f"link {m.group(1)}")
    return out


def established_to(pid: int, ports: Iterable[int]) -> int:
    """TCP connections in ESTABLISHED state to one of `ports` (local side) in a process's namespace."""
    want, n = set(ports), 0
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) in want:
                        n += 1
        except (OSError, ValueError):
            continue
    return n


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of a process (from /proc/<pid>/net)."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except (OSError, ValueError):
            continue
    return ports
