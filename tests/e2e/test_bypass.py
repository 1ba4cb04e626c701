"""`mizzen mesh bypass on|off` under load (issue 12 §6): a real netns mesh, `sleep` calling `web` (2 replicas) by
name at 200 rps through a pooled client that recycles its keep-alive connections (every 20 requests). The
switch goes on mid-run — the caller's and the callees' sidecars stop seeing the traffic (their Envoy stats stay
flat) while every request still succeeds, apps reaching each other through the VIP rules; the service VIPs and
the Consul API keep answering — then off again, and the traffic is back in the sidecars' stats. 0 failed
requests over the whole run. Assertions are on counts, never on timings."""
from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from mizzen.client import EnvoyAdmin

from .mesh import ROOT, SLEEP_COMMAND, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APP = ROOT / "tests" / "e2e" / "apps" / "policy_app.py"
MESH = f"""apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 8080, name: http}}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: 2
  command: [python3, {APP}]
  ports: [{{containerPort: 8080}}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: sleep, labels: {{app: sleep}}}}
spec:
  command: {SLEEP_COMMAND}
"""
OUT = "cluster.outbound|8080||web.default.svc.cluster.local.upstream_rq_total"
IN = "cluster.inbound|8080||.upstream_rq_total"


def counter(admin_sock: str, name: str) -> int:
    pattern = "^" + re.escape(name) + "$"
    stats = EnvoyAdmin(admin_sock, timeout=5).get_json("/stats?format=json&filter=" +
                                                        urllib.request.quote(pattern, safe=""))["stats"]
    return sum(int(s.get("value") or 0) for s in stats if s.get("name") == name)


def test_bypass_on_and_off_under_load(tmp_path: Path) -> None:
    with running_mesh(tmp_path, text=MESH, expect=3) as m:
        st = m.status()
        pods = {p["name"]: p for p in st["pods"]}
        caller = str(Path(pods["sleep-0"]["dir"]) / "admin.sock")
        callees = [str(Path(pods[n]["dir"]) / "admin.sock") for n in ("web-0", "web-1")]

        def snapshot() -> tuple[int, int]:
            return counter(caller, OUT), sum(counter(s, IN) for s in callees)

        stop = m.stop_path("bypass.stop")
        load = m.load_background("sleep-0", "http://web:8080/", rps=200, seconds=120, stop_file=stop,
                                 requests_per_connection=20)
        try:
            deadline = time.monotonic() + 60
            while (before := snapshot())[0] < 400 and time.monotonic() < deadline:  # the load is running
                time.sleep(0.5)
            assert before[0] >= 400 and before[1] >= 400  # through the sidecars
            out = m.cli("mesh", "bypass", "on", "-n", "default")
            assert "bypassed" in out.stdout, out.stdout
            assert all(p.get("bypass") == "on" for p in m.status()["pods"])
            time.sleep(2)  # connections opened before the switch are recycled by now
            on1 = snapshot()
            time.sleep(8)
            on2 = snapshot()
            # the Consul API and the registry addresses keep answering meanwhile
            consul = st["consulApi"]
            with urllib.request.urlopen(f"http://{consul}/v1/health/service/web?passing=1", timeout=5) as r:
                assert sorted(e["Service"]["Address"] for e in json.load(r)) == sorted(
                    pods[n]["ip"] for n in ("web-0", "web-1"))
            out = m.cli("mesh", "bypass", "off")
            assert "capturing again" in out.stdout, out.stdout
            assert all(p.get("bypass") == "off" for p in m.status()["pods"])
            time.sleep(2)
            off1 = snapshot()
            time.sleep(6)
            off2 = snapshot()
        finally:
            stop.touch()
            outp, errp = load.communicate(timeout=180)
        result = json.loads(outp.strip().splitlines()[-1])
        # every request succeeded, across both switches
        assert result["errors"] == {} and set(result["status"]) == {"200"}, result
        rate = result["total"] / result["seconds"]  # what the load achieved on this (shared) machine
        # the sidecars saw (almost) none of the requests sent while bypassed ...
        assert on2[0] - on1[0] <= 20 and on2[1] - on1[1] <= 20, (before, on1, on2, rate)
        # ... and see them again afterwards (the 6 s window, at the load's own average rate)
        assert min(off2[0] - off1[0], off2[1] - off1[1]) >= 0.6 * 6 * rate, (off1, off2, rate)
