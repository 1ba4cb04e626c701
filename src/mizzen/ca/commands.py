"""`mizzen ca`: make a root, create or plug in a mesh's CA, show it.

    mizzen ca init                          create the mesh's root + intermediate in STATE/ca (if there is none)
    mizzen ca init --root-out DIR           make a root (root-cert.pem, root-key.pem) to share between meshes
    mizzen ca init --from DIR               plug in a root (a new intermediate is minted for this mesh) or a
                                            complete intermediate (ca-cert.pem, ca-key.pem, root-cert.pem,
                                            cert-chain.pem, Istio's plug-in names)
    mizzen ca show [-o json]                the mesh's CA chain
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ..cli.options import state_dir_option
from .authority import CaError, CaMaterial, serial_hex
from .files import ensure_mesh_ca, init_from, load_ca_dir, mesh_ca_dir, utcnow, write_root


def _mesh_name(state_dir: str) -> str:
    return os.path.basename(os.path.abspath(state_dir).rstrip("/")).lstrip(".") or "mesh"


def describe_cert(role: str, cert: x509.Certificate) -> dict[str, Any]:
    return {
        "role": role, "subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
        "serial": serial_hex(cert),
        "notBefore": cert.not_valid_before_utc.isoformat().replace("+00:00", "Z"),
        "notAfter": cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    }


def describe_material(material: CaMaterial) -> list[dict[str, Any]]:
    rows = [describe_cert("intermediate (signs workloads)", material.ca_cert)]
    rows += [describe_cert("intermediate", c) for c in material.chain[1:]]
    rows.append(describe_cert("root", material.root))
    return rows


def _echo_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        click.echo(f"{r['role']}: {r['subject']}")
        click.echo(f"  serial {r['serial']}, valid {r['notBefore']} .. {r['notAfter']}")
        click.echo(f"  sha256 {r['sha256']}")


@click.group("ca")
def ca() -> None:
    """The mesh's certificate authority (workload identities for mTLS)."""


@ca.command("init")
@click.option("--root-out", "root_out", metavar="DIR", default=None,
              help="only make a new root (root-cert.pem, root-key.pem) in DIR, to plug into meshes with --from")
@click.option("--from", "from_dir", metavar="DIR", default=None,
              help="plug in a root (root-cert.pem + root-key.pem) or an intermediate (ca-cert.pem, ca-key.pem, "
                   "root-cert.pem, cert-chain.pem) from DIR")
@click.option("--mesh", default=None, help="name in the intermediate's subject (default: the state dir's name)")
@click.option("--force", is_flag=True, help="replace an existing root in --root-out DIR / the mesh's CA")
@state_dir_option
def init(root_out: str | None, from_dir: str | None, mesh: str | None, force: bool, state_dir: str) -> None:
    """Create the mesh's CA, make a shareable root, or plug in an existing root or intermediate."""
    if root_out and from_dir:
        raise click.UsageError("--root-out makes a root, --from plugs one in: use one, then the other")
    now = utcnow()
    try:
        if root_out:
            cert = write_root(Path(root_out), now, force=force)
            click.echo(f"wrote a root CA to {root_out}/root-cert.pem and root-key.pem (keep the key offline; "
                       f"mode 0600)")
            _echo_rows([describe_cert("root", cert)])
            click.echo(f"plug it into a mesh with: mizzen ca init --from {root_out} --state-dir STATE")
            return
        name = mesh or _mesh_name(state_dir)
        if from_dir:
            material, kind = init_from(Path(from_dir), state_dir, now, mesh=name, force=force)
            what = ("a new intermediate signed by the root from" if kind == "root"
                    else "the intermediate from")
            click.echo(f"the mesh in {state_dir} now uses {what} {from_dir} ({mesh_ca_dir(state_dir)})")
        else:
            material = ensure_mesh_ca(state_dir, now, mesh=name)
            click.echo(f"mesh CA in {mesh_ca_dir(state_dir)}")
    except CaError as e:
        raise click.ClickException(str(e)) from None
    _echo_rows(describe_material(material))


@ca.command("show")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@state_dir_option
def show(output: str, state_dir: str) -> None:
    """The mesh's CA chain: subjects, serials, validity, fingerprints."""
    try:
        material = load_ca_dir(mesh_ca_dir(state_dir), utcnow())
    except CaError as e:
        raise click.ClickException(f"{e} (create one with: mizzen ca init --state-dir {state_dir})") from None
    rows = describe_material(material)
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        _echo_rows(rows)
