"""`mizzen.dev/v1 Router`: one resource for a service's port, protocol, branches and version weights.

It generates the VirtualService + DestinationRule pair (see model/router.py), so adding a version is one
edit instead of two objects changed in the right order.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .fields import Port, check_labels, check_wildcard_domain, show

_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


class RouterBranch(Spec):
    branch: str = Field(min_length=1)
    # version label value -> weight; empty: the whole branch is one destination
    versions: dict[str, int] = Field(default_factory=dict)

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        if not _LABEL_VALUE.fullmatch(v) or len(v) > 63:
            raise ValueError(f"invalid branch {show(v)}: must be a label value")
        return v

    @field_validator("versions")
    @classmethod
    def _versions(cls, v: dict[str, int]) -> dict[str, int]:
        for name, w in v.items():
            if not _LABEL_VALUE.fullmatch(name) or len(name) > 63:
                raise ValueError(f"invalid version {show(name)}: must be a label value")
            if not 0 <= w <= 100:
                raise ValueError(f"weight of {name!r} must be 0..100, got {w}")
        if v and sum(v.values()) != 100:
            raise ValueError(f"version weights sum to {sum(v.values())}, must be 100")
        return v


class RouterSpec(Spec):
    port: Port
    protocol: Literal["http", "http2", "grpc"] = "http"
    host: str | None = None  # the service; default: the Router's name in its namespace
    default_branch: str = "master"
    branch_label: str = "branch"
    version_label: str = "version"
    subsets: list[RouterBranch] = Field(min_length=1)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None:
            if v.startswith("*"):
                raise ValueError(f"host {show(v)}: a Router is for one service, not a wildcard")
            check_wildcard_domain(v)
        return v

    @field_validator("branch_label", "version_label")
    @classmethod
    def _label(cls, v: str) -> str:
        check_labels({v: ""})
        return v

    @model_validator(mode="after")
    def _default_branch(self) -> "RouterSpec":
        names = [s.branch for s in self.subsets]
        if len(set(names)) != len(names):
            raise ValueError("each branch may appear once in subsets")
        if self.default_branch not in names:
            raise ValueError(f"defaultBranch {self.default_branch!r} is not one of the subsets' branches")
        return self
