"""`mizzen.dev/v1 EnvoyPatch`: the escape hatch (Istio's EnvoyFilter idea, simpler).

Selects generated resources by workload labels, type and name, and adds, merges into or removes them.
Values are Envoy's own JSON for the resource type. The control plane checks a patch with the real Envoy
before accepting it, so a patch that would be NACKed is refused at apply time with Envoy's reason.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Spec

APPLY_TO = {
    "CLUSTER": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "LISTENER": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "ROUTE_CONFIGURATION": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "CLUSTER_LOAD_ASSIGNMENT": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
}


class PatchSelector(Spec):
    labels: dict[str, str] = Field(default_factory=dict)


class Patch(Spec):
    apply_to: Literal["CLUSTER", "LISTENER", "ROUTE_CONFIGURATION", "CLUSTER_LOAD_ASSIGNMENT"]
    name: str | None = None  # the resource name; required for MERGE and REMOVE
    operation: Literal["MERGE", "ADD", "REMOVE"]
    value: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Patch":
        if self.operation in ("MERGE", "REMOVE") and not self.name:
            raise ValueError(f"{self.operation} needs the name of the resource to patch")
        if self.operation in ("MERGE", "ADD") and not self.value:
            raise ValueError(f"{self.operation} needs a value")
        if self.operation == "REMOVE" and self.value:
            raise ValueError("REMOVE takes no value")
        return self


class EnvoyPatchSpec(Spec):
    workload_selector: PatchSelector | None = None  # none: every proxy of the namespace
    patches: list[Patch] = Field(min_length=1)
