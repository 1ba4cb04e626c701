"""The console with live data: a real Envoy connected to the control plane (a NACK), real sidecar Envoys
streaming access logs to their receivers (topology edges), spans in the trace receiver (waterfall) and the
tap filter (live requests) — all in headless Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from mizzen.agent.bootstrap import build_bootstrap
from mizzen.agent.config import AgentConfig
from tests.console.conftest import shot
from tests.envoy_bin import envoy_binary
from tests.telemetry.cost import Receivers
from tests.telemetry.rig import Options, Rig, free_port
from tests.telemetry.test_envoy_e2e import TraceServer

pytestmark = pytest.mark.e2e


def wait(driver, timeout: float = 20):
    return WebDriverWait(driver, timeout)


def test_a_nacked_proxy_shows_envoys_error(control_plane, console_factory, browser, tmp_path):
    work = tempfile.mkdtemp(prefix="mizzen-e2e-nack-")
    os.chmod(work, 0o755)
    # the port the control plane will tell this sidecar to listen on is taken: Envoy rejects the listener
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    cfg = AgentConfig(pod="nacker-0", namespace="default", workload="nacker", labels=(("app", "nacker"),),
                      interception="loopback", outbound_port=taken, inbound_port=free_port(),
                      xds_address=f"127.0.0.1:{control_plane.xds_port}", admin_socket=os.path.join(work, "admin.sock"),
                      work_dir=work, health_port=0)
    path = os.path.join(work, "envoy.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(build_bootstrap(cfg), f)
    envoy = subprocess.Popen([envoy_binary(), "-c", path, "--concurrency", "1", "--disable-hot-restart",
                              "--log-level", "warning"], stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(work, "envoy.log"), "wb"))
    try:
        c = console_factory()

        def nacked(_):
            browser.get(c.url + "/proxies")
            return "NACKED" in browser.find_element(By.ID, "proxies").text
        wait(browser, 40).until(nacked)
        table = browser.find_element(By.ID, "proxies")
        err = table.find_element(By.CLASS_NAME, "nack-error").text
        assert "nacker" in table.text
        assert str(taken) in err and ("cannot bind" in err or "Address already in use" in err), err
        shot(browser, tmp_path, "proxies-nacked")
        browser.find_element(By.PARTIAL_LINK_TEXT, "nacker-0").click()
        banner = wait(browser).until(EC.presence_of_element_located((By.CLASS_NAME, "banner")))
        assert "LDS NACKED" in banner.text
        shot(browser, tmp_path, "proxy-detail")
    finally:
        envoy.terminate()
        envoy.wait(10)
        squatter.close()
        shutil.rmtree(work, ignore_errors=True)


def test_topology_edges_traces_and_tap_from_real_sidecars(control_plane, console_factory, browser, tmp_path):
    work = tempfile.mkdtemp(prefix="mizzen-e2e-console-live-")
    recv = Receivers(work)
    ts = TraceServer(work)
    try:
        opts = Options(metrics=True, telemetry_sockets=recv.socks, tracing="otel", sampling=100.0, tap=True,
                       traces_address={"pipe": {"path": ts.sock}})
        with Rig(opts, work=work) as rig:
            for i in range(20):
                rig.get(f"/reviews/{i}")
            rig.get("/fail")
            c = console_factory(*[x for p in recv.ports for x in ("--windows", f"http://127.0.0.1:{p}")],
                                "--traces", f"http://127.0.0.1:{ts.http}",
                                "--tap-admin", f"default/reviews-v1=http://127.0.0.1:{rig.admin['b']}")

            seen: list[str] = []

            def edge_rows(_):  # until both sidecars' batches (flushed every second) are in
                browser.get(c.url + "/topology")
                seen[:] = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#edges tbody tr")]
                return any("95.2%" in r for r in seen) and len(seen) == 2
            try:
                wait(browser, 30).until(edge_rows)
            except Exception:
                raise AssertionError(f"edges shown: {seen}")
            rows = seen
            call = next(r for r in rows if r.startswith("productpage-v1.default reviews.default call"))
            assert "rps" in call and "95.2%" in call  # 20 of 21 succeeded
            split = next(r for r in rows if r.startswith("reviews.default reviews-v1.default split"))
            assert "v1 100%" in split
            wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#topology-graph canvas")))
            edge = browser.execute_script(
                "var e = window.mizzenGraph.getElementById('w:default/productpage-v1->s:reviews.default.svc.cluster.local');"
                "return e.length ? [e.data('health'), e.data('requests')] : null;")
            assert edge == ["warn", 21]  # one failure: amber, not red
            shot(browser, tmp_path, "topology-live")

            browser.find_element(By.ID, "nav-services").click()
            browser.find_element(By.LINK_TEXT, "reviews").click()
            golden = wait(browser).until(EC.presence_of_element_located((By.ID, "golden")))
            assert "21" in golden.text and "95.24%" in golden.text

            browser.get(c.url + "/traces")
            wait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#traces tbody tr"))
            browser.find_element(By.CSS_SELECTOR, "#traces tbody tr a").click()
            fall = wait(browser).until(EC.presence_of_element_located((By.ID, "waterfall")))
            spans = fall.find_elements(By.CLASS_NAME, "span-row")
            assert len(spans) == 2
            assert spans[1].get_attribute("data-parent-id") == spans[0].get_attribute("data-span-id")
            assert "productpage.default" in spans[0].text and "reviews.default" in spans[1].text
            shot(browser, tmp_path, "trace-waterfall")

            browser.get(c.url + "/tap")
            wait(browser).until(EC.presence_of_element_located((By.ID, "tap-path"))).send_keys("/tapped")
            Select(browser.find_element(By.ID, "tap-workload")).select_by_value("default/reviews-v1")
            mx = browser.find_element(By.ID, "tap-max")
            mx.clear()
            mx.send_keys("3")
            browser.find_element(By.ID, "tap-start").click()
            time.sleep(1.0)  # the admin tap attaches
            for i in range(5):
                rig.get(f"/tapped/{i}")
                rig.get("/not-tapped")
            wait(browser).until(lambda d: "Done" in d.find_element(By.ID, "tap-status").text)
            events = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#tap-events tr.tap-event")]
            assert len(events) == 3 and all("/tapped/" in e and "GET" in e and "200" in e for e in events)
            shot(browser, tmp_path, "tap")
    finally:
        ts.stop()
        recv.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_rate_limits_page_shows_each_limit_and_what_analyze_says(control_plane, console_factory):
    control_plane.apply("""
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews}}
spec: {replicas: 2, command: [x], ports: [{containerPort: 9080}]}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: reviews-local, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  limits: [{name: per-replica, requestsPerUnit: 10, unit: second}]
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: nowhere, namespace: default}
spec:
  host: ratings
  mode: global
  limits: [{name: all, rate: 5, algorithm: gcra, strategy: delay, maxDelay: 1s, key: [sourceWorkload]}]
""")
    c = console_factory()
    with urllib.request.urlopen(c.url + "/ratelimits", timeout=10) as r:
        html = r.read().decode()
    assert 'id="ratelimits"' in html and "reviews-local" in html and "nowhere" in html
    assert "per-replica: 10/second, token_bucket" in html and "all: 5/s, gcra, delay ≤ 1s, per sourceWorkload" in html
    assert "MZ0302" in html and "each of 2 replicas" in html
    assert "MZ0301" in html and "no known Service" in html
    assert 'id="nav-ratelimits"' in html
