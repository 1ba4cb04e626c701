"""Streams with the same view share their work: one response object (bytes + nonce) for all of them; a
stream's private changes (unsubscribe, initial versions, refreshed endpoints) never leak into the shared maps."""
from envoy.service.discovery.v3 import discovery_pb2

from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from mizzen.xds import shared
from mizzen.xds.stream import DeltaStream, SotwStream, version_of

from .xds_helpers import cluster, delta_req, endpoints, listener, routes, sotw_req, target


def view(eps):
    names = [f"c{i}" for i in range(5)]
    return target([cluster(n) for n in names], [endpoints(n, eps(n)) for n in names], [listener("L", 15001, "R")],
                  [routes("R", "c0")])


def t1():
    return view(lambda n: [("127.0.0.1", 9000)])


def sync_delta(s, t):
    """Envoy-like Delta client: returns every response it got, synced to t."""
    got = []
    pending = list(s.on_request(delta_req(CLUSTER, node_id="n"), 0.0)) + list(s.on_request(delta_req(LISTENER), 0.0))
    pending += s.set_target(t, 0.0)
    asked = set()
    for _ in range(50):
        if not pending:
            break
        r = pending.pop(0)
        got.append(r)
        if r.type_url == CLUSTER and ENDPOINT not in asked:
            asked.add(ENDPOINT)
            pending += s.on_request(delta_req(ENDPOINT, sorted(t[ENDPOINT])), 0.0)
        if r.type_url == LISTENER and ROUTE not in asked:
            asked.add(ROUTE)
            pending += s.on_request(delta_req(ROUTE, ["R"]), 0.0)
        pending += s.on_request(delta_req(r.type_url, nonce=r.nonce), 0.0)
    assert s.synced(), s.status()
    return got


def test_same_view_same_response_objects_and_one_endpoint_change():
    t = t1()
    a, b = DeltaStream(), DeltaStream()
    ga, gb = sync_delta(a, t), sync_delta(b, t)
    assert [r.type_url for r in ga] == [r.type_url for r in gb]
    assert all(x is y for x, y in zip(ga, gb))  # built once: same bytes, same nonce
    assert all(r.nonce.startswith("v") for r in ga)
    # one endpoint changes: one EDS response with exactly that cluster, shared by both streams
    t2 = dict(t)
    t2[ENDPOINT] = dict(t[ENDPOINT])
    t2[ENDPOINT]["c3"] = endpoints("c3", [("127.0.0.9", 9000)])
    t2[CLUSTER] = dict(t[CLUSTER])  # an equal but new map (the renderer rebuilds it): nothing to send for CDS
    ra, rb = a.set_target(t2, 1.0), b.set_target(t2, 1.0)
    assert [r.type_url for r in ra] == [ENDPOINT] and ra[0] is rb[0]
    msg = discovery_pb2.DeltaDiscoveryResponse.FromString(ra[0].data)
    assert [r.name for r in msg.resources] == ["c3"] and not msg.removed_resources
    for s, r in ((a, ra[0]), (b, rb[0])):
        assert s.on_request(delta_req(ENDPOINT, nonce=r.nonce), 1.1) == []
        assert s.synced()
        assert s.types[ENDPOINT].have is t2[ENDPOINT]  # a reference to the shared view, not a copy


def test_private_changes_do_not_touch_shared_maps():
    t = t1()
    frozen = {k: dict(v) for k, v in t.items()}
    a, b = DeltaStream(), DeltaStream()
    sync_delta(a, t)
    sync_delta(b, t)
    # a unsubscribes one cluster's endpoints: its own copy shrinks, the target and b are untouched
    a.on_request(delta_req(ENDPOINT, unsub=["c1"]), 2.0)
    assert "c1" not in a.types[ENDPOINT].have and "c1" in t[ENDPOINT] and "c1" in b.types[ENDPOINT].have
    assert {k: dict(v) for k, v in t.items()} == frozen
    # an updated cluster: Envoy re-warms it, so its endpoints are sent again (shared "without" map)
    t2 = {k: dict(v) for k, v in t.items()}
    t2[CLUSTER]["c2"] = cluster("c2", timeout_ms=2000)
    out = b.set_target(t2, 3.0)
    assert [(r.type_url, r.resources) for r in out] == [(CLUSTER, ("c2",)), (ENDPOINT, ("c2",))]
    assert "c2" in t[ENDPOINT] and "c2" in t2[ENDPOINT]
    assert {k: dict(v) for k, v in t.items()} == frozen


