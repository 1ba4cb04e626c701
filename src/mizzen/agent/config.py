"""The sidecar agent's configuration: `<state>/pods/<pod>/agent.json`. One typed contract between two
processes: the runner builds an `AgentConfig` and writes `to_dict()`; the agent reads it back with
`load_config` (`from_dict`), so `AgentConfig.from_dict(cfg.to_dict()) == cfg`.

Keys are camelCase in the file and snake_case here. Unknown keys are ignored (logged), so a newer runner
can add keys without breaking an older agent; wrong types and bad values raise `AgentConfigError`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from ..client.address import Address
from ..client.layout import PodDir
from ..unixpath import UNIX_PATH_MAX

log = logging.getLogger("mizzen.agent")

INTERCEPTION_MODES = ("netns", "loopback")
XDS_PROTOCOLS = ("DELTA_GRPC", "GRPC")
LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical", "off")


class AgentConfigError(ValueError):
    """agent.json is missing, malformed or has a bad value; the message names the key."""


@dataclass(frozen=True)
class AgentConfig:
    pod: str
    namespace: str = "default"
    workload: str = ""  # default: the pod name without its trailing "-<n>"
    labels: tuple[tuple[str, str], ...] = ()
    ip: str = "127.0.0.1"
    ports: tuple[int, ...] = ()  # container ports
    service_account: str = "default"
    locality: str = ""  # region/zone/subzone
    interception: str = "netns"
    outbound_port: int = 15001
    inbound_port: int = 15006
    port_map: tuple[tuple[int, int], ...] = ()  # container port -> app's real port (identity if absent)
    register_port_map: tuple[tuple[int, int], ...] = ()  # container port -> port callers reach (loopback)
    app_host: str = "127.0.0.1"
    # "unix:/abs/xds.sock" or "host:port"; a list in agent.json (a tuple here) names every control-plane
    # replica: Envoy's xds-grpc cluster gets one endpoint each and its ADS stream fails over between them
    xds_address: str | tuple[str, ...] = "127.0.0.1:15010"
    xds_protocol: str = "DELTA_GRPC"  # DELTA_GRPC | GRPC (state of the world)
    # "unix:/abs/api.sock", "host:port" or "http://host:port"; None: no registration; a list (a tuple here):
    # every replica's REST API, tried in order
    api_address: str | tuple[str, ...] | None = None
    # the control plane's certificate service (TLS; "unix:/abs/ca.sock" or "host:port", a list for replicas);
    # None: no workload certificate, no SDS, no mTLS
    ca_address: str | tuple[str, ...] | None = None
    trust_domain: str = "cluster.local"  # the SPIFFE trust domain of the mesh (the control plane's)
    cert_ttl_seconds: int = 0  # requested workload certificate validity; 0 = the control plane's default
    sds_socket: str = ""  # the agent's SDS server for Envoy; default: <workDir>/sds.sock
    # the global rate-limit service(s) Envoy's rate-limit filter calls ("unix:/abs/ratelimit.sock" or
    # "host:port"; a list: one per replica); told to the control plane in the node metadata
    ratelimit_address: str | tuple[str, ...] | None = None
    admin_socket: str = ""  # default: <workDir>/admin.sock
    control_socket: str = ""  # the agent's control API; default: <workDir>/agent.sock
    work_dir: str = ""  # default: the directory of agent.json
    envoy_binary: str | None = None
    concurrency: int = 1
    log_level: str = "warning"
    envoy_uid: int | None = None
    envoy_gid: int | None = None  # default: envoy_uid
    health_host: str = ""  # default: 0.0.0.0 in netns mode (the pod's own namespace), 127.0.0.1 in loopback mode
    health_port: int = 15020  # 0: pick a free port (written to agent.state as healthPort)
    drain_seconds: float = 5.0
    # Envoy's --drain-time-s: how long a filter chain replaced by a listener update (any config change that
    # touches a listener: a policy, telemetry, a rate limit) keeps the connections it has before Envoy removes it
    # and cuts what is left (`filter_chain_is_being_removed`). One number bounds two things: a request in
    # flight across the change is cut if it runs longer, and a connection opened before the change (an idle
    # pooled keep-alive) may still serve ONE request under the old config within it (--drain-strategy
    # immediate tells each to close on its next response; Envoy does not close idle HTTP/1.1 connections of a
    # replaced chain earlier). Short keeps a new policy prompt; Istio's drainDuration is 45 s.
    listener_drain_seconds: float = 5.0
    parent_shutdown_seconds: float | None = None  # Envoy --parent-shutdown-time-s; default drain + 5
    withdraw_delay_seconds: float | None = None  # default min(2, drainSeconds / 2)
    stop_timeout_seconds: float = 5.0  # SIGTERM -> SIGKILL grace when stopping Envoy
    heartbeat_seconds: float = 5.0
    register: bool = True
    max_downstream_connections: int = 50000
    restart_backoff_seconds: float = 0.25  # first restart delay after Envoy dies; doubles ...
    restart_backoff_max_seconds: float = 10.0  # ... up to this
    app_wait_log_seconds: float = 10.0  # while waiting for the app's ports, log this often
    app_probe_seconds: float = 0.5  # how often a registered agent checks that the app still listens
    # telemetry (docs/observability.md): the access-log stream from Envoy (Istio metrics, golden metrics, top,
    # tap) on <workDir>/telemetry.sock; the embedded trace collector ("unix:/state/traces.sock" or host:port,
    # None: no embedded tracing); the app's own metrics merged into :15020/stats/prometheus
    telemetry: bool = True
    traces_address: str | None = None
    app_metrics_url: str | None = None  # e.g. http://127.0.0.1:9090/metrics
    # a gateway (docs/gateway.md): Envoy serves the Istio Gateways that select its labels, no app, no capture;
    # its credentials (Gateway credentialName) come from Secrets over the agent's SDS
    gateway: bool = False
    host_ports: tuple[tuple[int, int], ...] = ()  # Gateway server port -> port on the host's 127.0.0.1
    host_netns: str = ""  # the host's network namespace file, where Envoy binds the host ports (netns mode)
    credential_poll_seconds: float = 1.0  # how often a gateway's agent re-reads the Secrets it serves

    # ---------------------------------------------------------------- derived
    @property
    def instance_id(self) -> str:
        return f"{self.namespace}.{self.pod}"

    @property
    def node_id(self) -> str:
        if self.gateway:  # Istio's node type for gateways
            return f"router~{self.ip}~{self.pod}.{self.namespace}~{self.namespace}.svc.cluster.local"
        return f"sidecar~{self.ip}~{self.pod}.{self.namespace}~{self.namespace}.svc.cluster.local"

    @property
    def xds_addresses(self) -> tuple[str, ...]:
        """Every control-plane replica's xDS address (one, unless agent.json lists several)."""
        return addresses(self.xds_address)

    @property
    def api_addresses(self) -> tuple[str, ...]:
        """Every control-plane replica's REST API address, in the order to try them (none: no registration)."""
        return addresses(self.api_address)

    @property
    def ca_addresses(self) -> tuple[str, ...]:
        """Every control-plane replica's certificate service (none: this sidecar gets no certificate)."""
        return addresses(self.ca_address)

    @property
    def ratelimit_addresses(self) -> tuple[str, ...]:
        return addresses(self.ratelimit_address)

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def app_ports(self) -> tuple[int, ...]:
        """The ports the app really listens on (at app_host): portMap values, else the container ports."""
        if self.port_map:
            return tuple(sorted({b for _, b in self.port_map}))
        return tuple(self.ports)

    @property
    def withdraw_delay(self) -> float:
        if self.withdraw_delay_seconds is not None:
            return max(0.0, self.withdraw_delay_seconds)
        return min(2.0, self.drain_seconds / 2)

    @property
    def parent_shutdown(self) -> float:
        if self.parent_shutdown_seconds is not None:
            return self.parent_shutdown_seconds
        return self.drain_seconds + 5

    @property
    def files(self) -> PodDir:
        """The pod dir's files (client.layout): the agent writes them in its work dir."""
        return PodDir(self.work_dir)

    @property
    def access_log_path(self) -> str:
        return self.files.access_log

    @property
    def bootstrap_path(self) -> str:
        return self.files.envoy_yaml

    @property
    def state_path(self) -> str:
        return self.files.agent_state

    @property
    def envoy_log_path(self) -> str:
        return self.files.envoy_log

    @property
    def base_id_path(self) -> str:
        return self.files.base_id

    @property
    def telemetry_socket(self) -> str:
        return self.files.telemetry_socket

    # ---------------------------------------------------------------- the file
    def to_dict(self) -> dict[str, Any]:
        """agent.json's content (camelCase keys), as `from_dict` reads it back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("labels", "port_map", "register_port_map", "host_ports"):
                v = {str(a): b for a, b in v}
            elif isinstance(v, tuple):
                v = list(v)
            out[_camel(f.name)] = v
        return out

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, base_dir: str | None = None) -> "AgentConfig":
        if not isinstance(d, Mapping):
            raise AgentConfigError("agent config must be a JSON object")
        known = {_camel(f.name): f.name for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            log.warning("agent config: ignoring unknown keys %s", ", ".join(unknown))
        kw: dict[str, Any] = {}
        for key, name in known.items():
            if key in d and d[key] is not None:
                kw[name] = _convert(key, name, d[key])
            elif key in d and name in _NULLABLE:
                kw[name] = None
        if "pod" not in kw or not kw["pod"]:
            raise AgentConfigError("pod: required")
        if not kw.get("workload"):
            kw["workload"] = _workload_of(kw["pod"])
        if not kw.get("work_dir"):
            if base_dir is None:
                raise AgentConfigError("workDir: required when the config does not come from a file")
            kw["work_dir"] = base_dir
        kw["work_dir"] = os.path.abspath(kw["work_dir"])
        if not kw.get("admin_socket"):
            kw["admin_socket"] = PodDir(kw["work_dir"]).admin_socket
        if not kw.get("control_socket"):
            kw["control_socket"] = PodDir(kw["work_dir"]).agent_socket
        if not kw.get("sds_socket"):
            kw["sds_socket"] = PodDir(kw["work_dir"]).sds_socket
        if not kw.get("health_host"):
            kw["health_host"] = "127.0.0.1" if kw.get("interception") == "loopback" else "0.0.0.0"
        if kw.get("envoy_gid") is None and kw.get("envoy_uid") is not None:
            kw["envoy_gid"] = kw["envoy_uid"]
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def bad(key: str, msg: str) -> None:
            raise AgentConfigError(f"{key}: {msg}")

        if self.interception not in INTERCEPTION_MODES:
            bad("interception", f"must be one of {', '.join(INTERCEPTION_MODES)}")
        if self.xds_protocol not in XDS_PROTOCOLS:
            bad("xdsProtocol", f"must be one of {', '.join(XDS_PROTOCOLS)}")
        if self.log_level not in LOG_LEVELS:
            bad("logLevel", f"must be one of {', '.join(LOG_LEVELS)}")
        if self.concurrency < 1:
            bad("concurrency", "must be >= 1")
        for key, port in (("outboundPort", self.outbound_port), ("inboundPort", self.inbound_port)):
            if not 0 < port < 65536:
                bad(key, "must be a TCP port")
        if not 0 <= self.health_port < 65536:
            bad("healthPort", "must be a TCP port or 0")
        for p in self.ports:
            if not 0 < p < 65536:
                bad("ports", f"{p} is not a TCP port")
        for key, pm in (("portMap", self.port_map), ("registerPortMap", self.register_port_map),
                        ("hostPorts", self.host_ports)):
            for a, b in pm:
                if not (0 < a < 65536 and 0 < b < 65536):
                    bad(key, f"{a} -> {b} is not a TCP port mapping")
        if self.drain_seconds < 0:
            bad("drainSeconds", "must be >= 0")
        if self.listener_drain_seconds < 0:
            bad("listenerDrainSeconds", "must be >= 0")
        if self.heartbeat_seconds <= 0:
            bad("heartbeatSeconds", "must be > 0")
        if not self.xds_address:
            bad("xdsAddress", "required")
        for a in self.xds_addresses:
            parse_address(a, "xdsAddress")
        for a in self.api_addresses:
            parse_address(a, "apiAddress")
        for a in self.ca_addresses:
            parse_address(a, "caAddress")
        if self.ca_address:
            from ..ca.identity import InvalidIdentity, SpiffeId
            try:
                SpiffeId(self.trust_domain, self.namespace, self.service_account or "default")
            except InvalidIdentity as e:
                bad("trustDomain", str(e))
        if self.cert_ttl_seconds < 0:
            bad("certTtlSeconds", "must be >= 0 (0: the control plane's default)")
        if self.sds_socket and len(self.sds_socket.encode()) > UNIX_PATH_MAX:
            bad("sdsSocket", f"unix socket path longer than {UNIX_PATH_MAX} bytes")
        for a in self.ratelimit_addresses:
            parse_address(a, "ratelimitAddress")
        if len(self.admin_socket.encode()) > UNIX_PATH_MAX:
            bad("adminSocket", f"unix socket path longer than {UNIX_PATH_MAX} bytes")
        if len(self.control_socket.encode()) > UNIX_PATH_MAX:
            bad("controlSocket", f"unix socket path longer than {UNIX_PATH_MAX} bytes")
        if self.app_probe_seconds <= 0:
            bad("appProbeSeconds", "must be > 0")
        if self.telemetry and len(self.telemetry_socket.encode()) > UNIX_PATH_MAX:
            bad("workDir", f"telemetry socket path longer than {UNIX_PATH_MAX} bytes")
        if self.traces_address:
            parse_address(self.traces_address, "tracesAddress")
        if self.app_metrics_url and not self.app_metrics_url.startswith(("http://", "https://")):
            bad("appMetricsUrl", "must be an http:// URL")


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise AgentConfigError(f"{p}: no such file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise AgentConfigError(f"{p}: {e}") from None
    try:
        return AgentConfig.from_dict(data, base_dir=str(p.resolve().parent))
    except AgentConfigError as e:
        raise AgentConfigError(f"{p}: {e}") from None


def addresses(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """An address setting (one string or a list of them) as a tuple."""
    if not value:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def parse_address(addr: str, key: str = "address") -> tuple[str, str | int]:
    """`unix:/path` -> ("unix", "/path"); `host:port`, `http://host:port` -> (host, port)."""
    try:
        a = Address.parse(addr)
    except ValueError as e:
        raise AgentConfigError(f"{key}: {e}") from None
    return ("unix", a.unix) if a.unix is not None else (a.host, a.port)


# ---------------------------------------------------------------------- helpers
_NULLABLE = {"envoy_binary", "envoy_uid", "envoy_gid", "api_address", "ca_address", "ratelimit_address",
             "withdraw_delay_seconds", "parent_shutdown_seconds", "traces_address", "app_metrics_url"}
_INT = {"concurrency", "outbound_port", "inbound_port", "health_port", "envoy_uid", "envoy_gid",
        "max_downstream_connections", "cert_ttl_seconds"}
_FLOAT = {"drain_seconds", "listener_drain_seconds", "heartbeat_seconds", "withdraw_delay_seconds",
          "parent_shutdown_seconds", "stop_timeout_seconds", "restart_backoff_seconds", "restart_backoff_max_seconds",
          "app_wait_log_seconds", "app_probe_seconds", "credential_poll_seconds"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _workload_of(pod: str) -> str:
    base, sep, n = pod.rpartition("-")
    return base if sep and n.isdigit() else pod


def _convert(key: str, name: str, v: Any) -> Any:
    try:
        if name in _INT:
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError
            return int(v)
        if name in _FLOAT:
            if isinstance(v, bool):
                raise ValueError
            return float(v)
        if name in ("register", "telemetry", "gateway"):
            if not isinstance(v, bool):
                raise ValueError
            return v
        if name == "labels":
            if not isinstance(v, Mapping):
                raise ValueError
            return tuple(sorted((str(a), str(b)) for a, b in v.items()))
        if name == "ports":
            if not isinstance(v, (list, tuple)):
                raise ValueError
            return tuple(int(p) for p in v)
        if name in ("xds_address", "api_address", "ca_address", "ratelimit_address") and isinstance(v, (list, tuple)):
            if not v or not all(isinstance(a, str) and a for a in v):
                raise ValueError
            return v[0] if len(v) == 1 else tuple(v)
        if name in ("port_map", "register_port_map", "host_ports"):
            if not isinstance(v, Mapping):
                raise ValueError
            return tuple(sorted((int(a), int(b)) for a, b in v.items()))
        if not isinstance(v, str):
            raise ValueError
        return v
    except (TypeError, ValueError):
        raise AgentConfigError(f"{key}: bad value {v!r}") from None
