"""Istio's validation rules, one case per rule, written from what each rule means: a document Istio rejects
is rejected with the field named, and the nearest valid document is accepted (so each case tests the rule,
not some other mistake in the document)."""
from __future__ import annotations

import textwrap

import pytest

from mizzen.api import InvalidConfig, load_text

GROUP = {"VirtualService": "networking.istio.io/v1", "DestinationRule": "networking.istio.io/v1",
         "ServiceEntry": "networking.istio.io/v1", "Sidecar": "networking.istio.io/v1",
         "Gateway": "networking.istio.io/v1", "Telemetry": "telemetry.istio.io/v1"}


def doc(kind: str, spec: str, name: str = "x", namespace: str = "ns") -> str:
    return (f"apiVersion: {GROUP[kind]}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            "spec:\n" + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except InvalidConfig as e:
        return [f"{i.path}: {i.message}" for i in e.issues]
    return []


ROUTE = "http: [{route: [{destination: {host: a}}]}]"

# (kind, bad spec, good spec, expected "path: message" fragment)
CASES = [
    # ---------------------------------------------------------------- VirtualService
    ("VirtualService", "hosts: [a]", f"hosts: [a]\n{ROUTE}", "spec: http, tcp or tls must be provided"),
    ("VirtualService", f"hosts: ['*']\n{ROUTE}", f"hosts: ['*']\ngateways: [gw]\n{ROUTE}",
     "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh"),
    ("VirtualService", f"hosts: [a.example.com, '*.example.com']\n{ROUTE}",
     f"hosts: [a.example.com, '*.example.org']\n{ROUTE}", "duplicate hosts in virtual service"),
    ("VirtualService", f"hosts: ['a,b']\n{ROUTE}", f"hosts: [a.b]\n{ROUTE}", "spec.hosts[0]: domain name 'a,b' invalid"),
    ("VirtualService", f"hosts: ['a.*.com']\n{ROUTE}", f"hosts: ['*.a.com']\n{ROUTE}", "spec.hosts[0]"),
    ("VirtualService", f"hosts: [a]\ngateways: [bad/Na_me]\n{ROUTE}", f"hosts: [a]\ngateways: [ns/gw]\n{ROUTE}",
     "spec.gateways[0]: invalid value for gateway name"),
    ("VirtualService", "http: [{route: [{destination: {host: a}}]}]\ngateways: [gw]",
     "http: [{route: [{destination: {host: a}}]}]", "spec.gateways: a delegate VirtualService"),
    ("VirtualService", f"hosts: [a]\n{ROUTE}\nexportTo: ['*', ns2]", f"hosts: [a]\n{ROUTE}\nexportTo: ['*']",
     "spec.exportTo: cannot have both public (*) and non-public"),
    ("VirtualService", f"hosts: [a]\n{ROUTE}\nexportTo: [ns, .]", f"hosts: [a]\n{ROUTE}\nexportTo: [ns2, .]",
     "spec.exportTo[1]: duplicate entries in exportTo: . and current namespace ns"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: '*'}}]}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: '*.a'}}]}]", "destination.host: invalid destination host *"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a, subset: v_1}}]}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a, subset: v-1}}]}]", "destination.subset: subset name"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a, port: {number: 0}}}]}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a, port: {number: 1}}}]}]", "destination.port.number"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: -1}]}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: 1}]}]", "route[0].weight"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}, {destination: {host: b}}]}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: 3}, {destination: {host: b}}]}]",
     "spec.http[0].route: total destination weight = 0"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{headers: {'x y': {exact: b}}}], route: [{destination: {host: a}}]}]",
     "hosts: [a]\nhttp: [{match: [{headers: {'x-y': {exact: b}}}], route: [{destination: {host: a}}]}]",
     "is not a valid header name"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{headers: {x: {prefix: ''}}}], route: [{destination: {host: a}}]}]",
     "hosts: [a]\nhttp: [{match: [{uri: {prefix: ''}}], route: [{destination: {host: a}}]}]",
     "prefix string match should not be empty"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{uri: {regex: 'a++'}}], route: [{destination: {host: a}}]}]",
     "hosts: [a]\nhttp: [{match: [{uri: {regex: 'a+'}}], route: [{destination: {host: a}}]}]",
     "uri.regex: invalid regex 'a++': bad repetition operator"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{uri: {regex: 'a{100000}'}}], route: [{destination: {host: a}}]}]",
     "hosts: [a]\nhttp: [{match: [{uri: {regex: 'a{1000}'}}], route: [{destination: {host: a}}]}]",
     "invalid repetition size"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{uri: {regex: '(a)\\1'}}], route: [{destination: {host: a}}]}]",
     "hosts: [a]\nhttp: [{match: [{uri: {regex: '(a)\\d'}}], route: [{destination: {host: a}}]}]",
     "invalid escape sequence"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{headers: {'@request.auth.claims.group': {exact: g}}}], "
                       "route: [{destination: {host: a}}]}]",
     "hosts: [a]\ngateways: [gw]\nhttp: [{match: [{headers: {'@request.auth.claims.group': {exact: g}}}], "
     "route: [{destination: {host: a}}]}]", "JWT claim based routing"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {set: {x: \"a\\r\\nb\"}}}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {set: {x: ab}}}}]",
     "control character"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {set: {x: '100%'}}}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {set: {x: '100%%'}}}}]",
     "un-escaped %"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {response: {set: {':status': '1'}}}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {response: {set: {status: '1'}}}}]",
     "header cannot have ':' prefix"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {remove: [host]}}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {remove: [x-host]}}}]",
     "cannot set Host header"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 0, perTryTimeout: 1s}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 1, perTryTimeout: 1s}}]",
     "retry policy configured when attempts are set to 0"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 1, retryOn: '5xx,999'}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 1, retryOn: '5xx,503'}}]",
     "retryOn status code 999"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 1.5ms}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 2ms}]", "timeout: duration '1.5ms' must be a multiple of 1ms"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 0s}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 1ms}]", "must be at least 1ms"),
    ("VirtualService", "hosts: [a]\nhttp: [{directResponse: {status: 200}, fault: {abort: {httpStatus: 500}}}]",
     "hosts: [a]\nhttp: [{directResponse: {status: 200}}]", "both fault and directResponse"),
    ("VirtualService", "hosts: [a]\nhttp: [{redirect: {uri: /b}, rewrite: {uri: /c}}]",
     "hosts: [a]\nhttp: [{redirect: {uri: /b}}]", "both rewrite and redirect"),
    ("VirtualService", "hosts: [a]\nhttp: [{redirect: {uri: /b, prefixRewrite: /c}}]",
     "hosts: [a]\nhttp: [{redirect: {prefixRewrite: /c}}]", "only specify one of uri or prefixRewrite"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{uri: {exact: /x}}], redirect: {prefixRewrite: /c}}]",
     "hosts: [a]\nhttp: [{match: [{uri: {prefix: /x}}], redirect: {prefixRewrite: /c}}]",
     "requires all URI matches to use prefix"),
    ("VirtualService", "hosts: [a]\nhttp: [{redirect: {uri: /b, scheme: ftp}}]",
     "hosts: [a]\nhttp: [{redirect: {uri: /b, scheme: https}}]", "invalid redirect scheme"),
    ("VirtualService", "hosts: [a]\nhttp: [{redirect: {uri: /b, port: 70000}}]",
     "hosts: [a]\nhttp: [{redirect: {uri: /b, port: 7000}}]", "redirect.port"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {authority: b}}]",
     "rewrite must specify at least one of"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 503, "
                       "percentage: {value: 0.00001}}}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 503, "
     "percentage: {value: 0.0001}}}}]", "neither 0.0 nor in range"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, "
                       "mirrorPercentage: {value: 101}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrorPercentage: {value: 100}}]",
     "mirrorPercentage.value"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {maxAge: 1500ms}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {maxAge: 2s}}]", "seconds precision"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowMethods: [get]}}]",
     "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowMethods: ['*']}}]",
     "not a supported HTTP method"),
    ("VirtualService", "hosts: [a.com]\ntls: [{match: [{sniHosts: [b.com]}], route: [{destination: {host: a.com}}]}]",
     "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}], route: [{destination: {host: a.com}}]}]",
     "sniHosts[0]: SNI host 'b.com' is not a compatible subset"),
    ("VirtualService", "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}]}]",
     "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}], route: [{destination: {host: a.com}}]}]",
     "spec.tls[0].route: TLS route is required"),
    ("VirtualService", "hosts: [a]\ntcp: [{match: [{destinationSubnets: [999.1.1.1]}], route: [{destination: {host: a}}]}]",
     "hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.1.1.1]}], route: [{destination: {host: a}}]}]",
     "destinationSubnets[0]: '999.1.1.1' is not a valid IP"),
    ("VirtualService", "hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/-1]}], route: [{destination: {host: a}}]}]",
     "hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/8]}], route: [{destination: {host: a}}]}]",
     "is not a valid CIDR block"),
    ("VirtualService", "hosts: [a]\ntcp: [{match: [{port: 70000}], route: [{destination: {host: a}}]}]",
     "hosts: [a]\ntcp: [{match: [{port: 7000}], route: [{destination: {host: a}}]}]", "tcp[0].match[0].port"),
    ("VirtualService", "hosts: [a]\ntcp: [{route: [{destination: {host: a}}, {destination: {host: b}}]}]",
     "hosts: [a]\ntcp: [{route: [{destination: {host: a}, weight: 70}, {destination: {host: b}, weight: 30}]}]",
     "total destination weight = 0"),
    # ---------------------------------------------------------------- DestinationRule
    ("DestinationRule", "host: 'a b'", "host: a.b", "spec.host: domain name 'a b' invalid"),
    ("DestinationRule", "host: a\ntrafficPolicy: {}", "host: a\ntrafficPolicy: {tls: {mode: SIMPLE}}",
     "traffic policy must have at least one field"),
    ("DestinationRule", "host: a\nsubsets: [{name: v1}, {name: v1}]", "host: a\nsubsets: [{name: v1}, {name: v2}]",
     "spec.subsets[1].name: duplicate subset name"),
    ("DestinationRule", "host: a\nsubsets: [{name: v1, labels: {'a b': c}}]",
     "host: a\nsubsets: [{name: v1, labels: {a: c}}]", "invalid label key"),
    ("DestinationRule", "host: a\ntrafficPolicy: {connectionPool: {}}",
     "host: a\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}", "connection pool must have at least"),
    ("DestinationRule", "host: a\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: 4294967296}}}",
     "host: a\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: 2147483647}}}", "maxConnections"),
    ("DestinationRule", "host: a\ntrafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}",
     "host: a\ntrafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}", "useClientProtocol must not be true"),
    ("DestinationRule", "host: a\ntrafficPolicy: {connectionPool: {http: {http2KeepAlive: {interval: 1s}}}}",
     "host: a\ntrafficPolicy: {connectionPool: {http: {http2KeepAlive: {interval: 1s, timeout: 1s}}}}",
     "http2 keepalive timeout is required"),
    ("DestinationRule", "host: a\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 1}}",
     "host: a\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 1, splitExternalLocalOriginErrors: true}}",
     "needs splitExternalLocalOriginErrors"),
    ("DestinationRule", "host: a\ntrafficPolicy: {outlierDetection: {outlierDetectionHttpErrorCodes: [99]}}",
     "host: a\ntrafficPolicy: {outlierDetection: {outlierDetectionHttpErrorCodes: [503]}}",
     "outlierDetectionHttpErrorCodes[0]"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {maglev: {tableSize: 65536}, useSourceIp: true}}}",
     "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {maglev: {tableSize: 65537}, useSourceIp: true}}}",
     "must be a prime"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, attributes: "
                        "[{name: s}, {name: s}]}}}}",
     "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, attributes: [{name: s}]}}}}",
     "duplicate cookie attribute name"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {warmup: {duration: 1s, aggression: 0}}}",
     "host: a\ntrafficPolicy: {loadBalancer: {warmup: {duration: 1s, aggression: 1.5}}}", "aggression"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: 'a/*', "
                        "to: {'a/*': 50, 'b/*': 40}}]}}}",
     "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: 'a/*', "
     "to: {'a/*': 60, 'b/*': 40}}]}}}", "total locality weight 90 != 100"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}], "
                        "failoverPriority: [topology.kubernetes.io/region]}}}",
     "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}], "
     "failoverPriority: [example.com/rack]}}}", "can not simultaneously set 'failover' and topology label"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: 'a*', to: b}]}}}",
     "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}]}}}", "wildcard"),
    ("DestinationRule", "host: a\ntrafficPolicy: {tls: {mode: MUTUAL}}",
     "host: a\ntrafficPolicy: {tls: {mode: MUTUAL, credentialName: c}}", "client certificate required"),
    ("DestinationRule", "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: c}}",
     "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}", "insecureSkipVerify is set true"),
    ("DestinationRule", "host: a\ntrafficPolicy: {tunnel: {targetHost: a.b, targetPort: 0}}",
     "host: a\ntrafficPolicy: {tunnel: {targetHost: a.b, targetPort: 8080}}", "tunnel target port"),
    ("DestinationRule", "host: a\ntrafficPolicy: {tunnel: {targetHost: a.b, targetPort: 1}, proxyProtocol: {version: V1}}",
     "host: a\ntrafficPolicy: {proxyProtocol: {version: V1}}", "tunnel and proxyProtocol must not be set together"),
    ("DestinationRule", "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}}]}",
     "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}, tls: {mode: SIMPLE}}]}",
     "port traffic policy must have at least one field"),
    ("DestinationRule", "host: a\nworkloadSelector: {matchLabels: {app: 'a*'}}",
     "host: a\nworkloadSelector: {matchLabels: {app: a}}", "wildcard is not supported in selector"),
    ("DestinationRule", "host: a\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: ['*']",
     "host: a\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [.]",
     "workload selector cannot have exportTo beyond current namespace"),
    # ---------------------------------------------------------------- ServiceEntry
    ("ServiceEntry", "hosts: ['*']", "hosts: ['*.a.com']", "spec.hosts[0]: invalid host *"),
    ("ServiceEntry", "hosts: [a.com]\nports: [{number: 80, name: http}, {number: 81, name: http}]",
     "hosts: [a.com]\nports: [{number: 80, name: http}, {number: 81, name: http2}]",
     "spec.ports[1].name: service entry port name 'http' already defined"),
    ("ServiceEntry", "hosts: [a.com]\nports: [{number: 80, name: a}, {number: 80, name: b}]",
     "hosts: [a.com]\nports: [{number: 80, name: a}, {number: 81, name: b}]", "port 80 already defined"),
    ("ServiceEntry", "hosts: [a.com]\nports: [{number: 0, name: a}]", "hosts: [a.com]\nports: [{number: 1, name: a}]",
     "spec.ports[0].number"),
    ("ServiceEntry", "hosts: [a.com]\nports: [{number: 70000, name: a}]",
     "hosts: [a.com]\nports: [{number: 7000, name: a}]", "spec.ports[0].number"),
    ("ServiceEntry", "hosts: [a.com]\nports: [{number: 80, name: a, protocol: QUIC}]",
     "hosts: [a.com]\nports: [{number: 80, name: a, protocol: tcp}]", "unsupported protocol"),
    ("ServiceEntry", "hosts: [a.com]\nports: [{number: 80}]", "hosts: [a.com]\nports: [{number: 80, name: a}]",
     "spec.ports[0].name: Field required"),
    ("ServiceEntry", "hosts: [a.com]\nworkloadSelector: {labels: {app: a}}\nendpoints: [{address: 1.1.1.1}]\n"
                     "resolution: STATIC",
     "hosts: [a.com]\nendpoints: [{address: 1.1.1.1}]\nresolution: STATIC", "only one of workloadSelector or endpoints"),
    ("ServiceEntry", "hosts: [a.com]\naddresses: [10.0.0.0/8]\nresolution: DNS",
     "hosts: [a.com]\naddresses: [10.0.0.0/8]\nresolution: STATIC", "CIDR addresses are allowed only for NONE/STATIC"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: NONE\nendpoints: [{address: 1.1.1.1}]",
     "hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1}]", "no endpoints should be provided"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.com}, {address: b.com}]",
     "hosts: [a.com]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.com}]", "only be 0 or 1 endpoint"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: a.com}]",
     "hosts: [a.com]\nresolution: DNS\nendpoints: [{address: a.com}]", "endpoints[0].address: endpoint address 'a.com' is not a valid IP"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: STATIC\naddresses: ['999.1.1.1']\nendpoints: [{address: 1.1.1.1}]",
     "hosts: [a.com]\nresolution: STATIC\naddresses: ['99.1.1.1']\nendpoints: [{address: 1.1.1.1}]",
     "spec.addresses[0]: '999.1.1.1' is not a valid IP"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
                     "endpoints: [{address: 1.1.1.1, ports: {grpc: 90}}]",
     "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
     "endpoints: [{address: 1.1.1.1, ports: {http: 90}}]", "endpoint port 'grpc' is not defined"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, weight: -50}]",
     "hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, weight: 50}]", "endpoints[0].weight"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
                     "endpoints: [{address: 'unix://relative.sock'}]",
     "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
     "endpoints: [{address: 'unix:///var/run/a.sock'}]", "is not an absolute path"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
                     "endpoints: [{address: 'unix:///a.sock', ports: {http: 80}}]",
     "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\nendpoints: [{address: 'unix:///a.sock'}]",
     "must not include ports"),
    ("ServiceEntry", "hosts: [a.com, b.com]\nresolution: DNS\nports: [{number: 5432, name: tcp, protocol: TCP}]",
     "hosts: [a.com, b.com]\nresolution: DNS\nports: [{number: 443, name: tls, protocol: TLS}]",
     "multiple hosts provided with non-HTTP, non-TLS ports"),
    ("ServiceEntry", "hosts: [a.com]\nresolution: DYNAMIC_DNS\nports: [{number: 80, name: http, protocol: HTTP}]",
     "hosts: ['*.a.com']\nresolution: DYNAMIC_DNS\nports: [{number: 80, name: http, protocol: HTTP}]",
     "host must be wildcarded for resolution mode DYNAMIC_DNS"),
    ("ServiceEntry", "hosts: [a.com]\nworkloadSelector: {labels: [app]}", "hosts: [a.com]\nworkloadSelector: {labels: {app: a}}",
     "spec.workloadSelector.labels"),
    ("ServiceEntry", "hosts: [a.com]\nexportTo: ['~', '*']", "hosts: [a.com]\nexportTo: ['~']", "spec.exportTo"),
    # ---------------------------------------------------------------- Sidecar
    ("Sidecar", "workloadSelector: {labels: {app: a}}", "egress: [{hosts: ['*/*']}]", "empty configuration"),
    ("Sidecar", "egress: [{hosts: [a.b.c]}]", "egress: [{hosts: [ns/a.b.c]}]", "must be of form namespace/dnsName"),
    ("Sidecar", "egress: [{hosts: ['./a*.b.c']}]", "egress: [{hosts: ['./*.b.c']}]", "label 'a*' invalid"),
    ("Sidecar", "egress: [{hosts: ['Bad_NS/a.b']}]", "egress: [{hosts: ['~bad/a.b']}]", "invalid namespace value"),
    ("Sidecar", "egress: [{hosts: ['*/*']}, {port: {number: 80}, hosts: ['*/*']}]",
     "egress: [{port: {number: 80}, hosts: ['*/*']}, {hosts: ['*/*']}]", "empty port should be the last"),
    ("Sidecar", "egress: [{port: {number: 80}, hosts: ['*/*']}, {port: {number: 80}, hosts: ['*/*']}]",
     "egress: [{port: {number: 80}, hosts: ['*/*']}, {port: {number: 81}, hosts: ['*/*']}]",
     "ports on IP bound listeners must be unique"),
    ("Sidecar", "egress: [{port: {number: 0}, hosts: ['*/*']}]",
     "egress: [{port: {number: 0}, bind: 'unix:///a.sock', hosts: ['*/*']}]", "must have a unix domain socket bind"),
    ("Sidecar", "egress: [{port: {number: 80, targetPort: 8080}, hosts: ['*/*']}]",
     "egress: [{port: {number: 80}, hosts: ['*/*']}]", "targetPort has no impact"),
    ("Sidecar", "ingress: [{port: {number: 80, protocol: HTTP, name: http}, defaultEndpoint: '10.0.0.1:80'}]",
     "ingress: [{port: {number: 80, protocol: HTTP, name: http}, defaultEndpoint: '127.0.0.1:80'}]",
     "defaultEndpoint must be of form"),
    ("Sidecar", "ingress: [{port: {number: 80, protocol: HTTP, name: http}, tls: {mode: SIMPLE, "
                "serverCertificate: a, privateKey: b}}]",
     "ingress: [{port: {number: 80, protocol: HTTPS, name: https}, tls: {mode: SIMPLE, "
     "serverCertificate: a, privateKey: b}}]", "TLS settings for non HTTPS/TLS ports"),
    ("Sidecar", "outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: a.b, port: {number: 80}}}",
     "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: a.b, port: {number: 80}}}",
     "egressProxy must be set only with ALLOW_ANY"),
    # ---------------------------------------------------------------- Gateway
    ("Gateway", "selector: {istio: ingress}", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]",
     "spec.servers: Field required"),
    ("Gateway", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, "
                "{port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}]",
     "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, "
     "{port: {number: 81, name: http2, protocol: HTTP}, hosts: ['*']}]", "port names in servers must be unique"),
    ("Gateway", "servers: [{port: {number: 80, name: http, protocol: FTP}, hosts: ['*']}]",
     "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]", "invalid protocol"),
    ("Gateway", "servers: [{port: {number: 0, name: http, protocol: HTTP}, hosts: ['*']}]",
     "servers: [{port: {number: 0, name: http, protocol: HTTP}, bind: 'unix:///g.sock', hosts: ['*']}]",
     "servers[0].port.number"),
    ("Gateway", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]",
     "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: PASSTHROUGH}}]",
     "server must have TLS settings for HTTPS/TLS protocols"),
    ("Gateway", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE}}]",
     "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, "
     "credentialName: c}}]", "SIMPLE TLS requires a server certificate"),
    ("Gateway", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, "
                "credentialName: c, serverCertificate: a, privateKey: b}}]",
     "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, "
     "credentialName: c}}]", "only one of credentialName"),
    ("Gateway", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, "
                "credentialName: c}}]",
     "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL}}]",
     "ISTIO_MUTUAL TLS cannot have"),
    ("Gateway", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {mode: SIMPLE, "
                "credentialName: c}}]",
     "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {httpsRedirect: true}}]",
     "TLS settings for plain text HTTP ports"),
    ("Gateway", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['ns/a*.b.c']}]",
     "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['ns/*.b.c']}]", "label 'a*' invalid"),
    ("Gateway", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], bind: 'not-ip'}]",
     "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], bind: 10.0.0.1}]", "not a valid IP"),
    # ---------------------------------------------------------------- Telemetry
    ("Telemetry", "metrics: [{providers: [{name: ''}]}]", "metrics: [{providers: [{name: prometheus}]}]",
     "providers[0].name"),
    ("Telemetry", "metrics: [{overrides: [{match: {customMetric: ''}}]}]",
     "metrics: [{overrides: [{match: {customMetric: my_metric}}]}]", "customMetric"),
    ("Telemetry", "metrics: [{overrides: [{tagOverrides: {foo: {operation: UPSERT}}}]}]",
     "metrics: [{overrides: [{tagOverrides: {foo: {operation: UPSERT, value: bar}}}]}]",
     "value must be set when operation is UPSERT"),
    ("Telemetry", "metrics: [{overrides: [{tagOverrides: {foo: {operation: REMOVE, value: oops}}}]}]",
     "metrics: [{overrides: [{tagOverrides: {foo: {operation: REMOVE}}}]}]", "value must not be set when operation is REMOVE"),
    ("Telemetry", "tracing: [{randomSamplingPercentage: 101}]", "tracing: [{randomSamplingPercentage: 100}]",
     "randomSamplingPercentage"),
    ("Telemetry", "selector: {matchLabels: {app: a}}\ntargetRef: {kind: Service, name: a}",
     "targetRef: {kind: Service, name: a}", "only one of targetRefs or selector"),
    ("Telemetry", "targetRef: {kind: Pod, name: a}", "targetRef: {kind: Service, name: a}", "targetRef must be to"),
    ("Telemetry", "targetRef: {kind: Service, name: a, namespace: b}", "targetRef: {kind: Service, name: a}",
     "cross namespace referencing"),
    ("Telemetry", "accessLogging: [{filter: {expression: 'response.code >= 400 &&'}, providers: [{name: envoy}]}]"
                  .replace("&&'", "(400'"),
     "accessLogging: [{filter: {expression: 'response.code >= 400'}, providers: [{name: envoy}]}]",
     "valid CEL expression"),
    ("Telemetry", "tracing: [{customTags: {a: {literal: {value: x}, header: {name: y}}}}]",
     "tracing: [{customTags: {a: {literal: {value: x}}}}]", "one of literal, environment, header"),
]


@pytest.mark.parametrize("kind,bad,good,expect", CASES, ids=[f"{c[0]}:{c[3][:40]}" for c in CASES])
def test_istio_rule(kind: str, bad: str, good: str, expect: str) -> None:
    found = problems(doc(kind, bad))
    assert any(expect in p for p in found), found
    assert problems(doc(kind, good)) == []


def test_gateway_name_is_a_dns_label() -> None:
    spec = "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]"
    assert any("invalid gateway name" in p for p in problems(doc("Gateway", spec, name="my.gw")))
    assert problems(doc("Gateway", spec, name="my-gw")) == []