def test_a_stream_never_gets_the_same_nonce_twice_in_a_row():
    """SotW: a client that restarts a type gets the same content again, under a nonce of its own."""
    t = t1()
    s = SotwStream()
    s.on_request(sotw_req(CLUSTER, node_id="n"), 0.0)
    (cds,) = s.set_target(t, 0.0)
    s.on_request(sotw_req(CLUSTER, nonce=cds.nonce, version=cds.version), 0.1)
    (again,) = s.on_request(sotw_req(CLUSTER), 0.2)  # no nonce: start over for CDS
    assert again.data != cds.data and again.nonce != cds.nonce and again.version == cds.version == version_of(t[CLUSTER])


def test_memo_is_bounded_and_keeps_its_keys():
    m = shared.IdentityMemo(max_entries=8)
    objs = [{"x": i} for i in range(20)]
    for o in objs:
        m.put(("k", id(o)), (o,), len(o))
    assert len(m) <= 8
    assert m.get(("k", id(objs[-1]))) == 1


def test_memo_entries_live_two_generations_unless_used():
    """Issue 16: an entry that no stream asked for since the previous snapshot only keeps an old view alive."""
    m = shared.IdentityMemo()
    old, kept, new = {"v": 1}, {"v": 2}, {"v": 3}
    m.put(("k", id(old)), (old,), "old")
    m.put(("k", id(kept)), (kept,), "kept")
    m.advance()  # generation 1: both still live (they may be asked for while this push runs)
    assert len(m) == 2
    assert m.get(("k", id(kept))) == "kept"  # used in generation 1
    m.put(("k", id(new)), (new,), "new")
    assert m.advance() == 1  # generation 2: "old" was not used in 1 or 2
    assert m.get(("k", id(old))) is shared._MISSING
    assert (m.get(("k", id(kept))), m.get(("k", id(new)))) == ("kept", "new")


def test_memo_stays_flat_under_endless_churn():
    """A stream following a new view each generation (the soak's endpoint churn): the memo holds the last two
    generations' entries, not the history."""
    s = DeltaStream()
    t = t1()
    sync_delta(s, t)
    sizes = []
    for i in range(200):
        t = {k: dict(v) for k, v in t.items()}
        t[ENDPOINT]["c0"] = endpoints("c0", [(f"127.0.1.{i % 250}", 9000)])
        shared.advance()
        for r in s.set_target(t, float(i)):
            s.on_request(delta_req(r.type_url, nonce=r.nonce), float(i) + 0.5)
        sizes.append(len(shared.MEMO))
    assert max(sizes[100:]) <= max(sizes[:20]) + 2, sizes[::20]


def test_partial_subscription_updated_cluster_gets_its_endpoints_again():
    """Delta, EDS subscribed to part of the target: an updated cluster's endpoints are resent (the stream's
    private view of a partial subscription is never shared with a later view)."""
    t = t1()
    s = DeltaStream()
    sync_delta(s, t)
    s.on_request(delta_req(ENDPOINT, unsub=["c4"]), 1.0)  # EDS now covers part of the target
    t2 = {k: dict(v) for k, v in t.items()}
    t2[ENDPOINT]["c0"] = endpoints("c0", [("127.0.0.7", 9000)])
    out = s.set_target(t2, 2.0)
    assert [(r.type_url, r.resources) for r in out] == [(ENDPOINT, ("c0",))]
    s.on_request(delta_req(ENDPOINT, nonce=out[0].nonce), 2.1)
    t3 = {k: dict(v) for k, v in t2.items()}
    t3[CLUSTER]["c1"] = cluster("c1", timeout_ms=3000)
    out = s.set_target(t3, 3.0)
    assert [(r.type_url, r.resources) for r in out] == [(CLUSTER, ("c1",)), (ENDPOINT, ("c1",))]
    for r in out:
        s.on_request(delta_req(r.type_url, nonce=r.nonce), 3.1)
    t4 = {k: dict(v) for k, v in t3.items()}
    t4[CLUSTER]["c1"] = cluster("c1", timeout_ms=4000)
    out = s.set_target(t4, 4.0)
    assert [(r.type_url, r.resources) for r in out] == [(CLUSTER, ("c1",)), (ENDPOINT, ("c1",))]


