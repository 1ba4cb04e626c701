"""The long chaos soak of `make bench` (`python -m mizzen.chaos.bench --minutes 30`): the soak of the e2e test
for `--minutes`, on a mesh of its own (a private state dir under the system temp dir, removed at the end),
with the control plane's and a sidecar's memory and open files sampled every minute.

The control-plane kills hit replica 1 only, so replica 0 lives the whole run and its samples show growth, or
none; the sidecar sampled is the load's (never killed). Never pass/fail: a markdown section is appended to
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .explain import APP_KILL, ENVOY_KILL
from .run import ScenarioRun
from .soak import Sampler, growth, soak_mesh, soak_scenario

ROOT = Path(__file__).resolve().parents[3]


def _cli(state: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mizzen.cli.main", *args[:1], "--state-dir", state, *args[1:]],
                          capture_output=True, text=True, timeout=timeout)


def run(minutes: float, rps: float = 200, kill_every: float = 5.0, seed: int = 30,
        sample_every: float = 60.0) -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="mizzen-bench-chaos-")
    os.chmod(home, 0o755)
    state = os.path.join(home, ".mizzen")
    mesh = os.path.join(home, "mesh.yaml")
    Path(mesh).write_text(soak_mesh(str(ROOT / "examples" / "bookinfo")))
    try:
        p = _cli(state, "up", mesh, "--detach", "--control-planes", "2")
        if p.returncode != 0:
            raise RuntimeError(f"mizzen up failed: {p.stdout}\n{p.stderr}")
        seconds = minutes * 60.0
        scenario = soak_scenario(seconds=seconds, rps=rps, kill_every=kill_every, seed=seed, cp_replica=1,
                                 rollout_at=seconds / 2)
        sampler = Sampler(state, "sleep-0", every=sample_every)
        sampler.start()
        try:
            res = ScenarioRun(scenario, state).run()
        finally:
            res_samples = sampler.stop()
        res["samples"] = res_samples
        res["minutes"] = minutes
        return res
    finally:
        _cli(state, "down", timeout=180)
        shutil.rmtree(home, ignore_errors=True)


def _cell(s: dict[str, Any] | None) -> str:
    return f"{s['rssMiB']:.1f} / {s['fds']}" if s else "-"


def markdown(res: dict[str, Any]) -> str:
    load = res.get("load") or {}
    lat = load.get("latencyMs") or {}
    ex = res.get("explained") or {}
    kills: dict[str, int] = {}
    for f in res.get("faults") or []:
        for t in f.get("targets") or []:
            kills[t.get("kind", "?")] = kills.get(t.get("kind", "?"), 0) + 1
    cats = ex.get("categories") or {}
    lines = [
        f"{res.get('minutes'):g} minutes at {load.get('rps', 0):g} rps (`python -m mizzen.chaos.bench --minutes "
        f"{res.get('minutes'):g}`), seed {res.get('seed')}: kills every ~5 s ("
        + ", ".join(f"{v} {k}" for k, v in sorted(kills.items())) + "), one rollout restart of web-v1 half-way.",
        "",
        f"Requests: {load.get('total', 0)} ({load.get('ok', 0)} ok, {load.get('failed', 0)} failed: "
        f"{cats.get(APP_KILL, 0)} in flight at a killed app, {cats.get(ENVOY_KILL, 0)} in flight at a killed Envoy, "
        f"{len(ex.get('unexplained') or [])} unexplained); latency p50 {lat.get('p50', 0)} ms, p99 {lat.get('p99', 0)} "
        f"ms, max {lat.get('max', 0)} ms. Verdict: {'PASS' if res.get('pass') else 'FAIL'}"
        + (f" ({res['error']})" if res.get("error") else "") + ".",
        "",
        "RSS MiB / open fds, sampled each minute (controlplane: replica 0, never killed; controlplane-1 is killed "
        "at random and restarted; the sidecar is the load pod's):",
        "",
        "| minute | controlplane | controlplane-1 | sidecar Envoy | sidecar agent |",
        "|---|---|---|---|---|",
    ]
    for s in res.get("samples") or []:
        lines.append(f"| {s['t'] / 60:.1f} | {_cell(s.get('controlplane'))} | {_cell(s.get('controlplane-1'))} | "
                     f"{_cell(s.get('sidecar-envoy'))} | {_cell(s.get('sidecar-agent'))} |")
    lines.append("")
    parts = []
    for key, label in (("controlplane", "control plane (replica 0)"), ("sidecar-envoy", "sidecar Envoy"),
                       ("sidecar-agent", "sidecar agent")):
        for field, unit in (("rssMiB", "MiB"), ("fds", "fds")):
            g = growth(res.get("samples") or [], key, field)
            if g:
                parts.append(f"{label} {g[0]:g} → {g[1]:g} {unit}")
    lines.append("First → last sample of the same process: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rps", type=float, default=200.0)
    ap.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--output", default="docs/benchmarks.md")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        md = "skipped: needs root (network namespaces)\n"
    else:
        md = markdown(run(a.minutes, a.rps, sample_every=a.sample_every))
    print(md)
    out = Path(a.output)
    with out.open("a") as f:
        f.write(f"\n## {dt.datetime.now().isoformat(timespec='seconds')} — {platform.node()}, {os.cpu_count()} "
                f"cores, Python {platform.python_version()}\n\n### Chaos soak\n\n{md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
