"""One tenant's config never changes another tenant's proxies — checked by rendering every proxy of namespace
`bank` before and after each kind of resource a `shop` tenant may apply, for every kind Mizzen knows.

- Policy (Sidecar, Telemetry, EnvoyPatch, RateLimit, Workload, ServiceAccount, Gateway, ...): `bank`'s Envoy
  config stays byte-identical.
- Routing rules for the tenant's *own* services (VirtualService, DestinationRule, Router, Service,
  ServiceEntry for a name in its namespace): Istio applies them to every caller, so `bank`'s proxies change —
  only in how they reach `*.shop.svc.cluster.local`: those hosts' clusters, endpoints and virtual hosts; every
  other resource and virtual host is byte-identical.
- Rules on another tenant's or an external host are refused at apply for a tenant token (`auth_exports`), and so
  are cluster-scoped kinds and the root namespace (test_rest_auth.py); they are checked here to be refused —
  unless a VirtualService or DestinationRule is exported only to the tenant's namespaces, which the model
  honours: then it changes the tenant's own proxies and leaves bank's byte-identical.
"""
from __future__ import annotations

from typing import Any

import pytest

from mizzen.api import KINDS, load_text
from mizzen.model import Instance, Proxy, Snapshot
from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from mizzen.model.workloadentries import instances_of
from mizzen.server.auth import Forbidden, Principal, check_writes
from mizzen.server.auth_tokens import TENANT
from mizzen.translate import Renderer

SHOP_HOSTS = ".shop.svc.cluster.local"  # the shop tenant's service names
TENANT_SHOP = Principal(TENANT, "tok-shop", frozenset({"shop"}))

BASE = """
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{port: 9080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: bank}
spec: {selector: {app: ledger}, ports: [{port: 9080, name: http}, {port: 5432, name: tcp-db}]}
---
apiVersion: v1
kind: Service
metadata: {name: ui, namespace: bank}
spec: {selector: {app: ui}, ports: [{port: 8080, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ledger, namespace: bank}
spec: {host: ledger, subsets: [{name: v1, labels: {version: v1}}]}
"""


def _inst(ns: str, name: str, app: str, ip: str, ports: tuple[int, ...]) -> Instance:
    return Instance(id=f"{ns}.{name}", namespace=ns, workload=app, address=ip, ports=ports,
                    labels=(("app", app), ("version", "v1")))


INSTANCES = [_inst("shop", "cart-0", "cart", "10.244.0.2", (9080,)),
             _inst("bank", "ledger-0", "ledger", "10.244.0.3", (9080, 5432)),
             _inst("bank", "ui-0", "ui", "10.244.0.4", (8080,))]
BANK_PROXIES = [Proxy(id="ledger-0", namespace="bank", workload="ledger", labels=(("app", "ledger"),
                      ("version", "v1")), ports=(9080, 5432), ip="10.244.0.3"),
                Proxy(id="ui-0", namespace="bank", workload="ui", labels=(("app", "ui"),), ports=(8080,),
                      ip="10.244.0.4")]


def doc(kind: str, name: str, spec: str, api: str = "networking.istio.io/v1", ns: str = "shop") -> str:
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"


