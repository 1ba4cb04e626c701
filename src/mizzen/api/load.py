"""YAML/JSON → validated Resources. Every problem is reported with file, document, resource and field path."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import pydantic

from .base import _LENIENT, DEFAULT_NAMESPACE, Issue, InvalidConfig, Metadata, Resource
from .fields import show, split_at
from .gateway_api import GROUP as GATEWAY_API_GROUP, KUBE_GATEWAY
from .kinds import KINDS, SKIPPED_KINDS
from .yamlload import YamlError, load_documents


@dataclass
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    # where each resource came from: key -> (file, 0-based document index), to locate later errors
    origins: dict = field(default_factory=dict)

    def locate(self, issues: Iterable[Issue]) -> list[Issue]:
        """Issues that name a resource but no file (found after parsing, e.g. by the control plane's
        validators, which say `<apply>`) given the file and document the resource came from."""
        from dataclasses import replace

        out = []
        for i in issues:
            origin = self.origins.get((i.kind, i.namespace, i.name))
            if origin is not None and (i.file in ("<apply>", "<input>", "<request>") or i.document is None):
                i = replace(i, file=origin[0], document=origin[1])
            out.append(i)
        return out


def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pyd_issues(err: pydantic.ValidationError, prefix: str, base: Issue) -> list[Issue]:
    issues = []
    for e in err.errors():
        # drop pydantic's internal location parts for unions/validators
        loc = [p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        path = _loc([prefix, *loc]) if prefix else _loc(loc)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
            sub, msg = split_at(msg)
            if sub:
                path = path + sub if sub.startswith("[") or not path else f"{path}.{sub}"
        issues.append(Issue(msg, base.file, base.document, base.kind, base.namespace, base.name, path))
    return issues


def parse_document(doc: Any, *, file: str = "<input>", index: int | None = None,
                   default_namespace: str = DEFAULT_NAMESPACE,
                   skip_unknown: bool = False) -> tuple[Resource | None, list[Issue], list[Issue]]:
    """Validate one decoded document. Returns (resource or None, errors, warnings). With skip_unknown, a
    document of a kind Mizzen does not know is a warning instead of an error (`--skip-unknown`)."""
    base = Issue("", file, index)
    if not isinstance(doc, dict):
        return None, [Issue("document is not a mapping", file, index)], []
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    meta_in = doc.get("metadata") or {}
    name = _ident(meta_in.get("name")) if isinstance(meta_in, dict) else None
    ns = _ident((meta_in.get("namespace") if isinstance(meta_in, dict) else None) or default_namespace)
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None, [Issue("apiVersion and kind are required", file, index, None, ns, name)], []
    api_version, kind = _ident(api_version), _ident(kind)
    if kind == "Gateway" and isinstance(api_version, str) and api_version.startswith(GATEWAY_API_GROUP + "/"):
        kind = KUBE_GATEWAY  # the Gateway API's Gateway, not Istio's (api/gateway_api.py)
    base = Issue("", file, index, kind, ns, name)
    if (api_version, kind) in SKIPPED_KINDS:
        return None, [], [Issue(f"skipped: {SKIPPED_KINDS[(api_version, kind)]}", file, index, kind, ns, name)]
    info = KINDS.get(kind)
    if info is None:
        if skip_unknown:
            return None, [], [Issue(f"skipped: unknown kind {kind!r} ({api_version})", file, index, kind, ns, name)]
        known = ", ".join(sorted(KINDS))
        return None, [Issue(f"unknown kind {kind!r} (known kinds: {known}; --skip-unknown applies the others)",
                            file, index, kind, ns, name, "kind")], []
    if api_version not in info.api_versions:
        return None, [Issue(f"apiVersion {api_version!r} is not served for {kind}; use one of "
                            f"{', '.join(info.api_versions)}", file, index, kind, ns, name, "apiVersion")], []
    errors: list[Issue] = []
    allowed_top = {"apiVersion", "kind", "metadata", "spec", "status"}
    if info.spec_at_top_level:
        allowed_top |= {"secrets", "imagePullSecrets", "automountServiceAccountToken"}
    allowed_top |= set(info.top_level_fields)
    for k in doc:
        if k not in allowed_top:
            errors.append(Issue("unknown field", file, index, kind, ns, name, _ident(k)))
    if not isinstance(meta_in, dict):
        errors.append(Issue("metadata must be a mapping", file, index, kind, ns, name, "metadata"))
        return None, errors, []
    meta_in = dict(meta_in)
    meta_in.setdefault("namespace", default_namespace)
    if info.cluster_scoped and isinstance(name, str):
        meta_in["namespace"] = name  # a cluster-scoped resource is kept under its own name
    try:
        meta = Metadata.model_validate(meta_in)
    except pydantic.ValidationError as e:
        errors.extend(_pyd_issues(e, "metadata", base))
        meta = None
    spec_in = {} if info.spec_at_top_level else doc.get("spec", {})
    if spec_in is None:
        spec_in = {}
    if info.top_level_fields and isinstance(spec_in, dict):
        spec_in = {**spec_in, **{k: doc[k] for k in info.top_level_fields if k in doc}}
    try:
        spec = info.spec_model.model_validate(spec_in)
    except pydantic.ValidationError as e:
        errors.extend(_pyd_issues(e, "spec", base))
        spec = None
    if errors or meta is None or spec is None:
        return None, errors, []
    res = Resource(api_version, kind, meta, spec)
    if info.checks is not None and not _LENIENT.get():  # rules that need metadata too (e.g. exportTo and the namespace)
        errors = [Issue(msg, file, index, kind, ns, name, f"spec.{path}" if path else "spec")
                  for path, msg in info.checks(res)]
        if errors:
            return None, errors, []
    return res, [], []


_IDENT = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_./:]{0,252}")


def _ident(v: Any) -> Any:
    """A name, kind or namespace as an error message may show it: ordinary names as they are; anything else
    (a list, a huge string, control characters) escaped and cut short."""
    if v is None or (isinstance(v, str) and _IDENT.fullmatch(v)):
        return v
    return show(v, 60)


MAX_RESOURCE_BYTES = 1536 * 1024  # one resource's stored JSON (Kubernetes/etcd's object limit)
MAX_LIST_NESTING = 4


def _list_items(doc: Any, depth: int = 0) -> list[Any] | None:
    """kubectl flattens `kind: List` (and `<Kind>List`) documents into their items, lists in lists included."""
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or not doc["kind"].endswith("List"):
        return None
    items = doc.get("items")
    if items is None and doc["kind"] == "List":
        return []
    if not isinstance(items, list):
        return None
    out: list[Any] = []
    for item in items:
        sub = _list_items(item, depth + 1) if depth < MAX_LIST_NESTING else None
        out.extend(sub if sub is not None else [item])
    return out


def unwrap_list(doc: Any) -> list[Any]:
    """The documents one YAML document stands for: the items of a `kind: List` (or `<Kind>List`, lists in
    lists flattened, as kubectl does), else the document itself."""
    items = _list_items(doc)
    return items if items is not None else [doc]


def load_text(text: str, *, file: str = "<input>", default_namespace: str = DEFAULT_NAMESPACE,
              skip_unknown: bool = False) -> LoadResult:
    """Parse a multi-document YAML (or JSON) text. Raises InvalidConfig listing every problem."""
    try:
        docs = load_documents(text)
    except YamlError as e:
        raise InvalidConfig([Issue(str(e), file, e.document)]) from None
    result = LoadResult()
    errors: list[Issue] = []
    seen: dict[Any, int] = {}
    for d in docs:
        i, doc = d.index, d.value
        if doc is None:  # empty document, e.g. a trailing '---'
            continue
        for sub in unwrap_list(doc):
            res, errs, warns = parse_document(sub, file=file, index=i, default_namespace=default_namespace,
                                              skip_unknown=skip_unknown)
            errors.extend(errs)
            result.warnings.extend(warns)
            if res is None:
                continue
            size = len(json.dumps(res.to_dict(), separators=(",", ":")))
            if size > MAX_RESOURCE_BYTES:
                errors.append(Issue(f"resource is too large ({size} bytes as JSON; at most {MAX_RESOURCE_BYTES})",
                                    file, i, res.kind, res.namespace, res.name))
                continue
            if res.key in seen:
                errors.append(Issue(f"defined twice in one input (also document {seen[res.key] + 1})",
                                    file, i, res.kind, res.namespace, res.name))
            seen[res.key] = i
            result.resources.append(res)
            result.origins[(res.kind, res.namespace, res.name)] = (file, i)
    if errors:
        raise InvalidConfig(errors)
    return result


def load_sources(sources: Iterable[tuple[str, str]], *, default_namespace: str = DEFAULT_NAMESPACE,
                 skip_unknown: bool = False) -> LoadResult:
    """Load several (name, text) inputs as one all-or-nothing input (reading files is the caller's job)."""
    out = LoadResult()
    errors: list[Issue] = []
    seen: dict[Any, str] = {}
    for name, text in sources:
        try:
            r = load_text(text, file=name, default_namespace=default_namespace, skip_unknown=skip_unknown)
        except InvalidConfig as e:
            errors.extend(e.issues)
            continue
        for res in r.resources:
            if res.key in seen:
                errors.append(Issue(f"defined twice in one input (also in {seen[res.key]})", name, None,
                                    res.kind, res.namespace, res.name))
            seen[res.key] = name
        out.resources.extend(r.resources)
        out.warnings.extend(r.warnings)
        out.origins.update(r.origins)
    if errors:
        raise InvalidConfig(errors)
    return out


def from_dict(d: dict[str, Any], revision: int = 0) -> Resource:
    """Rebuild a stored resource (already validated once)."""
    ns = d.get("metadata", {}).get("namespace", DEFAULT_NAMESPACE)
    res, errs, _ = parse_document(d, file="<store>", default_namespace=ns)
    if res is None:
        raise InvalidConfig(errs)
    return res.with_revision(revision)
