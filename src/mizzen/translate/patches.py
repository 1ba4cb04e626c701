"""Apply EnvoyPatch resources to one proxy's rendered view. PURE.

MERGE merges the patch into the resource's JSON form: objects merge key by key, lists are appended to
(as Istio's EnvoyFilter MERGE), and scalars — including durations and other well-known types, which are
strings in JSON — are replaced whole (a plain protobuf merge would turn `10s` + `0.25s` into `10.25s`).
ADD inserts a whole resource, REMOVE drops one. Patches in the root namespace
apply mesh-wide, then those of the proxy's namespace, oldest first.
"""
from __future__ import annotations

from dataclasses import dataclass

# Extension types a patch may carry inside `typed_config` (imported to register them for JSON parsing).
import envoy.extensions.access_loggers.file.v3.file_pb2  # noqa: F401
import envoy.extensions.filters.http.buffer.v3.buffer_pb2  # noqa: F401
import envoy.extensions.filters.http.cors.v3.cors_pb2  # noqa: F401
import envoy.extensions.filters.http.fault.v3.fault_pb2  # noqa: F401
import envoy.extensions.filters.http.header_mutation.v3.header_mutation_pb2  # noqa: F401
import envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2  # noqa: F401
import envoy.extensions.filters.http.lua.v3.lua_pb2  # noqa: F401
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from ..api.base import Resource
from ..api.patch import APPLY_TO
from ..model.snapshot import ROOT_NAMESPACE, Snapshot, labels_match
from ..model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Proxy, Rendered

MESSAGE = {CLUSTER: cluster_pb2.Cluster, LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration,
           ENDPOINT: endpoint_pb2.ClusterLoadAssignment}


@dataclass(frozen=True)
class PatchError:
    resource: Resource
    index: int
    message: str

    @property
    def path(self) -> str:
        return f"spec.patches[{self.index}]"


def patches_for(snap: Snapshot, proxy: Proxy) -> list[Resource]:
    labels = proxy.label_dict
    out = []
    for ns in (ROOT_NAMESPACE, proxy.namespace):
        for p in snap.config.by_kind.get("EnvoyPatch", ()):
            if p.namespace != ns:
                continue
            sel = p.spec.workload_selector
            if sel is None or labels_match(sel.labels, labels):
                out.append(p)
        if ns == proxy.namespace:
            break
    return out


def parse_value(type_url: str, value: dict):
    """The patch value as the resource's message; raises ValueError with protobuf's reason."""
    try:
        return json_format.ParseDict(value, MESSAGE[type_url]())
    except json_format.ParseError as e:
        raise ValueError(f"not a valid {type_url.rsplit('.', 1)[1]}: {e}") from None


def _as_dict(msg) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        both_dicts = isinstance(v, dict) and isinstance(out.get(k), dict)
        if both_dicts and out[k].get("@type") == v.get("@type"):  # an Any of another type is replaced
            out[k] = _deep_merge(out[k], v)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = out[k] + v
        else:
            out[k] = v
    return out


def merge(type_url: str, payload: bytes, value: dict):
    """MERGE `value` (Envoy JSON, either field-name style) into a serialized resource."""
    current = _as_dict(MESSAGE[type_url].FromString(payload))
    canonical = _as_dict(parse_value(type_url, value))  # validates and normalizes names
    try:
        return json_format.ParseDict(_deep_merge(current, canonical), MESSAGE[type_url]())
    except json_format.ParseError as e:
        raise ValueError(f"merged result is not a valid {type_url.rsplit('.', 1)[1]}: {e}") from None


def apply_patches(view: dict[str, dict[str, Rendered]], patches: list[Resource], render
                  ) -> tuple[dict[str, dict[str, Rendered]], list[PatchError]]:
    """A new view with the patches applied (untouched types are shared, not copied) and the errors."""
    out = dict(view)
    errors: list[PatchError] = []
    for res in patches:
        for i, p in enumerate(res.spec.patches):
            t = APPLY_TO[p.apply_to]
            table = out[t] = dict(out[t]) if out[t] is view[t] else out[t]
            try:
                if p.operation == "REMOVE":
                    table.pop(p.name, None)
                elif p.operation == "MERGE":
                    if p.name in table:
                        table[p.name] = render(t, p.name, merge(t, table[p.name].payload, p.value))
                else:
                    msg = parse_value(t, p.value)
                    name = getattr(msg, "name", "") or getattr(msg, "cluster_name", "") or p.name
                    if not name:
                        raise ValueError("ADD needs a resource with a name")
                    table[name] = render(t, name, msg)
            except ValueError as e:
                errors.append(PatchError(res, i, str(e)))
    return out, errors
