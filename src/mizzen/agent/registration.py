"""What the agent registers (`instance_of`: this replica as an `Instance`, sent with `Instance.to_dict()` by
`mizzen.client.aio.AsyncApiClient`, which fails over between control-plane replicas), and waiting for the
app to listen before doing so."""
from __future__ import annotations

import asyncio
import logging
import time

from ..model.types import Instance
from .config import AgentConfig

log = logging.getLogger("mizzen.agent")


def instance_of(cfg: AgentConfig, *, healthy: bool = True) -> Instance:
    return Instance(
        id=cfg.instance_id, namespace=cfg.namespace, workload=cfg.workload, address=cfg.ip, ports=cfg.ports,
        labels=cfg.labels, healthy=healthy, sidecar=True, locality=cfg.locality,
        service_account=cfg.service_account, source="agent", port_map=cfg.register_port_map,
    )


async def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    w.close()
    try:
        await w.wait_closed()
    except OSError:
        pass
    return True


async def wait_for_ports(host: str, ports: tuple[int, ...], *, interval: float = 0.2,
                         log_every: float = 10.0) -> None:
    """Return once every port accepts a TCP connection. Keeps trying (each try bounded); logs what it is
    waiting for every `log_every` seconds. Cancel to stop."""
    pending = set(ports)
    start = last_log = time.monotonic()
    while pending:
        for p in sorted(pending):
            if await port_open(host, p):
                pending.discard(p)
        if not pending:
            break
        now = time.monotonic()
        if now - last_log >= log_every:
            last_log = now
            log.info("still waiting for the app on %s port(s) %s (%.0fs)", host,
                     ",".join(map(str, sorted(pending))), now - start)
        await asyncio.sleep(interval)


def _listening(port: int) -> bool | None:
    """Is a TCP socket of this network namespace listening on port? None: /proc/net cannot tell."""
    seen_any = False
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                next(f, None)
                seen_any = True
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, ValueError):
            continue
    return False if seen_any else None


def app_listening(host: str, ports: tuple[int, ...]) -> bool:
    """Every app port has a listening socket (read from /proc/net: no connection is made to the app)."""
    import socket

    for p in ports:
        found = _listening(p)
        if found is None:  # no /proc/net: try a connection
            try:
                with socket.create_connection((host, p), timeout=0.5):
                    pass
            except OSError:
                return False
        elif not found:
            return False
    return True