def test_reconnect_with_current_initial_versions_holds_the_shared_view():
    """A Delta stream that comes back (e.g. after a control-plane restart) with initial_resource_versions equal
    to the current view gets nothing resent, and then holds the shared maps: its later pushes take the shared
    path (the same response object as a stream that never left), not a per-stream comparison of every resource."""
    t = t1()
    a = DeltaStream()
    sync_delta(a, t)
    held = {typ: {n: r.version for n, r in t[typ].items()} for typ in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}
    b = DeltaStream()
    out = list(b.on_request(delta_req(CLUSTER, node_id="n", initial=held[CLUSTER]), 0.0))
    out += b.on_request(delta_req(LISTENER, initial=held[LISTENER]), 0.0)
    out += b.set_target(t, 0.0)
    out += b.on_request(delta_req(ENDPOINT, sorted(t[ENDPOINT]), initial=held[ENDPOINT]), 0.0)
    out += b.on_request(delta_req(ROUTE, ["R"], initial=held[ROUTE]), 0.0)
    assert out == []  # nothing resent
    for typ in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        assert b.types[typ].have is t[typ], typ  # the shared view, not a private copy of placeholders
    t2 = dict(t)
    t2[ENDPOINT] = dict(t[ENDPOINT])
    t2[ENDPOINT]["c3"] = endpoints("c3", [("127.0.0.9", 9000)])
    ra, rb = a.set_target(t2, 1.0), b.set_target(t2, 1.0)
    assert [r.type_url for r in rb] == [ENDPOINT] and rb[0] is ra[0]


def test_reconnect_with_an_updated_cluster_resends_its_endpoints():
    """A Delta client back with a cluster at an old version and its endpoints current (the cluster changed while
    it was away): the cluster is sent, and its unchanged ClusterLoadAssignment right after it (Envoy re-creates
    an updated cluster and waits for its endpoints), even though the endpoint versions it reported match."""
    t = t1()
    held = {typ: {n: r.version for n, r in t[typ].items()} for typ in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}
    held[CLUSTER]["c1"] = "old-version"
    s = DeltaStream()
    s.on_request(delta_req(CLUSTER, node_id="n", initial=held[CLUSTER]), 0.0)
    s.on_request(delta_req(LISTENER, initial=held[LISTENER]), 0.0)
    s.on_request(delta_req(ENDPOINT, sorted(t[ENDPOINT]), initial=held[ENDPOINT]), 0.0)
    s.on_request(delta_req(ROUTE, ["R"], initial=held[ROUTE]), 0.0)
    out = s.set_target(t, 1.0)
    assert [(r.type_url, r.resources) for r in out] == [(CLUSTER, ("c1",)), (ENDPOINT, ("c1",))]
    for r in out:
        s.on_request(delta_req(r.type_url, nonce=r.nonce), 1.1)
    assert s.synced(), s.status()


def test_reconnect_seed_counts_only_subscribed_names():
    """initial_resource_versions naming a resource the stream did not subscribe to (EDS by name) are ignored:
    the stream is current, and its status counts the subscribed resources only."""
    t = t1()
    held = {typ: {n: r.version for n, r in t[typ].items()} for typ in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}
    s = DeltaStream()
    s.on_request(delta_req(CLUSTER, node_id="n", initial=held[CLUSTER]), 0.0)
    s.on_request(delta_req(LISTENER, initial=held[LISTENER]), 0.0)
    assert s.set_target(t, 0.0) == []
    eps = dict(held[ENDPOINT], other="x")
    assert s.on_request(delta_req(ENDPOINT, sorted(t[ENDPOINT]), initial=eps), 0.0) == []
    assert s.status()["EDS"]["resources"] == len(t[ENDPOINT])
    assert s.on_request(delta_req(ROUTE, ["R"], initial=held[ROUTE]), 0.0) == []
    assert s.synced(), s.status()
    assert s.types[CLUSTER].have is t[CLUSTER]


def test_reconnects_holding_the_same_old_versions_share_one_response():
    """Streams back after a restart holding the same old versions (an endpoint changed while they were away) get
    the same response object: the delta and its bytes are built once, not per stream; each ends synced."""
    t = t1()
    held = {typ: {n: r.version for n, r in t[typ].items()} for typ in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}
    t2 = dict(t)
    t2[ENDPOINT] = dict(t[ENDPOINT])
    t2[ENDPOINT]["c2"] = endpoints("c2", [("127.0.0.9", 9000)])
    outs = []
    for k in range(2):
        s = DeltaStream()
        out = list(s.on_request(delta_req(CLUSTER, node_id=f"n{k}", initial=held[CLUSTER]), 0.0))
        out += s.on_request(delta_req(LISTENER, initial=held[LISTENER]), 0.0)
        out += s.set_target(t2, 0.0)
        out += s.on_request(delta_req(ENDPOINT, sorted(t[ENDPOINT]), initial=held[ENDPOINT]), 0.0)
        out += s.on_request(delta_req(ROUTE, ["R"], initial=held[ROUTE]), 0.0)
        assert [(r.type_url, r.resources, r.removed) for r in out] == [(ENDPOINT, ("c2",), ())]
        s.on_request(delta_req(ENDPOINT, nonce=out[0].nonce), 0.1)
        assert s.synced(), s.status()
        assert s.types[ENDPOINT].have is t2[ENDPOINT]
        outs.append(out[0])
    assert outs[0] is outs[1]
