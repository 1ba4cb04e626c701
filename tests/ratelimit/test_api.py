"""The RateLimit kind: the issue's contract shape loads; bad input gets one clear error per field, all at once,
and nothing is applied; `mizzen get ratelimits` lists them."""
import yaml
import pytest

from mizzen.api import InvalidConfig, load_text
from tests.cli.conftest import Cli, Mesh

CONTRACT = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: api, namespace: shop}
spec:
  workloadSelector: {labels: {app: api}}
  mode: global
  failureMode: allow
  limits:
  - name: per-caller
    match: {uri: {prefix: /orders}, method: {exact: POST}}
    key: [sourceWorkload]
    requestsPerUnit: 30
    unit: second
    burst: 30
    algorithm: token_bucket
    strategy: reject
    priority: {header: x-tier, classes: {gold: 70, bronze: 30}}
    shadow: false
  - name: shaped
    key: [sourceIp, path, {header: X-User}, {query: page}, {value: c}]
    rate: 2.5
    burst: 1
    algorithm: gcra
    strategy: delay
    maxDelay: 500ms
"""


def errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(InvalidConfig) as e:
        load_text(text, file="rl.yaml")
    return [(i.path, i.message) for i in e.value.issues]


def doc(spec: str, mode: str = "global") -> str:
    return (f"apiVersion: mizzen.dev/v1\nkind: RateLimit\nmetadata: {{name: x, namespace: t}}\n"
            f"spec:\n  host: api\n  mode: {mode}\n" + spec)


def test_the_issue_contract_loads_and_round_trips():
    (res,) = load_text(CONTRACT).resources
    lim = res.spec.limits[0]
    assert (res.kind, res.spec.mode, lim.per_second(), lim.priority.classes) == \
        ("RateLimit", "global", 30.0, {"gold": 70, "bronze": 30})
    assert res.spec.limits[1].key_parts() == (("sourceIp", ""), ("path", ""), ("header", "x-user"),
                                              ("query", "page"), ("value", "c"))
    again = load_text(yaml.safe_dump(res.to_dict())).resources[0]
    assert again.spec == res.spec


def test_zero_negative_rates_and_unknown_algorithm_are_field_errors():
    got = errors(doc("  limits:\n  - {name: a, requestsPerUnit: 0, unit: second}\n"
                     "  - {name: b, rate: -1}\n  - {name: c, requestsPerUnit: 5, unit: week}\n"
                     "  - {name: d, requestsPerUnit: 5, unit: second, algorithm: magic}\n"
                     "  - {name: e, requestsPerUnit: 5, unit: second, burst: 0}\n"))
    paths = [p for p, _ in got]
    assert paths == ["spec.limits[0].requestsPerUnit", "spec.limits[1].rate", "spec.limits[2].unit",
                     "spec.limits[3].algorithm", "spec.limits[4].burst"]
    assert "greater than 0" in got[0][1] and "'gcra'" in got[3][1]


def test_local_mode_allows_only_what_envoys_local_ratelimit_can_do():
    got = errors(doc("  failureMode: deny\n  limits:\n"
                     "  - {name: a, requestsPerUnit: 5, unit: second, algorithm: gcra}\n"
                     "  - {name: b, rate: 5, strategy: delay, maxDelay: 1s}\n"
                     "  - {name: c, rate: 5, priority: {header: x-tier, classes: {gold: 50}}}\n"
                     "  - {name: d, rate: 5, key: [sourceWorkload, {header: x-user}]}\n", mode="local"))
    assert got == [
        ("spec.failureMode", "failureMode applies to mode global only (a local limit makes no network call that "
                             "could fail)"),
        ("spec.limits[0].algorithm", "gcra needs mode: global (Envoy's local_ratelimit filter is a token bucket)"),
        ("spec.limits[1].strategy", "strategy delay needs mode: global (Envoy cannot queue requests by itself)"),
        ("spec.limits[2].priority", "priority classes need mode: global"),
    ]


def test_strategy_the_algorithm_cannot_do_and_inconsistent_fields():
    got = errors(doc("  limits:\n"
                     "  - {name: a, requestsPerUnit: 5, unit: second, algorithm: fixed_window, strategy: delay}\n"
                     "  - {name: b, rate: 5, maxDelay: 1s}\n"
                     "  - {name: c, rate: 5, requestsPerUnit: 5, unit: second}\n"
                     "  - {name: d, requestsPerUnit: 5}\n"
                     "  - {name: e, rate: 5, algorithm: sliding_window, burst: 3}\n"
                     "  - {name: e, rate: 5, strategy: delay, maxDelay: 2m}\n"))
    assert got == [
        ("spec.limits[0].strategy", "fixed_window cannot compute a fair wait; strategy delay needs one of "
                                    "token_bucket, leaky_bucket, gcra"),
        ("spec.limits[0].maxDelay", "strategy delay needs maxDelay (longer waits are rejected)"),
        ("spec.limits[1].maxDelay", "maxDelay applies to strategy delay only"),
        ("spec.limits[2].rate", "give either requestsPerUnit with unit, or rate (per second), not both"),
        ("spec.limits[3].unit", "requestsPerUnit needs a unit: second, minute, hour or day"),
        ("spec.limits[4].burst", "burst has no meaning for sliding_window (a window counts requests per window); "
                                 "it applies to token_bucket, leaky_bucket, gcra"),
        ("spec.limits[5].maxDelay", "maxDelay '2m' must be between 1ms and 60s"),
    ]


def test_target_keys_priority_and_duplicate_names():
    got = errors("apiVersion: mizzen.dev/v1\nkind: RateLimit\nmetadata: {name: x}\nspec:\n"
                 "  host: api\n  workloadSelector: {labels: {app: a}}\n  mode: global\n  limits:\n"
                 "  - {name: a, rate: 1, key: [nope, {cookie: c}, {header: ''}, sourceIp, sourceIp]}\n"
                 "  - {name: b, rate: 1, priority: {classes: {gold: 80, silver: 30}}}\n"
                 "  - {name: c, rate: 1, priority: {header: x, source: namespace, classes: {gold: 10}}}\n")
    assert [p for p, _ in got] == ["spec.limits[0].key[0]", "spec.limits[0].key[1]", "spec.limits[0].key[2]",
                                   "spec.limits[0].key[4]", "spec.limits[1].priority.classes",
                                   "spec.limits[2].priority"]
    assert "at most 100% can be reserved" in got[4][1]
    got = errors(doc("  limits:\n  - {name: a, rate: 1}\n  - {name: a, rate: 2}\n"))
    assert got == [("spec.limits[1].name", "limit name 'a' is used twice (also limits[0])")]
    got = errors("apiVersion: mizzen.dev/v1\nkind: RateLimit\nmetadata: {name: x}\nspec:\n  limits: [{name: a, rate: 1}]\n")
    assert got[0][0] == "spec" and "exactly one of workloadSelector" in got[0][1]


def test_mizzen_get_ratelimits_and_atomic_apply(tmp_path):
    mesh = Mesh(tmp_path / "mesh").start()
    try:
        cli = Cli(mesh.state_dir)
        good = tmp_path / "good.yaml"
        good.write_text(CONTRACT)
        r = cli("apply", "-f", str(good))
        assert r.exit_code == 0 and r.stdout.strip() == "ratelimit.mizzen.dev/api created"
        bad = tmp_path / "bad.yaml"
        bad.write_text(CONTRACT.replace("name: api", "name: other").replace("requestsPerUnit: 30",
                                                                                 "requestsPerUnit: -3"))
        r = cli("apply", "-f", str(bad))
        assert r.exit_code != 0 and "spec.limits[0].requestsPerUnit" in r.stderr
        r = cli("get", "ratelimits", "-n", "shop")
        rows = [line.split() for line in r.stdout.splitlines()]
        assert rows == [["NAMESPACE", "NAME", "MODE", "TARGET", "LIMITS", "REVISION"],
                        ["shop", "api", "global", "workloads(app=api)", "per-caller:token_bucket,shaped:gcra", "1"]]
        assert cli("get", "rl", "api", "-n", "shop", "-o", "yaml").stdout.count("maxDelay: 500ms") == 1
    finally:
        mesh.stop()


def test_scope_response_and_match_rules_are_field_errors():
    got = errors("apiVersion: mizzen.dev/v1\nkind: RateLimit\nmetadata: {name: x, namespace: t}\nspec:\n"
                 "  workloadSelector: {labels: {app: a}}\n  port: 8080\n  response: {status: 499, body: nope}\n"
                 "  limits:\n"
                 "  - {name: a, rate: 1, match: {sourceLabels: {app: b}, sourceNamespace: n, gateways: [g], port: 9}}\n")
    assert got == [
        ("spec.response.status", "status 499 is not one Envoy can answer with; use a standard 4xx/5xx code such as "
                                 "429 or 503"),
    ]
    got = errors("apiVersion: mizzen.dev/v1\nkind: RateLimit\nmetadata: {name: x, namespace: t}\nspec:\n"
                 "  workloadSelector: {labels: {app: a}}\n  port: 8080\n  response: {body: nope}\n"
                 "  limits:\n"
                 "  - {name: a, rate: 1, match: {sourceLabels: {app: b}, sourceNamespace: n, gateways: [g], port: 9}}\n")
    assert [p for p, _ in got] == ["spec.limits[0].match.sourceLabels", "spec.limits[0].match.sourceNamespace",
                                   "spec.limits[0].match.gateways", "spec.limits[0].match.port",
                                   "spec.response.body"]
    assert "could never match" in got[3][1] and "needs mode: global" in got[4][1]
    got = errors(doc("  scope: service\n  limits: [{name: a, rate: 1}]\n"))
    assert [m for _, m in got] == [
        "scope service divides a local limit among the instances; a global limit is shared by every instance already",
        "scope service needs workloadSelector (the instances that share the limit)"]
