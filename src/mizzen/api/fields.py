"""Field types and checks shared by every kind, following Istio's validation rules (pkg/config/validation):
bounded integers, ports, percentages, host names with wildcards, IPs and CIDRs, labels and selectors, HTTP
header names and values (Envoy's %VAR% syntax), RE2 regexes, exportTo, gateway names.

Errors about one element of a field say where it is: `At("hosts[2]", "...")` becomes the issue's field path
(api/load.py appends it to pydantic's location). Values echoed in messages go through `show()`: escaped and
truncated, so a hostile name cannot flood a terminal or a log.
"""
from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

MAX_U32 = 2**32 - 1
MAX_I32 = 2**31 - 1
_MARK = "\x1f"


class At(ValueError):
    """A validation error located at `path` below the field (or model) being validated."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{_MARK}{path}{_MARK}{message}")


def split_at(message: str) -> tuple[str, str]:
    """(sub-path, message) of an error raised as At(...); ("", message) otherwise."""
    if message.startswith(_MARK):
        path, _, msg = message[1:].partition(_MARK)
        return path, msg
    return "", message


def show(value: Any, limit: int = 80) -> str:
    """A value for an error message: repr (control characters escaped), cut to `limit` characters."""
    r = repr(value)
    if len(r) > limit:
        n = len(value) if isinstance(value, (str, list, dict)) else None
        r = r[: limit - 3] + "..." + (f" ({n} characters)" if isinstance(value, str) else "")
    return r


# ------------------------------------------------------------------ numbers

def _integer(v: Any) -> Any:
    """Integers only: not "80", not true, not 1.5 (as a Kubernetes CRD's `integer`); 80.0 is 80."""
    if isinstance(v, bool) or isinstance(v, str):
        raise ValueError(f"must be an integer, not {type(v).__name__} {show(v)}")
    if isinstance(v, float):
        if not math.isfinite(v) or not v.is_integer():
            raise ValueError(f"must be an integer, not {show(v)}")
        return int(v)
    return v


def _number(v: Any) -> Any:
    if isinstance(v, bool) or isinstance(v, str):
        raise ValueError(f"must be a number, not {type(v).__name__} {show(v)}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"must be a finite number, not {v}")
    return v


Int = Annotated[int, BeforeValidator(_integer)]
Int32 = Annotated[int, BeforeValidator(_integer), Field(ge=-MAX_I32 - 1, le=MAX_I32)]
NonNegInt32 = Annotated[int, BeforeValidator(_integer), Field(ge=0, le=MAX_I32)]
UInt32 = Annotated[int, BeforeValidator(_integer), Field(ge=0, le=MAX_U32)]
Port = Annotated[int, BeforeValidator(_integer), Field(ge=1, le=65535)]
Number = Annotated[float, BeforeValidator(_number)]
Percent0to100 = Annotated[float, BeforeValidator(_number), Field(ge=0, le=100)]


def check_percentage(v: float) -> float:
    """Istio's Percent: 0, or within [0.0001, 100] (Envoy's fractional percent has a millionth resolution)."""
    if v < 0 or v > 100 or 0 < v < 0.0001:
        raise ValueError(f"percentage {v} is neither 0.0 nor in range [0.0001, 100.0]")
    return v


# ------------------------------------------------------------------ names and hosts

DNS1123_LABEL = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?")
_WILDCARD_LABEL = re.compile(r"\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?")
_QUALIFIED = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_DNS_LABEL_RE = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_LABEL_KEY = re.compile(r"((?:" + _DNS_LABEL_RE + r")(?:\." + _DNS_LABEL_RE + r")*/)?(" + _QUALIFIED + r")")
_LABEL_VALUE = re.compile(r"(" + _QUALIFIED + r")?")


def is_dns1123_label(v: str) -> bool:
    return isinstance(v, str) and len(v) <= 63 and DNS1123_LABEL.fullmatch(v) is not None


def is_ip(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return "%" not in v  # Go's netip accepts zones, but no Istio field means a zoned address


def check_dns1123_labels(domain: str) -> None:
    parts = domain.split(".")
    if parts[-1].isdigit():
        raise ValueError(f"domain name {show(domain)} invalid (top level domain {show(parts[-1])} cannot be "
                         "all-numeric)")
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return  # a trailing dot: `istio.io.`
        if not is_dns1123_label(label):
            raise ValueError(f"domain name {show(domain)} invalid (label {show(label)} invalid)")


def _dns_preconditions(name: str) -> None:
    if not isinstance(name, str):
        raise ValueError(f"a host name must be a string, not {show(name)}")
    if len(name) > 255:
        raise ValueError(f"domain name {show(name)} too long (max 255)")
    if not name:
        raise ValueError("empty domain name not allowed")


def check_fqdn(name: str) -> None:
    _dns_preconditions(name)
    check_dns1123_labels(name)


def check_wildcard_domain(domain: str) -> None:
    """A host name, optionally with a wildcard first label (`*`, `*.example.com`, `*-foo.example.com`)."""
    _dns_preconditions(domain)
    first, dot, rest = domain.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL.fullmatch(first):
        raise ValueError(f"domain name {show(domain)} invalid (label {show(first)} invalid)")
    if dot:
        check_dns1123_labels(rest)


def check_partial_wildcard(host: str) -> None:
    if "*" in host and len(host) != 1 and not host.startswith("*."):
        raise ValueError(f"partial wildcard {show(host)} not allowed")


def check_ip_subnet(v: str) -> None:
    """An IP address or a CIDR block."""
    if not isinstance(v, str):
        raise ValueError(f"{show(v)} is not a valid IP or CIDR block")
    if v.count("/") == 1:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{show(v)} is not a valid CIDR block") from None
        addr, _, bits = v.partition("/")
        if not bits.isdigit() or bits != str(int(bits)) or "%" in addr:
            raise ValueError(f"{show(v)} is not a valid CIDR block")
        return
    if not is_ip(v):
        raise ValueError(f"{show(v)} is not a valid IP")


def host_matches(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: equal, or one wildcard covers the other."""
    if a == b:
        return True
    aw, bw = a.startswith("*"), b.startswith("*")
    if aw and bw:
        return a[1:].endswith(b[1:]) or b[1:].endswith(a[1:])
    if aw:
        return b.endswith(a[1:])
    if bw:
        return a.endswith(b[1:])
    return False


def host_subset_of(a: str, b: str) -> bool:
    """Istio's host.Name.SubsetOf: every name `a` matches is matched by `b`."""
    aw, bw = a.startswith("*"), b.startswith("*")
    if aw:
        return bw and len(a) >= len(b) and a[1:].endswith(b[1:])
    if bw:
        return a.endswith(b[1:])
    return a == b


def _check_host_part(host: str, gateway: bool) -> None:
    """The host of a Sidecar egress or Gateway `namespace/host`: an FQDN, `*` or `*.suffix` (a Gateway also
    takes an IP); short names and partial wildcards are not allowed."""
    if host != "*" and "." not in host:
        raise ValueError(f"host {show(host)}: short names (non FQDN) are not allowed")
    try:
        check_wildcard_domain(host)
    except ValueError:
        if not (gateway and is_ip(host)):
            raise
    check_partial_wildcard(host)


def check_namespace_slash_host(h: str, gateway: bool = False) -> None:
    """Istio's ValidateNamespaceSlashWildcardHostname: `<ns>/<host>` with ns `*`, `.`, a namespace or (Sidecar)
    `~ns`; a Gateway also takes a bare host."""
    ns, slash, host = h.partition("/")
    if not slash:
        if gateway:
            _check_host_part(h, True)
            return
        raise ValueError(f"host {show(h)} must be of form namespace/dnsName: '<ns>/<host>', './<host>' or "
                         "'*/<host>'")
    if not ns or not host:
        raise ValueError("config namespace and dnsName in host entry cannot be empty")
    bare = ns if gateway else ns.removeprefix("~")
    if bare not in ("*", ".") and not is_dns1123_label(bare):
        raise ValueError(f"invalid namespace value {show(ns)} in {'gateway' if gateway else 'sidecar'}")
    _check_host_part(host, gateway)


# ------------------------------------------------------------------ labels and selectors

def check_labels(labels: dict[str, str]) -> None:
    """Kubernetes label keys and values (Istio's labels.Instance.Validate)."""
    for k, v in labels.items():
        m = _LABEL_KEY.fullmatch(k) if isinstance(k, str) else None
        if m is None:
            raise At(f"[{k!r}]" if isinstance(k, str) and len(k) < 80 else "", f"invalid label key {show(k)}")
        if m.group(1) and len(m.group(1)) - 1 > 253:
            raise At(f"[{show(k, 60)}]", f"invalid label key {show(k)} (DNS prefix is too long)")
        if len(m.group(2)) > 63:
            raise At(f"[{show(k, 60)}]", f"invalid label key {show(k)} (name is too long)")
        if not isinstance(v, str) or _LABEL_VALUE.fullmatch(v) is None or len(v) > 63:
            raise At(f"[{k!r}]", f"invalid label value {show(v)}")


def check_selector_labels(labels: dict[str, str]) -> None:
    """A workload selector's labels: no empty key, no wildcard (Istio)."""
    for k, v in labels.items():
        if k == "":
            raise ValueError(f"empty key is not supported in selector: {show(f'{k}={v}')}")
        if "*" in k or "*" in v:
            raise At(f"[{k!r}]", f"wildcard is not supported in selector: {show(f'{k}={v}')}")
    check_labels(labels)


# ------------------------------------------------------------------ HTTP headers

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~A-Za-z0-9]+")  # RFC 7230 header field name
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})


def is_header_name(name: str) -> bool:
    return isinstance(name, str) and _TOKEN.fullmatch(name) is not None


def check_header_match_name(name: str) -> None:
    """A header to match on: a token, a pseudo header, or Istio's `@request.auth.claims.X` JWT claim form."""
    if not name:
        raise ValueError("header name cannot be empty")
    if name in PSEUDO_HEADERS or name.startswith("@request.auth.claims"):
        return
    if not is_header_name(name):
        raise ValueError(f"header name {show(name)} is not a valid header name")


def check_header_add_name(name: str) -> None:
    """A request header to add or set: `:authority`/`host` allowed, other `:` pseudo headers not."""
    if not name:
        raise ValueError("header name cannot be empty")
    if (name.startswith(":") or name.lower() == "host") and name.lower() not in (":authority", "host"):
        raise ValueError(f"invalid header {show(name)}: header cannot have ':' prefix")
    if not name.startswith(":") and not is_header_name(name):
        raise ValueError(f"header name {show(name)} is not a valid header name")


def check_header_op_name(name: str) -> None:
    """A request header to remove, or a response header to add, set or remove."""
    if not name:
        raise ValueError("header name cannot be empty")
    if name.lower() == "host":
        raise ValueError(f"invalid header {show(name)}: cannot set Host header")
    if name.startswith(":"):
        raise ValueError(f"invalid header {show(name)}: header cannot have ':' prefix")
    if not is_header_name(name):
        raise ValueError(f"header name {show(name)} is not a valid header name")


def check_header_value(value: str) -> None:
    """No control characters (CR/LF included), and Envoy's %VARIABLE% syntax well formed ('%%' escapes '%')."""
    if _HEADER_VALUE_BAD.search(value):
        raise ValueError(f"header value {show(value)} has a control character (CR, LF, NUL...)")
    i, n, state = 0, len(value), "lit"
    while i < n:
        ch = value[i]
        if state == "lit":
            if ch == "%":
                if i + 1 >= n:
                    raise ValueError(f"header value {show(value)}: un-escaped % (write %% for a literal %)")
                if value[i + 1] == "%":
                    i += 1
                else:
                    state = "var"
        elif state == "var":
            if ch == "%":
                state = "lit"
            elif ch == "(":
                state = "args"
        elif state == "args":
            if ch == ")":
                state = "end"
        elif state == "end":
            if ch == "%":
                state = "lit"
            elif ch != " ":
                raise ValueError(f"header value {show(value)}: expecting '%' after ')'")
        i += 1
    if state != "lit":
        raise ValueError(f"header value {show(value)}: un-terminated %VARIABLE% expression (write %% for a literal %)")


# ------------------------------------------------------------------ regexes (RE2, as Envoy)

MAX_REGEX_LENGTH = 1024  # Istio's limit
RE2_MAX_PROGRAM_SIZE = 32768  # re2.max_program_size.error_level, as Istio's bootstrap sets it

try:
    import re2 as _re2  # google-re2: the RE2 Envoy links

    _RE2_OPTIONS = _re2.Options()
    _RE2_OPTIONS.log_errors = False
except ImportError:  # pragma: no cover - google-re2 is a dependency; keep a usable fallback
    _re2 = None


def check_regex(v: str, what: str = "regex") -> str:
    """A regex Envoy will accept: RE2 syntax (no lookarounds, backreferences or possessive quantifiers),
    at most 1024 characters (Istio) and an RE2 program small enough for Envoy."""
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a string")
    if v == "":
        raise ValueError(f"{what} should not be empty")
    if len(v) > MAX_REGEX_LENGTH:
        raise ValueError(f"{what} is too large ({len(v)} characters; at most {MAX_REGEX_LENGTH})")
    if _re2 is not None:
        try:
            compiled = _re2.compile(v, options=_RE2_OPTIONS)
        except _re2.error as e:
            detail = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
            raise ValueError(f"invalid {what} {show(v)}: {detail}; Envoy uses RE2 syntax "
                             "(https://github.com/google/re2/wiki/Syntax)") from None
        if compiled.programsize > RE2_MAX_PROGRAM_SIZE:
            raise ValueError(f"{what} {show(v)} is too complex for Envoy (RE2 program size {compiled.programsize} "
                             f"> {RE2_MAX_PROGRAM_SIZE})")
        return v
    try:  # pragma: no cover
        re.compile(v)
    except re.error as e:  # pragma: no cover
        raise ValueError(f"invalid {what} {show(v)}: {e}") from None
    if re.search(r"\(\?[=!<]|\\[1-9]|[+*?}]\+", v):  # pragma: no cover
        raise ValueError(f"invalid {what} {show(v)}: lookarounds, backreferences and possessive quantifiers "
                         "are not RE2")
    return v


# ------------------------------------------------------------------ references

def check_gateway_names(names: list[str]) -> None:
    """`gateways` entries: `mesh`, `<namespace>/<name>`, or a legacy `<name>` / `<name>.<namespace>` FQDN."""
    for i, g in enumerate(names):
        if g == "mesh":
            continue
        ns, slash, name = g.partition("/")
        if not slash:
            try:
                check_fqdn(g)
            except ValueError as e:
                raise At(f"[{i}]", str(e)) from None
            continue
        if not ns or not name:
            raise At(f"[{i}]", "config namespace and gateway name cannot be empty")
        if not is_dns1123_label(ns):
            raise At(f"[{i}]", f"invalid value for namespace: {show(ns)}")
        if not is_dns1123_label(name):
            raise At(f"[{i}]", f"invalid value for gateway name: {show(name)}")


def check_export_to(export_to: list[str], namespace: str, *, service_entry: bool = False,
                    dr_with_selector: bool = False) -> None:
    """Istio's exportTo rules: `.`, `*`, namespaces (and `~` on a ServiceEntry), no duplicates, `*` alone."""
    seen: set[str] = set()
    for i, e in enumerate(export_to):
        key = namespace if e == "." else e
        if key in seen:
            raise At(f"[{i}]", f"duplicate entries in exportTo: . and current namespace {namespace}" if key != e
                     else f"duplicate entries in exportTo for entry {show(e)}")
        if not (e in (".", "*") or (service_entry and e == "~") or is_dns1123_label(e)):
            raise At(f"[{i}]", f"only . or * or a valid DNS 1123 label is allowed as exportTo entry, not {show(e)}")
        seen.add(key)
    if dr_with_selector and seen:
        if namespace not in seen:
            raise ValueError("destination rule with workload selector cannot have exportTo beyond current namespace")
        if len(seen) > 1:
            raise ValueError("destination rule with workload selector cannot have multiple entries in exportTo")
    if "*" in seen and len(export_to) > 1:
        raise ValueError("cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(export_to) > 1:
        raise ValueError("cannot export service entry to no one (~) and someone")
