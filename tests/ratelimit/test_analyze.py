"""`mizzen analyze` on RateLimits: a limit that can never match (MZ0301), a local limit meant to be service-wide
(MZ0302)."""

from mizzen.analyze import analyze
from mizzen.api import load_text

TEXT = """
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {selector: {app: api}, ports: [{port: 8080, name: http}, {port: 9000, name: tcp-db}]}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: api, labels: {app: api}}
spec: {replicas: 3, command: [x], ports: [{containerPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http: [{match: [{uri: {prefix: /v1}}], route: [{destination: {host: api}}]}]
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: routes}
spec:
  host: api
  limits: [{name: x, rate: 1, match: {uri: {prefix: /v2}}}, {name: y, rate: 1, match: {uri: {exact: /v1/z}}},
           {name: z, rate: 1, match: {port: 9000}}]
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: nohost}
spec: {host: nope, limits: [{name: x, rate: 1}]}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: tcp}
spec: {host: api, port: 9000, limits: [{name: x, rate: 1}]}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: per-replica}
spec: {workloadSelector: {labels: {app: api}}, limits: [{name: x, rate: 1}]}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: service-wide}
spec: {workloadSelector: {labels: {app: api}}, scope: service, limits: [{name: x, rate: 1}]}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: nobody}
spec: {workloadSelector: {labels: {app: apx}}, mode: global, limits: [{name: x, rate: 1}]}
"""


def test_limits_that_never_match_and_local_limits_meant_service_wide():
    got = {(m.code, m.resource, m.path) for m in analyze(load_text(TEXT).resources) if m.code.startswith("MZ03")}
    assert got == {
        ("MZ0301", "RateLimit default/routes", "spec.limits[0].match.uri"),
        ("MZ0301", "RateLimit default/routes", "spec.limits[2].match.port"),
        ("MZ0301", "RateLimit default/nohost", "spec.host"),
        ("MZ0301", "RateLimit default/tcp", "spec.port"),
        ("MZ0302", "RateLimit default/per-replica", "spec.limits[0]"),
        ("MZ0301", "RateLimit default/nobody", "spec.workloadSelector"),
    }
    msg = next(m for m in analyze(load_text(TEXT).resources) if m.code == "MZ0302")
    assert "each of 3 replicas" in msg.message and "scope: service" in msg.hint
