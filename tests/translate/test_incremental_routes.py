"""A change of hosts' routes re-renders only the virtual hosts it touches (`translate.routes.VhostReuse`), and
what every proxy gets is byte-identical to a from-scratch render of the new snapshot.

Each step applies one change to the config (or the registry), builds the next `Renderer` from the previous one
and the `model.diff` between them (as the control plane does), and compares every type, every resource, of
every proxy's view with `Renderer(new)` — across proxies whose views differ: two namespaces, a Sidecar scope,
sourceLabels / sourceNamespace matches, exportTo of a VirtualService, DestinationRules of route destinations,
the loopback (HTTP proxy) route config, and a proxy that is not asked in every generation."""
from __future__ import annotations

from mizzen.api import load_text
from mizzen.model import Instance, Proxy, Snapshot
from mizzen.model.dependencies import diff
from mizzen.model.snapshot import ConfigIndex, EndpointIndex
from mizzen.model.types import ROUTE
from mizzen.translate import Renderer

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns1}
spec: {selector: {app: a}, ports: [{port: 8080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: ns1}
spec: {selector: {app: b}, ports: [{port: 8080, name: http}, {port: 9080, name: http-admin}]}
---
apiVersion: v1
kind: Service
metadata: {name: c, namespace: ns2}
spec: {selector: {app: c}, ports: [{port: 8080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: d, namespace: ns2}
spec: {selector: {app: d}, ports: [{port: 8080, name: http}, {port: 5432, name: tcp-db}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: scoped, namespace: ns1}
spec:
  workloadSelector: {labels: {app: scoped}}
  egress: [{hosts: [./a.ns1.svc.cluster.local, ./b.ns1.svc.cluster.local]}]
"""


def vs_a(marker: str, dest: str = "b.ns1.svc.cluster.local") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a, namespace: ns1}}
spec:
  hosts: [a.ns1.svc.cluster.local]
  http:
  - match: [{{sourceLabels: {{app: x}}}}]
    headers: {{request: {{set: {{x-marker: {marker}}}}}}}
    route: [{{destination: {{host: {dest}}}}}]
  - match: [{{sourceNamespace: ns2}}]
    route: [{{destination: {{host: a.ns1.svc.cluster.local}}, weight: 50}},
            {{destination: {{host: c.ns2.svc.cluster.local}}, weight: 50}}]
  - route: [{{destination: {{host: a.ns1.svc.cluster.local}}}}]
"""


def vs_c(marker: str, export_to: str = '["."]') -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: c, namespace: ns2}}
spec:
  hosts: [c.ns2.svc.cluster.local]
  exportTo: {export_to}
  http:
  - headers: {{response: {{set: {{x-c: {marker}}}}}}}
    route: [{{destination: {{host: c.ns2.svc.cluster.local}}}}]
"""


DR_B_HASH = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: ns1}
spec:
  host: b.ns1.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
"""

SERVICE_E = """\
apiVersion: v1
kind: Service
metadata: {name: e, namespace: ns1}
spec: {selector: {app: e}, ports: [{port: 8080, name: http}]}
"""

SERVICE_C_MORE_PORTS = """\
apiVersion: v1
kind: Service
metadata: {name: c, namespace: ns2}
spec: {selector: {app: c}, ports: [{port: 8080, name: http}, {port: 9080, name: http-admin}]}
"""

SIDECAR_WIDER = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: scoped, namespace: ns1}
spec:
  workloadSelector: {labels: {app: scoped}}
  egress: [{hosts: [./a.ns1.svc.cluster.local, ./b.ns1.svc.cluster.local, ns2/c.ns2.svc.cluster.local]}]
"""

PROXIES = [
    Proxy("x", namespace="ns1", labels=(("app", "x"),), ports=(8080,)),  # matches sourceLabels
    Proxy("y", namespace="ns1", labels=(("app", "y"),)),
    Proxy("scoped", namespace="ns1", labels=(("app", "scoped"),)),  # Sidecar: a and b only
    Proxy("z", namespace="ns2", labels=(("app", "z"),)),  # sourceNamespace; sees c's ns2-only VirtualService
    Proxy("lb", namespace="ns2", labels=(("app", "lb"),), interception="loopback", ports=(8080,)),  # http_proxy
]


def instances(extra: str = "") -> list[Instance]:
    out = [Instance(f"{ns}.{app}-0", ns, app, f"10.0.{i}.1", (8080, 9080, 5432), (("app", app),))
           for i, (ns, app) in enumerate([("ns1", "a"), ("ns1", "b"), ("ns2", "c"), ("ns2", "d")])]
    if extra:
        out.append(Instance(f"ns1.{extra}", "ns1", "b", "10.0.9.9", (8080, 9080), (("app", "b"),)))
    return out


class Mesh:
    """The config as a store would hold it: applies and deletes bump the revision."""

    def __init__(self, text: str) -> None:
        self.revision = 0
        self.snap = Snapshot.build(self._load(text), instances(), revision=self.revision)

    def _load(self, text: str):
        out = []
        for r in load_text(text, file="in.yaml").resources:
            self.revision += 1
            out.append(r.with_revision(self.revision))
        return out

    def apply(self, text: str) -> Snapshot:
        changes = {r.key: r for r in self._load(text)}
        return self._config(changes)

    def delete(self, text: str) -> Snapshot:
        self.revision += 1
        return self._config({r.key: None for r in load_text(text, file="in.yaml").resources})

    def _config(self, changes) -> Snapshot:
        config = ConfigIndex.updated(self.snap.config, changes, self.revision)
        self.snap = Snapshot(config, self.snap.endpoints, self.snap.generation + 1, self.snap.jwks, self.snap.mesh)
        return self.snap

    def endpoints(self, extra: str) -> Snapshot:
        self.snap = self.snap.with_endpoints(EndpointIndex(instances(extra), self.snap.generation + 1),
                                             self.snap.generation + 1)
        return self.snap


def payloads(view) -> dict:
    return {t: {n: r.payload for n, r in m.items()} for t, m in view.items()}


def check(renderer: Renderer, snap: Snapshot, proxies=PROXIES, what: str = "") -> None:
    for p in proxies:
        got, fresh = renderer.resources_for(p), Renderer(snap).resources_for(p)
        assert payloads(got) == payloads(fresh), f"{what}: proxy {p.id}: incremental render differs from a fresh one"
        assert {t: {n: r.version for n, r in m.items()} for t, m in got.items()} == \
            {t: {n: r.version for n, r in m.items()} for t, m in fresh.items()}


def test_every_step_is_byte_identical_to_a_fresh_render_and_reuses_untouched_virtual_hosts():
    mesh = Mesh(SERVICES + "---\n" + vs_a("m0") + "---\n" + vs_c("c0"))
    r = Renderer(mesh.snap)
    check(r, mesh.snap)
    steps = [
        ("a's routes", lambda: mesh.apply(vs_a("m1"))),
        ("c's ns2-only routes", lambda: mesh.apply(vs_c("c1"))),
        ("a DestinationRule of a route destination (b): a's hash policy", lambda: mesh.apply(DR_B_HASH)),
        ("an endpoint of b (endpoint-only path in between)", lambda: mesh.endpoints("b-1")),
        ("a's routes again, right after an endpoint-only snapshot", lambda: mesh.apply(vs_a("m2"))),
        ("a route to a host that does not exist yet", lambda: mesh.apply(vs_a("m3", "e.ns1.svc.cluster.local"))),
        ("the host appears: a's routes name its cluster", lambda: mesh.apply(SERVICE_E)),
        ("c gets a port: a new route config, c's virtual hosts", lambda: mesh.apply(SERVICE_C_MORE_PORTS)),
        ("c's routes exported to everyone", lambda: mesh.apply(vs_c("c2", '["*"]'))),
        ("the DestinationRule goes", lambda: mesh.delete(DR_B_HASH)),
        ("a Sidecar change (per-proxy: every virtual host rendered)", lambda: mesh.apply(SIDECAR_WIDER)),
        ("a's routes after the Sidecar change", lambda: mesh.apply(vs_a("m4"))),
        ("a's VirtualService deleted", lambda: mesh.delete(vs_a("m4"))),
    ]
    reused = 0
    for what, step in steps:
        old = mesh.snap
        new = step()
        r = Renderer(new, r, diff(old, new))
        check(r, new, what=what)
        reused += r.stats["vhosts_reused"]
    assert reused > 0, "no virtual host was ever reused: the incremental path was not exercised"


def test_a_route_change_of_one_host_reuses_every_other_virtual_host():
    mesh = Mesh(SERVICES + "---\n" + vs_a("m0") + "---\n" + vs_c("c0"))
    r0 = Renderer(mesh.snap)
    y = PROXIES[1]
    before = r0.resources_for(y)
    old = mesh.snap
    new = mesh.apply(vs_c("c1", '["*"]'))
    r1 = Renderer(new, r0, diff(old, new))
    after = r1.resources_for(y)
    assert payloads(after) == payloads(Renderer(new).resources_for(y))
    # y sees a, b, c, d on 8080 and b on 9080: c's virtual host is rendered again, and a's (one of its routes
    # sends to c: c's service and DestinationRule decide its cluster names and hash policy); b's two and d's
    # are reused
    assert r1.stats["vhosts_reused"] == 3
    changed = [n for n, x in after[ROUTE].items() if before[ROUTE][n].version != x.version]
    assert changed == ["8080"]
    for t in after:
        if t != ROUTE:
            assert {n: x.version for n, x in after[t].items()} == {n: x.version for n, x in before[t].items()}


def test_a_proxy_not_asked_in_between_renders_from_scratch_correctly():
    mesh = Mesh(SERVICES + "---\n" + vs_a("m0"))
    r = Renderer(mesh.snap)
    check(r, mesh.snap, PROXIES[:1])  # only x is rendered in this generation
    for marker in ("m1", "m2"):
        old = mesh.snap
        new = mesh.apply(vs_a(marker))
        r = Renderer(new, r, diff(old, new))
        check(r, new, PROXIES[:1] if marker == "m1" else PROXIES)


def test_workloads_of_one_namespace_share_route_configs_unless_a_route_matches_their_labels():
    w1, w2 = (Proxy(f"w{i}", namespace="ns1", labels=(("app", f"w{i}"),)) for i in (1, 2))
    x, y = PROXIES[0], PROXIES[1]
    no_labels = Mesh(SERVICES + "---\n" + vs_c("c0", '["*"]'))  # no route matches on sourceLabels
    r = Renderer(no_labels.snap)
    check(r, no_labels.snap, [w1, w2, x, y])
    assert r.resources_for(w1)[ROUTE]["8080"] is r.resources_for(w2)[ROUTE]["8080"]
    assert r.resources_for(w1)[ROUTE]["8080"] is not r.resources_for(PROXIES[2])[ROUTE]["8080"]  # Sidecar
    assert r.resources_for(w1)[ROUTE]["8080"] is not r.resources_for(PROXIES[3])[ROUTE]["8080"]  # ns2
    labels = Mesh(SERVICES + "---\n" + vs_a("m0"))  # a's first route applies to app=x only
    r = Renderer(labels.snap)
    check(r, labels.snap, [w1, w2, x, y])
    assert r.resources_for(x)[ROUTE]["8080"].payload != r.resources_for(y)[ROUTE]["8080"].payload
