"""`mizzen proxy-status` and `mizzen proxy-config`: what each proxy was sent and what Envoy runs."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from typing import Any, Callable

import click

from ..agent.security import describe_cert
from ..ca.secrets_view import SECRET_COLUMNS, secret_rows, secrets_from_config_dump
from ..client import ApiClient, ClientError, EnvoyAdmin, MeshUnavailable, StateLayout, Unavailable
from .options import api_client, api_options, fail
from .render import dump, print_table

XDS_TYPES = ("CDS", "LDS", "EDS", "RDS")


def proxy_name(proxy_id: str) -> str:
    """`sidecar~10.244.0.3~reviews-v1-0.default~default.svc.cluster.local` -> `reviews-v1-0.default`."""
    parts = proxy_id.split("~")
    return parts[2] if len(parts) >= 4 else proxy_id


def _f(d: dict[str, Any], snake: str, default: Any = None) -> Any:
    """A field of an Envoy message in JSON form, whether printed with proto names or lowerCamelCase."""
    if snake in d:
        return d[snake]
    head, *rest = snake.split("_")
    return d.get(head + "".join(w.title() for w in rest), default)


# ------------------------------------------------------------------ proxy-status

@click.command("proxy-status")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table")
@api_options
def proxy_status(output: str, state_dir: str) -> None:
    """Sync state of every connected proxy: per xDS type SYNCED / STALE / NACKED / NOT SENT.

    With the control plane down, the state comes from each proxy's own Envoy (admin socket): proxies
    show as disconnected and their config as STALE (the last one they accepted, still serving)."""
    try:
        items = api_client(state_dir).proxies()
    except MeshUnavailable:
        items = from_envoys(state_dir)
        if not items:
            raise
        click.echo("control plane unreachable: state read from each proxy's Envoy", err=True)
    certs = _pod_certs(state_dir, items)
    if output != "table":
        dump({"items": [dict(p, cert=certs[str(p.get("id"))]) if certs.get(str(p.get("id"))) else p
                        for p in items]}, output)
        return
    rows, nacks, cert_problems = [], [], []
    for p in sorted(items, key=lambda p: proxy_name(str(p.get("id", "")))):
        name = proxy_name(str(p.get("id", "")))
        types = p.get("types") or {}
        row = [name]
        for t in XDS_TYPES:
            st = types.get(t) or {}
            row.append(str(st.get("state") or "NOT_SENT").upper().replace("_", " "))
            if st.get("error"):
                nacks.append(f"{name} {t}: {st['error']}")
        row.append("yes" if p.get("connected") else "no")
        cert = certs.get(str(p.get("id")))
        cell, ok = describe_cert(cert)
        row.append(cell)
        if not ok:
            err = (cert or {}).get("lastError")
            cert_problems.append(f"{name}: {cell}" + (f" (last error: {err})" if err else ""))
        rows.append(row)
    print_table(["NAME", *XDS_TYPES, "CONNECTED", "CERT"], rows, empty="No proxies connected.")
    if nacks:
        click.echo("\nNACK errors:")
        for line in nacks:
            click.echo("  " + line)
    if cert_problems:
        click.echo("\nCertificate problems (mTLS to and from these pods fails once a certificate expires; see "
                   "`mizzen logs POD` for the agent's retries):")
        for line in cert_problems:
            click.echo("  " + line)


def _pod_certs(state_dir: str, items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """proxy id -> the `cert` of its pod's agent.state (pods with a workload certificate only)."""
    layout = StateLayout(state_dir)
    out: dict[str, dict[str, Any]] = {}
    for p in items:
        pod = proxy_name(str(p.get("id", ""))).split(".")[0]
        try:
            with open(layout.pod(pod).agent_state) as f:
                cert = json.load(f).get("cert")
        except (OSError, ValueError):
            continue
        if isinstance(cert, dict):
            out[str(p.get("id"))] = cert
    return out


