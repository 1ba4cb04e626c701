"""The agent's side of the wiring: agent.json fields, the bootstrap's SDS cluster and node identity, the
CERT cell of `proxy-status`, the certificate gauges."""
from __future__ import annotations

import datetime as dt

import pytest

from mizzen.agent.bootstrap import build_bootstrap, proxy_of
from mizzen.agent.config import AgentConfig, AgentConfigError
from mizzen.agent.security import AgentSecurity, describe_cert
from mizzen.model.types import Proxy


def cfg(**kw) -> AgentConfig:
    base = dict(pod="web-0", namespace="shop", service_account="web", work_dir="/tmp/p/web-0",
                ca_address=("unix:/s/ca.sock", "unix:/s/ca-1.sock"), trust_domain="example.org")
    base.update(kw)
    return AgentConfig.from_dict(AgentConfig(**base).to_dict())


def test_agent_json_round_trips_with_the_certificate_fields():
    c = cfg(cert_ttl_seconds=20)
    assert AgentConfig.from_dict(c.to_dict()) == c
    assert c.ca_addresses == ("unix:/s/ca.sock", "unix:/s/ca-1.sock") and c.sds_socket == "/tmp/p/web-0/sds.sock"
    with pytest.raises(AgentConfigError, match="trustDomain"):
        cfg(trust_domain="Not A Domain")
    with pytest.raises(AgentConfigError, match="certTtlSeconds"):
        cfg(cert_ttl_seconds=-1)


def test_bootstrap_has_the_sds_cluster_and_announces_the_trust_domain():
    b = build_bootstrap(cfg())
    sds = next(c for c in b["static_resources"]["clusters"] if c["name"] == "sds-grpc")
    assert sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"] == \
        "/tmp/p/web-0/sds.sock"
    assert b["node"]["metadata"]["TRUST_DOMAIN"] == "example.org"
    assert Proxy.from_node(b["node"]["id"], b["node"]["metadata"]) == proxy_of(cfg())
    plain = build_bootstrap(cfg(ca_address=None))  # no certificate service: no SDS, no mTLS config
    assert "sds-grpc" not in [c["name"] for c in plain["static_resources"]["clusters"]]
    assert "TRUST_DOMAIN" not in plain["node"]["metadata"]


def _iso(seconds_from_now: float, now: float) -> str:
    return dt.datetime.fromtimestamp(now + seconds_from_now, dt.timezone.utc).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("state,left,cell,ok", [
    ("VALID", 11 * 3600 + 5, "VALID 11h", True),
    ("RETRYING", 2 * 3600, "RETRYING 2h left", False),
    ("VALID", -200, "EXPIRED 3m ago", False),  # the file may lag: expiry is recomputed from notAfter
    ("EXPIRED", -5, "EXPIRED 5s ago", False),
])
def test_proxy_status_cert_cell(state, left, cell, ok):
    now = 1_000_000.0
    assert describe_cert({"state": state, "notAfter": _iso(left, now)}, now) == (cell, ok)
    assert describe_cert(None) == ("-", True)
    assert describe_cert({"state": "PENDING"}) == ("PENDING", False)


def test_certificate_gauges_before_the_first_certificate():
    text = AgentSecurity(cfg()).metrics_text()
    assert "mizzen_agent_cert_expiry_timestamp_seconds 0" in text
    assert 'mizzen_agent_cert_state{state="PENDING"} 1' in text and 'mizzen_agent_cert_state{state="VALID"} 0' in text
    assert "mizzen_agent_cert_renew_failures_total 0" in text


def test_the_agent_scrape_serves_the_certificate_gauges():
    """The gauges are part of the agent's merged scrape (:15020/stats/prometheus), parsed as Prometheus does."""
    import asyncio
    import os
    import shutil
    import tempfile

    from prometheus_client.parser import text_string_to_metric_families

    from mizzen.agent.telemetry import Telemetry
    from mizzen.telemetry.aggregate import SelfInfo
    from mizzen.telemetry.peers import WorkloadInfo

    sec = AgentSecurity(cfg())
    d = tempfile.mkdtemp(prefix="mzsec-", dir="/tmp")
    try:
        t = Telemetry(SelfInfo(WorkloadInfo.from_labels("web", "shop", {}), {}), os.path.join(d, "als.sock"),
                      extra_metrics=sec.metrics_text)
        text = asyncio.run(t.prometheus_text())
    finally:
        shutil.rmtree(d, ignore_errors=True)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"mizzen_agent_cert_expiry_timestamp_seconds", "mizzen_agent_cert_state",
            "mizzen_agent_accesslog_streams"} <= names, names
