"""The native xDS load client (native/xdsload → build/mizzen-xdsload), the drop-in for the Python load worker of
`mizzen bench xds`: its proto subset is wire compatible with Envoy's protos, and against a real control plane it
syncs, sees endpoint and route changes, and reconnects (and resumes) across a control-plane restart."""
import asyncio
import os
import re
from pathlib import Path

import pytest

from mizzen.bench import xds_native
from mizzen.local.procs import alive

NATIVE = Path(__file__).resolve().parents[2] / "native" / "xdsload"

# message in the subset -> the Envoy message whose field numbers it must keep
ENVOY = {
    "DiscoveryRequest": "envoy.service.discovery.v3.DiscoveryRequest",
    "DiscoveryResponse": "envoy.service.discovery.v3.DiscoveryResponse",
    "DeltaDiscoveryRequest": "envoy.service.discovery.v3.DeltaDiscoveryRequest",
    "DeltaDiscoveryResponse": "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    "Resource": "envoy.service.discovery.v3.Resource",
    "Any": "google.protobuf.Any",
    "TypedConfig": "google.protobuf.Any",
    "EdsClusterConfig": "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
    "Cluster": "envoy.config.cluster.v3.Cluster",
    "SocketAddress": "envoy.config.core.v3.SocketAddress",
    "Address": "envoy.config.core.v3.Address",
    "Endpoint": "envoy.config.endpoint.v3.Endpoint",
    "LbEndpoint": "envoy.config.endpoint.v3.LbEndpoint",
    "LocalityLbEndpoints": "envoy.config.endpoint.v3.LocalityLbEndpoints",
    "ClusterLoadAssignment": "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "Filter": "envoy.config.listener.v3.Filter",
    "FilterChain": "envoy.config.listener.v3.FilterChain",
    "Listener": "envoy.config.listener.v3.Listener",
    "Rds": "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
    "HttpConnectionManager": "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "RouteConfiguration": "envoy.config.route.v3.RouteConfiguration",
}


def _descriptor(full_name: str):
    from google.protobuf import any_pb2, descriptor_pool  # noqa: F401
    from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
    from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
    from envoy.config.listener.v3 import listener_pb2  # noqa: F401
    from envoy.config.route.v3 import route_pb2  # noqa: F401
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
    from envoy.service.discovery.v3 import discovery_pb2  # noqa: F401

    return descriptor_pool.Default().FindMessageTypeByName(full_name)


def test_proto_subset_keeps_envoys_field_numbers():
    seen = set()
    for name in ("xds.proto", "resources.proto"):
        text = (NATIVE / name).read_text()
        for m in re.finditer(r"message (\w+) \{(.*?)\n\}", text, re.S):
            msg, body = m.group(1), m.group(2)
            d = _descriptor(ENVOY[msg])
            for f in re.finditer(r"^\s+(?:repeated )?(?:map<[^>]+>|[\w.]+) (\w+) = (\d+);", body, re.M):
                field = d.fields_by_name[f.group(1)]  # same name in Envoy's proto
                assert field.number == int(f.group(2)), (msg, f.group(1))
                seen.add((msg, f.group(1)))
    assert ("Cluster", "type") in seen and ("Listener", "default_filter_chain") in seen and len(seen) > 30
    from envoy.config.cluster.v3 import cluster_pb2

    assert cluster_pb2.Cluster.EDS == 3  # main.cc's `c.type() != 3`


def test_node_bytes_are_the_python_workers_node():
    from envoy.config.core.v3 import base_pb2
    from google.protobuf import json_format

    from mizzen.bench.xds_common import node_id, node_metadata

    n = base_pb2.Node.FromString(xds_native.node_bytes(3, True, 1))
    assert n.id == node_id(3) and n.cluster == "bench"
    assert json_format.MessageToDict(n.metadata) == json_format.MessageToDict(
        base_pb2.Node(metadata=node_metadata(3, True, 1)).metadata)
    assert "bench-scoped" in str(n.metadata)  # odd index, scoped


def test_resolve_client(monkeypatch, tmp_path):
    assert xds_native.resolve("python") == ("python", "")
    monkeypatch.setenv(xds_native.BINARY_ENV, str(tmp_path / "missing"))
    assert xds_native.resolve("auto")[0] == "python" and "not an executable" in xds_native.resolve("auto")[1]
    with pytest.raises(RuntimeError):
        xds_native.resolve("native")



@pytest.mark.skipif(xds_native.binary()[0] is None, reason=xds_native.binary()[1])
@pytest.mark.parametrize("delta", [True, False])
def test_native_client_against_a_real_control_plane(delta):
    """5 proxies (half scoped by a Sidecar) on two native workers: all sync, every proxy sees the endpoint change
    and the route change, and after a control-plane restart every stream reconnects and gets the next change."""
    from mizzen.bench.xds_load import BenchOptions, run_bench

    o = BenchOptions(proxies=5, services=4, changes=2, workers=2, delta=delta, scoped=True, route_changes=1,
                     restart=delta, client="native", timeout=180)
    res = asyncio.run(run_bench(o))
    assert res.initial_sync_s > 0
    assert res.missing == 0 and len(res.latencies_ms) == 5 * 2
    assert all(0 < x < 10_000 for x in res.latencies_ms)
    assert res.route_missing == 0 and len(res.route_latencies_ms) == 5
    if delta:
        assert res.restart_missing == 0 and res.restart_push_s > 0
    assert res.connected == 5
    assert res.row().startswith(f"| {'delta' if delta else 'sotw'}, native client | 5 | 4 | 2 |")
    assert not any(alive(p) for p in res.pids)
    assert res.state_dir and not os.path.exists(res.state_dir)
