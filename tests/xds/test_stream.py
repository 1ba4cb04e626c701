"""Protocol tests: canned DiscoveryRequests through the sans-I/O xds.Stream."""
from envoy.service.discovery.v3 import discovery_pb2

from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from mizzen.xds.stream import DeltaStream, SotwStream, version_of

from .xds_helpers import cluster, delta_req, endpoints, listener, routes, sotw_req, target

EP = [("127.0.0.1", 9000)]


def v1_target():
    return target([cluster("a-v1")], [endpoints("a-v1", EP)], [listener("L", 15001, "R")], [routes("R", "a-v1")])


def v2_target():
    return target([cluster("a-v2")], [endpoints("a-v2", [("127.0.0.2", 9000)])], [listener("L", 15001, "R")],
                  [routes("R", "a-v2")])


def one(out, type_url):
    assert [r.type_url for r in out] == [type_url], [str(r) for r in out]
    return out[0]


def parse(r):
    cls = discovery_pb2.DeltaDiscoveryResponse if r.delta else discovery_pb2.DiscoveryResponse
    return cls.FromString(r.data)


def ack(r, names=()):
    return sotw_req(r.type_url, names, nonce=r.nonce, version=r.version)


def test_nothing_before_target_then_first_connect_order():
    s = SotwStream()
    assert s.on_request(sotw_req(CLUSTER, node_id="sidecar~1"), 0.0) == []
    assert s.on_request(sotw_req(LISTENER), 0.0) == []
    assert s.node.id == "sidecar~1"
    assert all(v["state"] == "NOT_SENT" for v in s.status().values())
    cds = one(s.set_target(v1_target(), 1.0), CLUSTER)
    msg = parse(cds)
    assert [a.type_url for a in msg.resources] == [CLUSTER] and msg.version_info == cds.version
    assert cds.resources == ("a-v1",)
    # EDS subscribed by name after CDS (before its ACK): answered at once; listeners still wait
    eds = one(s.on_request(sotw_req(ENDPOINT, ["a-v1"]), 1.1), ENDPOINT)
    assert eds.resources == ("a-v1",)
    assert s.status()["CDS"]["state"] == "STALE"
    assert s.on_request(ack(cds), 1.2) == []  # EDS still in flight
    lds = one(s.on_request(ack(eds, ["a-v1"]), 1.3), LISTENER)
    rds = one(s.on_request(sotw_req(ROUTE, ["R"]), 1.4), ROUTE)
    assert s.on_request(ack(lds), 1.5) == []
    assert s.on_request(ack(rds, ["R"]), 1.6) == []
    st = s.status()
    assert {k: st[k]["state"] for k in ("CDS", "EDS", "LDS", "RDS")} == dict.fromkeys(("CDS", "EDS", "LDS", "RDS"), "SYNCED")
    assert st["CDS"]["ackedVersion"] == st["CDS"]["sentVersion"] == cds.version
    assert s.synced() and s.phase_name == "DONE"


def full_sync(s, t):
    """Envoy-like: returns the stream synced to t."""
    s.on_request(sotw_req(CLUSTER, node_id="n"), 0.0)
    s.on_request(sotw_req(LISTENER), 0.0)
    pending = list(s.set_target(t, 0.0))
    subs = {ENDPOINT: sorted(t[ENDPOINT]), ROUTE: sorted(t[ROUTE])}
    asked = set()
    for _ in range(50):
        if not pending:
            for tu in (ENDPOINT, ROUTE):
                if tu not in asked and s.types.get(CLUSTER if tu == ENDPOINT else LISTENER) is not None:
                    asked.add(tu)
                    pending += s.on_request(sotw_req(tu, subs[tu]), 0.0)
            if not pending:
                break
        r = pending.pop(0)
        pending += s.on_request(ack(r, subs.get(r.type_url, ())), 0.0)
    assert s.synced(), s.status()
    return s


