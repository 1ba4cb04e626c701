"""Istio `security.istio.io` AuthorizationPolicy and RequestAuthentication (v1, v1beta1), as Istio documents
them, with Istio's validation rules (`pkg/config/validation`, `pkg/config/security`) and a few stricter ones
where Istio accepts a value that can never match (each says why).

What the policies mean for a proxy (which apply, in which order) is `model/authz.py`; their Envoy form
(RBAC, jwt_authn) is `translate/filters/rbac.py` and `translate/filters/jwt.py`.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic.alias_generators import to_camel as _camel

from .base import Spec
from .virtual_service import duration_seconds

SECURITY_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")

ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
DRY_RUN_ANNOTATION = "istio.io/dry-run"

# `when` keys (Istio's attribute list). Keys with a bracketed name: request.headers[X], request.auth.claims[a][b],
# experimental.envoy.filters.<filter>[key].
EXACT_KEYS = frozenset({
    "source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount", "source.trustDomain",
    "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
    "destination.ip", "destination.port", "connection.sni",
})
BRACKET_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
_RETIRED = {
    "destination.namespace": "is replaced by the policy's metadata.namespace",
    "destination.name": "is a v1alpha1 attribute (deprecated): select the workload with `selector`",
    "destination.user": "is a v1alpha1 attribute (deprecated): select the workload with `selector`",
}

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 7230 token (header names)
PRINCIPAL_FORM = re.compile(r"^[^/]+/ns/[^/]+/sa/[^/]+$")  # <trust domain>/ns/<namespace>/sa/<service account>
_PATH_LITERAL = re.compile(r"^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$")  # RFC 3986 pchar (Envoy's uri_template)


def _nonempty(values: list[str], what: str) -> list[str]:
    for v in values:
        if v == "":
            raise ValueError(f"empty value not allowed in {what}")
    return values


def _wildcard_ends_only(values: list[str], what: str) -> None:
    """Identities may use '*' alone, as a prefix or as a suffix. Istio would take any other '*' literally, and
    no SPIFFE identity or namespace contains one: the value could never match, so it is refused."""
    for v in values:
        if v == "*":
            continue
        inner = v[1:] if v.startswith("*") else v[:-1] if v.endswith("*") else v
        if "*" in inner:
            raise ValueError(f"{what}: {v!r} can never match: '*' is only allowed alone, as a prefix "
                             "('prefix*') or as a suffix ('*suffix')")


def check_ips(values: list[str], what: str) -> list[str]:
    """Single addresses and CIDR ranges, as Istio's ValidateIPs."""
    _nonempty(values, what)
    for v in values:
        try:
            if "/" in v:
                ipaddress.ip_network(v, strict=False)
            else:
                ipaddress.ip_address(v)
        except ValueError:
            kind = "CIDR range" if "/" in v else "IP address"
            raise ValueError(f"{what}: bad {kind} {v!r}") from None
    return values


def check_ports(values: list[str], what: str) -> list[str]:
    _nonempty(values, what)
    for v in values:
        if not v.isdigit() or int(v) > 65535:
            raise ValueError(f"{what}: bad port {v!r} (a number 0-65535, as a string)")
    return values


def check_service_accounts(values: list[str], what: str) -> list[str]:
    """`sa` or `namespace/sa`, no wildcard, at most 16 values (Istio's CheckServiceAccount)."""
    if len(values) > 16:
        raise ValueError(f"{what}: may not have more than 16 values")
    for v in values:
        if "*" in v:
            raise ValueError(f"{what}: wildcard not allowed, found {v!r}")
        ns, sep, sa = v.partition("/")
        if not v or "/" in sa or (sep and not ns) or not (sa if sep else ns) or len(v) > 320:
            raise ValueError(f"{what}: expected 'serviceAccount' or 'namespace/serviceAccount', found {v!r}")
    return values


def is_path_template(p: str) -> bool:
    return "{*}" in p or "{**}" in p


def check_paths(values: list[str], what: str) -> list[str]:
    """Istio's CheckValidPathTemplate: `{*}` (one segment) and `{**}` (the rest; last operator only)."""
    _nonempty(values, what)
    for path in values:
        template = is_path_template(path)
        seen_any = False
        for glob in path.strip("/").split("/"):
            if glob in ("{*}", "{**}"):
                if seen_any:
                    raise ValueError(f"{what}: invalid path {path!r}: {{**}} must be the last operator")
                seen_any = glob == "{**}"
                continue
            if "{" in glob or "}" in glob:
                raise ValueError(f"{what}: invalid path {path!r}: '{{' or '}}' outside a {{*}} or {{**}} template")
            if template and glob and not _PATH_LITERAL.match(glob):
                raise ValueError(f"{what}: invalid path {path!r}: segment {glob!r} is not a valid literal")
    return values


