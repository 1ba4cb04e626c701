"""An updated EDS cluster (same name, new content, e.g. a DestinationRule change) is re-created by Envoy and
warms until it receives its ClusterLoadAssignment again; the stream must resend the (unchanged) CLA right
after the CDS response instead of letting Envoy wait out its initial fetch timeout."""
from mizzen.model.types import CLUSTER, ENDPOINT
from mizzen.xds.stream import SotwStream

from .test_stream import EP, full_sync, v1_target
from .xds_helpers import cluster, endpoints, listener, routes, target


def _updated():
    return target([cluster("a-v1", timeout_ms=5)], [endpoints("a-v1", EP)], [listener("L", 15001, "R")],
                  [routes("R", "a-v1")])


def test_sotw_resends_endpoints_of_an_updated_cluster():
    s = full_sync(SotwStream(), v1_target())
    out = s.set_target(_updated(), 1.0)
    assert [r.type_url for r in out] == [CLUSTER, ENDPOINT], [str(r) for r in out]
    assert out[1].resources == ("a-v1",)


def test_sotw_no_endpoint_resend_when_clusters_unchanged():
    s = full_sync(SotwStream(), v1_target())
    t = v1_target()
    t[ENDPOINT] = {"a-v1": endpoints("a-v1", [("127.0.0.3", 9000)])}
    out = s.set_target(t, 1.0)
    assert [r.type_url for r in out] == [ENDPOINT]
