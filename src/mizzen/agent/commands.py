"""`mizzen agent --config <state>/pods/<pod>/agent.json` (the lead wires `agent` into the CLI group)."""
from __future__ import annotations

import logging
import os
import sys

import click

from .config import AgentConfigError, load_config
from ..envoybin import EnvoyNotFound

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(name)s[%(process)d] %(levelname)s %(message)s"


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
    from .main import run_agent

    try:
        cfg = load_config(config_path)
    except AgentConfigError as e:
        raise click.ClickException(str(e)) from None
    _setup_logging(cfg.pod, verbose)
    logging.getLogger("mizzen.agent").info("agent pid %d starting for %s/%s (config %s)", os.getpid(),
                                           cfg.namespace, cfg.pod, os.path.abspath(config_path))
    try:
        code = run_agent(cfg)
    except EnvoyNotFound as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)