# resources a shop tenant may apply that must leave bank's proxies byte-identical
POLICY = {
    # rules on another tenant's host, exported only to the tenant's own namespace (exportTo: the model uses
    # them for shop's proxies only) — with and without a workloadSelector (which makes a DestinationRule
    # private anyway)
    "VirtualService/scoped-foreign": doc("VirtualService", "ledger-mine", "{hosts: [ledger.bank.svc.cluster.local],"
                                         " exportTo: ['.'], http: [{route: [{destination: {host: cart}}]}]}"),
    "DestinationRule/scoped-foreign": doc("DestinationRule", "cart-client", "{host: ui.bank.svc.cluster.local, "
                                          "workloadSelector: {matchLabels: {app: cart}}, trafficPolicy: "
                                          "{connectionPool: {tcp: {maxConnections: 1}}}, exportTo: ['.']}"),
    "DestinationRule/scoped-foreign-all": doc("DestinationRule", "ui-mine", "{host: ui.bank.svc.cluster.local, "
                                              "trafficPolicy: {connectionPool: {tcp: {maxConnections: 2}}}, "
                                              "exportTo: [shop]}"),
    "Sidecar": doc("Sidecar", "default", "{egress: [{hosts: [./*]}], outboundTrafficPolicy: {mode: REGISTRY_ONLY}}"),
    "Telemetry": doc("Telemetry", "logs", "{accessLogging: [{providers: [{name: envoy}]}]}",
                     api="telemetry.istio.io/v1"),
    "EnvoyPatch": doc("EnvoyPatch", "everything", "{patches: [{applyTo: CLUSTER, name: "
                      "'outbound|9080||ledger.bank.svc.cluster.local', operation: MERGE, value: "
                      "{connect_timeout: 0.25s}}]}", api="mizzen.dev/v1"),
    "RateLimit": doc("RateLimit", "cart", "{workloadSelector: {labels: {app: cart}}, limits: [{name: all, "
                     "requestsPerUnit: 1, unit: second}]}", api="mizzen.dev/v1"),
    "Workload": doc("Workload", "cart", "{command: [sh], ports: [{containerPort: 9080}]}", api="mizzen.dev/v1"),
    "ServiceAccount": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: cart, namespace: shop}\n",
    "Gateway": doc("Gateway", "shop-gw", "{selector: {app: cart}, servers: [{port: {number: 80, name: http, "
                   "protocol: HTTP}, hosts: ['shop/*']}]}"),
    "PeerAuthentication": doc("PeerAuthentication", "cart", "{selector: {matchLabels: {app: cart}}, mtls: "
                              "{mode: STRICT}}", api="security.istio.io/v1"),
    "AuthorizationPolicy": doc("AuthorizationPolicy", "cart", "{selector: {matchLabels: {app: cart}}, action: DENY, "
                               "rules: [{to: [{operation: {paths: [/admin]}}]}]}", api="security.istio.io/v1"),
    "RequestAuthentication": doc("RequestAuthentication", "cart", "{selector: {matchLabels: {app: cart}}, jwtRules: "
                                 "[{issuer: https://issuer.shop, jwks: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"eA\"}]}'}]}",
                                 api="security.istio.io/v1"),
    "EnvoyFilter": doc("EnvoyFilter", "cart", "{workloadSelector: {labels: {app: cart}}, configPatches: [{applyTo: "
                       "CLUSTER, match: {context: SIDECAR_OUTBOUND}, patch: {operation: MERGE, value: "
                       "{connect_timeout: 0.25s}}}]}", api="networking.istio.io/v1alpha3"),
    "ExtensionProvider": doc("ExtensionProvider", "zipkin-shop", "{zipkin: {service: cart.shop.svc.cluster.local, "
                             "port: 9411}}", api="mizzen.dev/v1"),
    "WorkloadGroup": doc("WorkloadGroup", "cart-vms", "{metadata: {labels: {app: cart}}, template: {ports: "
                         "{http: 9080}}}"),
    # Gateway API (api/gateway_api.py): a gateway of shop's and routes attached to it; ReferenceGrant; a Secret
    "KubeGateway": doc("Gateway", "shop-gw", "{gatewayClassName: mizzen, listeners: [{name: http, port: 80, "
                       "protocol: HTTP}]}", api="gateway.networking.k8s.io/v1"),
    "HTTPRoute": doc("HTTPRoute", "cart", "{parentRefs: [{name: shop-gw}], rules: [{backendRefs: [{name: cart, "
                     "port: 9080}]}]}", api="gateway.networking.k8s.io/v1"),
    "GRPCRoute": doc("GRPCRoute", "cart", "{parentRefs: [{name: shop-gw}], rules: [{backendRefs: [{name: cart, "
                     "port: 9080}]}]}", api="gateway.networking.k8s.io/v1"),
    "ReferenceGrant": doc("ReferenceGrant", "cart", "{from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, "
                          "namespace: shop}], to: [{group: '', kind: Service}]}", api="gateway.networking.k8s.io/v1beta1"),
    "Secret": "apiVersion: v1\nkind: Secret\nmetadata: {name: cart-cert, namespace: shop}\ntype: Opaque\n"
              "data: {a: YQ==}\n",
    "ProxyConfig": doc("ProxyConfig", "cart", "{selector: {matchLabels: {app: cart}}, concurrency: 1}",
                       api="networking.istio.io/v1beta1"),
}
# the tenant's own service's routing: bank changes only in how it reaches cart.shop
OWNER = {
    "VirtualService": doc("VirtualService", "cart", "{hosts: [cart], http: [{route: [{destination: {host: cart}}], "
                                                    "timeout: 3s, retries: {attempts: 5}}]}"),
    "DestinationRule": doc("DestinationRule", "cart", "{host: cart, trafficPolicy: {connectionPool: {tcp: "
                                                      "{maxConnections: 7}}}, subsets: [{name: v1, labels: "
                                                      "{version: v1}}]}"),
    "Router": doc("Router", "cart", "{port: 9080, protocol: http, subsets: [{branch: master, versions: "
                                    "{v1: 100}}]}", api="mizzen.dev/v1"),
    "ServiceEntry": doc("ServiceEntry", "cart-vm", "{hosts: [cart-vm.shop.svc.cluster.local], location: "
                                                   "MESH_INTERNAL,"
                                                   " ports: [{number: 9080, name: http, protocol: HTTP}], "
                                                   "resolution: STATIC, endpoints: [{address: 10.244.0.9}]}"),
    "WorkloadEntry": doc("WorkloadEntry", "cart-vm-1", "{address: 10.244.0.7, labels: {app: cart}}"),
    "Service": doc("Service", "cart", "{selector: {app: cart}, ports: [{port: 9080, name: http, targetPort: 9081}]}",
                   api="v1"),
}
# what a tenant is refused (so it never gets as far as a proxy)
REFUSED = {
    "Namespace": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    "Host": "apiVersion: mizzen.dev/v1\nkind: Host\nmetadata: {name: h2}\nspec: {}\n",
    "Sidecar/root": doc("Sidecar", "default", "{egress: [{hosts: [./*]}]}", ns="istio-system"),
    "VirtualService/foreign": doc("VirtualService", "steal", "{hosts: [ledger.bank.svc.cluster.local], http: "
                                  "[{route: [{destination: {host: cart}}]}]}"),
    "DestinationRule/foreign": doc("DestinationRule", "steal", "{host: ui.bank.svc.cluster.local, "
                                   "trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}}"),
    # exportTo beyond the tenant's namespaces (here: another tenant's) reaches that tenant's proxies
    "VirtualService/exported-foreign": doc("VirtualService", "steal2", "{hosts: [ledger.bank.svc.cluster.local], "
                                           "exportTo: [bank], http: [{route: [{destination: {host: cart}}]}]}"),
    # squatting a name in another tenant's namespace (or an external name others use)
    "ServiceEntry/foreign": doc("ServiceEntry", "steal", "{hosts: [payments.bank.svc.cluster.local], ports: "
                                "[{number: 9080, name: http, protocol: HTTP}], resolution: STATIC, endpoints: "
                                "[{address: 10.244.0.66}]}"),
    "Router/foreign": doc("Router", "steal", "{host: ledger.bank.svc.cluster.local, port: 9080, protocol: http, "
                                             "subsets: [{branch: master, versions: {v1: 100}}]}", api="mizzen.dev/v1"),
    "EnvoyPatch/root": doc("EnvoyPatch", "all", "{patches: [{applyTo: CLUSTER, name: x, operation: REMOVE}]}",
                           api="mizzen.dev/v1", ns="istio-system"),
}


