"""The web console (`mizzen dashboard`): Topology, Services, Proxies, Config, Traces, Tap.

Server-rendered pages (aiohttp) plus two small static scripts committed here (no Node build step):
`static/console.js` and the vendored `static/cytoscape.min.js` (cytoscape.js 3.34.4 from the npm registry,
MIT licence in `static/cytoscape.LICENSE`). `app.make_app` builds it over the control plane's REST API;
`model` (pure) computes what pages show; `views` (pure) renders HTML; `sources` reads the APIs.
"""
