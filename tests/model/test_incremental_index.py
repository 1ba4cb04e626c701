"""`ConfigIndex.updated` (what the control plane does on each store change) must give exactly the index a
whole rebuild gives, for any sequence of changes, and share the tables a change did not touch."""
from __future__ import annotations

import random

from mizzen.api import load_text
from mizzen.model import ConfigIndex

DOCS = {
    "svc-a": "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\n"
             "spec: {ports: [{port: 9080, name: http}], selector: {app: a}}\n",
    "svc-a2": "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\n"
              "spec: {ports: [{port: 9080, name: grpc}, {port: 7000, name: tcp}], selector: {app: a}}\n",
    "svc-b": "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: shop}\n"
             "spec: {ports: [{port: 9080, name: http}], selector: {app: b}}\n",
    "se": "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: default}\n"
          "spec: {hosts: [ext.example.com], ports: [{number: 80, name: http}], resolution: DNS}\n",
    "vs-a": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: default}\n"
            "spec: {hosts: [a], http: [{delegate: {name: d}}]}\n",
    "vs-d": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d, namespace: default}\n"
            "spec: {http: [{route: [{destination: {host: a, subset: v1}}]}]}\n",
    "vs-b": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: shop}\n"
            "spec: {hosts: [b.shop], http: [{route: [{destination: {host: a.default}}]}]}\n",
    "dr-a": "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: default}\n"
            "spec: {host: a, subsets: [{name: v1, labels: {version: v1}}]}\n",
    "router": "apiVersion: mizzen.dev/v1\nkind: Router\nmetadata: {name: web, namespace: web}\n"
              "spec: {port: 9090, subsets: [{branch: master, versions: {v1: 90, v2: 10}}]}\n",
    "web-svc": "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: web}\n"
               "spec: {ports: [{port: 9090, name: http}], selector: {app: web}}\n",
    "sidecar": "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: shop}\n"
               "spec: {egress: [{hosts: ['./*']}]}\n",
    "telemetry": "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: istio-system}\n"
                 "spec: {accessLogging: [{providers: [{name: envoy}]}]}\n",
}
VARIANTS = {"svc-a2": "svc-a"}  # another version of the same resource


def parse(name: str):
    (r,) = load_text(DOCS[name]).resources
    return r


def tables(ci: ConfigIndex) -> dict:
    revs = lambda rs: tuple((r.key, r.revision) for r in rs)  # noqa: E731
    return {
        "by_kind": {k: revs(v) for k, v in ci.by_kind.items()},
        "namespaces": ci.namespaces,
        "services": ci.services,
        "ports": {p: tuple(s.hostname for s in v) for p, v in ci.ports_by_number.items()},
        "vs": {h: revs(v) for h, v in ci.virtual_services_by_host.items()},
        "delegates": {k: (v.key, v.revision) for k, v in ci.delegate_virtual_services.items()},
        "delegates_by_host": {h: revs(v) for h, v in ci.delegates_by_host.items()},
        "dr": {h: revs(v) for h, v in ci.destination_rules_by_host.items()},
        "sidecars": revs(ci.sidecars),
    }


def test_updated_equals_a_whole_rebuild_for_random_change_sequences() -> None:
    rnd = random.Random(8)
    for _ in range(12):
        stored: dict = {}
        index = ConfigIndex([], 0)
        for revision in range(1, 21):
            changes = {}
            for name in rnd.sample(sorted(DOCS), rnd.randint(1, 3)):
                r = parse(name)
                if r.key in changes:
                    continue
                if r.key in stored and rnd.random() < 0.4:
                    changes[r.key] = None
                else:
                    changes[r.key] = r.with_revision(revision)
            for k, v in changes.items():
                if v is None:
                    stored.pop(k, None)
                else:
                    stored[k] = v
            index = ConfigIndex.updated(index, changes, revision)
            assert tables(index) == tables(ConfigIndex(stored.values(), revision)), sorted(map(str, changes))


def test_untouched_tables_are_shared() -> None:
    base = [parse(n).with_revision(i + 1) for i, n in enumerate(["svc-a", "vs-a", "vs-d", "dr-a", "sidecar"])]
    old = ConfigIndex(base, 5)
    dr = parse("dr-a")
    new = ConfigIndex.updated(old, {dr.key: dr.with_revision(6)}, 6)
    assert new.services is old.services and new.virtual_services_by_host is old.virtual_services_by_host
    assert new.by_kind["Sidecar"] is old.by_kind["Sidecar"]
    assert new.destination_rules_by_host is not old.destination_rules_by_host
    assert old.destination_rules_by_host["a.default.svc.cluster.local"][0].revision == 4  # old stays as it was


def test_answers_carried_to_the_next_index_equal_a_whole_rebuild() -> None:
    """`visible` and `own` answers are carried while the services table is the same object (a VirtualService or
    DestinationRule change); after any change sequence they equal a fresh index's."""
    from mizzen.model import Proxy

    proxies = [Proxy("p1", namespace="default", labels=(("app", "a"),)),
               Proxy("p2", namespace="shop", labels=(("app", "b"),)), Proxy("p3", namespace="web")]

    def answers(ci: ConfigIndex) -> list:
        return [(tuple(s.hostname for s in ci.visible_services(p)), tuple(s.hostname for s in ci.own_services(p)))
                for p in proxies]

    rnd = random.Random(15)
    carried = 0
    for _ in range(12):
        stored: dict = {}
        index = ConfigIndex([], 0)
        for revision in range(1, 21):
            answers(index)  # warm the memo, as pushes do
            r = parse(rnd.choice(sorted(DOCS)))
            change = {r.key: None if r.key in stored and rnd.random() < 0.4 else r.with_revision(revision)}
            if change[r.key] is None:
                del stored[r.key]
            else:
                stored[r.key] = change[r.key]
            new = ConfigIndex.updated(index, change, revision)
            carried += new.services is index.services
            index = new
            assert answers(index) == answers(ConfigIndex(stored.values(), revision)), r.key
    assert carried > 0
