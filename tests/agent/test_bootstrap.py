import os
import shutil
import subprocess

import pytest
import yaml

from mizzen.agent.bootstrap import build_bootstrap, proxy_of, render_bootstrap
from mizzen.agent.config import AgentConfig
from mizzen.envoybin import find_envoy
from mizzen.model.types import Proxy

NETNS = {
    "pod": "reviews-v1-0", "namespace": "default", "workload": "reviews-v1",
    "labels": {"app": "reviews", "version": "v1"}, "ip": "10.244.0.5", "ports": [9080],
    "serviceAccount": "bookinfo-reviews", "locality": "us-east/zone-a", "interception": "netns",
    "xdsAddress": "unix:/tmp/mz/xds.sock", "apiAddress": "unix:/tmp/mz/api.sock",
    "workDir": "/tmp/mz/pods/reviews-v1-0", "envoyUid": 1337,
}
LOOPBACK = dict(NETNS, ip="127.0.0.1", interception="loopback", outboundPort=21001, inboundPort=21006,
                portMap={"9080": 19080}, xdsAddress="127.0.0.1:15010", xdsProtocol="GRPC", envoyUid=None)


@pytest.mark.parametrize("raw", [NETNS, LOOPBACK], ids=["netns", "loopback"])
def test_bootstrap_validates_with_envoy(raw, tmp_path):
    cfg = AgentConfig.from_dict(raw)
    path = tmp_path / "envoy.yaml"
    path.write_text(render_bootstrap(cfg))
    r = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path), "--concurrency", "1",
                        "--log-level", "warning"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout + r.stderr


def test_node_identity_round_trips():
    cfg = AgentConfig.from_dict(LOOPBACK)
    b = build_bootstrap(cfg)
    node = b["node"]
    assert node["id"] == "sidecar~127.0.0.1~reviews-v1-0.default~default.svc.cluster.local"
    assert node["cluster"] == "reviews-v1"
    assert node["locality"] == {"region": "us-east", "zone": "zone-a"}
    assert Proxy.from_node(node["id"], node["metadata"]) == proxy_of(cfg)
    assert node["metadata"]["PORT_MAP"] == {"9080": "19080"}


def test_xds_cluster_and_admin():
    netns = build_bootstrap(AgentConfig.from_dict(NETNS))
    assert netns["admin"]["address"]["pipe"]["path"] == "/tmp/mz/pods/reviews-v1-0/admin.sock"
    ads = netns["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "DELTA_GRPC"
    assert netns["dynamic_resources"]["cds_config"]["ads"] == {}
    assert netns["dynamic_resources"]["lds_config"]["resource_api_version"] == "V3"
    xds = netns["static_resources"]["clusters"][0]
    ep = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert ep == {"pipe": {"path": "/tmp/mz/xds.sock"}}
    opts = xds["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    assert xds["upstream_connection_options"]["tcp_keepalive"]
    # the ADS stream comes back within seconds of a control-plane restart (Envoy's default cap is 30 s)
    grpc = ads["grpc_services"][0]["envoy_grpc"]
    assert grpc["retry_policy"]["retry_back_off"] == {"base_interval": "0.5s", "max_interval": "5s"}
    loop = build_bootstrap(AgentConfig.from_dict(LOOPBACK))
    assert loop["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    xds = loop["static_resources"]["clusters"][0]
    ep = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert ep == {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}
    assert yaml.safe_load(render_bootstrap(AgentConfig.from_dict(LOOPBACK))) == loop
    # a cluster's traffic stats are created when it first carries a request (issue 15: memory of a full view)
    assert netns["deferred_stat_options"] == {"enable_deferred_creation_stats": True}


def test_xds_cluster_lists_every_control_plane_replica(tmp_path):
    raw = dict(NETNS, xdsAddress=["unix:/tmp/mz/xds.sock", "unix:/tmp/mz/xds-1.sock"],
               apiAddress=["unix:/tmp/mz/api.sock", "unix:/tmp/mz/api-1.sock"])
    cfg = AgentConfig.from_dict(raw)
    b = build_bootstrap(cfg)
    cluster = b["static_resources"]["clusters"][0]
    eps = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["pipe"]["path"] for e in eps] == ["/tmp/mz/xds.sock", "/tmp/mz/xds-1.sock"]
    path = tmp_path / "envoy.yaml"
    path.write_text(render_bootstrap(cfg))
    r = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path), "--concurrency", "1",
                        "--log-level", "warning"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chmod/chown for another uid)")
def test_envoy_dirs_made_searchable_again_under_tmp_only(tmp_path):
    """pytest (and others) may make a temp dir 0700 under a running mesh: the agent gives Envoy's uid its
    search bit back there, and only warns for directories outside the temp dir."""
    import tempfile

    from mizzen.agent.envoy import EnvoyOptions, EnvoyProcess

    home = tempfile.mkdtemp(prefix="mizzen-reach-")
    try:
        work = os.path.join(home, "state", "pods", "p-0")
        os.makedirs(work)
        os.chmod(home, 0o700)
        proc = EnvoyProcess(EnvoyOptions(binary="envoy", config_path=os.path.join(work, "envoy.yaml"),
                                         work_dir=work, log_path=os.path.join(work, "envoy.log"),
                                         base_id_path=os.path.join(work, "base-id"), uid=1337))
        assert proc.ensure_reachable([work]) == []
        assert os.stat(home).st_mode & 0o001
    finally:
        shutil.rmtree(home, ignore_errors=True)
    outside = "/var/tmp/mizzen-reach-test"  # not under tempfile.gettempdir() (/tmp)
    os.makedirs(os.path.join(outside, "w"), exist_ok=True)
    try:
        os.chmod(outside, 0o700)
        proc.opts.work_dir = os.path.join(outside, "w")
        assert proc.ensure_reachable([os.path.join(outside, "w")]) == [outside]
        assert not os.stat(outside).st_mode & 0o001  # left as it is, only reported
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_telemetry_clusters_are_in_the_bootstrap_and_announced(tmp_path):
    """The access-log receiver's cluster (on by default) and the embedded trace collector's (when an address
    is given) are static clusters, and the node metadata names them, so the control plane only generates
    config that uses clusters this Envoy has (an unknown one would be a NACK)."""
    cfg = AgentConfig.from_dict(dict(NETNS, tracesAddress="unix:/tmp/mz/traces.sock"))
    b = build_bootstrap(cfg)
    by_name = {c["name"]: c for c in b["static_resources"]["clusters"]}
    assert set(by_name) == {"xds-grpc", "mizzen-telemetry", "mizzen-traces"}
    als = by_name["mizzen-telemetry"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert als == {"pipe": {"path": "/tmp/mz/pods/reviews-v1-0/telemetry.sock"}}
    assert b["node"]["metadata"]["MIZZEN_BOOTSTRAP_CLUSTERS"] == ["mizzen-telemetry", "mizzen-traces"]
    assert proxy_of(cfg).bootstrap_clusters == ("mizzen-telemetry", "mizzen-traces")
    path = tmp_path / "envoy.yaml"
    path.write_text(render_bootstrap(cfg))
    r = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path), "--concurrency", "1",
                        "--log-level", "warning"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    off = build_bootstrap(AgentConfig.from_dict(dict(NETNS, telemetry=False)))
    assert [c["name"] for c in off["static_resources"]["clusters"]] == ["xds-grpc"]
    assert "MIZZEN_BOOTSTRAP_CLUSTERS" not in off["node"]["metadata"]
