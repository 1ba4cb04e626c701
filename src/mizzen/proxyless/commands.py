"""`mizzen proxyless-bootstrap WORKLOAD`: write the `GRPC_XDS_BOOTSTRAP` file of a proxyless gRPC client.

The Workload is read from the running mesh (its labels, service account and locality make the client's
node, so VirtualService `sourceLabels` matches and locality-aware policies apply to it as to a sidecar). The
file names every control-plane replica's xDS socket (unix sockets reach into every pod's network
namespace). Default output: `STATE/proxyless/<namespace>.<workload>.json`; `-o -` prints it.
"""
from __future__ import annotations

import json
import os
import sys

import click

from ..cli.options import fail, state_dir_option
from ..client import ApiClient, ClientError, HttpError
from ..client.layout import StateLayout
from .bootstrap import grpc_bootstrap


@click.command("proxyless-bootstrap")
@click.argument("workload")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-o", "--output", default=None, metavar="FILE", help="where to write it (- for stdout)")
@click.option("--pod", default=None, help="the client's name in its node id (default: WORKLOAD-proxyless)")
@state_dir_option
def proxyless_bootstrap(workload: str, namespace: str, output: str | None, pod: str | None, state_dir: str) -> None:
    """Write the gRPC xDS bootstrap for a proxyless client of WORKLOAD (then GRPC_XDS_BOOTSTRAP=FILE)."""
    layout = StateLayout(state_dir)
    try:
        res = ApiClient(state_dir, timeout=10).get_resource("Workload", namespace, workload)
    except HttpError as e:
        if e.status == 404:
            fail(f"no Workload {namespace}/{workload} in the mesh in {layout.root} (mizzen get workloads -A)")
        raise
    except ClientError as e:
        fail(str(e))
    meta, spec = res.get("metadata") or {}, res.get("spec") or {}
    sockets = [p for p in layout.xds_sockets() if os.path.exists(p)] or [layout.xds_socket(0)]
    boot = grpc_bootstrap(sockets, pod=pod or f"{workload}-proxyless", namespace=namespace, workload=workload,
                          labels=meta.get("labels") or {}, service_account=spec.get("serviceAccount") or "default",
                          locality=spec.get("locality") or "",
                          ports=[int(p["containerPort"]) for p in spec.get("ports") or [] if "containerPort" in p])
    text = json.dumps(boot, indent=2) + "\n"
    if output == "-":
        sys.stdout.write(text)
        return
    path = output or layout.proxyless_bootstrap(namespace, workload)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    click.echo(f"wrote {path}\nexport GRPC_XDS_BOOTSTRAP={path}")
