"""`make demo`: bring up Bookinfo in a local mesh, send traffic under Bookinfo's routing rules (Istio format), print
where it went, tear everything down.

Runs the same commands a user would (`mizzen up/apply/exec/proxy-status/down`), in a private state dir.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLES = HERE / "networking"  # the project's Bookinfo routing files, in Istio's format
LOAD = ROOT / "tests" / "e2e" / "load_client.py"


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="mizzen-demo-")) / ".mizzen"
    base = [sys.executable, "-m", "mizzen.cli.main"]

    def run(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
        cmd = [*base, args[0], "--state-dir", str(state), *args[1:]]
        if not quiet:
            print(f"$ mizzen {' '.join(args)}", flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
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
    finally:
        run("down", check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
