"""The per-feature cost benchmark (bench/filtercost.py): every variant's proxy config passes Envoy's own
validation and differs from `bare` by exactly its feature; a short real run measures every variant."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from mizzen.bench import filtercost
from mizzen.envoybin import find_envoy


@pytest.mark.parametrize("variant", filtercost.VARIANTS)
def test_each_variant_validates_and_adds_only_its_feature(variant, tmp_path):
    cfg = filtercost.proxy_config(variant, 15001, 8080, 9411)
    path = tmp_path / "proxy.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path), "--concurrency", "1",
                        "--log-level", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f["name"] for f in hcm["http_filters"]]
    logs = [a["name"] for a in hcm.get("access_log", [])]
    want_tap = variant in ("tap", "default")
    assert filters == (["envoy.filters.http.tap"] if want_tap else []) + ["envoy.filters.http.router"]
    assert ("tracing" in hcm) == (variant in ("tracing", "default"))
    assert ("envoy.access_loggers.stats" in logs) == (variant in ("metrics", "default"))
    assert logs.count("envoy.access_loggers.http_grpc") == (1 if variant in ("metrics", "default", "stream") else 0)


def test_a_short_run_measures_every_variant():
    r = filtercost.run(seconds=1, rounds=1, variants=("bare", "default"), log=lambda *_: None)
    assert all(len(r["us"][v]) == 1 and r["us"][v][0] > 0 for v in ("bare", "default")), r
    assert "| default |" in filtercost.markdown(r)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind (callgrind) not installed")
def test_the_instructions_mode_counts_per_request_under_callgrind():
    r = filtercost.instructions(n=50, variants=("bare",), log=lambda *_: None)
    assert 10_000 < r["instructions"]["bare"] < 10_000_000, r
    assert "| bare |" in filtercost.instructions_markdown(r)
