"""Server-rendered HTML of the console's pages. PURE: data in, HTML text out; every value is escaped."""
from __future__ import annotations

import json
from html import escape
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

import yaml

NAV = (("topology", "Topology"), ("services", "Services"), ("proxies", "Proxies"), ("config", "Config"),
       ("ratelimits", "Rate limits"), ("traces", "Traces"), ("tap", "Tap"))


def h(x: Any) -> str:
    return escape("" if x is None else str(x), quote=True)


def q(x: str) -> str:
    return quote(x, safe="")


def page(title: str, active: str, body: str, *, scripts: Sequence[str] = (), banner: str = "") -> str:
    nav = "".join(f'<a href="/{key}" class="{"active" if key == active else ""}" id="nav-{key}">{h(label)}</a>'
                  for key, label in NAV)
    script_tags = "".join(f'<script src="/static/{h(s)}"></script>' for s in scripts)
    warn = f'<div class="banner error" id="banner">{h(banner)}</div>' if banner else ""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{h(title)} · Mizzen</title>'
            f'<link rel="stylesheet" href="/static/console.css"></head><body>'
            f'<header><span class="brand">Mizzen</span><nav>{nav}</nav></header>{warn}'
            f'<main><h1>{h(title)}</h1>{body}</main>{script_tags}</body></html>')


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, id: str = "", empty: str = "nothing yet") -> str:
    """`rows` cells are HTML already (use h())."""
    rows = list(rows)
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    if not rows:
        return f'<p class="empty" id="{h(id)}">{h(empty)}</p>'
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{h(id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} ms"


def golden_rows(rows: list[Mapping[str, Any]], extra: str | None = None) -> list[list[str]]:
    out = []
    for r in rows:
        cells = [h(r["name"])] + ([h(r.get(extra, ""))] if extra else [])
        cells += [h(r["requests"]), h(f"{r['rps']:.2f}"), pct(r["success_rate"]), ms(r["p50_ms"]),
                  ms(r["p95_ms"]), ms(r["p99_ms"])]
        out.append(cells)
    return out


GOLDEN_HEAD = ["name", "requests", "rps", "success", "p50", "p95", "p99"]


def to_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------------- pages
def topology_page(graph: Mapping[str, Any], banner: str = "") -> str:
    edge_rows = [[h(_node_label(graph, e["source"])), h(_node_label(graph, e["target"])), h(e["kind"]),
                  f'<span class="health {h(e["health"])}">{h(e.get("label") or "-")}</span>']
                 for e in graph["edges"] if e["kind"] != "member"]
    body = (f'<div id="topology-graph" class="graph" data-graph="{h(json.dumps(graph))}"></div>'
            '<aside id="node-details" class="details"><p class="hint">Click a node for its details.</p></aside>'
            '<h2>Edges</h2>' + table(["from", "to", "kind", "traffic (rps · success · p99)"], edge_rows,
                                     id="edges", empty="No traffic seen in the last minute."))
    return page("Topology", "topology", body, scripts=("cytoscape.min.js", "console.js"), banner=banner)


def _node_label(graph: Mapping[str, Any], nid: str) -> str:
    for n in graph["nodes"]:
        if n["id"] == nid:
            return f'{n["label"]}.{n["namespace"]}' if n.get("namespace") and n["namespace"] != "unknown" else n["label"]
    return nid


def services_page(services: list[Mapping[str, Any]], golden: list[Mapping[str, Any]], banner: str = "") -> str:
    by = {(g["namespace"], g["name"]): g for g in golden}
    rows = []
    for s in sorted(services, key=lambda s: (s.get("namespace", ""), s.get("name", ""))):
        g = by.get((s.get("namespace"), s.get("name"))) or {}
        ports = ", ".join(f'{p.get("name") or p.get("protocol", "")}/{p.get("port")}' for p in s.get("ports", ()))
        link = f'<a href="/services/{q(s["hostname"])}">{h(s.get("name"))}</a>'
        rows.append([link, h(s.get("namespace")), h(s.get("hostname")), h(s.get("vip")), h(ports),
                     h(f'{g["rps"]:.2f}') if g else "-", pct(g.get("success_rate")) if g else "-",
                     ms(g.get("p99_ms")) if g else "-"])
    return page("Services", "services", table(["service", "namespace", "host", "VIP", "ports", "rps", "success",
                                               "p99"], rows, id="services", empty="No services."), banner=banner)


def service_page(d: Mapping[str, Any]) -> str:
    eps = [[h(e.get("id")), h(e.get("workload")), h((e.get("labels") or {}).get("version", "-")),
            h(e.get("address")), h(", ".join(str(p) for p in e.get("ports", ()))),
            '<span class="health ok">healthy</span>' if e.get("healthy", True) else
            '<span class="health fail">unhealthy</span>'] for e in d["endpoints"]]
    rules = "".join(
        f'<details class="rule" open><summary><a href="/config/{q(r["kind"])}/{q(r["metadata"]["namespace"])}/'
        f'{q(r["metadata"]["name"])}">{h(r["kind"])} {h(r["metadata"]["namespace"])}/{h(r["metadata"]["name"])}</a>'
        f'</summary><pre>{h(to_yaml(r.get("spec") or {}))}</pre></details>' for r in d["routing"]) \
        or '<p class="empty" id="routing">No routing rules: all traffic is balanced over every endpoint.</p>'
    body = (f'<p>Host <code>{h(d["service"].get("hostname"))}</code> · VIP <code>{h(d["service"].get("vip"))}</code>'
            f' · versions: <span id="versions">{h(", ".join(d["versions"]) or "-")}</span></p>'
            '<h2>Golden metrics</h2>' + table(GOLDEN_HEAD, golden_rows(d["golden"]), id="golden",
                                              empty="No traffic seen in the last minute.") +
            '<h2>By version</h2>' + table(["name", "version"] + GOLDEN_HEAD[1:], golden_rows(d["by_version"], "version"),
                                         id="by-version", empty="-") +
            '<h2>Endpoints</h2>' + table(["instance", "workload", "version", "address", "ports", "health"], eps,
                                         id="endpoints", empty="No endpoints registered.") +
            f'<h2>Routing rules</h2>{rules}')
    return page(f"Service {d['name']}.{d['namespace']}", "services", body)


def proxies_page(rows: list[Mapping[str, Any]], banner: str = "") -> str:
    from .model import XDS_TYPES
    out = []
    for r in rows:
        cells = [f'<a href="/proxies/{q(r["id"])}">{h(r["id"])}</a>', h(r["workload"]), h(r["namespace"]),
                 f'<span class="state {h(r["overall"])}">{h(r["overall"])}</span>']
        for t in XDS_TYPES:
            st = r["states"].get(t, "-")
            err = r["errors"].get(t)
            cells.append(f'<span class="state {h(st)}">{h(st)}</span>' +
                         (f'<div class="nack-error">{h(err)}</div>' if err else ""))
        out.append(cells)
    return page("Proxies", "proxies", table(["proxy", "workload", "namespace", "status", *XDS_TYPES], out,
                                            id="proxies", empty="No proxy connected."), banner=banner)


def proxy_page(pid: str, row: Mapping[str, Any] | None, configs: Mapping[str, Any]) -> str:
    parts = []
    if row:
        for t, err in row["errors"].items():
            parts.append(f'<div class="banner error">{h(t)} NACKED: {h(err)}</div>')
    for t, cfg in configs.items():
        parts.append(f'<details><summary>{h(t)}</summary><pre>{h(json.dumps(cfg, indent=1))}</pre></details>')
    return page(f"Proxy {pid}", "proxies", "".join(parts) or '<p class="empty">No configuration sent.</p>')


def router_forms(items: list[Mapping[str, Any]]) -> str:
    """One form per Router: each branch's version weights as number inputs."""
    out = []
    for r in items:
        if r.get("kind") != "Router":
            continue
        ns, name = r["metadata"].get("namespace", "default"), r["metadata"]["name"]
        rows = []
        for i, sub in enumerate((r.get("spec") or {}).get("subsets") or ()):
            fields = " ".join(
                f'<label>{h(v)} <input type="number" min="0" max="100" name="w:{i}:{h(v)}" value="{h(w)}" '
                f'id="router-{h(ns)}-{h(name)}-{i}-{h(v)}" size="4"></label>'
                for v, w in (sub.get("versions") or {}).items())
            rows.append(f'<div>branch <b>{h(sub.get("branch"))}</b>: {fields or "(one destination)"}</div>')
        out.append(f'<form method="post" action="/config/switches/router" class="switch" id="router-{h(ns)}-{h(name)}">'
                   f'<input type="hidden" name="namespace" value="{h(ns)}"><input type="hidden" name="name" '
                   f'value="{h(name)}"><b>Router {h(ns)}/{h(name)}</b>{"".join(rows)}'
                   f'<button type="submit">Apply weights</button></form>')
    return "".join(out)


def config_list_page(items: list[Mapping[str, Any]], access_log: Mapping[str, bool], banner: str = "") -> str:
    rows = [[h(r["kind"]), h(r["metadata"].get("namespace", "")),
             f'<a href="/config/{q(r["kind"])}/{q(r["metadata"].get("namespace", "default"))}/{q(r["metadata"]["name"])}">'
             f'{h(r["metadata"]["name"])}</a>'] for r in sorted(items, key=lambda r: (r["kind"], r["metadata"].get(
                 "namespace", ""), r["metadata"]["name"]))]
    switches = "".join(
        f'<form method="post" action="/config/switches/access-log" class="switch">'
        f'<input type="hidden" name="namespace" value="{h(ns)}">'
        f'<label>Access logs in <b>{h(ns)}</b>: {"on" if on else "off"}</label> '
        f'<button type="submit" name="enabled" value="{"false" if on else "true"}" id="access-log-{h(ns)}">'
        f'{"Turn off" if on else "Turn on"}</button></form>' for ns, on in sorted(access_log.items()))
    body = ('<p><a class="button" href="/config/new" id="new-resource">New resource</a></p>'
            '<h2>Switches</h2>' + switches + router_forms(items) +
            '<h2>Resources</h2>' + table(["kind", "namespace", "name"], rows, id="resources", empty="No resources."))
    return page("Config", "config", body, banner=banner)


def editor_page(title: str, text: str, *, key: tuple[str, str, str] | None = None,
                issues: Sequence[Mapping[str, Any]] = (), analysis: Sequence[Mapping[str, Any]] = (),
                result: str = "", error: str = "") -> str:
    action = "/config/edit"
    issue_rows = [[h(i.get("kind", "")), h(f'{i.get("namespace") or ""}/{i.get("name") or ""}'),
                   f'<code>{h(i.get("path", ""))}</code>', h(i.get("message", ""))] for i in issues]
    ana_rows = [[h(m.get("level")), h(m.get("code")), h(m.get("resource")), f'<code>{h(m.get("path", ""))}</code>',
                 h(m.get("message")), h(m.get("hint", ""))] for m in analysis]
    hidden = "".join(f'<input type="hidden" name="{n}" value="{h(v)}">' for n, v in
                     zip(("kind", "namespace", "name"), key or ("", "", "")))
    status = ""
    if error:
        status = f'<div class="banner error" id="apply-error">{h(error)}</div>'
    elif result:
        status = f'<div class="banner ok" id="apply-result">{h(result)}</div>'
    body = (status +
            f'<form method="post" action="{action}" id="editor-form">{hidden}'
            f'<textarea name="yaml" id="editor" spellcheck="false" rows="28">{h(text)}</textarea>'
            '<div class="actions"><button type="submit" name="action" value="check" id="check">Validate &amp; analyze'
            '</button> <button type="submit" name="action" value="apply" id="apply" class="primary">Apply</button>'
            '</div></form>' +
            ('<h2>Validation errors (nothing was applied)</h2>' + table(["kind", "resource", "field", "problem"],
                                                                        issue_rows, id="issues") if issues else "") +
            ('<h2>Analysis</h2>' + table(["level", "code", "resource", "field", "message", "fix"], ana_rows,
                                         id="analysis") if analysis else ""))
    return page(title, "config", body)


def traces_page(items: list[Mapping[str, Any]], service: str, banner: str = "") -> str:
    rows = [[f'<a href="/traces/{q(t["traceId"])}">{h(t["traceId"][:16])}…</a>', h(t.get("rootService")),
             h(t.get("root")), h(", ".join(t.get("services", ()))), h(t.get("spans")), ms(t.get("durationMs")),
             '<span class="health fail">error</span>' if t.get("error") else ""] for t in items]
    form = (f'<form method="get" action="/traces" class="filters"><input name="service" placeholder="service" '
            f'value="{h(service)}"> <button type="submit">Filter</button></form>')
    return page("Traces", "traces", form + table(["trace", "root service", "root", "services", "spans", "duration",
                                                  ""], rows, id="traces", empty="No traces yet."), banner=banner)


def trace_page(trace_id: str, data: Mapping[str, Any] | None) -> str:
    if data is None:
        return page("Trace", "traces", f'<p class="empty" id="trace-missing">Trace {h(trace_id)} is not in the '
                                       'store (unknown, or evicted: the store keeps the most recent traces).</p>')
    sm, spans = data["summary"], data["spans"]
    total = max(sm.get("durationMs") or 0.0, 0.001)
    rows = []
    for s in spans:
        left = 100.0 * s["offsetMs"] / total
        width = max(100.0 * s["durationMs"] / total, 0.5)
        rows.append(
            f'<div class="span-row{" error" if s.get("error") else ""}" data-span-id="{h(s["spanId"])}" '
            f'data-parent-id="{h(s["parentId"])}">'
            f'<div class="span-name" style="padding-left:{s["depth"] * 16}px">{h(s["service"])} '
            f'<span class="kind">{h(s["kind"])}</span> {h(s["name"])}</div>'
            f'<div class="span-track"><div class="span-bar" style="left:{left:.2f}%;width:{width:.2f}%"></div></div>'
            f'<div class="span-ms">{s["durationMs"]:.2f} ms</div></div>')
    head = (f'<p>{h(sm.get("spans"))} spans · {h(", ".join(sm.get("services", ())))} · '
            f'{sm.get("durationMs", 0):.2f} ms</p>')
    return page(f"Trace {trace_id[:16]}…", "traces", head + f'<div class="waterfall" id="waterfall">{"".join(rows)}</div>')


def tap_page(workloads: Sequence[str], available: bool) -> str:
    opts = "".join(f'<option value="{h(w)}">{h(w)}</option>' for w in workloads)
    note = "" if available else ('<div class="banner error">Tap is not available here: the console was started '
                                 'without a tap source.</div>')
    body = (note + '<form id="tap-form" class="filters">'
            f'<select name="workload" id="tap-workload">{opts}</select> '
            '<input name="path" placeholder="path prefix, e.g. /api" id="tap-path"> '
            '<input name="method" placeholder="method" size="7" id="tap-method"> '
            '<input name="max" type="number" value="100" min="1" max="10000" id="tap-max"> '
            '<button type="submit" id="tap-start">Start</button> <button type="button" id="tap-stop">Stop</button>'
            '</form><p id="tap-status" class="hint">Idle: nothing is tapped while nobody watches.</p>' +
            table(["time", "method", "path", "authority", "status", "latency", "source", "destination"], [["", "", "", "",
                                                                                                       "", "", "", ""]],
                  id="tap-events"))
    return page("Tap", "tap", body, scripts=("console.js",))
