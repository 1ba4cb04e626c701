"""Shared pieces of every resource kind: metadata, the resource envelope, errors with field paths."""
from __future__ import annotations

import contextlib
import functools
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic._internal._decorators import PydanticDescriptorProxy
from pydantic.alias_generators import to_camel

from .fields import check_labels, show

DEFAULT_NAMESPACE = "default"
CLUSTER_DOMAIN = "svc.cluster.local"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_ANNOTATIONS_BYTES = 256 * 1024  # Kubernetes' limit on all of a resource's annotations


_LENIENT: ContextVar[bool] = ContextVar("mizzen_lenient_validation", default=False)


@contextlib.contextmanager
def lenient() -> Iterator[None]:
    """Within it, Istio's rules (the validators) do not reject: only the shape (types, known fields) is
    checked. `mizzen analyze` reads documents so, as istioctl does, to analyze a resource that breaks a rule
    (reported as IST0106) rather than ignore it."""
    token = _LENIENT.set(True)
    try:
        yield
    finally:
        _LENIENT.reset(token)


def _rule(fn: Any) -> Any:
    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError:
            if _LENIENT.get():
                return args[-1]  # a field validator's value, an after-validator's model: unchanged
            raise
    return checked


class Spec(BaseModel):
    """Base of every spec model: immutable, camelCase in YAML, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=False,
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in list(cls.__dict__.values()):  # every validator may be switched off by lenient()
            if isinstance(attr, PydanticDescriptorProxy):
                f = attr.wrapped
                attr.wrapped = classmethod(_rule(f.__func__)) if isinstance(f, classmethod) else _rule(f)


class Metadata(Spec):
    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Kubernetes fields tolerated on input (kubectl output round-trips), not used.
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or len(v) > 253 or not _DNS_SUBDOMAIN.fullmatch(v):
            raise ValueError(f"invalid name {show(v)}: lower-case letters, digits, '-' and '.' only, "
                             "at most 253 characters")
        return v

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        if not v or len(v) > 63 or not _DNS_LABEL.fullmatch(v):
            raise ValueError(f"invalid namespace {show(v)}: a DNS label (lower-case letters, digits, '-'), "
                             "at most 63 characters")
        return v

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _null_is_empty(cls, v: object) -> object:
        return {} if v is None else v  # `labels:` with nothing after it, as Kubernetes reads it

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        check_labels(v)
        return v

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str]) -> dict[str, str]:
        if sum(len(k) + len(x) for k, x in v.items()) > MAX_ANNOTATIONS_BYTES:
            raise ValueError(f"annotations are too long (more than {MAX_ANNOTATIONS_BYTES} bytes in all)")
        for k in v:
            check_labels({k: ""})  # an annotation key is a qualified name, as a label key
        return v


@dataclass(frozen=True)
class Issue:
    """One problem found in user input, located precisely."""

    message: str
    file: str = "<input>"
    document: int | None = None  # 0-based index of the YAML document in the file
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    path: str | None = None  # field path, e.g. spec.http[0].route[1].weight

    def __str__(self) -> str:
        where = self.file
        if self.document is not None:
            where += f" (document {self.document + 1})"
        what = ""
        if self.kind:
            what = f" {self.kind}"
            if self.name:
                what += f" {self.namespace or DEFAULT_NAMESPACE}/{self.name}"
        field_ = f" field {self.path}:" if self.path else (":" if what else "")
        return f"{where}:{what}{field_} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class InvalidConfig(Exception):
    """Raised when input cannot be accepted. Carries every issue found, not just the first."""

    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass(frozen=True)
class ResourceKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Resource:
    """A validated resource: envelope + typed spec. Hashable and immutable."""

    api_version: str
    kind: str
    metadata: Metadata
    spec: Any  # a Spec subclass instance for the kind
    revision: int = 0  # store revision at which it was last written (0 = not stored)

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    def to_dict(self) -> dict[str, Any]:
        """The canonical YAML/JSON form (camelCase, defaults omitted)."""
        meta = self.metadata.model_dump(by_alias=True, exclude_defaults=True, exclude_none=True)
        meta["namespace"] = self.metadata.namespace
        kind = "Gateway" if self.kind == "KubeGateway" else self.kind  # the Gateway API's (api/gateway_api.py)
        out: dict[str, Any] = {"apiVersion": self.api_version, "kind": kind, "metadata": meta}
        spec = self.spec.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")
        out["spec"] = spec
        return out

    def with_revision(self, revision: int) -> "Resource":
        return Resource(self.api_version, self.kind, self.metadata, self.spec, revision)
