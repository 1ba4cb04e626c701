"""What a real sidecar hop costs Envoy against a bare Envoy, and which piece of the generated config costs it
(issue 15 goal 1, issue 9's mTLS figure); never pass/fail.

filtercost.py measures HCM variants on a synthetic listener; this measures the configuration the mesh really
sends. It starts datapath.py's mesh (client and echo with sidecars, client-direct and echo-direct without, the
sidecar capture added to the latter), dumps the client sidecar's (outbound) and the echo sidecar's (inbound)
`/config_dump?include_eds`, and turns each into a static bootstrap (`static_bootstrap`: RDS inlined, EDS
endpoints as static load assignments pointing at echo-direct, SDS secrets replaced by files from one test root,
the xDS/SDS clusters dropped; everything else — listener filters, filter-chain matching, HTTP filters, tracing,
access loggers, routes with their retry policies, cluster options, transport sockets, the bootstrap's stats and
runtime settings — as dumped). Both Envoys then run (with Envoy's gid: `exempt_gid`) in client-direct and echo-direct, behind the
same iptables capture as datapath.py's bare pair, under valgrind's callgrind; a keep-alive HTTP/1.1 client in
client-direct sends N requests after a warm-up and the busiest thread's instructions per request are counted on
both hops (deterministic within a fraction of a percent on a shared machine; blind to cache misses and
syscalls).

Variants: `bare` (datapath.py's static pair), `mesh` (the dumped config), and `mesh` minus one piece at a time
(VARIANTS below), so each piece's cost is `mesh - variant`. Modes: `mtls` (the mesh's default, auto mTLS) and
`plaintext` (a DestinationRule `tls: DISABLE`, as datapath.py).

    python -m mizzen.bench.sidecarcost [--requests 1000] [--modes mtls,plaintext] [--variants mesh,no-tap,...]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..api.uids import ENVOY_UID
from . import datapath
from .filtercost import busiest_thread_instructions
from .mtls import _certs

WARM = 100  # requests before counting: connections, first stats, every series created
HCM_NAME = "envoy.filters.network.http_connection_manager"
UP_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
MESH_ROOT = "spiffe://cluster.local/"


def _configs(dump: dict) -> dict[str, dict]:
    return {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}


def _files_tls(ctx: dict, files: dict[str, Path], who: str) -> None:
    """Replace a CommonTlsContext's SDS secrets by files (keeping its SAN matchers and params)."""
    if ctx.pop("tls_certificate_sds_secret_configs", None) is not None:
        ctx["tls_certificates"] = [{"certificate_chain": {"filename": str(files[who])},
                                    "private_key": {"filename": str(files[f"{who}-key"])}}]
    cvc = ctx.pop("combined_validation_context", None)
    if cvc is not None:
        vc = dict(cvc.get("default_validation_context", {}))
        vc["trusted_ca"] = {"filename": str(files["root"])}
        for m in vc.get("match_typed_subject_alt_names", []):
            if "exact" in m.get("matcher", {}):  # the server's expected identity: the test server cert's
                m["matcher"] = {"exact": "spiffe://cluster.local/ns/default/sa/echo"}
        ctx["validation_context"] = vc


def _walk(x: Any, fn: Callable[[dict], None]) -> None:
    if isinstance(x, dict):
        fn(x)
        for v in list(x.values()):
            _walk(v, fn)
    elif isinstance(x, list):
        for v in x:
            _walk(v, fn)


