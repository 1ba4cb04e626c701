import json

import pytest

from mizzen.agent.config import AgentConfig, AgentConfigError, load_config, parse_address


def test_defaults_and_derived(tmp_path):
    p = tmp_path / "agent.json"
    p.write_text(json.dumps({"pod": "reviews-v1-0", "ports": [9080], "unknownKey": 1}))
    cfg = load_config(p)
    assert cfg.workload == "reviews-v1"
    assert cfg.work_dir == str(tmp_path)
    assert cfg.admin_socket == str(tmp_path / "admin.sock")
    assert (cfg.namespace, cfg.interception, cfg.xds_protocol) == ("default", "netns", "DELTA_GRPC")
    assert (cfg.outbound_port, cfg.inbound_port, cfg.health_port, cfg.concurrency) == (15001, 15006, 15020, 1)
    assert cfg.app_ports == (9080,)
    assert cfg.health_host == "0.0.0.0"  # netns: inside the pod's namespace
    assert AgentConfig.from_dict({"pod": "p", "workDir": "/w", "interception": "loopback"}).health_host == "127.0.0.1"
    assert cfg.withdraw_delay == 2.0 and cfg.parent_shutdown == 10.0
    assert cfg.instance_id == "default.reviews-v1-0"
    assert cfg.node_id == "sidecar~127.0.0.1~reviews-v1-0.default~default.svc.cluster.local"


def test_camel_case_keys():
    cfg = AgentConfig.from_dict({
        "pod": "p-1", "namespace": "ns", "workload": "w", "labels": {"app": "a"}, "ip": "10.244.0.5",
        "ports": [9080], "serviceAccount": "sa", "interception": "loopback", "portMap": {"9080": 19080},
        "registerPortMap": {"9080": 25006}, "xdsAddress": "unix:/s/xds.sock", "apiAddress": "unix:/s/api.sock",
        "workDir": "/s/pods/p-1", "envoyUid": 1337, "drainSeconds": 1, "withdrawDelaySeconds": 0.25,
        "xdsProtocol": "GRPC", "register": False, "envoyBinary": None,
    })
    assert cfg.port_map == ((9080, 19080),) and cfg.app_ports == (19080,)
    assert cfg.register_port_map == ((9080, 25006),)
    assert cfg.envoy_uid == 1337 and cfg.envoy_gid == 1337
    assert cfg.withdraw_delay == 0.25 and cfg.register is False and cfg.xds_protocol == "GRPC"
    assert cfg.labels == (("app", "a"),) and cfg.service_account == "sa"


@pytest.mark.parametrize("over, key", [
    ({"interception": "tproxy"}, "interception"),
    ({"ports": ["x"]}, "ports"),
    ({"register": "yes"}, "register"),
    ({"xdsAddress": "nowhere"}, "xdsAddress"),
    ({"xdsAddress": "unix:relative.sock"}, "xdsAddress"),
    ({"concurrency": 0}, "concurrency"),
    ({"portMap": {"9080": 70000}}, "portMap"),
    ({"listenerDrainSeconds": -1}, "listenerDrainSeconds"),
])
def test_bad_values(over, key):
    with pytest.raises(AgentConfigError, match=key):
        AgentConfig.from_dict({"pod": "p", "workDir": "/w", **over})


def test_envoy_drains_replaced_filter_chains_for_the_listener_drain_not_the_pod_drain(tmp_path):
    """A config change's old filter chain lives for listenerDrainSeconds (Envoy's --drain-time-s), telling every
    connection to close at once (--drain-strategy immediate); the pod's own stop drain (drainSeconds) sets only
    the hot-restart parent's life."""
    from mizzen.agent.main import Agent

    assert AgentConfig.from_dict({"pod": "p", "workDir": "/w"}).listener_drain_seconds == 5.0
    def options(over: dict) -> dict[str, str]:
        cfg = AgentConfig.from_dict({"pod": "p", "workDir": str(tmp_path), **over})
        argv = Agent(cfg, envoy_binary="/bin/true").envoy.command()
        return dict(zip(argv, argv[1:]))

    opts = options({"drainSeconds": 2, "listenerDrainSeconds": 45})
    assert (opts["--drain-time-s"], opts["--drain-strategy"], opts["--parent-shutdown-time-s"]) == ("45", "immediate", "7")
    assert options({"listenerDrainSeconds": 10})["--drain-time-s"] == "10"


def test_missing_pod_and_file(tmp_path):
    with pytest.raises(AgentConfigError, match="pod"):
        AgentConfig.from_dict({"workDir": "/w"})
    with pytest.raises(AgentConfigError, match="no such file"):
        load_config(tmp_path / "nope.json")


def test_parse_address():
    assert parse_address("unix:/a/b.sock") == ("unix", "/a/b.sock")
    assert parse_address("127.0.0.1:15010") == ("127.0.0.1", 15010)
    assert parse_address("http://localhost:8080") == ("localhost", 8080)


def test_address_lists_name_every_control_plane_replica():
    cfg = AgentConfig.from_dict({"pod": "p-0", "workDir": "/w",
                                 "xdsAddress": ["unix:/s/xds.sock", "unix:/s/xds-1.sock"],
                                 "apiAddress": ["unix:/s/api.sock", "unix:/s/api-1.sock"]})
    assert cfg.xds_addresses == ("unix:/s/xds.sock", "unix:/s/xds-1.sock")
    assert cfg.api_addresses == ("unix:/s/api.sock", "unix:/s/api-1.sock")
    one = AgentConfig.from_dict({"pod": "p-0", "workDir": "/w", "xdsAddress": ["unix:/s/xds.sock"],
                                 "apiAddress": "unix:/s/api.sock"})
    assert one.xds_address == "unix:/s/xds.sock" and one.xds_addresses == ("unix:/s/xds.sock",)
    assert one.api_addresses == ("unix:/s/api.sock",)
    assert AgentConfig.from_dict({"pod": "p-0", "workDir": "/w"}).api_addresses == ()
    for bad in ([], ["unix:/s/xds.sock", 3], ["unix:relative.sock"]):
        with pytest.raises(AgentConfigError, match="xdsAddress"):
            AgentConfig.from_dict({"pod": "p-0", "workDir": "/w", "xdsAddress": bad})