def test_ack_and_nack_error_kept_until_later_ack():
    s = full_sync(SotwStream(), v1_target())
    old = s.status()["CDS"]["ackedVersion"]
    t2 = v1_target()
    t2[CLUSTER] = {"a-v1": cluster("a-v1", timeout_ms=5)}
    out = s.set_target(t2, 2.0)  # an updated EDS cluster: its CLA is sent again right after (warming)
    assert [r.type_url for r in out] == [CLUSTER, ENDPOINT], [str(r) for r in out]
    cds = out[0]
    s.on_request(ack(out[1], ["a-v1"]), 2.05)
    nack = sotw_req(CLUSTER, nonce=cds.nonce, version=old, error="bad cluster a-v1")
    assert s.on_request(nack, 2.1) == []  # NACK ends the step; listeners/routes unchanged, nothing to send
    st = s.status()["CDS"]
    assert st["state"] == "NACKED" and st["error"] == "bad cluster a-v1" and st["ackedVersion"] == old
    assert st["sentVersion"] == cds.version and st["nacks"] == 1
    assert s.phase_name == "DONE"  # the sequence did not block
    # NACK rejects one type only
    assert s.status()["LDS"]["state"] == "SYNCED"
    # the same target is not resent after a NACK; a new target is, and the error stays until its ACK
    assert s.set_target(t2, 2.2) == []
    t3 = v1_target()
    t3[CLUSTER] = {"a-v1": cluster("a-v1", timeout_ms=7)}
    cds3 = s.set_target(t3, 3.0)[0]
    assert cds3.type_url == CLUSTER
    assert s.status()["CDS"]["error"] == "bad cluster a-v1" and s.status()["CDS"]["state"] == "STALE"
    s.on_request(ack(cds3), 3.1)
    st = s.status()["CDS"]
    assert st["state"] == "SYNCED" and st["error"] is None and st["ackedVersion"] == cds3.version


def test_stale_nonce_ignored():
    s = full_sync(SotwStream(), v1_target())
    eds = one(s.set_target({**v1_target(), ENDPOINT: {"a-v1": endpoints("a-v1", [("127.0.0.9", 1)])}}, 1.0), ENDPOINT)
    assert s.on_request(sotw_req(ENDPOINT, ["a-v1", "zzz"], nonce="1", version="old"), 1.1) == []
    assert s.types[ENDPOINT].inflight == eds.nonce and s.types[ENDPOINT].names == {"a-v1"}


def test_make_before_break_subset_swap_sotw():
    s = full_sync(SotwStream(), v1_target())
    # (1) clusters: old ∪ new; nothing else
    cds = one(s.set_target(v2_target(), 5.0), CLUSTER)
    assert cds.resources == ("a-v1", "a-v2")
    # Envoy subscribes the new cluster's endpoints; the old one's are kept
    eds = one(s.on_request(sotw_req(ENDPOINT, ["a-v1", "a-v2"], nonce=s.types[ENDPOINT].last_nonce), 5.1), ENDPOINT)
    assert eds.resources == ("a-v1", "a-v2")
    assert s.on_request(ack(cds), 5.2) == []  # no routes before the EDS ACK either
    # (2) routes only after CDS (and the endpoints) are ACKed
    rds = one(s.on_request(ack(eds, ["a-v1", "a-v2"]), 5.3), ROUTE)
    from envoy.config.route.v3 import route_pb2
    rc = route_pb2.RouteConfiguration()
    parse(rds).resources[0].Unpack(rc)
    assert rc.virtual_hosts[0].routes[0].route.cluster == "a-v2"
    assert s.status()["CDS"]["state"] == "STALE"  # a-v1 not yet removed
    # (3) the old cluster is removed only after the route ACK
    cds2 = one(s.on_request(ack(rds, ["R"]), 5.4), CLUSTER)
    assert cds2.resources == ("a-v2",)
    assert [a.type_url for a in parse(cds2).resources] == [CLUSTER]
    # Envoy drops the EDS name of the removed cluster
    eds2 = one(s.on_request(sotw_req(ENDPOINT, ["a-v2"], nonce=eds.nonce, version=eds.version), 5.5), ENDPOINT)
    assert eds2.resources == ("a-v2",)
    s.on_request(ack(cds2), 5.6)
    s.on_request(ack(eds2, ["a-v2"]), 5.7)
    assert s.synced()


