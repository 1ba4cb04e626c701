"""Material for the property-based (hypothesis) tests of hostile input: valid seed documents of every kind,
and structure-aware mutations of them (hostile leaf values, removed and unknown keys, type swaps, deep
nesting), serialized as YAML or JSON, plus raw-text mutations and batches."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

EXTRA_SEEDS = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["ns/*.example.com"]
    tls: {mode: SIMPLE, credentialName: cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:9080
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    hosts: ["./*", "istio-system/*"]
  - hosts: ["*/*.svc.cluster.local"]
  outboundTrafficPolicy: {mode: ALLOW_ANY}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tel}
spec:
  selector: {matchLabels: {app: reviews}}
  accessLogging: [{providers: [{name: envoy}], filter: {expression: "response.code >= 400"}}]
  tracing: [{randomSamplingPercentage: 10, customTags: {env: {literal: {value: prod}}}}]
  metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, tagOverrides: {a: {operation: REMOVE}}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
  endpoints: [{address: api.example.com, weight: 3, locality: us/east}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static}
spec:
  hosts: [db.internal]
  addresses: [10.10.0.5]
  ports: [{number: 5432, name: tcp-db, protocol: TCP, targetPort: 5433}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 10.0.0.9, labels: {version: v1}}, {address: 10.0.0.10, weight: 2}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr-all}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: s, ttl: 10s}}, warmup: {duration: 10s}}
    connectionPool: {tcp: {maxConnections: 100, connectTimeout: 1m30s, tcpKeepalive: {time: 1h, probes: 3}},
                     http: {http2KeepAlive: {interval: 10s, timeout: 3s}, idleTimeout: 1h, maxRetries: 3}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    retryBudget: {percent: 25, minRetryConcurrency: 5}
  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs-all}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}, headers: {x-user: {regex: "^[a-z]+$"}}, queryParams: {q: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v1}, weight: 70, headers: {request: {set: {x-a: b}}}},
            {destination: {host: reviews}, weight: 30}]
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure", backoff: 25ms}
    fault: {delay: {fixedDelay: 10ms, percentage: {value: 1}}}
    mirror: {host: reviews}
    mirrorPercentage: {value: 5}
    corsPolicy: {allowOrigins: [{exact: "*"}], allowMethods: [GET], maxAge: 24h}
    headers: {response: {add: {x-b: c}}}
  - redirect: {uri: /new, redirectCode: 302}
    match: [{uri: {exact: /old}}]
  - directResponse: {status: 503, body: {string: down}}
---
apiVersion: mizzen.dev/v1
kind: Router
metadata: {name: web}
spec:
  port: 9090
  subsets: [{branch: master, versions: {v1: 90, v2: 10}}, {branch: feature}]
---
apiVersion: mizzen.dev/v1
kind: EnvoyPatch
metadata: {name: patch}
spec:
  workloadSelector: {labels: {app: productpage}}
  patches:
  - applyTo: CLUSTER
    name: "outbound|9080||reviews.default.svc.cluster.local"
    operation: MERGE
    value: {connect_timeout: 0.25s}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: w, labels: {app: reviews, version: v1}}
spec: {replicas: 2, command: [python3, app.py], ports: [{containerPort: 9080}], env: {A: b}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {mizzen.dev/inject: "false"}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1}
spec: {address: 10.250.0.9, ports: {http: 9080}, labels: {app: reviews, version: vm}, locality: r1/z1,
       serviceAccount: reviews, weight: 2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-sock}
spec: {address: "unix:///run/vm.sock", labels: {app: reviews, version: sock}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-named}
spec: {address: vm-2.example.com, network: east, labels: {app: reviews}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: td}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {trustDomains: [cluster.local, "corp-*"], notTrustDomains: ["a*b"]}}]
    when: [{key: "request.headers[:method]", values: [GET]}, {key: source.trustDomain, values: ["*"]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: a
    jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
    spaceDelimitedClaims: [roles]
    presence: OPTIONAL
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: vms}
spec:
  metadata: {labels: {app: reviews}}
  template: {ports: {http: 9080}, serviceAccount: reviews}
  probe: {periodSeconds: 5, httpGet: {path: /ready, port: 9080}}
---
apiVersion: mizzen.dev/v1
kind: Host
metadata: {name: node-a}
spec: {etcd: true}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND, cluster: {service: reviews.default.svc.cluster.local, portNumber: 9080}}
    patch: {operation: MERGE, value: {connect_timeout: 0.5s}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager,
            subFilter: {name: envoy.filters.http.router}}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.buffer
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
          max_request_bytes: 65536
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: pc}
spec: {selector: {matchLabels: {app: reviews}}, concurrency: 2, environmentVariables: {A: b}}
"""


