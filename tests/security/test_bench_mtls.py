"""The mTLS benchmark's pieces: hey's output parsed, and the bare Envoys' static mTLS config accepted by the
real Envoy (`--mode validate`) with real certificate files."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mizzen.bench.mtls import _certs, parse_hey, static_configs
from tests.envoy_bin import envoy_binary

HEY = """
Summary:
  Total:\t10.0034 secs
  Requests/sec:\t999.6598

Latency distribution:
  10% in 0.0006 secs
  50% in 0.0009 secs
  99% in 0.0031 secs

Status code distribution:
  [200]\t9990 responses
  [503]\t2 responses

Error distribution:
  [3]\tGet "http://echo:8080/": dial tcp: connection refused
"""


def test_parse_hey():
    r = parse_hey(HEY)
    assert (round(r.rps), r.p50_ms, r.p99_ms, r.ok, r.errors) == (1000, 0.9, 3.1, 9990, 5)


def test_static_mtls_envoys_are_valid(tmp_path: Path):
    files = _certs(tmp_path)
    for i, cfg in enumerate(static_configs(files, "10.244.0.9")):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(cfg))
        p = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
