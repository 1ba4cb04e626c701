"""Apply EnvoyPatch resources to one proxy's rendered view. PURE.

MERGE merges the patch into the resource's JSON form: objects merge key by key, lists are appended to
(as Istio's EnvoyFilter MERGE), and scalars — including durations and other well-known types, which are
strings in JSON — are replaced whole (a plain protobuf merge would turn `10s` + `0.25s` into `10.25s`).
ADD inserts a whole resource, REMOVE drops one. Which patches apply to a proxy, in which order, is
`model.Resolved.patches_for` (the root namespace's mesh-wide, then the proxy's namespace's, oldest first).

Each EnvoyPatch resource applies all-or-nothing to a view: if one of its patches does not parse or merge, or
the result would dangle (a route to a cluster the view lacks, an RDS name without its route config, an EDS
cluster without endpoints: `consistency.py`), the whole resource is skipped for that view and the reason is
returned, so a broken patch never reaches Envoy. The apply-time check (`server/patchcheck.py`) refuses such
a patch with these reasons; at render time (a patch that went bad later, e.g. the cluster it routes to was
deleted) the control plane logs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

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
from ..model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Rendered
from .consistency import Dangling, dangling

MESSAGE = {CLUSTER: cluster_pb2.Cluster, LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration,
           ENDPOINT: endpoint_pb2.ClusterLoadAssignment}


@dataclass(frozen=True)
class PatchError:
    """Why an EnvoyPatch was not applied to a view. `index`: the patch entry at fault (None: the patch as a
    whole)."""

    resource: Resource
    index: int | None
    message: str
    field: str = ""  # "value": the entry's value does not parse or merge

    @property
    def path(self) -> str:
        p = f"spec.patches[{self.index}]" if self.index is not None else "spec.patches"
        return f"{p}.{self.field}" if self.field else p

    def __str__(self) -> str:
        return f"EnvoyPatch {self.resource.namespace}/{self.resource.name} {self.path}: {self.message}"


@dataclass(frozen=True)
class Patched:
    view: dict[str, dict[str, Rendered]]
    errors: tuple[PatchError, ...] = ()  # one per EnvoyPatch skipped for this view


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


class _Failed(Exception):
    def __init__(self, index: int, message: str):
        self.index, self.message = index, message


def _apply_one(view: dict[str, dict[str, Rendered]], res: Resource, render) -> dict[str, dict[str, Rendered]]:
    """A new view with one EnvoyPatch's patches applied (untouched types are shared); raises _Failed."""
    out = dict(view)
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
            raise _Failed(i, str(e)) from None
    return out


def _culprit(res: Resource, d: Dangling) -> int | None:
    """The patch entry that made `d` dangle: the REMOVE of what is missing, else the entry that wrote the
    resource that names it."""
    entries = list(enumerate(res.spec.patches))
    for i, p in entries:
        if p.operation == "REMOVE" and APPLY_TO[p.apply_to] == d.missing_type and p.name == d.missing:
            return i
    for i, p in entries:
        if APPLY_TO[p.apply_to] != d.referrer_type:
            continue
        written = p.name
        if p.operation == "ADD" and p.value:
            written = p.value.get("name") or p.value.get("cluster_name") or p.value.get("clusterName") or p.name
        if written == d.referrer:
            return i
    return None


def apply_patches(view: dict[str, dict[str, Rendered]], patches: Iterable[Resource], render) -> Patched:
    """Apply EnvoyPatch resources in order, each all-or-nothing (see the module docstring)."""
    out = view
    current = dangling(view)
    errors: list[PatchError] = []
    for res in patches:
        try:
            cand = _apply_one(out, res, render)
        except _Failed as e:
            errors.append(PatchError(res, e.index, e.message, "value"))
            continue
        after = dangling(cand)
        new = sorted(after - current)
        if new:
            for d in new:
                errors.append(PatchError(res, _culprit(res, d), str(d)))
            continue
        out, current = cand, after
    return Patched(out, tuple(errors))
