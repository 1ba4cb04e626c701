/* Mizzen console: topology graph (cytoscape.js, vendored) refreshed every 5 s, and the tap stream (SSE). */
(function () {
  "use strict";
  var COLORS = { ok: "#2e9d55", warn: "#d99a1e", fail: "#d33b3b", idle: "#b4bec9" };

  function elements(g) {
    var els = [];
    g.nodes.forEach(function (n) { els.push({ group: "nodes", data: Object.assign({}, n) }); });
    g.edges.forEach(function (e) { els.push({ group: "edges", data: Object.assign({}, e) }); });
    return els;
  }

  function details(n) {
    var d = n.data(), box = document.getElementById("node-details"), html = "";
    if (d.type === "service") {
      html = "<b>Service " + esc(d.label) + "." + esc(d.namespace) + "</b><br><a href=\"/services/" +
        encodeURIComponent(d.host) + "\">details, endpoints and routing</a>";
    } else {
      html = "<b>Workload " + esc(d.label) + "</b> (" + esc(d.namespace) + ")<br>instances: " + d.instances +
        " (" + d.healthy + " healthy), versions: " + esc((d.versions || []).join(", ") || "-");
    }
    var inc = n.connectedEdges().filter(function (e) { return e.data("kind") !== "member"; });
    inc.forEach(function (e) { html += "<br>" + esc(e.data("source")) + " → " + esc(e.data("target")) + ": " + esc(e.data("label")); });
    box.innerHTML = html;
  }

  function esc(s) { return String(s == null ? "" : s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" }[c]; }); }

  function topology() {
    var el = document.getElementById("topology-graph");
    if (!el || typeof cytoscape === "undefined") { return; }
    var cy = cytoscape({
      container: el, elements: elements(JSON.parse(el.getAttribute("data-graph"))),
      style: [
        { selector: "node", style: { "label": "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4, "background-color": "#4a78b5", "width": 28, "height": 28 } },
        { selector: "node[type = 'service']", style: { "shape": "triangle", "background-color": "#7a5ab8" } },
        { selector: "edge", style: { "curve-style": "bezier", "target-arrow-shape": "triangle", "width": 2, "label": "data(label)", "font-size": 9, "text-rotation": "autorotate", "text-background-color": "#fff", "text-background-opacity": 0.85, "line-color": COLORS.idle, "target-arrow-color": COLORS.idle } },
        { selector: "edge[health = 'ok']", style: { "line-color": COLORS.ok, "target-arrow-color": COLORS.ok } },
        { selector: "edge[health = 'warn']", style: { "line-color": COLORS.warn, "target-arrow-color": COLORS.warn } },
        { selector: "edge[health = 'fail']", style: { "line-color": COLORS.fail, "target-arrow-color": COLORS.fail, "width": 3 } },
        { selector: "edge[kind = 'member']", style: { "line-style": "dashed", "label": "" } },
        { selector: ":selected", style: { "border-width": 3, "border-color": "#13202e" } }
      ],
      layout: { name: "breadthfirst", directed: true, padding: 20, spacingFactor: 1.2 }
    });
    window.mizzenGraph = cy;
    cy.on("tap", "node", function (evt) { details(evt.target); });
    setInterval(function () {
      fetch("/console/api/graph").then(function (r) { return r.json(); }).then(function (g) {
        var known = {};
        cy.elements().forEach(function (e) { known[e.id()] = e; });
        var added = false;
        elements(g).forEach(function (x) {
          var cur = known[x.data.id];
          if (cur) { cur.data(x.data); delete known[x.data.id]; } else { cy.add(x); added = true; }
        });
        Object.keys(known).forEach(function (id) { cy.remove(known[id]); });
        if (added) { cy.layout({ name: "breadthfirst", directed: true, padding: 20, spacingFactor: 1.2 }).run(); }
        el.setAttribute("data-updated", String(g.at));
      }).catch(function () { /* keep the last picture */ });
    }, 5000);
  }

  function tap() {
    var form = document.getElementById("tap-form");
    if (!form) { return; }
    var source = null, status = document.getElementById("tap-status");
    var body = document.querySelector("#tap-events tbody");
    function stop(msg) { if (source) { source.close(); source = null; } status.textContent = msg; }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      stop("");
      body.innerHTML = "";
      var p = new URLSearchParams(new FormData(form));
      source = new EventSource("/console/api/tap?" + p.toString());
      status.textContent = "Tapping " + p.get("workload") + "…";
      source.onmessage = function (m) {
        var e = JSON.parse(m.data), tr = document.createElement("tr");
        [new Date().toLocaleTimeString(), e.method, e.path, e.authority, e.status,
         e.latencyMs == null ? "-" : e.latencyMs.toFixed(1) + " ms", e.source, e.destination].forEach(function (v) {
          var td = document.createElement("td"); td.textContent = v == null ? "" : v; tr.appendChild(td);
        });
        tr.className = "tap-event";
        body.insertBefore(tr, body.firstChild);
      };
      source.addEventListener("end", function () { stop("Done: the bounds were reached (nothing is tapped now)."); });
      source.addEventListener("error", function (m) {
        var msg = "Tap stopped.";
        try { msg = "Tap failed: " + JSON.parse(m.data).message; } catch (x) { /* a closed stream */ }
        stop(msg);
      });
    });
    document.getElementById("tap-stop").addEventListener("click", function () { stop("Stopped (nothing is tapped now)."); });
  }

  document.addEventListener("DOMContentLoaded", function () { topology(); tap(); });
}());