def static_bootstrap(dump: dict, endpoint_ip: str, files: dict[str, Path], who: str) -> dict:
    """A sidecar's config dump as a static bootstrap (module docstring); `who` picks the test cert (client|server)."""
    c = _configs(dump)
    boot = copy.deepcopy(c["BootstrapConfigDump"]["bootstrap"])
    boot.pop("dynamic_resources", None)
    boot["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}  # the tap needs one
    node = boot.get("node", {})
    for k in ("extensions", "user_agent_build_version", "user_agent_name"):
        node.pop(k, None)
    routes = {r["route_config"]["name"]: r["route_config"]
              for r in c["RoutesConfigDump"].get("dynamic_route_configs", [])}
    clas = {e["endpoint_config"]["cluster_name"]: e["endpoint_config"]
            for e in c["EndpointsConfigDump"].get("dynamic_endpoint_configs", [])}
    listeners = [copy.deepcopy(l["active_state"]["listener"]) for l in c["ListenersConfigDump"]["dynamic_listeners"]
                 if "active_state" in l]
    clusters = [copy.deepcopy(x["cluster"]) for x in c["ClustersConfigDump"].get("dynamic_active_clusters", [])]

    def fix(d: dict) -> None:
        if "rds" in d and "stat_prefix" in d:
            rc = copy.deepcopy(routes[d.pop("rds")["route_config_name"]])
            rc.pop("@type", None)
            d["route_config"] = rc
        if "common_tls_context" in d:
            _files_tls(d["common_tls_context"], files, "client" if d.get("@type") == UP_TLS else "server")

    for l in listeners:
        l.pop("@type", None)
        _walk(l, fix)
    for cl in clusters:
        cl.pop("@type", None)
        if cl.get("type") == "EDS":
            cla = copy.deepcopy(clas[cl["name"]])
            cla.pop("@type", None)
            cla["cluster_name"] = cl["name"]
            for loc in cla.get("endpoints", []):
                for ep in loc.get("lb_endpoints", []):
                    ep.pop("health_status", None)
                    ep["endpoint"]["address"]["socket_address"]["address"] = endpoint_ip
            cl.pop("eds_cluster_config")
            cl["type"] = "STATIC"
            cl["load_assignment"] = cla
        _walk(cl, fix)
    statics = [s for s in boot["static_resources"]["clusters"] if s["name"] not in ("xds-grpc", "sds-grpc")]
    boot["static_resources"] = {"listeners": listeners, "clusters": statics + clusters}
    return boot


# --- the pieces, one at a time -------------------------------------------------------------------------------

def _hcms(cfg: dict) -> list[dict]:
    out: list[dict] = []
    for l in cfg["static_resources"]["listeners"]:
        for ch in l.get("filter_chains", []):
            out += [f["typed_config"] for f in ch["filters"] if f["name"] == HCM_NAME]
    return out


def _routes(cfg: dict) -> list[dict]:
    return [r for h in _hcms(cfg) for vh in h["route_config"]["virtual_hosts"] for r in vh["routes"]]


def _mesh_clusters(cfg: dict) -> list[dict]:
    return [c for c in cfg["static_resources"]["clusters"] if c["name"].startswith(("outbound|", "inbound|"))]


def _drop_filter(name: str) -> Callable[[dict], None]:
    def f(cfg: dict) -> None:
        for h in _hcms(cfg):
            h["http_filters"] = [x for x in h["http_filters"] if x["name"] != name]
    return f


def _drop_hcm_key(*keys: str) -> Callable[[dict], None]:
    def f(cfg: dict) -> None:
        for h in _hcms(cfg):
            for k in keys:
                h.pop(k, None)
    return f


def _drop_log(name: str) -> Callable[[dict], None]:
    def f(cfg: dict) -> None:
        for h in _hcms(cfg):
            h["access_log"] = [a for a in h.get("access_log", []) if a["name"] != name]
    return f


def _no_listener_filters(cfg: dict) -> None:
    """One filter chain per listener, no listener filters: what the bare Envoy's listener does. The chain kept
    is the one the benchmark's connections take (TLS with mTLS, plaintext without)."""
    for l in cfg["static_resources"]["listeners"]:
        if l["name"] not in ("virtualOutbound", "virtualInbound"):
            continue
        l.pop("listener_filters", None)
        chains = l.get("filter_chains", [])
        if not chains:
            continue
        tls = [c for c in chains if c.get("filter_chain_match", {}).get("transport_protocol") == "tls"]
        keep = (tls if cfg.get("_tls") and tls else [c for c in chains if c not in tls])[:1]
        for c in keep:
            c.pop("filter_chain_match", None)
        l["filter_chains"] = keep


def _no_tls_inspector(cfg: dict) -> None:
    for l in cfg["static_resources"]["listeners"]:
        if not l.get("filter_chains"):
            continue
        l["listener_filters"] = [f for f in l.get("listener_filters", []) if "tls_inspector" not in f["name"]]
        for c in l.get("filter_chains", []):
            m = c.get("filter_chain_match", {})
            m.pop("transport_protocol", None)
            m.pop("application_protocols", None)
        if cfg.get("_tls"):
            l["filter_chains"] = [c for c in l.get("filter_chains", []) if "transport_socket" in c] or \
                l.get("filter_chains", [])
        else:
            l["filter_chains"] = [c for c in l.get("filter_chains", []) if "transport_socket" not in c] or \
                l.get("filter_chains", [])


def _route_key(*keys: str) -> Callable[[dict], None]:
    def f(cfg: dict) -> None:
        for r in _routes(cfg):
            for k in keys:
                r.get("route", {}).pop(k, None)
    return f


def _retry_key(*keys: str) -> Callable[[dict], None]:
    def f(cfg: dict) -> None:
        for r in _routes(cfg):
            rp = r.get("route", {}).get("retry_policy")
            for k in keys if rp else ():
                rp.pop(k, None)
    return f


def _retry_exact_methods(cfg: dict) -> None:
    """`retriable_request_headers` as one exact matcher per method instead of one regex (any of them matches)."""
    for r in _routes(cfg):
        rp = r.get("route", {}).get("retry_policy", {})
        hs = rp.get("retriable_request_headers")
        if hs and "safe_regex" in hs[0].get("string_match", {}):
            methods = hs[0]["string_match"]["safe_regex"]["regex"].split("|")
            rp["retriable_request_headers"] = [{"name": ":method", "string_match": {"exact": m}} for m in methods]


def _one_domain(cfg: dict) -> None:
    for h in _hcms(cfg):
        vhs = h["route_config"]["virtual_hosts"]
        h["route_config"]["virtual_hosts"] = [dict(vhs[0], domains=["*"])]
        h["route_config"].pop("response_headers_to_remove", None)


def _no_circuit_breakers(cfg: dict) -> None:
    for c in _mesh_clusters(cfg):
        c.pop("circuit_breakers", None)


def _no_track_remaining(cfg: dict) -> None:
    for c in _mesh_clusters(cfg):
        for t in c.get("circuit_breakers", {}).get("thresholds", []):
            t.pop("track_remaining", None)


def _plain_transport_socket(cfg: dict) -> None:
    """The matched transport socket as the cluster's one transport_socket (no per-endpoint metadata match)."""
    for c in _mesh_clusters(cfg):
        ms = c.pop("transport_socket_matches", None)
        if ms and cfg.get("_tls"):
            c["transport_socket"] = ms[0]["transport_socket"]


def _tracing(fn: Callable[[dict], None]) -> Callable[[dict], None]:
    def f(cfg: dict) -> None:
        for h in _hcms(cfg):
            if "tracing" in h:
                fn(h["tracing"])
    return f


def _stats_logger(fn: Callable[[dict], None]) -> Callable[[dict], None]:
    def f(cfg: dict) -> None:
        for h in _hcms(cfg):
            for a in h.get("access_log", []):
                if a["name"] == "envoy.access_loggers.stats":
                    fn(a["typed_config"])
    return f


def _drop_tag(name: str) -> Callable[[dict], None]:
    def f(logger: dict) -> None:
        for kind in ("histograms", "counters"):
            for st in logger.get(kind, []):
                st["stat"]["tags"] = [t for t in st["stat"].get("tags", []) if t["name"] != name]
    return f


VARIANTS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "no-listener-filters": ("listener filters and filter-chain matching (one chain, as bare)", _no_listener_filters),
    "no-tls-inspector": ("the tls_inspector listener filter (inbound; chains no longer match on TLS/ALPN)",
                         _no_tls_inspector),
    "no-tap": ("the tap filter (inert)", _drop_filter("envoy.filters.http.tap")),
    "no-fault": ("the fault filter (disabled; per-route enabled)", _drop_filter("envoy.filters.http.fault")),
    "no-tracing": ("the HCM's Zipkin tracer at 1 %", _drop_hcm_key("tracing")),
    "no-tracing-out": ("the tracer on the client's outbound HCMs only (the server still traces)",
                       lambda cfg: [h.pop("tracing", None) for h in _hcms(cfg) if h["stat_prefix"].startswith("outbound")]),
    "no-tracing-in": ("the tracer on the server's inbound HCMs only (the client still traces and injects)",
                      lambda cfg: [h.pop("tracing", None) for h in _hcms(cfg) if h["stat_prefix"].startswith("inbound")]),
    "tracing-0": ("(not removed) tracing at 0 % sampling: the tracer's cost without the sampled spans' randomness",
                  _tracing(lambda t: t.__setitem__("random_sampling", {"value": 0}))),
    "tracing-b3-only": ("W3C trace-context propagation (B3 only)", _tracing(lambda t: t["provider"]["typed_config"].pop(
        "trace_context_option", None))),
    "no-grpc-tag": ("the stats logger's `grpc` tag", _stats_logger(_drop_tag("grpc"))),
    "no-peer-tag": ("the stats logger's `peer` tag", _stats_logger(_drop_tag("peer"))),
    "no-requests-total": ("the stats logger's counter (requests_total)",
                          _stats_logger(lambda c: c.pop("counters", None))),
    "no-stats-logger": ("Istio metrics counted in Envoy (the stats access logger)",
                        _drop_log("envoy.access_loggers.stats")),
    "no-sampled-log": ("the sampled access-log stream (runtime filter at 0 %)",
                       _drop_log("envoy.access_loggers.http_grpc")),
    "no-retry": ("the route's retry policy", _route_key("retry_policy")),
    "no-retry-predicate": ("the retry policy's previous_hosts predicate and host_selection_retry_max_attempts",
                           _retry_key("retry_host_predicate", "host_selection_retry_max_attempts")),
    "no-retriable-headers": ("the retry policy's retriable response headers (x-mizzen-unserved) / request headers",
                             _retry_key("retriable_headers", "retriable_request_headers")),
    "retry-exact-methods": ("retriable request methods as exact matchers instead of a regex", _retry_exact_methods),
    "one-domain": ("one virtual host `*` (no allow_any host, no response_headers_to_remove)", _one_domain),
    "no-hcm-options": ("normalize_path, upgrade_configs (websocket), accept_http_10, local_reply_config",
                       _drop_hcm_key("normalize_path", "upgrade_configs", "http_protocol_options",
                                     "local_reply_config")),
    "no-xfcc": ("forward_client_cert_details / set_current_client_cert_details (inbound)",
                _drop_hcm_key("forward_client_cert_details", "set_current_client_cert_details")),
    "no-circuit-breakers": ("the clusters' circuit breakers (max thresholds, track_remaining)", _no_circuit_breakers),
    "no-track-remaining": ("track_remaining on the circuit breakers", _no_track_remaining),
    "plain-transport-socket": ("transport_socket instead of transport_socket_matches", _plain_transport_socket),
}