def snapshot(extra: str = "") -> Snapshot:
    """BASE with `extra` applied as a store would: a resource of the same kind/namespace/name replaces it."""
    merged = {r.key: r for r in load_text(BASE).resources}
    merged.update({r.key: r for r in load_text(extra).resources} if extra else {})
    # WorkloadEntries are endpoints, as the control plane's endpoint index makes them (server/controlplane.py)
    entries = instances_of(r for r in merged.values() if r.kind == "WorkloadEntry")
    return Snapshot.build(list(merged.values()), [*INSTANCES, *entries])


SHOP_PROXY = Proxy(id="cart-0", namespace="shop", workload="cart", labels=(("app", "cart"), ("version", "v1")),
                   ports=(9080,), ip="10.244.0.2")
# policy kinds that do act on proxies today: the test checks they change the shop's own proxy (not vacuous)
ACTS_ON_SHOP = {"Sidecar", "Telemetry", "EnvoyPatch", "PeerAuthentication", "AuthorizationPolicy", "EnvoyFilter",
                "VirtualService/scoped-foreign", "DestinationRule/scoped-foreign", "DestinationRule/scoped-foreign-all"}


def render(snap: Snapshot, proxies: list[Proxy] = BANK_PROXIES) -> dict[str, dict[str, dict[str, Any]]]:
    r = Renderer(snap)
    return {p.id: {t: dict(v) for t, v in r.resources_for(p).items()} for p in proxies}


def payloads(view: dict[str, dict[str, Any]]) -> dict[str, dict[str, bytes]]:
    return {t: {n: r.payload for n, r in view[t].items()} for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)}


def _kind(case: str) -> str:
    return case.split("/", 1)[0]


def test_every_kind_has_a_case():
    """A kind added later (e.g. AuthorizationPolicy) must get a case here: policy, owner or refused."""
    covered = {_kind(c) for c in (*POLICY, *OWNER, *REFUSED)}
    assert set(KINDS) <= covered, f"kinds without an isolation case: {sorted(set(KINDS) - covered)}"