def seed_documents() -> list[dict]:
    docs: list[dict] = []
    for p in sorted(GOLDEN.glob("*/in.yaml")):
        if "${SHARED}" in p.read_text():
            continue  # built on third-party samples; the other cases are self-contained
        text = p.read_text()
        docs += [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    docs += [d for d in yaml.safe_load_all(EXTRA_SEEDS) if isinstance(d, dict)]
    return docs


SEEDS = seed_documents()

HOSTILE = [
    -1, 0, -50, 2**31, 2**32, 2**63 - 1, -(2**63), 70000, 1.5, 1e308, True, False, None, "", " ", "a,b",
    "999.1.1.1", "10.0.0.0/-1", "::1", "x\n", "a\x00b", "\r\nX-Injected: 1", "x" * 5000, "*", "-", "*.", ".",
    "unix://", "unix://rel", "unix:///a.sock", "a++", "(a)\\1", "a{100000}", "(?=x)", "999999999999h", "1.5",
    "0s", "1m30s", "-1s", "%", "%FOO", "UPPER_name", "name.with.dots", "ns/host", "~/x", "../x", "é",
    [], {}, [1, 2], {"a": "b"}, [{"a": 1}], "🙂", "\u202e", "100%%", "@request.auth.claims.x",
]


PLAUSIBLE = {
    int: [1, 2, 8080, 65535, 100, 0, 3, 50],
    float: [0.5, 100.0, 0.0001, 99.9],
    bool: [True, False],
    str: ["v2", "a.example.com", "*.example.com", "10s", "1ms", "1h", "/", "/api", "x-h", "reviews", "ns/x.y",
          "ISTIO_MUTUAL", "HTTP", "TCP", "GRPC", "STATIC", "DNS", "ROUND_ROBIN", "UPGRADE", "10.0.0.0/8", "1.2.3.4"],
}


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _get_parent(doc: Any, path: tuple) -> tuple[Any, Any]:
    node = doc
    for p in path[:-1]:
        node = node[p]
    return node, path[-1]


def _deep(depth: int, leaf: Any) -> Any:
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


@st.composite
def mutated_document(draw) -> dict:
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        paths = [p for p in _paths(doc) if p and len(p) < 12]
        if draw(st.integers(min_value=0, max_value=9)):  # mostly mutate the spec, sometimes the envelope
            paths = [p for p in paths if p[0] == "spec" and len(p) > 1] or paths
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _get_parent(doc, path)
        op = draw(st.sampled_from(["hostile", "hostile", "plausible", "plausible", "delete", "unknown", "swap",
                                   "deep", "dup"]))
        if op == "plausible" and not isinstance(parent[key], (dict, list)):
            parent[key] = draw(st.sampled_from(PLAUSIBLE.get(type(parent[key]), PLAUSIBLE[str])))
        elif op == "hostile":
            parent[key] = copy.deepcopy(draw(st.sampled_from(HOSTILE)))
        elif op == "delete":
            del parent[key]
        elif op == "unknown" and isinstance(parent[key], dict):
            parent[key][draw(st.sampled_from(["bogus", "x-y", "spec", "0"]))] = copy.deepcopy(
                draw(st.sampled_from(HOSTILE)))
        elif op == "swap":
            v = parent[key]
            parent[key] = [v] if not isinstance(v, list) else {"items": v}
        elif op == "deep":
            parent[key] = _deep(draw(st.integers(min_value=20, max_value=250)),
                                copy.deepcopy(draw(st.sampled_from(HOSTILE))))
        elif op == "dup" and isinstance(parent[key], list) and parent[key]:
            parent[key] = parent[key] + copy.deepcopy(parent[key][:1])
    return doc


def serialize(docs: list, as_json: bool) -> str:
    if as_json:
        return "\n".join(json.dumps(d) for d in docs) if len(docs) == 1 else json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": docs})
    return yaml.safe_dump_all(docs, sort_keys=False)


@st.composite
def hostile_input(draw) -> str:
    """One file's text: mutated documents as YAML or JSON, sometimes with raw-text damage."""
    docs = draw(st.lists(mutated_document(), min_size=1, max_size=2,
                         unique_by=lambda d: repr((d.get("kind"), (d.get("metadata") or {}).get("name") if isinstance(d.get("metadata"), dict) else None))))
    text = serialize(docs, draw(st.booleans()))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        pos = draw(st.integers(min_value=0, max_value=len(text)))
        junk = draw(st.sampled_from(["\n  x: [", "&a [1]\nb: *a", "\t", "- !!binary gAA=", "{", ": :", "\n---\n",
                                     "\n<<: {a: 1}", "\u0000", "\ufeff", "a: 1\na: 2\n", "*nope"]))
        text = text[:pos] + junk + text[pos:]
    return text


def valid_input() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(range(len(SEEDS))), min_size=1, max_size=3, unique=True).map(
        lambda ix: serialize([SEEDS[i] for i in ix], False))
