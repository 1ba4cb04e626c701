"""`make demo`: bring up Bookinfo in a local mesh, send traffic under Bookinfo's routing rules (Istio format), print
where it went, then leave the mesh running with light traffic (10 minutes at most) and print the web console's
URL and how to stop it (`--down`: tear everything down at the end instead).

Runs the same commands a user would (`mizzen up/apply/exec/stat/traces/dashboard/down`), in a private state dir.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLES = HERE / "networking"  # the project's Bookinfo routing files, in Istio's format
LOAD = ROOT / "tests" / "e2e" / "load_client.py"


TRACE_ALL = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 100}]   # the default is 1 %; a demo wants every trace
"""


def main() -> int:
    down = "--down" in sys.argv[1:]
    state = Path(tempfile.mkdtemp(prefix="mizzen-demo-")) / ".mizzen"
    base = [sys.executable, "-m", "mizzen.cli.main"]

    def run(*args: str, check: bool = True, quiet: bool = False, stdin: str | None = None
            ) -> subprocess.CompletedProcess:
        cmd = [*base, args[0], "--state-dir", str(state), *args[1:]]
        if not quiet:
            print(f"$ mizzen {' '.join(args)}", flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, input=stdin)
        if not quiet and p.stdout.strip():
            print(p.stdout.rstrip())
        if check and p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            raise SystemExit(f"mizzen {args[0]} failed")
        return p

    def traffic(title: str, url: str, n: int = 200, headers: dict | None = None) -> None:
        args = ["exec", "sleep", "--", "python3", str(LOAD), url, "--count", str(n)]
        for k, v in (headers or {}).items():
            args += ["-H", f"{k}: {v}"]
        r = json.loads(run(*args, quiet=True).stdout.strip().splitlines()[-1])
        where = ", ".join(f"{k} {100 * v / r['total']:.0f}%" for k, v in sorted(r["served_by"].items()))
        print(f"  {title}: {r['total']} requests, status {r['status']}, served by: {where}", flush=True)

    mode = [] if os.geteuid() == 0 else ["--mode", "loopback"]
    ok = False
    try:
        run("up", str(HERE / "mesh.yaml"), "--detach", *mode)
        run("status")
        page = run("exec", "sleep", "--", "curl", "-s", "http://productpage:9080/productpage", quiet=True)
        print("  productpage says:", page.stdout.strip()[:300])
        print("\n# no routing rules: reviews round-robins over v1, v2, v3")
        traffic("GET reviews", "http://reviews:9080/reviews/0")
        for title, files, kw in [
            ("all traffic to v1", ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"], {}),
            ("90/10 v1/v2", ["virtual-service-reviews-90-10.yaml"], {}),
            ("50/50 v1/v3", ["virtual-service-reviews-50-v3.yaml"], {}),
            ("jason → v2, others → v3", ["virtual-service-reviews-jason-v2-v3.yaml"], {"jason": True}),
        ]:
            print(f"\n# {title}")
            run("apply", *sum((["-f", str(SAMPLES / f)] for f in files), []))
            traffic("GET reviews", "http://reviews:9080/reviews/0", n=1000 if "/" in title else 200)
            if kw.get("jason"):
                traffic("GET reviews as jason", "http://reviews:9080/reviews/0", headers={"end-user": "jason"})
        print()
        run("proxy-status")
        print("\n# what the sidecars saw (golden metrics of the last minute, per service version)")
        run("stat", "service", "--by", "version")
        print("\n# every request traced from now on, 90/10 again, and light traffic for the console")
        run("apply", "-f", "-", stdin=TRACE_ALL)
        run("apply", "-f", str(SAMPLES / "virtual-service-reviews-90-10.yaml"))
        if not down:
            subprocess.Popen([*base, "exec", "--state-dir", str(state), "sleep", "--", "python3", str(LOAD),
                              "http://productpage:9080/productpage", "--rps", "5", "--seconds", "600"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        traffic("GET productpage", "http://productpage:9080/productpage", n=50)
        time.sleep(6)  # Envoy's Zipkin tracer ships spans every few seconds
        run("traces", "--limit", "3")
        ok = True
    finally:
        if down or not ok:
            run("down", check=False)
    if down:
        return 0
    url = run("dashboard", quiet=True).stdout.strip()
    exe = Path(sys.executable).with_name("mizzen")
    mz = str(exe) if exe.exists() else "mizzen"
    print(f"""
The mesh is still running, with light traffic for 10 minutes (productpage, 5 requests/s).
  console:  {url}
  CLI:      {mz} stat --state-dir {state}      (also: top productpage-v1, tap reviews-v1, traces)
  metrics:  {mz} prometheus-config --state-dir {state} -o prometheus.yml
Stop it with:
  {mz} down --state-dir {state}""", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