_STATS = {"CDS": "cluster_manager.cds.", "LDS": "listener_manager.lds."}


def from_envoys(state_dir: str) -> list[dict[str, Any]]:
    """proxy-status items built from every pod's Envoy admin socket (the control plane is down)."""
    layout = StateLayout(state_dir)
    items: list[dict[str, Any]] = []
    for pod in layout.pod_names():
        sock = layout.pod(pod).admin_socket
        if not os.path.exists(sock):
            continue
        try:
            stats = {s["name"]: s.get("value", 0) for s in EnvoyAdmin(sock, timeout=5).get_json(
                "/stats?format=json&filter=^(control_plane|cluster_manager.cds|listener_manager.lds)")["stats"]
                if "name" in s}
            node = EnvoyAdmin(sock, timeout=5).get_json("/server_info").get("node", {})
        except (ClientError, ValueError):
            continue
        connected = bool(stats.get("control_plane.connected_state", 0))
        types: dict[str, Any] = {}
        for t in XDS_TYPES:
            prefix = _STATS.get(t)
            ok = stats.get(prefix + "update_success", 0) if prefix else None
            rejected = stats.get(prefix + "update_rejected", 0) if prefix else 0
            state = "STALE" if not connected else "UNKNOWN"
            if ok == 0:
                state = "NOT_SENT"
            types[t] = {"state": state, "updates": ok, "rejected": rejected}
        items.append({"id": node.get("id", pod), "namespace": (node.get("metadata") or {}).get("NAMESPACE", ""),
                      "workload": node.get("cluster", ""), "connected": connected, "source": "envoy",
                      "types": types})
    return items


# ------------------------------------------------------------------ proxy-config: tables from Envoy JSON

def _address(a: dict[str, Any] | None) -> str:
    a = a or {}
    sa = _f(a, "socket_address")
    if sa:
        return f"{sa.get('address', '')}:{_f(sa, 'port_value', 0)}"
    if a.get("pipe"):
        return "unix:" + str(a["pipe"].get("path", ""))
    ia = _f(a, "envoy_internal_address")
    if ia:
        return "internal:" + str(_f(ia, "server_listener_name", ""))
    return "-"


def _cla_count(cla: dict[str, Any] | None) -> int:
    return sum(len(_f(e, "lb_endpoints", [])) for e in (cla or {}).get("endpoints", []))


