"""py-consul (unmodified, from PyPI) against Mizzen's Consul API, on SQLite and on a real etcd cluster."""
from __future__ import annotations

import http.server
import socket
import threading
import time

import consul
import pytest
from consul.exceptions import BadRequest

from mizzen.model.types import Instance, labels_tuple


def wait_until(cond, timeout: float = 10.0, what: str = "condition"):
    t0 = time.monotonic()
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


def ids(entries) -> list[str]:
    return sorted(e["Service"]["ID"] for e in entries)


def test_register_with_ttl_check_and_discover_with_a_blocking_query(served, consul_client):
    c = consul_client
    c.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=8080, tags=["v1"],
                             check=consul.Check.ttl("10s"))
    index, nodes = c.health.service("web")
    assert ids(nodes) == ["web-1"] and int(index) > 0
    statuses = {ch["CheckID"]: ch["Status"] for ch in nodes[0]["Checks"]}
    assert statuses == {"serfHealth": "passing", "service:web-1": "critical"}  # a new TTL check starts critical
    assert c.health.service("web", passing=True)[1] == []
    # the mesh sees the instance, unhealthy until its check passes
    inst = served.registry.get("default.consul-web-1")
    assert inst.source == "consul-api" and inst.healthy is False and inst.ports == (8080,)

    # a blocking query on the passing instances wakes when the TTL check passes
    got: dict = {}

    def block() -> None:
        t0 = time.monotonic()
        got["result"] = c.health.service("web", passing=True, index=index, wait="30s")
        got["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=block)
    t.start()
    time.sleep(0.5)
    assert "result" not in got, "the blocking query returned before anything changed"
    c.agent.check.ttl_pass("service:web-1", "all good")
    t.join(10)
    new_index, nodes = got["result"]
    assert got["seconds"] < 5 and int(new_index) > int(index) and ids(nodes) == ["web-1"]
    assert served.registry.get("default.consul-web-1").healthy is True
    # warn keeps it routable (not critical) but not "passing"
    c.agent.check.ttl_warn("service:web-1")
    wait_until(lambda: c.health.service("web", passing=True)[1] == [], what="warning excluded from passing")
    assert served.registry.get("default.consul-web-1").healthy is True
    c.agent.check.ttl_fail("service:web-1", "broken")
    wait_until(lambda: served.registry.get("default.consul-web-1").healthy is False, what="unhealthy after fail")


def test_ttl_expiry_and_deregister_critical_service_after(served, consul_client):
    c = consul_client
    c.agent.service.register("batch", service_id="batch-1", port=7000,
                             check={"TTL": "1s", "DeregisterCriticalServiceAfter": "2s", "Status": "passing"})
    assert served.registry.get("default.consul-batch-1").healthy is True
    # no update within the TTL: critical, then deregistered 2 s later
    wait_until(lambda: served.registry.get("default.consul-batch-1") is not None
               and not served.registry.get("default.consul-batch-1").healthy, 5, "TTL expiry")
    wait_until(lambda: served.registry.get("default.consul-batch-1") is None, 6, "deregistration")
    assert c.health.service("batch")[1] == [] and "batch-1" not in c.agent.services()


def test_http_and_tcp_checks(served, consul_client):
    c = consul_client
    state = {"code": 200}

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(state["code"])
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        port = srv.server_address[1]
        c.agent.service.register("api", service_id="api-1", port=port,
                                 check=consul.Check.http(f"http://127.0.0.1:{port}/health", "1s", "1s"))
        c.agent.service.register("db", service_id="db-1", port=port, check=consul.Check.tcp("127.0.0.1", port, "1s"))
        c.agent.service.register("gone", service_id="gone-1", port=closed_port,
                                 check=consul.Check.tcp("127.0.0.1", closed_port, "1s"))
        wait_until(lambda: ids(c.health.service("api", passing=True)[1]) == ["api-1"], what="HTTP check passing")
        wait_until(lambda: ids(c.health.service("db", passing=True)[1]) == ["db-1"], what="TCP check passing")
        time.sleep(1.5)
        assert c.health.service("gone", passing=True)[1] == []
        assert [ch["Status"] for ch in c.health.service("gone")[1][0]["Checks"] if ch["ServiceID"]] == ["critical"]
        state["code"] = 500
        wait_until(lambda: c.health.service("api", passing=True)[1] == [], what="HTTP check failing on 500")
        state["code"] = 429
        wait_until(lambda: [ch["Status"] for ch in c.health.service("api")[1][0]["Checks"] if ch["ServiceID"]]
                   == ["warning"], what="HTTP 429 is a warning")
    finally:
        srv.shutdown()
        srv.server_close()


def test_one_service_many_instances_tags_filter_and_catalog(served, consul_client):
    c = consul_client
    for i in range(3):
        c.agent.service.register("orders", service_id=f"orders-{i}", address=f"127.0.0.{i + 1}", port=9000 + i,
                                 tags=[f"iface-{n}" for n in range(20)] + (["canary"] if i == 2 else ["stable"]),
                                 meta={"version": "v2" if i == 2 else "v1", **{f"if{n}": "x" for n in range(20)}})
    # one service with three instances in the registry, never one per interface tag
    orders = [i for i in served.registry.list() if i.source == "consul-api" and i.workload == "orders"]
    assert len(orders) == 3
    assert ids(c.health.service("orders")[1]) == ["orders-0", "orders-1", "orders-2"]
    assert ids(c.health.service("orders", tag="canary")[1]) == ["orders-2"]
    assert ids(c.health.service("orders", tag=["stable", "iface-3"])[1]) == ["orders-0", "orders-1"]
    assert ids(c.health.service("orders", filter_expr='Service.Meta.version == "v2"')[1]) == ["orders-2"]
    assert ids(c.health.service("orders", filter_expr='"canary" not in Service.Tags and Service.Meta.if3 == x '
                                                      'or Service.Port == 9002')[1]) == ["orders-0", "orders-1",
                                                                                        "orders-2"]
    with pytest.raises(BadRequest, match="filter"):
        c.health.service("orders", filter_expr="Service.Port >= 1")
    _, services = c.catalog.services()
    assert "canary" in services["orders"] and "iface-19" in services["orders"]
    _, cat = c.catalog.service("orders", tag="canary")
    assert [(e["ServiceID"], e["ServiceAddress"], e["ServicePort"]) for e in cat] == [("orders-2", "127.0.0.3", 9002)]
    _, nodes = c.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["mizzen"]
    assert c.status.leader().endswith(":8300") and c.agent.self()["Config"]["Datacenter"] == "dc1"
    assert sorted(c.agent.services()) == ["orders-0", "orders-1", "orders-2"]
    # maintenance takes an instance out of the passing set and out of the mesh's endpoints
    c.agent.service.maintenance("orders-1", True, "upgrading")
    assert ids(c.health.service("orders", passing=True)[1]) == ["orders-0", "orders-2"]
    assert served.registry.get("default.consul-orders-1").healthy is False
    c.agent.service.maintenance("orders-1", False)
    assert served.registry.get("default.consul-orders-1").healthy is True
    assert c.agent.service.deregister("orders-0") and ids(c.health.service("orders")[1]) == ["orders-1", "orders-2"]
    assert served.registry.get("default.consul-orders-0") is None


def test_meshed_instances_are_discoverable_through_the_consul_api(served, consul_client):
    served.registry.upsert(Instance(id="default.reviews-v1-0", namespace="default", workload="reviews-v1",
                                    address="10.244.0.7", ports=(9080,),
                                    labels=labels_tuple({"app": "reviews", "version": "v1"})))
    _, nodes = consul_client.health.service("reviews", passing=True)
    assert [(e["Service"]["ID"], e["Service"]["Address"], e["Service"]["Port"], e["Service"]["Meta"]["version"])
            for e in nodes] == [("default.reviews-v1-0", "10.244.0.7", 9080, "v1")]


def test_kv_get_put_delete_recurse_keys_cas_and_blocking(served, consul_client):
    kv = consul_client.kv
    assert kv.put("app/config/db", "postgres://a") is True
    assert kv.put("app/config/cache", "redis://b", flags=7) is True
    assert kv.put("app/feature", "on") is True
    index, item = kv.get("app/config/db")
    assert item["Value"] == b"postgres://a" and item["ModifyIndex"] == item["CreateIndex"] > 0
    _, items = kv.get("app/", recurse=True)
    assert [(i["Key"], i["Value"], i["Flags"]) for i in items] == [
        ("app/config/cache", b"redis://b", 7), ("app/config/db", b"postgres://a", 0), ("app/feature", b"on", 0)]
    assert kv.get("app/", keys=True)[1] == ["app/config/cache", "app/config/db", "app/feature"]
    assert kv.get("app/", keys=True, separator="/")[1] == ["app/config/", "app/feature"]
    # check-and-set: 0 = create only; N = only over ModifyIndex N
    assert kv.put("app/config/db", "other", cas=0) is False
    assert kv.put("app/config/db", "stale", cas=item["ModifyIndex"] + 1000) is False
    assert kv.put("app/config/db", "postgres://c", cas=item["ModifyIndex"]) is True
    _, item2 = kv.get("app/config/db")
    assert item2["Value"] == b"postgres://c" and item2["ModifyIndex"] > item["ModifyIndex"]
    assert item2["CreateIndex"] == item["CreateIndex"]
    assert kv.delete("app/config/db", cas=item["ModifyIndex"]) is False
    assert kv.delete("app/config/db", cas=item2["ModifyIndex"]) is True and kv.get("app/config/db")[1] is None
    # a blocking read wakes on the write
    index, _ = kv.get("app/feature")
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(r=kv.get("app/feature", index=index, wait="30s")))
    t.start()
    time.sleep(0.5)
    assert "r" not in got
    kv.put("app/feature", "off")
    t.join(10)
    assert got["r"][1]["Value"] == b"off" and int(got["r"][0]) > int(index)
    assert kv.delete("app/", recurse=True) is True and kv.get("app/", recurse=True)[1] is None


def test_a_blocking_query_on_an_empty_registry_wakes_on_the_first_registration(served, consul_client):
    c = consul_client
    index, nodes = c.health.service("first")
    assert nodes == [] and int(index) > 0
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(r=c.health.service("first", index=index, wait="20s")))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    c.agent.service.register("first", service_id="first-1", port=1)
    t.join(25)
    assert time.monotonic() - t0 < 5 and ids(got["r"][1]) == ["first-1"]
