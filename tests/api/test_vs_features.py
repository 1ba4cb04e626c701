"""VirtualService HTTP route features: typed, validated, every mistake named with its field path."""
from __future__ import annotations

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.api.virtual_service import duration_seconds

HEAD = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo}\nspec:\n  hosts: [echo]\n  http:\n"
ROUTE = "    route: [{destination: {host: echo}}]\n"


def _load(route_body: str):
    return load_text(HEAD + "  - " + route_body.lstrip(), file="vs.yaml").resources[0].spec.http[0]


def _issue(route_body: str):
    with pytest.raises(InvalidConfig) as e:
        load_text(HEAD + "  - " + route_body.lstrip(), file="vs.yaml")
    assert len(e.value.issues) == 1, e.value.issues
    return e.value.issues[0]


def test_every_feature_loads_typed() -> None:
    r = _load("""
    timeout: 1m30s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure,503,unavailable", retryBackOff: {baseInterval: 25ms}}
    fault: {delay: {fixedDelay: 5s, percentage: {value: 10}}, abort: {grpcStatus: UNAVAILABLE, percent: 5}}
    mirror: {host: shadow}
    mirrorPercentage: {value: 50}
    rewrite: {uriRegexRewrite: {match: '^/a/(.*)$', rewrite: '/b/\\\\1'}, authority: other}
    headers: {request: {set: {x-a: b}}}
""" + ROUTE)
    assert r.retries.attempts == 3 and r.retries.back_off == ("25ms", None)
    assert r.fault.abort.grpc_code == 14 and r.fault.delay.fixed_delay == "5s"
    assert r.mirror.host == "shadow" and r.rewrite.authority == "other"
    assert duration_seconds(r.timeout) == 90


@pytest.mark.parametrize("text,seconds", [("1.5s", 1.5), ("100ms", 0.1), ("1m30s", 90), ("1h", 3600), ("0s", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("body,path,words", [
    ("timeout: 5 parsecs\n" + ROUTE, "spec.http[0].timeout", "invalid duration '5 parsecs'"),
    ("retries: {attempts: 2, perTryTimeout: 0.1ms}\n" + ROUTE, "spec.http[0].retries.perTryTimeout", "at least 1ms"),
    ("retries: {attempts: 2, retryOn: '5xx,sometimes'}\n" + ROUTE, "spec.http[0].retries.retryOn", "'sometimes'"),
    ("retries: {attempts: -1}\n" + ROUTE, "spec.http[0].retries.attempts", "greater than or equal to 0"),
    ("retries: {attempts: 2, backof: {baseInterval: 1s}}\n" + ROUTE, "spec.http[0].retries.backof", "unknown field"),
    ("retries: {attempts: 2, retryBackOff: {baseInterval: 1s, maxInterval: 10ms}}\n" + ROUTE,
     "spec.http[0].retries.retryBackOff", "maxInterval"),
    ("retries: {attempts: 2, backoff: {baseInterval: 1s}}\n" + ROUTE, "spec.http[0].retries.backoff",
     "invalid duration"),
    ("retries: {attempts: 2, backoff: 10ms, retryBackOff: {baseInterval: 1s}}\n" + ROUTE, "spec.http[0].retries",
     "only one of backoff"),
    ("fault: {abort: {percentage: {value: 50}}}\n" + ROUTE, "spec.http[0].fault.abort", "httpStatus or grpcStatus"),
    ("fault: {abort: {httpStatus: 503, percentage: {value: 150}}}\n" + ROUTE,
     "spec.http[0].fault.abort.percentage.value", "less than or equal to 100"),
    ("fault: {abort: {grpcStatus: NOPE}}\n" + ROUTE, "spec.http[0].fault.abort.grpcStatus", "NOPE"),
    ("fault: {delay: {percentage: {value: 5}}}\n" + ROUTE, "spec.http[0].fault.delay", "fixedDelay"),
    ("fault: {delay: {fixedDelay: soon}}\n" + ROUTE, "spec.http[0].fault.delay.fixedDelay", "invalid duration"),
    ("fault: {}\n" + ROUTE, "spec.http[0].fault", "abort and/or a delay"),
    ("redirect: {uri: /new}\n" + ROUTE, "spec.http[0].route", "both route and redirect"),
    ("redirect: {uri: /new, redirectCode: 200}\n", "spec.http[0].redirect.redirectCode", "must be 3xx"),
    ("redirect: {uri: /new, redirectCode: 305}\n", "spec.http[0].redirect.redirectCode", "not one Envoy can send"),
    ("redirect: {}\n", "spec.http[0].redirect", "redirect must specify"),
    ("directResponse: {status: 200}\n" + ROUTE, "spec.http[0].route", "both route and directResponse"),
    ("directResponse: {body: {string: hi}}\n", "spec.http[0].directResponse.status", "Field required"),
    ("directResponse: {status: 99}\n", "spec.http[0].directResponse.status", "greater than or equal to 200"),
    ("directResponse: {status: 200, body: {string: a, bytes: YQ==}}\n", "spec.http[0].directResponse.body",
     "exactly one"),
    ("directResponse: {status: 200, body: {bytes: '!!notbase64'}}\n", "spec.http[0].directResponse.body.bytes",
     "base64"),
    ("rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}\n" + ROUTE, "spec.http[0].rewrite",
     "only contain one of"),
    ("rewrite: {uriRegexRewrite: {match: '(', rewrite: b}}\n" + ROUTE,
     "spec.http[0].rewrite.uriRegexRewrite.match", "invalid match '('"),
    ("rewrite: {url: /a}\n" + ROUTE, "spec.http[0].rewrite.url", "unknown field"),
    ("mirror: {host: shadow}\n    mirrors: [{destination: {host: shadow}}]\n" + ROUTE, "spec.http[0]",
     "mirror and mirrors"),
    ("mirrorPercentage: {value: 101}\n    mirror: {host: s}\n" + ROUTE, "spec.http[0].mirrorPercentage.value",
     "less than or equal to 100"),
    ("mirrors: [{destination: {host: s}, percentage: {value: -1}}]\n" + ROUTE,
     "spec.http[0].mirrors[0].percentage.value", "greater than or equal to 0"),
])
def test_bad_values_are_located(body: str, path: str, words: str) -> None:
    i = _issue(body)
    assert i.path == path and words in i.message, str(i)
    assert i.file == "vs.yaml" and i.kind == "VirtualService" and i.name == "echo"


def test_nothing_applied_when_one_document_is_bad() -> None:
    good = HEAD + "  - " + ROUTE[4:]
    bad = HEAD.replace("name: echo", "name: bad") + "  - timeout: 5 parsecs\n" + ROUTE
    with pytest.raises(InvalidConfig) as e:
        load_text(good + "---\n" + bad, file="two.yaml")
    assert [i.name for i in e.value.issues] == ["bad"]
