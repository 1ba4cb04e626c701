"""local/netns.py against real network namespaces and iptables (root only)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mizzen.local import netns
from mizzen.local.plainroutes import service_chain

from .conftest import requires_netns

# A tiny TCP server answering any HTTP request with "<tag> <original destination>": behind an iptables
# REDIRECT, SO_ORIGINAL_DST is where the client meant to go (what Envoy's original_dst reads).
SERVER = r"""
import socket, struct, sys, threading
port, tag = int(sys.argv[1]), sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(16)
def handle(c):
    try:
        try:
            raw = c.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST
            p, a = struct.unpack_from("!2xH4s", raw)
            dst = "%s:%d" % (socket.inet_ntoa(a), p)
        except OSError:
            dst = "-"
        c.recv(65536)
        body = ("%s %s" % (tag, dst)).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())
"""

# The SERVER's python: the system python3 works inside the namespaces as well as the venv's.
PY = sys.executable


def _client(pn: netns.PodNet, url: str, uid: int | None = None) -> subprocess.CompletedProcess:
    argv = [PY, "-c", CLIENT, url]
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(pn.exec_argv(argv), capture_output=True, text=True, timeout=20, env=env)


@pytest.fixture
def mesh(tmp_path):
    m = netns.MeshNet.for_state_dir(str(tmp_path / "state"))
    procs: list[subprocess.Popen] = []
    m.procs = procs  # type: ignore[attr-defined]
    try:
        m.create()
        yield m
    finally:
        for p in procs:
            p.kill()
            p.wait()
        m.teardown()
        assert netns.mesh_leftovers(m.meshid) == []


def _serve(m: netns.MeshNet, pn: netns.PodNet, port: int, tag: str) -> subprocess.Popen:
    p = subprocess.Popen(pn.exec_argv([PY, "-c", SERVER, str(port), tag]))
    m.procs.append(p)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while port not in netns.listening_ports(p.pid):
        assert p.poll() is None, "server died"
        assert time.monotonic() < deadline, f"server on {port} did not listen"
        time.sleep(0.05)
    return p


def test_names():
    assert netns.mesh_id("/a/b") == netns.mesh_id("/a/b/../b")
    assert len(netns.mesh_id("/x")) == 6
    assert netns.pod_ip(0) == "10.244.0.2" and netns.pod_ip(249) == "10.244.0.251"
    assert netns.pod_ip(250) == "10.244.1.2"
    assert len(netns.veth_name("abcdef", "a-very-long-pod-name-0")) <= 15
    long = netns.pod_ns_name("abcdef", "x" * 100 + "-0")
    assert len(long) <= netns.MAX_NS_NAME and long.startswith("mizzen-abcdef-")


def test_render_hosts():
    services = [
        {"name": "reviews", "namespace": "default", "hostname": "reviews.default.svc.cluster.local",
         "vip": "10.96.0.10"},
        {"name": "db", "namespace": "other", "hostname": "db.other.svc.cluster.local", "vip": "10.96.0.11"},
        {"name": "httpbin", "namespace": "default", "hostname": "httpbin.org", "vip": "10.96.0.12"},
        {"name": "novip", "namespace": "default", "hostname": "novip.default.svc.cluster.local", "vip": ""},
    ]
    text = netns.render_hosts(services, pod_namespace="default", pod="p-0", ip="10.244.0.2")
    lines = text.splitlines()
    assert "10.96.0.10\treviews.default.svc.cluster.local reviews.default.svc reviews.default reviews" in lines
    assert "10.96.0.11\tdb.other.svc.cluster.local db.other.svc db.other" in lines
    assert "10.96.0.12\thttpbin.org" in lines
    assert "10.244.0.2\tp-0" in lines
    assert "novip" not in text


def test_capture_rules_text():
    rules = netns.capture_rules()
    assert "-A MIZZEN_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
    assert "-A MIZZEN_OUTPUT -p tcp -j REDIRECT --to-ports 15001" in rules
    assert "-A PREROUTING -p tcp -i eth0 -j MIZZEN_INBOUND" in rules
    assert "-A MIZZEN_INBOUND -p tcp -j REDIRECT --to-ports 15006" in rules


@requires_netns
def test_pods_reach_each_other_by_ip(mesh):
    a = mesh.add_pod("a-0", 0, capture=False)
    b = mesh.add_pod("b-0", 1, capture=False)
    assert (a.ip, b.ip) == ("10.244.0.2", "10.244.0.3")
    _serve(mesh, a, 9080, "A")
    r = _client(b, "http://10.244.0.2:9080/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "A -"  # not redirected: no original destination
    # nothing routes anywhere else: no default route in a pod, no address on the bridge
    routes = subprocess.run(["ip", "-n", b.netns, "route"], capture_output=True, text=True).stdout
    assert "default" not in routes and "10.96.0.0/16 dev eth0" in routes
    br = subprocess.run(["ip", "-n", mesh.bridge_ns, "addr", "show", "mzbr0"], capture_output=True, text=True)
    assert "inet " not in br.stdout
    # a pod without a sidecar has no capture rules
    nat = subprocess.run(a.exec_argv(["iptables", "-t", "nat", "-S"]), capture_output=True, text=True).stdout
    assert "MIZZEN" not in nat


@requires_netns
def test_capture_outbound_inbound_and_uid_1337_bypass(mesh):
    a = mesh.add_pod("a-0", 0, capture=False)
    b = mesh.add_pod("b-0", 1, capture=True)
    c = mesh.add_pod("c-0", 2, capture=True)
    _serve(mesh, a, 9080, "A")
    _serve(mesh, b, 15001, "B-outbound")
    _serve(mesh, c, 9080, "C-app")
    _serve(mesh, c, 15006, "C-inbound")

    # an app's connection to a service VIP lands on the outbound listener with its original destination
    r = _client(b, "http://10.96.0.10:9080/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "B-outbound 10.96.0.10:9080"
    # ... and so does one to another pod's IP
    r = _client(b, "http://10.244.0.2:9080/")
    assert r.stdout.strip() == "B-outbound 10.244.0.2:9080", r.stderr
    # Envoy's uid (1337) is not captured: it reaches pod A itself
    r = _client(b, "http://10.244.0.2:9080/", uid=1337)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "A -"
    # tcp arriving on a captured pod's eth0 goes to its inbound listener (15006), not the app
    r = _client(b, f"http://{c.ip}:9080/", uid=1337)
    assert r.stdout.strip() == f"C-inbound {c.ip}:9080", r.stderr
    # loopback traffic is never captured
    r = _client(c, "http://127.0.0.1:9080/")
    assert r.stdout.strip() in ("C-app -", "C-app 127.0.0.1:9080"), r.stderr
    nat = subprocess.run(b.exec_argv(["iptables", "-t", "nat", "-S"]), capture_output=True, text=True).stdout
    assert "-A MIZZEN_OUTPUT -p tcp -j REDIRECT --to-ports 15001" in nat


@requires_netns
def test_hosts_file_resolves_services_and_is_rewritten_in_place(mesh):
    services = [{"name": "reviews", "namespace": "default", "hostname": "reviews.default.svc.cluster.local",
                 "vip": "10.96.0.10"}]
    mesh.set_services(services)
    b = mesh.add_pod("b-0", 0, namespace="default")
    other = mesh.add_pod("o-0", 1, namespace="other")

    def getent(pn, name):
        return subprocess.run(pn.exec_argv(["getent", "hosts", name]), capture_output=True, text=True)

    r = getent(b, "reviews")
    assert r.returncode == 0 and r.stdout.split()[0] == "10.96.0.10", r
    assert getent(b, "reviews.default.svc.cluster.local").stdout.split()[0] == "10.96.0.10"
    assert getent(other, "reviews").returncode != 0  # short name only inside the namespace
    assert getent(other, "reviews.default").stdout.split()[0] == "10.96.0.10"

    # a process already running in the pod sees the rewrite (the bind mount keeps the inode)
    ino = os.stat(b.hosts_path).st_ino
    reader = subprocess.Popen(b.exec_argv([PY, "-c", "import time; time.sleep(1.5); print(open('/etc/hosts').read())"]),
                              stdout=subprocess.PIPE, text=True)
    mesh.procs.append(reader)
    time.sleep(0.5)
    assert mesh.set_services(services + [{"name": "ratings", "namespace": "default",
                                          "hostname": "ratings.default.svc.cluster.local", "vip": "10.96.0.20"}])
    assert not mesh.set_services(mesh.services)  # unchanged → not rewritten
    out, _ = reader.communicate(timeout=10)
    assert "10.96.0.20\tratings.default.svc.cluster.local" in out
    assert os.stat(b.hosts_path).st_ino == ino
    assert getent(b, "ratings").stdout.split()[0] == "10.96.0.20"


@requires_netns
def test_cleanup_mesh_removes_leftovers_of_a_dead_runner(tmp_path):
    m = netns.MeshNet.for_state_dir(str(tmp_path / "state"))
    m.create()
    pn = m.add_pod("a-0", 0)
    p = subprocess.Popen(pn.exec_argv(["sleep", "300"]))
    try:
        assert netns.mesh_leftovers(m.meshid)
        # forget the MeshNet object: only the mesh id is known, as after a runner crash
        removed = netns.cleanup_mesh(m.meshid)
        assert f"netns {pn.netns}" in removed and f"netns {m.bridge_ns}" in removed
        assert p.wait(timeout=10) == -9  # processes inside were killed
        assert netns.mesh_leftovers(m.meshid) == []
        assert not os.path.exists(os.path.dirname(pn.hosts_path))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        netns.cleanup_mesh(m.meshid)


def test_vip_table_and_rules_text():
    from mizzen.local.plainroutes import vip_rules, vip_table

    services = [{"name": "web", "namespace": "default", "vip": "10.96.0.5", "selector": {"app": "web"},
                 "source": "service", "ports": [{"port": 80, "targetPort": 9080}]},
                {"name": "legacy.example", "namespace": "default", "vip": "10.96.0.9", "selector": {},
                 "source": "serviceentry", "ports": [{"port": 80, "targetPort": 80}]}]
    instances = [{"namespace": "default", "address": "10.244.0.3", "ports": [9080], "labels": {"app": "web"}},
                 {"namespace": "default", "address": "10.244.0.2", "ports": [9080], "labels": {"app": "web"}},
                 {"namespace": "other", "address": "10.244.0.4", "ports": [9080], "labels": {"app": "web"}},
                 {"namespace": "default", "address": "10.244.0.5", "ports": [9080], "labels": {"app": "web"},
                  "healthy": False}]
    table = vip_table(services, instances)
    assert table == {("10.96.0.5", 80): [("10.244.0.2", 9080), ("10.244.0.3", 9080)]}
    text = vip_rules(table)
    assert text.startswith("*nat\n:MIZZEN_SERVICES - [0:0]\n") and "-A OUTPUT -p tcp -j MIZZEN_SERVICES" in text
    assert ("-A MIZZEN_SERVICES -d 10.96.0.5/32 -p tcp --dport 80 -m statistic --mode random "
            "--probability 0.50000000 -j DNAT --to-destination 10.244.0.2:9080") in text
    assert "-A MIZZEN_SERVICES -d 10.96.0.5/32 -p tcp --dport 80 -j DNAT --to-destination 10.244.0.3:9080" in text


@requires_netns
def test_sidecar_less_pod_reaches_service_vips_through_its_own_nat_rules(mesh):
    plain = mesh.add_pod("plain-0", 0, capture=False)
    a = mesh.add_pod("web-0", 1, capture=False)
    b = mesh.add_pod("web-1", 2, capture=False)
    _serve(mesh, a, 9080, "A")
    _serve(mesh, b, 9080, "B")
    assert mesh.set_vip_rules("plain-0", service_chain({("10.96.0.5", 80): [(a.ip, 9080), (b.ip, 9080)]}))
    assert not mesh.set_vip_rules("plain-0", service_chain({("10.96.0.5", 80): [(a.ip, 9080), (b.ip, 9080)]}))
    seen = {_client(plain, "http://10.96.0.5:80/").stdout.split()[0] for _ in range(30)}
    assert seen == {"A", "B"}, seen
    # an endpoint taken out: new connections go only to the other one
    mesh.set_vip_rules("plain-0", service_chain({("10.96.0.5", 80): [(b.ip, 9080)]}))
    assert {_client(plain, "http://10.96.0.5:80/").stdout.split()[0] for _ in range(10)} == {"B"}
    # the rules live in the pod's namespace only
    assert "10.96.0.5" not in subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout


@requires_netns
def test_pod_with_sidecar_vip_rules_apply_to_envoys_own_connections_only(mesh):
    """In a pod with a sidecar the app's connection to a VIP is still captured (15001); Envoy's own (uid 1337),
    e.g. its passthrough of that connection, is DNATed to an endpoint as kube-proxy would."""
    m = mesh.add_pod("m-0", 0, capture=True)
    a = mesh.add_pod("web-0", 1, capture=False)
    _serve(mesh, m, 15001, "M-outbound")
    _serve(mesh, a, 9080, "A")
    assert mesh.set_vip_rules("m-0", service_chain({("10.96.0.5", 80): [(a.ip, 9080)]}))
    assert _client(m, "http://10.96.0.5:80/").stdout.strip() == "M-outbound 10.96.0.5:80"
    r = _client(m, "http://10.96.0.5:80/", uid=1337)
    assert r.returncode == 0 and r.stdout.strip() == "A -", r.stderr
    # a VIP port without endpoints is left alone (Envoy's connect fails there, as with no kube-proxy)
    assert _client(m, "http://10.96.0.6:80/").stdout.strip() == "M-outbound 10.96.0.6:80"
    nat = subprocess.run(m.exec_argv(["iptables", "-t", "nat", "-S"]), capture_output=True, text=True).stdout
    assert "-A MIZZEN_OUTPUT -p tcp -j REDIRECT --to-ports 15001" in nat and "-A MIZZEN_SERVICES" in nat, nat

    # bypass on: the capture rules go (the VIP rules now apply to the app too), off: back; the service chain
    # alone is rewritten only while the capture state stays the same (this once lost the bypass switch)
    assert mesh.set_bypass("m-0", "on")
    assert _client(m, "http://10.96.0.5:80/").stdout.strip() == "A -"
    assert mesh.set_vip_rules("m-0", service_chain({("10.96.0.5", 80): [(a.ip, 9080)], ("10.96.0.8", 80): [(a.ip, 9080)]}))
    assert _client(m, "http://10.96.0.5:80/").stdout.strip() == "A -"
    assert mesh.set_bypass("m-0", "off")
    assert _client(m, "http://10.96.0.5:80/").stdout.strip() == "M-outbound 10.96.0.5:80"


def test_free_ports_are_distinct_and_below_the_ephemeral_range():
    """Loopback-mode ports must not come from the range the kernel uses for outgoing connections' source
    ports (an agent once found its port taken that way)."""
    from mizzen.local.procs import _ephemeral_low, free_ports

    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(10000 <= p < _ephemeral_low() for p in ports), ports
