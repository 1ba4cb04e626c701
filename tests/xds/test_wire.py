from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from mizzen.model.types import CLUSTER, ENDPOINT, Rendered
from mizzen.xds import wire
from .xds_helpers import cluster, endpoints


def _any(r):
    return any_pb2.Any(type_url=r.type_url, value=r.payload)


def test_varint():
    assert wire.varint(0) == b"\x00"
    assert wire.varint(127) == b"\x7f"
    assert wire.varint(128) == b"\x80\x01"
    assert wire.varint(300) == b"\xac\x02"
    assert wire.varint(2**35 + 5) == bytes([0x85, 0x80, 0x80, 0x80, 0x80, 0x01])


def test_sotw_response_parses_back_exactly():
    rs = [cluster("a"), cluster("b" * 300)]  # a long name forces multi-byte lengths
    data = wire.sotw_response(CLUSTER, "v1", rs, "7", shared=False)
    expected = discovery_pb2.DiscoveryResponse(version_info="v1", type_url=CLUSTER, nonce="7",
                                               resources=[_any(r) for r in rs])
    got = discovery_pb2.DiscoveryResponse.FromString(data)
    assert got == expected
    assert data == expected.SerializeToString(deterministic=True)
    from envoy.config.cluster.v3 import cluster_pb2
    c = cluster_pb2.Cluster()
    assert got.resources[1].Unpack(c) and c.name == "b" * 300


def test_empty_sotw_response():
    data = wire.sotw_response(CLUSTER, "", [], "1")
    assert discovery_pb2.DiscoveryResponse.FromString(data) == discovery_pb2.DiscoveryResponse(type_url=CLUSTER, nonce="1")


def test_delta_response_parses_back_exactly():
    rs = [endpoints("x", [("127.0.0.1", 80)]), endpoints("y", [("127.0.0.2", 81), ("127.0.0.3", 82)])]
    data = wire.delta_response(ENDPOINT, "sv", rs, ["gone1", "gone2"], "12")
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="sv", type_url=ENDPOINT, nonce="12", removed_resources=["gone1", "gone2"],
        resources=[discovery_pb2.Resource(name=r.name, version=r.version, resource=_any(r)) for r in rs])
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(data) == expected
    assert data == expected.SerializeToString(deterministic=True)


def test_any_encoding_is_cached_per_rendered():
    r = cluster("a")
    b1 = wire.any_bytes(r)
    assert wire.any_bytes(r) is b1
    d1 = wire.delta_resource_bytes(r)
    assert wire.delta_resource_bytes(r) is d1
    assert r == cluster("a")  # the cache does not affect equality or hashing
    assert hash(r) == hash(cluster("a"))


def test_slotted_rendered_like_object_uses_bounded_fallback():
    class Slotted:
        __slots__ = ("type_url", "name", "version", "payload")

        def __init__(self, r: Rendered):
            self.type_url, self.name, self.version, self.payload = r.type_url, r.name, r.version, r.payload

    r = cluster("s")
    s = Slotted(r)
    assert wire.any_bytes(s) == wire.any_bytes(r)
    assert wire.any_bytes(s) is wire.any_bytes(s)


def test_sotw_bodies_shared_by_version():
    from mizzen.xds.stream import version_of

    rs = [cluster("s1"), cluster("s2")]
    v = version_of({r.name: r for r in rs})
    first = wire.sotw_response(CLUSTER, v, rs, "1")
    consumed = []

    def lazy():
        consumed.append(True)
        yield from rs

    second = wire.sotw_response(CLUSTER, v, lazy(), "2")  # same set, another proxy: body reused
    assert not consumed
    m1, m2 = (discovery_pb2.DiscoveryResponse.FromString(b) for b in (first, second))
    assert m1.resources == m2.resources and (m1.nonce, m2.nonce) == ("1", "2")
    assert len(m2.resources) == 2


def test_body_cache_is_bounded():
    c = wire._BodyCache(max_entries=3, max_bytes=100)
    for i in range(5):
        c.put(("t", str(i)), b"x" * 10)
    assert c.get(("t", "0")) is None and c.get(("t", "4")) == b"x" * 10
    c.put(("t", "big"), b"y" * 90)  # over a quarter of the budget: not kept
    assert c.get(("t", "big")) is None
    c.put(("t", "a"), b"z" * 20)
    c.put(("t", "b"), b"z" * 20)
    assert c._bytes <= 100 and len(c._d) <= 3


def test_body_cache_drops_versions_no_stream_asked_for_in_two_generations():
    c = wire._BodyCache()
    c.put(("t", "old"), b"o" * 10)
    c.put(("t", "live"), b"l" * 10)
    c.advance()
    assert c.get(("t", "live")) == b"l" * 10
    c.advance()
    assert c.get(("t", "old")) is None and c.get(("t", "live")) == b"l" * 10
    assert c._bytes == 10