def cluster_rows(clusters: list[tuple[dict[str, Any], str]], eds: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """clusters: (Cluster JSON, state suffix); eds: cluster name -> ClusterLoadAssignment JSON."""
    rows = []
    for c, state in sorted(clusters, key=lambda x: str(x[0].get("name"))):
        name = str(c.get("name", ""))
        ctype = _f(c, "cluster_type")
        kind = (ctype or {}).get("name", "CUSTOM") if ctype else str(c.get("type") or "STATIC")
        cla = eds.get(name) or _f(c, "load_assignment")
        rows.append([name + state, kind, _cla_count(cla) if cla is not None else "-"])
    return rows


def listener_rows(listeners: list[tuple[dict[str, Any], str]]) -> list[list[Any]]:
    rows = []
    for ln, state in sorted(listeners, key=lambda x: str(x[0].get("name"))):
        chains = len(_f(ln, "filter_chains", [])) + (1 if _f(ln, "default_filter_chain") else 0)
        rows.append([str(ln.get("name", "")) + state, _address(ln.get("address")), chains])
    return rows


def route_rows(configs: list[dict[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for rc in sorted(configs, key=lambda x: str(x.get("name"))):
        vhosts = _f(rc, "virtual_hosts", [])
        if not vhosts:
            rows.append([rc.get("name", ""), "-", "-", 0])
        for vh in vhosts:
            domains = vh.get("domains", [])
            shown = ",".join(domains[:4]) + (f",+{len(domains) - 4} more" if len(domains) > 4 else "")
            rows.append([rc.get("name", ""), vh.get("name", ""), shown, len(vh.get("routes", []))])
    return rows


def endpoint_rows_from_admin(clusters_json: dict[str, Any]) -> list[list[Any]]:
    """From Envoy's `/clusters?format=json`: real health as Envoy sees it."""
    rows = []
    for cs in _f(clusters_json, "cluster_statuses", []):
        for h in _f(cs, "host_statuses", []):
            hs = _f(h, "health_status", {})
            failed_outlier = bool(_f(hs, "failed_outlier_check"))
            failed = failed_outlier or any(_f(hs, k) for k in (
                "failed_active_health_check", "failed_active_degraded_check", "pending_dynamic_removal"))
            status = "UNHEALTHY" if failed else str(_f(hs, "eds_health_status") or "HEALTHY")
            rows.append([_address(h.get("address")), status, "FAILED" if failed_outlier else "OK", cs.get("name", "")])
    return sorted(rows, key=lambda r: (r[3], r[0]))


def endpoint_rows_from_clas(clas: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for cla in clas:
        for group in cla.get("endpoints", []):
            for lb in _f(group, "lb_endpoints", []):
                addr = _address((lb.get("endpoint") or {}).get("address"))
                rows.append([addr, str(_f(lb, "health_status") or "UNKNOWN"), "-", _f(cla, "cluster_name", "")])
    return sorted(rows, key=lambda r: (r[3], r[0]))


def _section(dump_: dict[str, Any], suffix: str) -> dict[str, Any]:
    for c in dump_.get("configs", []):
        if str(c.get("@type", "")).endswith(suffix):
            return dict(c)
    return {}


CLUSTERS_DUMP = "admin.v3.ClustersConfigDump"
LISTENERS_DUMP = "admin.v3.ListenersConfigDump"
ROUTES_DUMP = "admin.v3.RoutesConfigDump"
ENDPOINTS_DUMP = "admin.v3.EndpointsConfigDump"


def _clusters_from_dump(d: dict[str, Any]) -> tuple[list[tuple[dict[str, Any], str]], dict[str, dict[str, Any]]]:
    cd = _section(d, CLUSTERS_DUMP)
    clusters = [(x["cluster"], "") for x in _f(cd, "static_clusters", []) if "cluster" in x]
    clusters += [(x["cluster"], "") for x in _f(cd, "dynamic_active_clusters", []) if "cluster" in x]
    clusters += [(x["cluster"], " (warming)") for x in _f(cd, "dynamic_warming_clusters", []) if "cluster" in x]
    ed = _section(d, ENDPOINTS_DUMP)
    eds: dict[str, dict[str, Any]] = {}
    for key in ("static_endpoint_configs", "dynamic_endpoint_configs"):
        for x in _f(ed, key, []):
            cla = _f(x, "endpoint_config")
            if cla:
                eds[_f(cla, "cluster_name", "")] = cla
    return clusters, eds


def _listeners_from_dump(d: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    ld = _section(d, LISTENERS_DUMP)
    out = [(x["listener"], "") for x in _f(ld, "static_listeners", []) if "listener" in x]
    for x in _f(ld, "dynamic_listeners", []):
        for st, suffix in (("active_state", ""), ("warming_state", " (warming)"), ("draining_state", " (draining)")):
            s = _f(x, st)
            if s and "listener" in s:
                out.append((s["listener"], suffix))
    return out


def _routes_from_dump(d: dict[str, Any]) -> list[dict[str, Any]]:
    rd = _section(d, ROUTES_DUMP)
    out = [_f(x, "route_config") for x in _f(rd, "static_route_configs", [])]
    out += [_f(x, "route_config") for x in _f(rd, "dynamic_route_configs", [])]
    return [r for r in out if r]


HEADERS = {
    "clusters": ["NAME", "TYPE", "ENDPOINTS"],
    "listeners": ["NAME", "ADDRESS", "FILTER-CHAINS"],
    "routes": ["NAME", "VIRTUAL HOST", "DOMAINS", "ROUTES"],
    "endpoints": ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"],
}
SECTIONS = {"clusters": CLUSTERS_DUMP, "listeners": LISTENERS_DUMP, "routes": ROUTES_DUMP}
CP_TYPES = {"clusters": "CDS", "listeners": "LDS", "routes": "RDS", "endpoints": "EDS"}
ALIASES = {"cluster": "clusters", "clusters": "clusters", "c": "clusters",
           "listener": "listeners", "listeners": "listeners", "l": "listeners",
           "route": "routes", "routes": "routes", "r": "routes",
           "endpoint": "endpoints", "endpoints": "endpoints", "ep": "endpoints", "e": "endpoints",
           "secret": "secrets", "secrets": "secrets", "s": "secrets"}


def secrets_from_envoy(admin: EnvoyAdmin, output: str) -> None:
    """`proxy-config secrets`: the certificates the proxy's Envoy holds (from SDS), as istioctl shows them."""
    infos = secrets_from_config_dump(admin.get_json("/config_dump?resource=dynamic_active_secrets"))
    warming = secrets_from_config_dump(admin.get_json("/config_dump?resource=dynamic_warming_secrets"))
    infos += [dataclasses.replace(i, status="WARMING") for i in warming]
    now = dt.datetime.now(dt.timezone.utc)
    if output != "table":
        return dump({"items": [i.to_dict(now) for i in infos]}, output)
    print_table(list(SECRET_COLUMNS), secret_rows(infos, now),
                empty="No secrets: this proxy has no workload certificate (no mTLS).")


def from_envoy(admin: EnvoyAdmin, what: str, output: str) -> None:
    if what == "endpoints":
        data = admin.get_json("/clusters?format=json")
        if output != "table":
            return dump(data, output)
        return print_table(HEADERS[what], endpoint_rows_from_admin(data), empty="No endpoints.")
    d = admin.get_json("/config_dump?include_eds" if what == "clusters" else "/config_dump")
    if output != "table":
        sections = [_section(d, SECTIONS[what])] + ([_section(d, ENDPOINTS_DUMP)] if what == "clusters" else [])
        return dump({"configs": [s for s in sections if s]}, output)
    rows: list[list[Any]]
    if what == "clusters":
        clusters, eds = _clusters_from_dump(d)
        rows = cluster_rows(clusters, eds)
    elif what == "listeners":
        rows = listener_rows(_listeners_from_dump(d))
    else:
        rows = route_rows(_routes_from_dump(d))
    print_table(HEADERS[what], rows, empty=f"No {what}.")


def _resources_of(answer: Any) -> list[dict[str, Any]]:
    """Accept the control plane's answer as {"resources": [...]}, {"items": [...]}, [...] or {name: res}."""
    if isinstance(answer, list):
        return [r for r in answer if isinstance(r, dict)]
    if isinstance(answer, dict):
        for key in ("resources", "items"):
            if isinstance(answer.get(key), list):
                return [r for r in answer[key] if isinstance(r, dict)]
            if isinstance(answer.get(key), dict):
                return [r for r in answer[key].values() if isinstance(r, dict)]
        return [r for r in answer.values() if isinstance(r, dict)]
    return []


def _unwrap(r: dict[str, Any]) -> dict[str, Any]:
    """A resource possibly wrapped as {"name", "version", "resource": {...}}."""
    inner = r.get("resource")
    return inner if isinstance(inner, dict) else r


def from_control_plane(api: ApiClient, pod: str, ns: str | None, what: str, output: str) -> None:
    proxies = api.proxies()
    want = f"{pod}.{ns}" if ns else None
    def pod_of(p: dict[str, Any]) -> str:
        return proxy_name(str(p.get("id"))).split(".")[0]

    match = [p for p in proxies if (proxy_name(str(p.get("id"))) == want if want else pod_of(p) == pod)]
    if not match:  # a workload name: its only replica
        match = [p for p in proxies if pod_of(p).startswith(pod + "-") and pod_of(p)[len(pod) + 1:].isdigit()
                 and (not ns or proxy_name(str(p.get("id"))).endswith("." + ns))]
        if len(match) > 1:
            fail(f"{pod} has several replicas: " + ", ".join(proxy_name(str(p["id"])) for p in match))
    if not match:
        fail(f"proxy {want or pod} is not connected to the control plane and has no admin socket")
    if len(match) > 1:
        fail(f"several proxies are named {pod}: " + ", ".join(proxy_name(str(p['id'])) for p in match)
             + "; give POD.NAMESPACE")
    pid = str(match[0]["id"])
    click.echo(f"note: no Envoy admin socket for {pod}; showing what the control plane sent to {pid}", err=True)
    answer = api.proxy_resources(pid, CP_TYPES[what])
    if output != "table":
        return dump(answer, output)
    res = [_unwrap(r) for r in _resources_of(answer)]
    rows: list[list[Any]]
    if what == "clusters":
        rows = cluster_rows([(r, "") for r in res], {})
    elif what == "listeners":
        rows = listener_rows([(r, "") for r in res])
    elif what == "routes":
        rows = route_rows(res)
    else:
        rows = endpoint_rows_from_clas(res)
    print_table(HEADERS[what], rows, empty=f"No {what}.")


def resolve_pod(state_dir: str, target: str) -> tuple[str, str | None]:
    """POD[.NS] -> (pod, namespace or None). A pod directory named exactly `target` wins; otherwise the
    part before the first '.' is the pod, and a workload name (`sleep`) picks its only replica (`sleep-0`)."""
    layout = StateLayout(state_dir)
    if os.path.isdir(layout.pod(target).path):
        return target, None
    pod, _, ns = target.partition(".")
    if not os.path.isdir(layout.pod(pod).path):
        replicas = [d for d in layout.pod_names() if d.startswith(pod + "-") and d[len(pod) + 1:].isdigit()]
        if len(replicas) == 1:
            pod = replicas[0]
    return pod, ns or None


@click.command("proxy-config")
@click.argument("what", metavar="clusters|listeners|routes|endpoints|secrets",
                type=click.Choice(sorted(ALIASES), case_sensitive=False))
@click.argument("target", metavar="POD[.NAMESPACE]")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table")
@api_options
def proxy_config(what: str, target: str, output: str, state_dir: str) -> None:
    """Show the configuration a proxy's Envoy runs (from its admin socket), or what the control plane
    sent it when the admin socket is unavailable. `secrets`: its workload certificate and trusted roots
    (SPIFFE ID, serial, validity, issuer), which only the Envoy knows."""
    what = ALIASES[what.lower()]
    pod, ns = resolve_pod(state_dir, target)
    sock = StateLayout(state_dir).pod(pod).admin_socket
    if os.path.exists(sock):
        try:
            if what == "secrets":
                return secrets_from_envoy(EnvoyAdmin(sock), output)
            return from_envoy(EnvoyAdmin(sock), what, output)
        except Unavailable:
            click.echo(f"note: Envoy is not answering on {sock}", err=True)
    if what == "secrets":
        why = "its Envoy is not answering on" if os.path.exists(sock) else "no Envoy admin socket at"
        fail(f"{target}: {why} {sock} (a pod without a sidecar has no certificate); secrets come from the "
             f"pod's agent over SDS, the control plane does not have them")
    from_control_plane(api_client(state_dir), pod, ns, what, output)


def register(add: Callable[[click.Command], None]) -> None:
    add(proxy_status)
    add(proxy_config)


__all__ = ["proxy_status", "proxy_config", "register", "proxy_name"]
