"""`mizzen proxy-status` (against the REST server) and `mizzen proxy-config` (against a real Envoy's admin pipe,
and the control-plane fallback)."""
from __future__ import annotations

import json

from tests.cli.conftest import Cli

PID = "sidecar~10.244.0.2~reviews-v1-0.default~default.svc.cluster.local"
PID2 = "sidecar~10.244.0.3~ratings-v1-0.shop~shop.svc.cluster.local"
CLUSTER = "outbound|9080|v1|reviews.default.svc.cluster.local"


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


def test_proxy_status(cli, mesh):
    r = cli("proxy-status")
    assert r.exit_code == 0 and "No proxies connected." in r.stderr
    synced = {"state": "SYNCED", "sentVersion": "a1", "ackedVersion": "a1"}
    mesh.proxies = [
        {"id": PID2, "namespace": "shop", "workload": "ratings-v1", "connected": False, "protocol": "sotw",
         "types": {"CDS": synced, "LDS": {"state": "STALE", "sentVersion": "b2", "ackedVersion": "b1"},
                   "EDS": {"state": "NOT_SENT"}}},
        {"id": PID, "namespace": "default", "workload": "reviews-v1", "connected": True, "protocol": "delta",
         "types": {"CDS": {"state": "NACKED", "sentVersion": "c2", "ackedVersion": "c1",
                           "error": "cluster 'x': unknown field"}, "LDS": synced, "EDS": synced, "RDS": synced}},
    ]
    r = cli("proxy-status")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert rows("\n".join(lines[:3])) == [
        ["NAME", "CDS", "LDS", "EDS", "RDS", "CONNECTED", "CERT"],  # CERT "-": no pod dir, no certificate
        ["ratings-v1-0.shop", "SYNCED", "STALE", "NOT", "SENT", "NOT", "SENT", "no", "-"],
        ["reviews-v1-0.default", "NACKED", "SYNCED", "SYNCED", "SYNCED", "yes", "-"]]
    assert "reviews-v1-0.default CDS: cluster 'x': unknown field" in r.stdout.split("NACK errors:")[1]
    assert json.loads(cli("proxy-status", "-o", "json").stdout) == {"items": mesh.proxies}


def test_proxy_config_from_real_envoy(envoy_pod):
    state, pod = envoy_pod
    cli = Cli(state)  # no control plane at all: everything comes from Envoy's admin pipe
    r = cli("proxy-config", "clusters", pod)
    assert r.exit_code == 0, r.output
    assert rows(r.stdout) == [["NAME", "TYPE", "ENDPOINTS"], ["blackhole", "STATIC", "0"], [CLUSTER, "STATIC", "2"]]

    r = cli("proxy-config", "listeners", f"{pod}.default")
    got = rows(r.stdout)
    assert got[0] == ["NAME", "ADDRESS", "FILTER-CHAINS"]
    assert got[1][0] == "virtualInbound" and got[1][1].startswith("127.0.0.1:") and got[1][2] == "2"

    r = cli("proxy-config", "routes", "reviews-v1")  # a workload name picks its only replica's directory
    assert rows(r.stdout) == [["NAME", "VIRTUAL", "HOST", "DOMAINS", "ROUTES"],
                              ["9080", "reviews.default.svc.cluster.local:9080",
                               "reviews,reviews:9080,reviews.default.svc.cluster.local", "1"]]

    r = cli("proxy-config", "endpoints", pod)
    assert rows(r.stdout) == [["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "CLUSTER"],
                              ["127.0.0.1:19081", "HEALTHY", "OK", CLUSTER],
                              ["127.0.0.1:19082", "HEALTHY", "OK", CLUSTER]]

    raw = json.loads(cli("proxy-config", "cluster", pod, "-o", "json").stdout)
    types = [c["@type"] for c in raw["configs"]]
    assert types == ["type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                     "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"]
    names = {c["cluster"]["name"] for c in raw["configs"][0]["static_clusters"]}
    assert names == {CLUSTER, "blackhole"}


def test_proxy_config_falls_back_to_the_control_plane(cli, mesh):
    r = cli("proxy-config", "clusters", "reviews-v1-0")
    assert r.exit_code == 1 and "not connected" in r.stderr
    mesh.proxies = [{"id": PID, "connected": True, "types": {}}]
    # as the control plane sends them: proto JSON with lowerCamelCase names
    mesh.sent[(PID, "CDS")] = {"resources": [
        {"name": CLUSTER, "type": "EDS", "edsClusterConfig": {"edsConfig": {"ads": {}}}}]}
    mesh.sent[(PID, "EDS")] = {"resources": [
        {"clusterName": CLUSTER, "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": {"socketAddress": {"address": "10.244.0.2", "portValue": 9080}}},
             "healthStatus": "HEALTHY"}]}]}]}
    mesh.sent[(PID, "LDS")] = {"resources": [
        {"name": "virtualOutbound", "address": {"socketAddress": {"address": "0.0.0.0", "portValue": 15001}},
         "filterChains": [{}, {}, {}]}]}
    r = cli("proxy-config", "clusters", "reviews-v1-0.default")
    assert r.exit_code == 0, r.output
    assert "showing what the control plane sent" in r.stderr
    assert rows(r.stdout) == [["NAME", "TYPE", "ENDPOINTS"], [CLUSTER, "EDS", "-"]]
    r = cli("proxy-config", "endpoints", "reviews-v1")  # a workload name picks its only replica
    assert rows(r.stdout)[1] == ["10.244.0.2:9080", "HEALTHY", "-", CLUSTER]
    r = cli("proxy-config", "listeners", "reviews-v1-0")
    assert rows(r.stdout)[1] == ["virtualOutbound", "0.0.0.0:15001", "3"]
    assert json.loads(cli("proxy-config", "listeners", "reviews-v1-0", "-o", "json").stdout) == \
        mesh.sent[(PID, "LDS")]
