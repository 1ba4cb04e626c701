"""Two-hop latency with mesh mTLS vs two bare Envoys with static mTLS, same run, paced load (`hey -q`).

    client --(sidecar, auto mTLS from SDS)--(sidecar)--> echo                       mesh (mTLS on by default)
    client-direct --> Envoy A (static client cert) --TLS--> Envoy B (static, client cert required) --> echo-direct

Both paths: ECDSA P-256 certificates from one root, TLS 1.3, SPIFFE SAN checks on both sides, HTTP/1.1 kept
alive between the two Envoys, Envoy --concurrency 1. The bare Envoys run in the sidecar-less pods' network
namespaces (no iptables capture there), so both paths cross the same veth/bridge. Then the cost of a TLS
handshake per new connection: the mesh path with a DestinationRule `maxRequestsPerConnection: 1` (every request
opens a new upstream connection), with mTLS and with `tls: DISABLE`; the p50 difference is the handshake.
Bounded: every load run is `hey -z <seconds>`; everything is torn down at the end. Never pass/fail.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..ca.authority import CaMaterial, CertificateAuthority, cert_pem, key_pem, make_intermediate, make_root, new_key
from ..ca.identity import SpiffeId
from ..envoybin import find_envoy
from .latency import MESH, mizzen

ENVOY_A_PORT, ENVOY_B_PORT = 18080, 18443


@dataclass
class HeyResult:
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    errors: int


def parse_hey(out: str) -> HeyResult:
    lat = {k: float(v) * 1000 for k, v in re.findall(r"^\s+(50|99)%+ in ([\d.]+) secs", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errs = 0
    if "Error distribution:" in out:
        errs = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s", out.split("Error distribution:", 1)[1], re.M))
    return HeyResult(rps, lat.get("50", float("nan")), lat.get("99", float("nan")), codes.get(200, 0),
                     errs + sum(n for c, n in codes.items() if c != 200))


def _certs(d: Path) -> dict[str, Path]:
    """A root, an intermediate, and a client and a server leaf (ECDSA P-256), as files for static Envoys."""
    now = dt.datetime.now(dt.timezone.utc)
    root, root_key = make_root(now)
    ca_cert, ca_key = make_intermediate(root, root_key, now, mesh="bench-static")
    ca = CertificateAuthority(CaMaterial(ca_cert, ca_key, (ca_cert,), root))
    out = {"root": d / "root.pem"}
    out["root"].write_bytes(cert_pem(root))
    for name, sa in (("client", "client"), ("server", "echo")):
        key = new_key()
        issued = ca.issue(key.public_key(), SpiffeId("cluster.local", "default", sa), now, dt.timedelta(hours=2))
        (d / f"{name}.pem").write_bytes(b"".join(cert_pem(c) for c in issued.chain[:-1]))
        (d / f"{name}-key.pem").write_bytes(key_pem(key))
        out[name], out[f"{name}-key"] = d / f"{name}.pem", d / f"{name}-key.pem"
    return out


def _tls(files: dict[str, Path], who: str, san: dict, alpn: list[str]) -> dict:
    return {"tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
            "alpn_protocols": alpn,
            "tls_certificates": [{"certificate_chain": {"filename": str(files[who])},
                                  "private_key": {"filename": str(files[f"{who}-key"])}}],
            "validation_context": {"trusted_ca": {"filename": str(files["root"])},
                                   "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": san}]}}


def _hcm(prefix: str, cluster: str, xfcc: bool = False) -> dict:
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager", "stat_prefix": prefix, "codec_type": "AUTO",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    if xfcc:
        hcm["forward_client_cert_details"] = "APPEND_FORWARD"
        hcm["set_current_client_cert_details"] = {"subject": True, "uri": True, "dns": True}
    return hcm


def _cluster(name: str, ip: str, port: int, tls: dict | None = None) -> dict:
    c = {"name": name, "type": "STATIC", "connect_timeout": "10s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}}}]}]}}
    if tls is not None:
        c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": tls, "sni": "outbound_.8080_._.echo.default.svc.cluster.local"}}
    return c


def static_configs(files: dict[str, Path], server_ip: str) -> tuple[dict, dict]:
    """Envoy A (client side: plain HTTP in on 127.0.0.1, mTLS out) and B (mTLS in, the app on 127.0.0.1)."""
    a = {"static_resources": {
        "listeners": [{"name": "out", "address": {"socket_address": {"address": "127.0.0.1",
                                                                       "port_value": ENVOY_A_PORT}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": _hcm("out", "server")}]}]}],
        "clusters": [_cluster("server", server_ip, ENVOY_B_PORT, _tls(
            files, "client", {"exact": "spiffe://cluster.local/ns/default/sa/echo"}, ["istio-http/1.1"]))]}}
    b_tls = _tls(files, "server", {"prefix": "spiffe://cluster.local/"}, ["h2", "http/1.1"])
    b = {"static_resources": {
        "listeners": [{"name": "in", "address": {"socket_address": {"address": "0.0.0.0", "port_value": ENVOY_B_PORT}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": _hcm("in", "app", xfcc=True)}],
                                          "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                                              "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls."
                                                       "v3.DownstreamTlsContext",
                                              "common_tls_context": b_tls, "require_client_certificate": True}}}]}],
        "clusters": [_cluster("app", "127.0.0.1", 8080)]}}
    return a, b


def run(seconds: int = 10, rate: int = 1000, handshake_rate: int = 300) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mizzen-bench-mtls-"))
    state = tmp / ".mizzen"
    base = [sys.executable, "-m", "mizzen.cli.main"]
    envoys: list[subprocess.Popen] = []

    cli = functools.partial(mizzen, state)

    def hey(pod: str, url: str, qps: int) -> HeyResult:
        workers = max(1, qps // 100)  # hey -q is per worker: workers x 100 rps, paced
        out = cli("exec", pod, "--", "hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(qps // workers),
                  url, timeout=seconds + 60).stdout
        return parse_hey(out)

    def dr(extra: str) -> None:
        cli("apply", "-f", "-", input="apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                                      "metadata: {name: echo}\nspec:\n  host: echo\n  trafficPolicy:\n" + extra)
        time.sleep(3)  # debounce + push

    try:
        cli("up", str(MESH), "--detach")
        pods = {p["workload"]: p for p in json.loads(cli("status", "-o", "json").stdout)["pods"]}
        files = _certs(tmp)
        cfg_a, cfg_b = static_configs(files, pods["echo-direct"]["ip"])
        envoy = find_envoy(None)
        for name, cfg, pod in (("a", cfg_a, "client-direct"), ("b", cfg_b, "echo-direct")):
            path = tmp / f"envoy-{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            log = open(tmp / f"envoy-{name}.log", "w")
            envoys.append(subprocess.Popen(["ip", "netns", "exec", pods[pod]["netns"], envoy, "-c", str(path),
                                            "--concurrency", "1", "--disable-hot-restart", "--log-level", "warning"],
                                           stdout=log, stderr=subprocess.STDOUT))
        time.sleep(2)
        mesh_url, bare_url = "http://echo:8080/", f"http://127.0.0.1:{ENVOY_A_PORT}/"
        hey("client", mesh_url, rate)  # warm-up: connections, certificates, Envoy's first requests
        hey("client-direct", bare_url, rate)
        mesh, bare = hey("client", mesh_url, rate), hey("client-direct", bare_url, rate)
        mesh2, bare2 = hey("client", mesh_url, rate), hey("client-direct", bare_url, rate)  # interleaved twice
        dr("    connectionPool: {http: {maxRequestsPerConnection: 1}}\n")
        new_mtls = hey("client", mesh_url, handshake_rate)
        dr("    connectionPool: {http: {maxRequestsPerConnection: 1}}\n    tls: {mode: DISABLE}\n")
        new_plain = hey("client", mesh_url, handshake_rate)
    finally:
        for e in envoys:
            e.terminate()
        for e in envoys:
            try:
                e.wait(10)
            except subprocess.TimeoutExpired:
                e.kill()
        subprocess.run([*base, "down", "--state-dir", str(state)], capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    best = lambda a, b: a if a.p50_ms <= b.p50_ms else b  # noqa: E731  (the less disturbed of two runs)
    return {"seconds": seconds, "rate": rate, "handshake_rate": handshake_rate,
            "mesh": best(mesh, mesh2).__dict__, "bare": best(bare, bare2).__dict__,
            "new_conn_mtls": new_mtls.__dict__, "new_conn_plain": new_plain.__dict__}


def markdown(r: dict) -> str:
    rows = ["| path | requests/s | p50 ms | p99 ms | 200s | errors |", "|---|---|---|---|---|---|"]
    for name, key in (("mesh: two sidecars, mTLS from SDS (auto mTLS)", "mesh"),
                      ("two bare Envoys, static mTLS files", "bare"),
                      ("mesh, new upstream connection per request, mTLS", "new_conn_mtls"),
                      ("mesh, new upstream connection per request, plaintext", "new_conn_plain")):
        w = r[key]
        rows.append(f"| {name} | {w['rps']:.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {w['ok']} | {w['errors']} |")
    m, b = r["mesh"], r["bare"]
    hs = r["new_conn_mtls"]["p50_ms"] - r["new_conn_plain"]["p50_ms"]
    rows += ["", f"Mesh / bare static mTLS: p50 {m['p50_ms'] / b['p50_ms']:.2f}×, p99 {m['p99_ms'] / b['p99_ms']:.2f}× "
                 f"(goal ≤ 1.10×; `hey -z {r['seconds']}s` paced at {r['rate']} rps, the better of two interleaved "
                 f"runs each). Handshake cost per new connection (p50 with a new mTLS upstream connection per request "
                 f"minus the same with plaintext, {r['handshake_rate']} rps): {hs:.2f} ms."]
    return "\n".join(rows)


if __name__ == "__main__":
    res = run()
    print(markdown(res))
