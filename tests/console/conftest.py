"""A real control plane process with config and registered instances, the console as its own process, and a
real headless Chromium driven by selenium. Screenshots go to each test's tmp_path (its output dir)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.telemetry.rig import A_IP, B_IP, free_port

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
V2_IP = "127.0.0.5"

MESH_CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec: {selector: {app: productpage}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
"""

INSTANCES = [
    {"id": "default.productpage-v1-0", "namespace": "default", "workload": "productpage-v1", "address": A_IP,
     "ports": [9080], "labels": {"app": "productpage", "version": "v1"}},
    {"id": "default.reviews-v1-0", "namespace": "default", "workload": "reviews-v1", "address": B_IP,
     "ports": [9080], "labels": {"app": "reviews", "version": "v1"}},
    {"id": "default.reviews-v2-0", "namespace": "default", "workload": "reviews-v2", "address": V2_IP,
     "ports": [9080], "labels": {"app": "reviews", "version": "v2"}, "healthy": False},
]


def _skip_reason() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"needs {path} (make sysdeps installs Debian's chromium and chromium-driver)"
    return None


def http(method: str, url: str, body: object = None, timeout: float = 10, *, token: str | None = None,
         cafile: str | None = None) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers=headers)
    ctx = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class ControlPlane:
    def __init__(self) -> None:
        self.state = tempfile.mkdtemp(prefix="mizzen-e2e-console-")
        os.chmod(self.state, 0o755)
        self.api_port, self.xds_port = free_port(), free_port()
        self.api = f"https://127.0.0.1:{self.api_port}"  # TLS from the mesh CA; the admin credential
        self.ca = os.path.join(self.state, "ca", "root-cert.pem")
        self.token = ""
        self.log = open(os.path.join(self.state, "cp.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mizzen.cli.main", "controlplane", "--state-dir", self.state, "--api-port",
             f"127.0.0.1:{self.api_port}", "--xds-port", f"127.0.0.1:{self.xds_port}", "--debounce-ms", "20",
             "--log-level", "warning"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if os.path.exists(self.ca) and http("GET", self.api + "/healthz", cafile=self.ca)[1].get("ready"):
                    self.token = Path(self.state, "admin.token").read_text().strip()
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("control plane did not start: " + Path(self.state, "cp.log").read_text()[-2000:])
            time.sleep(0.2)

    def apply(self, text: str) -> dict:
        status, data = http("POST", self.api + "/api/v1/apply", {"files": [{"name": "test", "text": text}]},
                            token=self.token, cafile=self.ca)
        assert status == 200, data
        return data

    def get(self, path: str) -> dict:
        status, data = http("GET", self.api + path, token=self.token, cafile=self.ca)
        assert status == 200, (path, data)
        return data

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.state, ignore_errors=True)


class Console:
    def __init__(self, api: str, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mizzen.console", "--api", api, "--port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.proc.kill()
            raise RuntimeError("console did not start: " + self.proc.stderr.read()[-2000:])
        self.url = line.rstrip("/")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    cp = ControlPlane()
    try:
        cp.apply(MESH_CONFIG)
        for inst in INSTANCES:
            status, data = http("PUT", f"{cp.api}/api/v1/instances/{inst['id']}", inst, token=cp.token, cafile=cp.ca)
            assert status == 200, data
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def console_factory(control_plane):
    started: list[Console] = []

    def make(*extra: str) -> Console:
        c = Console(control_plane.api, "--token", control_plane.token, "--ca-cert", control_plane.ca, *extra)
        started.append(c)
        return c
    yield make
    for c in started:
        c.stop()


@pytest.fixture(scope="module")
def browser():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mizzen-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path