def bracket_names(key: str, prefix: str) -> list[str]:
    """`request.auth.claims[a][b]` -> ['a', 'b']; `request.headers[x]` -> ['x']; ValueError if malformed."""
    rest = key[len(prefix):]
    names: list[str] = []
    while rest:
        if not rest.startswith("[") or "]" not in rest:
            break
        end = rest.index("]")
        name = rest[1:end]
        if not name or "[" in name:
            break
        names.append(name)
        rest = rest[end + 1:]
    if rest or not names:
        raise ValueError(f"bad key {key!r}: should have the form {prefix}[name]")
    return names


def check_condition_key(key: str, values: list[str]) -> None:
    """Istio's ValidateAttribute: a known key, with values of its type."""
    if key in _RETIRED:
        raise ValueError(f"attribute {key} {_RETIRED[key]}")
    if key in ("source.ip", "remote.ip", "destination.ip"):
        check_ips(values, key)
    elif key == "destination.port":
        check_ports(values, key)
    elif key == "source.serviceAccount":
        check_service_accounts(values, key)
    elif key in EXACT_KEYS:
        _nonempty(values, key)
        if key in ("source.principal", "source.namespace"):
            _wildcard_ends_only(values, key)
    elif key.startswith("request.headers"):
        names = bracket_names(key, "request.headers")
        # a header name, or an HTTP/2 pseudo-header (`:method`, `:authority`, `:path`), which Envoy matches too
        if len(names) != 1 or not _TOKEN.match(names[0].removeprefix(":")):
            raise ValueError(f"bad key {key!r}: request.headers[<header name>]")
        _nonempty(values, key)
    elif key.startswith("request.auth.claims"):
        bracket_names(key, "request.auth.claims")
        _nonempty(values, key)
    elif key.startswith("experimental.envoy.filters."):
        head, sep, _ = key.partition("[")
        if not sep or not key.endswith("]") or len(bracket_names(key, head)) != 1:
            raise ValueError(f"bad key {key!r}: experimental.envoy.filters.<filter>[<key>]")
        _nonempty(values, key)
    else:
        raise ValueError(f"unknown attribute {key!r} (see Istio's authorization conditions: request.headers[...], "
                         "source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, source.trustDomain, "
                         "request.auth.principal/audiences/presenter/claims[...], destination.ip, destination.port, "
                         "connection.sni, experimental.envoy.filters.*)")


class WorkloadSelector(Spec):
    match_labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not k:
                raise ValueError(f"empty key is not supported in selector: '{k}={val}'")
            if "*" in k or "*" in val:
                raise ValueError(f"wildcard is not supported in selector: '{k}={val}'")
        return v


_GROUP = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")  # a DNS subdomain
_KIND = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")


class PolicyTargetReference(Spec):
    """Istio's CRD rules: group a DNS subdomain (or empty), kind a Kubernetes kind name, no namespace."""

    group: str = Field(default="", max_length=253)
    kind: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        if v and not _GROUP.fullmatch(v):
            raise ValueError(f"invalid group {v!r}: a DNS subdomain (lower case letters, digits, '-' and '.')")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if not _KIND.fullmatch(v):
            raise ValueError(f"invalid kind {v!r}: letters, digits and '-', starting with a letter")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("cross namespace referencing is not currently supported: leave namespace out "
                             "(the policy's own namespace)")
        return v


class Source(Spec):
    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    request_principals: list[str] = Field(default_factory=list)
    not_request_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    service_accounts: list[str] = Field(default_factory=list)
    not_service_accounts: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)
    # the trust domain of the caller's SPIFFE identity (`spiffe://<td>/...`): a name, `*` (any), or a name
    # with one `*` standing for any characters of the trust domain (translate/filters/rbac.py)
    trust_domains: list[str] = Field(default_factory=list)
    not_trust_domains: list[str] = Field(default_factory=list)

    @field_validator("trust_domains", "not_trust_domains")
    @classmethod
    def _trust_domains(cls, v: list[str], info) -> list[str]:
        return _nonempty(v, _camel(info.field_name))

    @field_validator("principals", "not_principals")
    @classmethod
    def _principals(cls, v: list[str], info) -> list[str]:
        _nonempty(v, _camel(info.field_name))
        _wildcard_ends_only(v, _camel(info.field_name))
        for p in v:
            if p.startswith("spiffe://"):
                raise ValueError(f"principal {p!r}: write it without 'spiffe://' "
                                 f"({p[len('spiffe://'):]!r}), as Istio's source.principal")
            # another form (`sleep`) is valid Istio and loads: it matches the URI SAN spiffe://sleep, which no
            # mesh certificate has; `mizzen analyze` reports it (MZ0205)
        return v

    @field_validator("namespaces", "not_namespaces")
    @classmethod
    def _namespaces(cls, v: list[str], info) -> list[str]:
        _nonempty(v, _camel(info.field_name))
        _wildcard_ends_only(v, _camel(info.field_name))
        return v

    @field_validator("request_principals", "not_request_principals")
    @classmethod
    def _request_principals(cls, v: list[str], info) -> list[str]:
        return _nonempty(v, _camel(info.field_name))

    @field_validator("service_accounts", "not_service_accounts")
    @classmethod
    def _sas(cls, v: list[str], info) -> list[str]:
        return check_service_accounts(v, _camel(info.field_name))

    @field_validator("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks")
    @classmethod
    def _ips(cls, v: list[str], info) -> list[str]:
        return check_ips(v, _camel(info.field_name))

    @model_validator(mode="after")
    def _rules(self) -> "Source":
        if not any(getattr(self, f) for f in type(self).model_fields):
            raise ValueError("`from.source` must not be empty")
        if (self.service_accounts or self.not_service_accounts) and \
                (self.principals or self.not_principals or self.namespaces or self.not_namespaces):
            raise ValueError("cannot set serviceAccounts with namespaces or principals")
        return self