def variant_configs(name: str, client: dict, server: dict, tls: bool) -> tuple[dict, dict]:
    a, b = copy.deepcopy(client), copy.deepcopy(server)
    if name == "mesh":
        return a, b
    if name == "stripped":  # every piece off at once
        names = [n for n in VARIANTS if n not in ("no-track-remaining", "no-retry-predicate", "no-retriable-headers",
                                                  "retry-exact-methods", "no-tls-inspector", "tracing-0",
                                                  "no-tracing-out", "no-tracing-in",
                                                  "tracing-b3-only", "no-grpc-tag", "no-peer-tag",
                                                  "no-requests-total")]
    else:
        names = name.split("+")
    for cfg in (a, b):
        cfg["_tls"] = tls
        for n in names:
            VARIANTS[n][1](cfg)
        cfg.pop("_tls")
    return a, b


# --- running ------------------------------------------------------------------------------------------------

LOAD = r"""
import http.client, sys, time
host, n, warm, authority = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + 600
while True:
    try:
        c = http.client.HTTPConnection(host, 8080, timeout=120)
        c.request("GET", "/", headers={"Host": authority}); r = c.getresponse(); r.read()
        if r.status == 200:
            break
        c.close()
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("no 200 from " + host)
    time.sleep(1)
def go(k):
    for _ in range(k):
        c.request("GET", "/", headers={"Host": authority}); r = c.getresponse(); r.read()
        if r.status != 200:
            sys.exit(f"status {r.status}")
go(warm)
print("warm", flush=True)
sys.stdin.readline()
go(n)
print("done", flush=True)
sys.stdin.readline()
"""


