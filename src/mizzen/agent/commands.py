"""`mizzen agent --config <state>/pods/<pod>/agent.json` (the lead wires `agent` into the CLI group)."""
from __future__ import annotations

import logging
import os
import sys

import click

from .config import AgentConfigError, load_config
from ..envoybin import EnvoyNotFound

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(name)s[%(process)d] %(levelname)s %(message)s"


def _no_grpc_fork_handlers() -> None:
    """Turn gRPC core's fork support off in the agent, before grpc is first imported (it reads the setting then).

    The agent is a multi-threaded gRPC process (its SDS server, its telemetry streams) that forks to
    start Envoy (`EnvoyProcess.start`: setuid to Envoy's uid and a parent-death signal need fork(), not vfork).
    grpcio's wheels build gRPC core with fork support on, so every fork runs core's pthread_atfork handlers, and
    in the child they restart gRPC's threads on the poller state copied mid-poll from the parent: they fail
    `ev_epoll1_linux.cc` CHECKs (`next_worker->state == KICKED`, `next_worker->initialized_cv`) or segfault, and
    the child dies of SIGABRT/SIGSEGV before it execs Envoy ("envoy epoch 1 exited (-6)" in a hot restart under
    load; 137 of 300 spawns while a grpc.aio stream was busy, 0 of 300 with this). The child only execs; it
    never uses gRPC, which is the case gRPC's fork support is not needed for. Not set for the runner, whose
    environment the apps inherit."""
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    if "grpc" in sys.modules:
        logging.getLogger("mizzen.agent").warning(
            "grpc was imported before the agent could turn its fork support off: starting Envoy may crash")


def _setup_logging(pod: str | None, verbose: bool) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_mizzen_agent", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(LOG_FORMAT.replace("%(name)s", f"mizzen-agent/{pod}" if pod else
                                                            "mizzen-agent"), "%Y-%m-%dT%H:%M:%S"))
        h._mizzen_agent = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@click.command("agent")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="the pod's agent.json (written by the runner)")
@click.option("--state-dir", default=None, type=click.Path(file_okay=False),
              help="accepted for uniformity with the other commands; paths come from the config")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def agent(config_path: str, state_dir: str | None, verbose: bool) -> None:
    """Run the sidecar agent of one pod: Envoy bootstrap, supervision, readiness on healthPort, drain on
    SIGTERM."""
    try:
        cfg = load_config(config_path)
    except AgentConfigError as e:
        raise click.ClickException(str(e)) from None
    _setup_logging(cfg.pod, verbose)
    _no_grpc_fork_handlers()
    from .main import run_agent

    logging.getLogger("mizzen.agent").info("agent pid %d starting for %s/%s (config %s)", os.getpid(),
                                           cfg.namespace, cfg.pod, os.path.abspath(config_path))
    try:
        code = run_agent(cfg)
    except EnvoyNotFound as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)