@pytest.mark.parametrize("case", sorted(POLICY))
def test_policy_in_one_namespace_never_changes_another_namespaces_proxies(case):
    res = load_text(POLICY[case]).resources
    check_writes(TENANT_SHOP, res)  # what a shop tenant token may apply
    before, after = render(snapshot()), render(snapshot(POLICY[case]))
    for pid in before:
        for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT):
            assert {n: r.payload for n, r in before[pid][t].items()} == \
                   {n: r.payload for n, r in after[pid][t].items()}, f"{case} changed {pid}'s {t.rsplit('.', 1)[1]}"
    if case in ACTS_ON_SHOP:
        own_before, own_after = render(snapshot(), [SHOP_PROXY]), render(snapshot(POLICY[case]), [SHOP_PROXY])
        assert payloads(own_before["cart-0"]) != payloads(own_after["cart-0"]), f"{case} did nothing in shop"


def _vhosts(rendered: Any) -> dict[str, bytes]:
    return {vh.name: vh.SerializeToString(deterministic=True) for vh in rendered.message.virtual_hosts}


@pytest.mark.parametrize("case", sorted(OWNER))
def test_the_owners_routing_changes_others_only_toward_its_own_host(case):
    res = load_text(OWNER[case]).resources
    check_writes(TENANT_SHOP, res)
    before, after = render(snapshot()), render(snapshot(OWNER[case]))
    changed_somewhere = False
    for pid in before:
        assert before[pid][LISTENER].keys() == after[pid][LISTENER].keys()
        for t in (LISTENER, CLUSTER, ENDPOINT):
            for name in before[pid][t].keys() | after[pid][t].keys():
                b, a = before[pid][t].get(name), after[pid][t].get(name)
                if (b and b.payload) != (a and a.payload):
                    changed_somewhere = True
                    assert SHOP_HOSTS in name, f"{case} changed {pid}'s {name}, not a resource of a shop host"
        for name in before[pid][ROUTE].keys() | after[pid][ROUTE].keys():
            vb, va = _vhosts(before[pid][ROUTE][name]), _vhosts(after[pid][ROUTE][name])
            for vh in vb.keys() | va.keys():
                if vb.get(vh) != va.get(vh):
                    changed_somewhere = True
                    assert SHOP_HOSTS in vh, f"{case} changed {pid}'s virtual host {vh} in route config {name}"
    assert changed_somewhere, f"{case}: expected bank's view of the shop's service to change"


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_would_reach_other_tenants_is_refused_at_apply(case):
    res = load_text(REFUSED[case]).resources
    with pytest.raises(Forbidden) as e:
        check_writes(TENANT_SHOP, res)
    assert len(e.value.denied) == 1
    # ... and it would indeed have changed bank's proxies had it been let through — but for a DestinationRule:
    # bank's proxies look one up in bank, then in the host's namespace (bank), then in the root namespace
    # (Istio's order, model/visibility.py), never in shop; refusing it unless scoped is the conservative rule
    if _kind(case) not in ("Namespace", "Host", "DestinationRule") and "root" not in case:
        before, after = render(snapshot()), render(snapshot(REFUSED[case]))
        assert any(before[p][t][n].payload != after[p][t].get(n, before[p][t][n]).payload or
                   before[p][t].keys() != after[p][t].keys()
                   for p in before for t in (CLUSTER, ROUTE, ENDPOINT, LISTENER) for n in before[p][t]), case


def test_a_namespace_that_scopes_its_egress_is_untouched_by_others_publishing_services():
    """Publishing a Service on a new port adds an outbound filter chain for that port to every proxy that sees
    it (Istio's default visibility), which can capture another namespace's passthrough traffic on that port.
    The Istio remedy works here: a namespace whose Sidecar limits egress to what it calls keeps byte-identical
    config whatever other tenants publish."""
    clash = doc("Service", "clash", "{selector: {app: cart}, ports: [{port: 5432, name: http}]}", api="v1")
    before, after = render(snapshot()), render(snapshot(clash))
    assert any(payloads(before[p]) != payloads(after[p]) for p in before)  # default visibility: bank changes
    scoped = doc("Sidecar", "default", "{egress: [{hosts: [./*, shop/cart.shop.svc.cluster.local]}]}", ns="bank")
    before, after = render(snapshot(scoped)), render(snapshot(scoped + "---\n" + clash))
    for p in before:
        assert payloads(before[p]) == payloads(after[p]), p