class From(Spec):
    source: Source


class Operation(Spec):
    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    not_ports: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)

    @field_validator("ports", "not_ports", mode="before")
    @classmethod
    def _port_strings(cls, v):
        # Istio's ports are strings; a YAML integer is what everyone writes first: take it
        return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v] \
            if isinstance(v, list) else v

    @field_validator("ports", "not_ports")
    @classmethod
    def _ports(cls, v: list[str], info) -> list[str]:
        return check_ports(v, _camel(info.field_name))

    @field_validator("paths", "not_paths")
    @classmethod
    def _paths(cls, v: list[str], info) -> list[str]:
        return check_paths(v, _camel(info.field_name))

    @field_validator("hosts", "not_hosts", "methods", "not_methods")
    @classmethod
    def _strings(cls, v: list[str], info) -> list[str]:
        return _nonempty(v, _camel(info.field_name))

    @model_validator(mode="after")
    def _rules(self) -> "Operation":
        if not any(getattr(self, f) for f in type(self).model_fields):
            raise ValueError("`to.operation` must not be empty")
        return self


class To(Spec):
    operation: Operation


class Condition(Spec):
    key: str = Field(min_length=1)
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> "Condition":
        if not self.values and not self.not_values:
            raise ValueError(f"at least one of `values` or `notValues` must be set for key {self.key}")
        check_condition_key(self.key, self.values)
        check_condition_key(self.key, self.not_values)
        return self


class Rule(Spec):
    from_: list[From] | None = Field(default=None, alias="from")
    to: list[To] | None = None
    when: list[Condition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> "Rule":
        if self.from_ is not None and not self.from_:
            raise ValueError("`from` must not be empty (leave it out to match any source)")
        if self.to is not None and not self.to:
            raise ValueError("`to` must not be empty (leave it out to match any operation)")
        return self

    @property
    def sources(self) -> list[Source]:
        return [f.source for f in self.from_ or ()]

    @property
    def operations(self) -> list[Operation]:
        return [t.operation for t in self.to or ()]


class ExtensionProvider(Spec):
    name: str = ""


def _one_of_selector(selector, target_ref, target_refs) -> None:
    if sum(1 for x in (selector, target_ref, target_refs) if x) > 1:
        raise ValueError("only one of targetRefs or selector can be set")


class AuthorizationPolicySpec(Spec):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list, max_length=16)
    rules: list[Rule] | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: ExtensionProvider | None = None

    @model_validator(mode="after")
    def _rules(self) -> "AuthorizationPolicySpec":
        _one_of_selector(self.selector, self.target_ref, self.target_refs)
        if self.action == "CUSTOM":
            # Mizzen has no ext_authz extension providers (MeshConfig extensionProviders) yet
            raise ValueError("action CUSTOM is not supported: Mizzen has no ext_authz extension providers; "
                             "use ALLOW, DENY or AUDIT")
        if self.provider is not None:
            raise ValueError(f"`provider` must not be set with a non-CUSTOM action, found {self.action}")
        if self.action == "DENY" and not self.rules:
            raise ValueError("DENY action without `rules` is meaningless as it will never be triggered, "
                             "add an empty rule `{}` if you want it be triggered for every request")
        return self

    @property
    def target_references(self) -> list[PolicyTargetReference]:
        return ([self.target_ref] if self.target_ref else []) + list(self.target_refs)


# ---------------------------------------------------------------- RequestAuthentication


