"""The wiring of telemetry between the pieces that do not need a running mesh: a Workload's `metrics` reaches
the agent's config, the console refuses visitors without its token, the agent finds which service each of its
ports serves, and the control plane's scrape targets and Prometheus config are what Prometheus expects."""
from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from aiohttp import ClientSession, CookieJar, web

from mizzen.agent.config import AgentConfig
from mizzen.agent.observability import port_services
from mizzen.api import InvalidConfig, load_text
from mizzen.client import StateLayout
from mizzen.console.auth import COOKIE, token_middleware
from mizzen.local.launcher import agent_config
from mizzen.local.options import Options
from mizzen.local.pods import plan_pods

WORKLOAD = """apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: web, labels: {app: web}}
spec:
  command: [python3, web.py]
  ports: [{containerPort: 8080}]
  metrics: {port: 8080, path: /metrics/prom}
"""


def test_a_workloads_metrics_endpoint_reaches_its_agent(tmp_path):
    (pod,) = plan_pods(load_text(WORKLOAD).resources, str(tmp_path))
    pod.dir = str(tmp_path / "pods" / pod.name)
    cfg = agent_config(pod, StateLayout(str(tmp_path)), Options(), "netns")
    assert cfg.app_metrics_url == "http://127.0.0.1:8080/metrics/prom"
    assert cfg.telemetry and cfg.traces_address == f"unix:{tmp_path}/traces.sock"
    assert AgentConfig.from_dict(cfg.to_dict()) == cfg
    pod.port_map = {8080: 31000}  # loopback mode: the app's real port
    assert pod.app_metrics_url() == "http://127.0.0.1:31000/metrics/prom"
    with pytest.raises(InvalidConfig) as e:
        load_text(WORKLOAD.replace("path: /metrics/prom", "path: metrics"))
    assert "spec.metrics.path" in str(e.value)


def test_port_services_name_the_service_that_selects_the_pod_on_each_port():
    svcs = [{"name": "web", "namespace": "default", "hostname": "web.default.svc.cluster.local",
             "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}, {"port": 9090}]},
            {"name": "other", "namespace": "default", "hostname": "other.default.svc.cluster.local",
             "selector": {"app": "other"}, "ports": [{"port": 8080}]},
            {"name": "web", "namespace": "shop", "hostname": "web.shop.svc.cluster.local",
             "selector": {"app": "web"}, "ports": [{"port": 8080}]}]
    assert port_services(svcs, "default", {"app": "web", "version": "v1"}) == {
        8080: "web.default.svc.cluster.local", 9090: "web.default.svc.cluster.local"}


def test_a_port_backing_an_http_and_a_tcp_service_names_each_for_its_own_kind_of_traffic():
    """`ratings-tcp` (a `tcp-` port) sorts before `ratings` but must not name ratings' HTTP requests."""
    svcs = [{"namespace": "default", "hostname": "ratings.default.svc.cluster.local", "selector": {"app": "ratings"},
             "ports": [{"port": 9080, "name": "http", "protocol": "HTTP", "targetPort": 9080}]},
            {"namespace": "default", "hostname": "ratings-tcp.default.svc.cluster.local",
             "selector": {"app": "ratings"},
             "ports": [{"port": 9000, "name": "tcp-ratings", "protocol": "TCP", "targetPort": 9080}]}]
    labels = {"app": "ratings"}
    assert port_services(svcs, "default", labels) == {9080: "ratings.default.svc.cluster.local"}
    assert port_services(svcs, "default", labels, http=False) == {9080: "ratings-tcp.default.svc.cluster.local"}
    assert port_services(list(reversed(svcs)), "default", labels) == {9080: "ratings.default.svc.cluster.local"}


def test_the_console_wants_its_token_then_a_cookie_and_refuses_cross_origin_posts():
    async def run() -> None:
        async def page(request: web.Request) -> web.Response:
            return web.Response(text="page")
        app = web.Application(middlewares=[token_middleware("s3cret-token-0123456789abcdef0123")])
        app.router.add_get("/topology", page)
        app.router.add_post("/config/edit", page)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        try:
            async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as s:  # cookies for an IP, as browsers
                async with s.get(base + "/topology") as r:
                    assert r.status == 401 and "mizzen dashboard" in await r.text()
                async with s.get(base + "/topology?token=wrong") as r:
                    assert r.status == 401
                async with s.get(base + "/topology?token=s3cret-token-0123456789abcdef0123&x=1",
                                 allow_redirects=False) as r:
                    assert r.status == 302 and r.headers["Location"] == "/topology?x=1"  # token out of the URL
                    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
                async with s.get(base + "/topology") as r:  # the cookie now
                    assert r.status == 200 and await r.text() == "page"
                async with s.post(base + "/config/edit", headers={"Origin": "http://evil.example"}) as r:
                    assert r.status == 403
                async with s.post(base + "/config/edit", headers={"Origin": base}) as r:
                    assert r.status == 200
            async with ClientSession(cookies={COOKIE: "guess"}) as s:
                async with s.get(base + "/topology") as r:
                    assert r.status == 401
        finally:
            await runner.cleanup()
    asyncio.run(run())


def test_the_prometheus_config_reads_the_targets_the_control_plane_writes(tmp_path):
    from mizzen.cli.telemetry import prometheus_yaml

    cfg = yaml.safe_load(prometheus_yaml(str(tmp_path), "5s"))
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["mizzen-sidecars"]["file_sd_configs"][0]["files"] == [f"{tmp_path}/prometheus/sidecars.json"]
    assert jobs["mizzen-controlplane"]["file_sd_configs"][0]["files"] == [f"{tmp_path}/prometheus/controlplane*.json"]
    assert cfg["global"]["scrape_interval"] == "5s"
    json.dumps(cfg)