def test_make_before_break_delta_and_restart_mid_sequence():
    s = DeltaStream()
    t1 = v1_target()
    s.on_request(delta_req(CLUSTER, node_id="n"), 0.0)
    cds = one(s.set_target(t1, 0.0), CLUSTER)
    eds = one(s.on_request(delta_req(ENDPOINT, ["a-v1"]), 0.0), ENDPOINT)
    s.on_request(delta_req(CLUSTER, nonce=cds.nonce), 0.0)
    assert s.on_request(delta_req(ENDPOINT, nonce=eds.nonce), 0.0) == []
    lds = one(s.on_request(delta_req(LISTENER), 0.0), LISTENER)
    rds = one(s.on_request(delta_req(ROUTE, ["R"]), 0.0), ROUTE)
    s.on_request(delta_req(LISTENER, nonce=lds.nonce), 0.0)
    s.on_request(delta_req(ROUTE, nonce=rds.nonce), 0.0)
    assert s.synced()

    cds = one(s.set_target(v2_target(), 1.0), CLUSTER)
    assert cds.resources == ("a-v2",) and cds.removed == ()  # only the new one, no removal yet
    m = parse(cds)
    assert [r.name for r in m.resources] == ["a-v2"] and not m.removed_resources
    eds = one(s.on_request(delta_req(ENDPOINT, ["a-v2"]), 1.1), ENDPOINT)
    assert eds.resources == ("a-v2",) and eds.removed == ()
    s.on_request(delta_req(CLUSTER, nonce=cds.nonce), 1.2)
    rds = one(s.on_request(delta_req(ENDPOINT, nonce=eds.nonce), 1.3), ROUTE)
    # a new target arrives while routes are in flight: restart from (1), a-v1 and a-v2 still kept
    t3 = target([cluster("a-v3")], [endpoints("a-v3", EP)], [listener("L", 15001, "R")], [routes("R", "a-v3")])
    cds3 = one(s.set_target(t3, 1.4), CLUSTER)
    assert cds3.resources == ("a-v3",) and cds3.removed == ()
    assert set(s.sent(CLUSTER)) == {"a-v1", "a-v2", "a-v3"}
    assert s.on_request(delta_req(ROUTE, nonce=rds.nonce), 1.5) == []  # route ACK, but CDS is in flight
    eds3 = one(s.on_request(delta_req(ENDPOINT, ["a-v3"]), 1.6), ENDPOINT)
    s.on_request(delta_req(CLUSTER, nonce=cds3.nonce), 1.7)
    rds3 = one(s.on_request(delta_req(ENDPOINT, nonce=eds3.nonce), 1.8), ROUTE)
    out = s.on_request(delta_req(ROUTE, nonce=rds3.nonce), 1.9)
    # (3) removals last: clusters, then their endpoints (Delta can say "removed" for a named resource)
    assert [(r.short, r.resources, r.removed) for r in out] == [("CDS", (), ("a-v1", "a-v2")),
                                                                ("EDS", (), ("a-v1", "a-v2"))]
    assert list(parse(out[0]).removed_resources) == ["a-v1", "a-v2"]
    assert s.on_request(delta_req(ENDPOINT, unsub=["a-v1", "a-v2"]), 2.0) == []
    s.on_request(delta_req(CLUSTER, nonce=out[0].nonce), 2.1)
    s.on_request(delta_req(ENDPOINT, nonce=out[1].nonce), 2.1)
    assert s.synced() and set(s.sent(ENDPOINT)) == {"a-v3"}


def test_endpoint_only_change_is_not_gated():
    s = full_sync(SotwStream(), v1_target())
    t2 = v2_target()
    cds = one(s.set_target(t2, 1.0), CLUSTER)
    eds = one(s.on_request(sotw_req(ENDPOINT, ["a-v1", "a-v2"], nonce=s.types[ENDPOINT].last_nonce), 1.0), ENDPOINT)
    s.on_request(ack(eds, ["a-v1", "a-v2"]), 1.0)  # CDS still in flight: step (1) not over
    t2b = dict(t2)
    t2b[ENDPOINT] = {"a-v2": endpoints("a-v2", [("127.0.0.3", 1)])}
    out = s.set_target(t2b, 1.1)
    assert [r.type_url for r in out] == [ENDPOINT]  # sent at once
    assert s.types[CLUSTER].inflight == cds.nonce


def test_delta_reconnect_with_initial_versions_sends_nothing_unchanged():
    t = v1_target()
    s = DeltaStream()
    s.on_request(delta_req(CLUSTER, initial={"a-v1": t[CLUSTER]["a-v1"].version}, node_id="n"), 0.0)
    s.on_request(delta_req(LISTENER, initial={"L": t[LISTENER]["L"].version}), 0.0)
    s.on_request(delta_req(ENDPOINT, ["a-v1"], initial={"a-v1": t[ENDPOINT]["a-v1"].version}), 0.0)
    s.on_request(delta_req(ROUTE, ["R"], initial={"R": t[ROUTE]["R"].version}), 0.0)
    assert s.set_target(t, 1.0) == []
    assert s.synced()
    assert {k: v["state"] for k, v in s.status().items()} == dict.fromkeys(("CDS", "EDS", "LDS", "RDS"), "SYNCED")
    # a changed resource and a stale one: only those go out, the removal last
    s2 = DeltaStream()
    s2.on_request(delta_req(CLUSTER, initial={"a-v1": t[CLUSTER]["a-v1"].version, "gone": "x"}), 0.0)
    s2.on_request(delta_req(ENDPOINT, ["a-v1"], initial={"a-v1": "old-version"}), 0.0)
    s2.on_request(delta_req(LISTENER, initial={"L": t[LISTENER]["L"].version}), 0.0)
    out = s2.set_target(t, 1.0)
    assert [(r.short, r.resources, r.removed) for r in out] == [("EDS", ("a-v1",), ())]
    out = s2.on_request(delta_req(ENDPOINT, nonce=out[0].nonce), 1.1)  # listeners unchanged: step (2) skipped
    assert [(r.short, r.resources, r.removed) for r in out] == [("CDS", (), ("gone",))]