def _callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, timeout=180)


def exempt_gid(b: datapath.Bench) -> None:
    """callgrind_control (vgdb) cannot reach a valgrind that changed its uid, so the measured Envoys run as root
    with Envoy's gid: the client pod's capture gets one rule exempting that gid, as it exempts uid 1337 (the
    server side's upstream, the app on 127.0.0.1, is not captured). Bench.down restores the nat table."""
    subprocess.run(["ip", "netns", "exec", b.pods["client-direct"]["netns"], "iptables", "-t", "nat", "-I",
                    "MIZZEN_OUTPUT", "1", "-m", "owner", "--gid-owner", str(ENVOY_UID), "-j", "RETURN"],
                   check=True, capture_output=True)


def measure(b: datapath.Bench, work: Path, tag: str, a_cfg: dict, b_cfg: dict, n: int, log=print) -> tuple[float, float]:
    """Instructions per request of the client-side (a) and server-side (b) proxies, both under callgrind."""
    procs: list[subprocess.Popen] = []
    try:
        for side, cfg, pod in (("a", a_cfg, "client-direct"), ("b", b_cfg, "echo-direct")):
            path = work / f"{tag}-{side}.json"
            path.write_text(json.dumps(cfg))
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", b.pods[pod]["netns"], "setpriv", f"--regid={ENVOY_UID}", "--clear-groups",
                 "valgrind", "--tool=callgrind", "--separate-threads=yes",
                 f"--callgrind-out-file={work}/cg.{tag}-{side}.%p", datapath.find_envoy(None), "-c", str(path),
                 "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"],
                cwd=work, stdout=subprocess.DEVNULL, stderr=open(work / f"{tag}-{side}.log", "wb")))
        load = subprocess.Popen(["ip", "netns", "exec", b.pods["client-direct"]["netns"], sys.executable, "-c", LOAD,
                                 b.pods["echo-direct"]["ip"], str(n), str(WARM), "echo:8080"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(load)
        assert load.stdout and load.stdin
        if load.stdout.readline().strip() != "warm":
            raise RuntimeError(f"{tag}: no warm-up: " + "".join(
                (work / f"{tag}-{s}.log").read_text(errors="replace")[-1500:] for s in "ab"))
        for p in procs[:2]:
            _callgrind_control("-z", str(p.pid))
        load.stdin.write("go\n")
        load.stdin.flush()
        if load.stdout.readline().strip() != "done":
            raise RuntimeError(f"{tag}: load failed")
        for p in procs[:2]:
            _callgrind_control("-d", str(p.pid))
        load.stdin.write("end\n")
        load.stdin.flush()
        load.wait(30)
        out = []
        for side, p in zip("ab", procs[:2]):
            x = busiest_thread_instructions(str(work), f"{tag}-{side}", p.pid)
            out.append(x / n if x else float("nan"))
        log(f"  {tag}: client {out[0]:,.0f}  server {out[1]:,.0f} instructions/request")
        return out[0], out[1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def dump_sidecars(b: datapath.Bench) -> tuple[dict, dict]:
    def get(pod: str) -> dict:
        sock = Path(b.pods[pod]["dir"]) / "admin.sock"
        out = subprocess.run(["curl", "-sf", "--unix-socket", str(sock), "http://envoy/config_dump?include_eds"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return json.loads(out)
    return get("client"), get("echo")


def run_mode(b: datapath.Bench, work: Path, tls: bool, variants: list[str], n: int, log=print) -> dict[str, Any]:
    files = _certs(work)
    client_dump, server_dump = dump_sidecars(b)
    (work / f"client-{'mtls' if tls else 'plain'}.dump.json").write_text(json.dumps(client_dump))
    (work / f"echo-{'mtls' if tls else 'plain'}.dump.json").write_text(json.dumps(server_dump))
    echo_ip = b.pods["echo-direct"]["ip"]
    client = static_bootstrap(client_dump, echo_ip, files, "client")
    server = static_bootstrap(server_dump, echo_ip, files, "server")
    out: dict[str, Any] = {}
    rules = subprocess.run(["ip", "netns", "exec", b.pods["client-direct"]["netns"], "iptables", "-t", "nat", "-S",
                            "MIZZEN_OUTPUT"], capture_output=True, text=True, check=True).stdout
    if f"--gid-owner {ENVOY_UID}" not in rules:
        exempt_gid(b)
    for v in variants:
        if v == "bare":
            a_cfg, b_cfg = datapath.bare_configs(echo_ip, files if tls else None)
        else:
            a_cfg, b_cfg = variant_configs(v, client, server, tls)
        out[v] = measure(b, work, f"{'mtls' if tls else 'plain'}-{v}", a_cfg, b_cfg, n, log)
    return out


NOT_PIECES = ("no-tracing", "tracing-0", "tracing-b3-only", "no-tracing-out", "no-tracing-in")


def default_variants() -> list[str]:
    """bare, mesh, every piece off at once, the tracer's parts, then each other piece off on the `no-tracing` base
    (the 1 % sampled spans make the tracer's figures vary by ±5k between runs; without it they repeat to ~0.05 %)."""
    return ["bare", "mesh", "stripped", "no-tracing", "no-tracing-out", "no-tracing-in", "tracing-0",
            "tracing-0+tracing-b3-only", *(f"no-tracing+{v}" for v in VARIANTS if v not in NOT_PIECES)]


def run(n: int = 1000, modes: tuple[str, ...] = ("mtls", "plaintext"), variants: list[str] | None = None,
        log=print) -> dict[str, Any]:
    variants = variants or default_variants()
    tmp = Path(tempfile.mkdtemp(prefix="mizzen-bench-sidecarcost-"))
    os.chmod(tmp, 0o755)
    work = tmp / "cg"
    work.mkdir()
    os.chmod(work, 0o777)  # the measured Envoys (gid 1337) write their callgrind files and logs here
    b = datapath.Bench(tmp, 10)
    res: dict[str, Any] = {"requests": n, "modes": {}}
    try:
        b.up()
        time.sleep(3)
        dr = False  # the mesh's default is auto mTLS: plaintext is a DestinationRule away (as datapath.py)
        for mode in modes:
            if (mode == "plaintext") != dr:
                if dr:
                    b.cli("delete", "destinationrule", "echo")
                else:
                    b.cli("apply", "-f", "-", input=datapath.PLAINTEXT_DR)
                dr = not dr
                time.sleep(4)  # debounce + push
            log(f"{mode}:")
            res["modes"][mode] = run_mode(b, work, mode == "mtls", variants, n, log)
    finally:
        b.down()
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def markdown(r: dict) -> str:
    lines = []
    for mode, vs in r["modes"].items():
        bare = vs.get("bare")
        lines += [f"**{mode}**", "", "| variant | client hop | vs bare | base − variant | server hop | vs bare | "
                  "base − variant | what is removed (base: `mesh`, or what precedes the last `+`) |",
                  "|---|---|---|---|---|---|---|---|"]
        for v, (a, s) in vs.items():
            last = v.rsplit("+", 1)[-1]
            what = VARIANTS[last][0] if last in VARIANTS else {
                "bare": "datapath.py's bare pair", "mesh": "the dumped sidecar config",
                "stripped": "every piece off at once"}.get(v, v)
            base = vs.get(v.rsplit("+", 1)[0] if "+" in v else "mesh")
            ra = f"{a / bare[0]:.2f}×" if bare else "-"
            rs = f"{s / bare[1]:.2f}×" if bare else "-"
            da = f"{base[0] - a:+,.0f}" if base and v not in ("mesh", "bare") else ""
            ds = f"{base[1] - s:+,.0f}" if base and v not in ("mesh", "bare") else ""
            lines.append(f"| {v} | {a:,.0f} | {ra} | {da} | {s:,.0f} | {rs} | {ds} | {what} |")
        lines.append("")
    lines.append(f"Instructions per request of each proxy's busiest thread under callgrind, {r['requests']} keep-alive "
                 f"HTTP/1.1 requests after {WARM} of warm-up, one connection (bench/sidecarcost.py).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--modes", default="mtls,plaintext")
    ap.add_argument("--variants", default=None, help="comma-separated; `a+b` removes several pieces; default: "
                    + ",".join(default_variants()))
    a = ap.parse_args(argv)
    r = run(a.requests, tuple(a.modes.split(",")), a.variants.split(",") if a.variants else None)
    print(markdown(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
