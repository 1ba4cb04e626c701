"""The agent's workload certificate: signed by the control plane, served to Envoy over SDS, rotated, watched.

    sec = AgentSecurity(cfg)                   # cfg.ca_address set
    await sec.start()                          # SDS socket up, the certificate manager running
    await sec.wait_first(stop_event)           # the first certificate (Envoy starts after it)
    sec.status()                               # {"cert": ..., "sds": ...} for agent.state / proxy-status
    sec.rotate_now()                           # POST /rotate-cert (e.g. after the mesh's root changed)
    sec.metrics_text()                         # mizzen_agent_cert_* gauges (Prometheus text)
    await sec.stop()

The key is made here and never leaves this process except to Envoy over `sds.sock` (0600, owned by Envoy's
uid). The agent authenticates to the control plane's certificate service with the pod credential the runner
provisioned (`secrets/token`, readable by root only) and checks the service's TLS certificate against the
provisioned root. When signing fails the current certificate stays in use (`agent.certs`); an expired
certificate is logged as an error on every attempt and shows as EXPIRED in agent.state and `proxy-status`.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any, Callable

from ..ca.client import CaClient
from ..ca.credentials import read_pod_credential
from ..ca.identity import SpiffeId
from ..telemetry import exposition
from .certs import STATES, CertManager, CertSettings
from .config import AgentConfig
from .sds import SdsServer

log = logging.getLogger("mizzen.agent.security")


class AgentSecurity:
    def __init__(self, cfg: AgentConfig, *, on_change: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.on_change = on_change
        self.spiffe_id = SpiffeId(cfg.trust_domain, cfg.namespace, cfg.service_account or "default").uri
        self.client = CaClient(list(cfg.ca_addresses), lambda: read_pod_credential(cfg.work_dir))
        owner = (cfg.envoy_uid, cfg.envoy_gid if cfg.envoy_gid is not None else cfg.envoy_uid) \
            if cfg.envoy_uid is not None else None
        self.sds = SdsServer(cfg.sds_socket, owner=owner)
        self.manager = CertManager(self._sign, CertSettings(spiffe_id=self.spiffe_id, ttl_seconds=cfg.cert_ttl_seconds),
                                   on_update=self._updated, roots=lambda: read_pod_credential(cfg.work_dir)[1])
        self._task: asyncio.Task | None = None

    async def _sign(self, csr: bytes, ttl: int) -> list[str]:
        return await self.client.sign(csr, ttl_seconds=ttl, metadata={"WorkloadName": self.cfg.workload})

    def _updated(self, cert: Any) -> None:
        self.sds.update(cert)
        if self.on_change is not None:
            self.on_change()

    async def start(self) -> None:
        await self.sds.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="certificates")

    async def _run(self) -> None:
        try:
            await self.manager.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in the manager: certificates would silently stop renewing
            log.exception("the certificate manager failed; workload certificates are no longer renewed "
                          "(restart the agent)")
            raise

    async def wait_first(self, stop: asyncio.Event, on_wait: Callable[[str], None] | None = None) -> bool:
        """Until the first certificate is delivered (True) or `stop` is set (False); `on_wait(reason)` now and
        then while waiting (the agent's readiness says why it is not ready)."""
        while not stop.is_set():
            if await self.manager.wait_ready(1.0):
                return True
            if on_wait is not None:
                err = self.manager.last_error
                on_wait("waiting for the first workload certificate" + (f": {err}" if err else ""))
        return False

    def rotate_now(self) -> None:
        self.manager.rotate_now()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.sds.stop()
        with contextlib.suppress(Exception):
            await self.client.close()

    def status(self) -> dict[str, Any]:
        return {"cert": self.manager.status(), "sds": self.sds.status()}

    def state_key(self) -> tuple:
        """What of `status()` is worth rewriting agent.state for (not the seconds counting down)."""
        m = self.manager
        serial = m.current.serial if m.current is not None else ""
        return (m.status()["state"], serial, m.rotations, m.total_failures, self.sds.delivered())

    def metrics_text(self, now: float | None = None) -> str:
        """The certificate's gauges, in the agent's merged scrape (Prometheus text)."""
        m = self.manager
        st = m.status()
        expiry = m.current.not_after.timestamp() if m.current is not None else 0
        lines = exposition.render_gauges("mizzen_agent", [
            ("cert_expiry_timestamp_seconds", "When the workload certificate expires (Unix time; 0: none yet).",
             expiry),
            ("cert_rotations_total", "Workload certificates obtained after the first.", m.rotations),
            ("cert_renew_failures_total", "Failed signing attempts since start.", m.total_failures),
        ])
        state = ["# HELP mizzen_agent_cert_state The workload certificate's state (1 = current).",
                 "# TYPE mizzen_agent_cert_state gauge"]
        state += [f'mizzen_agent_cert_state{{state="{s}"}} {1 if st["state"] == s else 0}' for s in STATES]
        return lines + "\n".join(state) + "\n"


def describe_cert(cert: dict[str, Any] | None, now: float | None = None) -> tuple[str, bool]:
    """agent.state's `cert` -> (`proxy-status` CERT cell, healthy?): `VALID 11h`, `RETRYING 2h left`,
    `EXPIRED 3m ago`, `PENDING`; `-` when the pod has no certificate. Times are recomputed from notAfter."""
    if not cert:
        return "-", True
    state = str(cert.get("state") or "?")
    not_after = cert.get("notAfter")
    left = None
    if not_after:
        try:
            t = dt.datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
            left = t.timestamp() - (time.time() if now is None else now)
        except ValueError:
            left = None
    if left is not None and left <= 0:
        return f"EXPIRED {_span(-left)} ago", False
    if left is None:
        return state, state == "VALID"
    if state == "VALID" or state == "RENEWING":
        return f"VALID {_span(left)}", True
    return f"{state} {_span(left)} left", False


def _span(seconds: float) -> str:
    s = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"