def test_sotw_reconnect_with_current_version_is_not_resent():
    t = v1_target()
    s = SotwStream()
    cds_version = version_of(t[CLUSTER])
    s.on_request(sotw_req(CLUSTER, version=cds_version), 0.0)
    s.on_request(sotw_req(LISTENER, version="something-else"), 0.0)
    out = s.set_target(t, 0.0)
    assert [r.short for r in out] == ["LDS"]  # CDS is current (not resent), so step (2) starts at once
    assert s.status()["CDS"]["state"] == "SYNCED"
    assert one(s.on_request(sotw_req(ENDPOINT, ["a-v1"]), 0.1), ENDPOINT)


def test_eds_named_subscription():
    t = target([cluster("a"), cluster("b")], [endpoints("a", EP), endpoints("b", EP), endpoints("c", EP)])
    s = SotwStream()
    s.on_request(sotw_req(CLUSTER), 0.0)
    cds = one(s.set_target(t, 0.0), CLUSTER)
    s.on_request(ack(cds), 0.0)
    eds = one(s.on_request(sotw_req(ENDPOINT, ["a"]), 0.0), ENDPOINT)
    assert eds.resources == ("a",) and len(parse(eds).resources) == 1
    eds2 = one(s.on_request(ack(eds, ["a", "b", "missing"]), 0.1), ENDPOINT)
    assert eds2.resources == ("a", "b") and eds2.version != eds.version
    assert s.on_request(ack(eds2, ["a", "b", "missing"]), 0.2) == []
    eds3 = one(s.on_request(ack(eds2, ["b"]), 0.3), ENDPOINT)
    assert eds3.resources == ("b",)
    # Delta: subscribe / unsubscribe by name
    d = DeltaStream()
    d.on_request(delta_req(ENDPOINT, ["a"]), 0.0)
    e = one(d.set_target(t, 0.0), ENDPOINT)
    assert e.resources == ("a",)
    assert d.on_request(delta_req(ENDPOINT, ["missing"], nonce=e.nonce), 0.1) == []
    e2 = one(d.on_request(delta_req(ENDPOINT, ["b"], ["a"]), 0.2), ENDPOINT)
    assert e2.resources == ("b",) and e2.removed == ()  # unsubscribed names are not "removed" by the server
    assert set(d.sent(ENDPOINT)) == {"b"}


def test_wildcard_empty_initial_response():
    """A wildcard type with nothing to send still gets an (empty) answer so the client can finish init."""
    s = SotwStream()
    s.on_request(sotw_req(CLUSTER), 0.0)
    r = one(s.set_target(target(), 0.0), CLUSTER)
    assert r.resources == () and parse(r).version_info == version_of({})
    assert s.on_request(sotw_req(LISTENER), 0.1) == []  # LDS waits for (1): CDS is in flight
    lds = one(s.on_request(ack(r), 0.2), LISTENER)
    assert lds.resources == ()


def test_wildcard_empty_initial_response_order():
    s = DeltaStream()
    s.on_request(delta_req(CLUSTER), 0.0)
    s.on_request(delta_req(LISTENER), 0.0)
    cds = one(s.set_target(target(), 0.0), CLUSTER)
    assert cds.resources == () and cds.removed == ()
    lds = one(s.on_request(delta_req(CLUSTER, nonce=cds.nonce), 0.1), LISTENER)
    s.on_request(delta_req(LISTENER, nonce=lds.nonce), 0.2)
    assert s.synced()


def test_sotw_client_restarting_a_type_gets_it_again():
    s = full_sync(SotwStream(), v1_target())
    r = one(s.on_request(sotw_req(CLUSTER), 1.0), CLUSTER)  # no nonce: the client starts over for CDS
    assert r.resources == ("a-v1",)
    assert s.on_request(ack(r), 1.1) == []
    assert s.synced()


def test_other_types_and_unknown_nonces():
    """A type outside CDS/EDS/LDS/RDS is served as named, ungated; unknown nonces change nothing."""
    from mizzen.model.types import SECRET, Rendered

    t = v1_target()
    t[SECRET] = {"cert": Rendered(SECRET, "cert", "v1", b"\n\x04cert")}
    s = DeltaStream()
    s.on_request(delta_req(SECRET, ["cert"]), 0.0)
    out = s.set_target(t, 0.0)
    assert [(r.short, r.resources) for r in out] == [("SDS", ("cert",))]
    assert s.on_request(delta_req(SECRET, nonce="999"), 0.1) == []
    assert s.status()["SDS"]["state"] == "STALE"
    s.on_request(delta_req(SECRET, nonce=out[0].nonce), 0.2)
    assert s.status()["SDS"]["state"] == "SYNCED"