class JWTHeader(Spec):
    name: str = Field(min_length=1)
    prefix: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _TOKEN.match(v):
            raise ValueError(f"{v!r} is not a valid header name")
        return v


class ClaimToHeader(Spec):
    header: str = Field(min_length=1)
    claim: str = Field(min_length=1)

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        if not _TOKEN.match(v):
            raise ValueError(f"{v!r} is not a valid header name")
        return v


_JWK_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "oct": ("k",), "OKP": ("crv", "x")}


def check_jwks(text: str) -> dict:
    """A JSON Web Key Set: `{"keys": [...]}`, each key with its type's members (RFC 7517/7518). Returns it
    parsed; ValueError with the reason otherwise. Envoy checks the keys themselves when it loads them."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ValueError(f"jwks is not valid JSON: {e}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError('jwks must be a JSON Web Key Set: {"keys": [ ... ]} with at least one key')
    for i, k in enumerate(keys):
        kty = k.get("kty") if isinstance(k, dict) else None
        if kty not in _JWK_MEMBERS:
            raise ValueError(f"jwks keys[{i}]: kty {kty!r} is not one of RSA, EC, oct, OKP")
        missing = [m for m in _JWK_MEMBERS[kty] if not isinstance(k.get(m), str) or not k.get(m)]
        if missing:
            raise ValueError(f"jwks keys[{i}] ({kty}): missing {', '.join(missing)}")
    return doc


_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:?#\[\]@]*)"
                  r"(?::(?P<port>[^/?#]*))?(?P<rest>[/?#].*)?$")


def check_jwks_uri(uri: str) -> str:
    """http(s)://host[:port][/path] (Istio's ParseJwksURI)."""
    m = _URI.match(uri)
    scheme = (m.group("scheme") if m else uri.partition(":")[0]).lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"jwksUri {uri!r}: URI scheme {scheme!r} is not supported (http or https)")
    if m is None or not m.group("host"):
        raise ValueError(f"jwksUri {uri!r} has no host")
    port = m.group("port")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"jwksUri {uri!r}: bad port {port!r}")
    return uri


class JWTRule(Spec):
    issuer: str = ""
    audiences: list[str] = Field(default_factory=list)
    jwks_uri: str = ""
    jwks: str = ""
    from_headers: list[JWTHeader] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    from_cookies: list[str] = Field(default_factory=list)
    output_payload_to_header: str = ""
    output_claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    forward_original_token: bool = False
    timeout: str | None = None
    # claims whose string value is a space-separated list (besides `scope` and `permission`, always split):
    # `request.auth.claims[<name>]` then matches one of its words (translate/filters/jwt.py)
    space_delimited_claims: list[str] = Field(default_factory=list, max_length=64)
    # OPTIONAL | REQUIRED: accepted; Istio's sidecars do not act on it either (a token is required by an
    # AuthorizationPolicy `requestPrincipals: ["*"]`); `mizzen analyze` reports it (MZ0110)
    presence: Literal["OPTIONAL", "REQUIRED"] | None = None

    @field_validator("audiences")
    @classmethod
    def _audiences(cls, v: list[str]) -> list[str]:
        if any(a == "" for a in v):
            raise ValueError("audience must be non-empty string")
        return v

    @field_validator("from_params", "from_cookies", "space_delimited_claims")
    @classmethod
    def _locations(cls, v: list[str], info) -> list[str]:
        return _nonempty(v, _camel(info.field_name))

    @field_validator("jwks_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        return check_jwks_uri(v) if v else v

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, v: str) -> str:
        if v:
            check_jwks(v)
        return v

    @field_validator("output_payload_to_header")
    @classmethod
    def _header(cls, v: str) -> str:
        if v and not _TOKEN.match(v):
            raise ValueError(f"{v!r} is not a valid header name")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str | None) -> str | None:
        if v is not None and duration_seconds(v) <= 0:
            raise ValueError(f"timeout {v!r} must be positive")
        return v

    @model_validator(mode="after")
    def _rules(self) -> "JWTRule":
        if not self.issuer and not self.jwks_uri:
            raise ValueError("issuer or jwksUri must be non-empty string")
        if not self.jwks and not self.jwks_uri:
            # Istio would discover the keys from `<issuer>/.well-known/openid-configuration`; Mizzen fetches
            # only what is configured
            raise ValueError("set `jwks` (inline) or `jwksUri`: OpenID discovery from the issuer is not supported")
        return self


class RequestAuthenticationSpec(Spec):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list, max_length=16)
    jwt_rules: list[JWTRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> "RequestAuthenticationSpec":
        _one_of_selector(self.selector, self.target_ref, self.target_refs)
        return self

    @property
    def target_references(self) -> list[PolicyTargetReference]:
        return ([self.target_ref] if self.target_ref else []) + list(self.target_refs)
