"""`mizzen analyze` for gateways that Mizzen runs (docs/gateway.md). PURE.

- IST0101 ReferencedResourceNotFound (Error): a Gateway server's `credentialName` (or `credentialNames`) names
  a Secret that does not exist in the namespace of a gateway workload the Gateway selects (Istio's rule: the
  credential is read in the gateway's own namespace; `kubernetes-gateway://<ns>/<name>`, a Gateway API
  certificateRef a ReferenceGrant allows, in `<ns>`); or, for MUTUAL / OPTIONAL_MUTUAL, neither that Secret's
  `ca.crt` nor a Secret `<name>-cacert` exists. Istio's wording. Its HTTPS servers would fail every handshake.
"""
from __future__ import annotations

from typing import Iterable

from ..model.gateway_api import parse_credential
from .base import ERROR, WARNING, Context, Message, analyzer, ref, selects


@analyzer
def gateway_credentials(ctx: Context) -> Iterable[Message]:
    secrets = {(s.namespace, s.name): s for s in ctx.kind("Secret")}
    for gw in ctx.kind("Gateway"):
        sel = dict(gw.spec.selector)
        namespaces = sorted({w.namespace for w in ctx.workloads if sel and selects(sel, w.label_dict)})
        for i, s in enumerate(gw.spec.servers):
            t = s.tls
            if t is None:
                continue
            names = list(t.credential_names or ([t.credential_name] if t.credential_name else []))
            for wl_ns in namespaces:
                for credential in names:
                    own, name = parse_credential(credential)  # a granted Secret of another namespace names it
                    ns = own or wl_ns
                    sec = secrets.get((ns, name))
                    if sec is None:
                        yield Message("IST0101", ERROR, ref(gw), f"Referenced credentialName not found: {credential!r}",
                                      f"apply a kubernetes.io/tls Secret {name!r} in namespace {ns!r}"
                                      + (", where the gateway runs" if own is None else ""), f"spec.servers[{i}].tls")
                    elif t.mode in ("MUTUAL", "OPTIONAL_MUTUAL") and "ca.crt" not in sec.spec.values() and \
                            (ns, f"{name}-cacert") not in secrets:
                        yield Message("IST0101", ERROR, ref(gw), f"Referenced credentialName not found: "
                                      f"{credential + '-cacert'!r}", f"add ca.crt to Secret {name!r} (or a Secret "
                                      f"{name}-cacert) in namespace {ns!r}: MUTUAL needs the client CA",
                                      f"spec.servers[{i}].tls")


@analyzer
def gateway_api_status(ctx: Context) -> Iterable[Message]:
    """MZ0112 (Warning): what of the Gateway API config is not served — a route attached to no listener, a
    parent Gateway that does not exist, a backend in another namespace without a ReferenceGrant, a
    certificateRef in another namespace: what Kubernetes would show in the resources' `status` conditions."""
    from ..model.gateway_api import INPUT_KINDS, convert

    if not any(ctx.kind(k) for k in INPUT_KINDS):
        return
    problems: list = []
    convert({k: ctx.kind(k) for k in (*INPUT_KINDS, "Namespace")}, 0, problems)
    seen = set()
    for r, path, why in problems:
        if (r.key, path, why) in seen:
            continue
        seen.add((r.key, path, why))
        yield Message("MZ0112", WARNING, ref(r), why, "see docs/gateway.md (Kubernetes Gateway API)", path)
