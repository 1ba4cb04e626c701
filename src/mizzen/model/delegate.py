"""VirtualService delegation (Istio `http[].delegate`), one level, merged as Istio merges it. Pure.

Used through `Resolved.http_routes(host)` (translation) and `problems` (`mizzen analyze`, MZ0104).

A root VirtualService's http route with `delegate: {name, namespace}` is replaced by the http routes of
that *delegate* VirtualService (one without `hosts`), each merged with the root route:
- matches: each delegate match must be a subset of at least one root match (a delegate `uri` prefix
  must start with the root's prefix, an exact uri must start with it, regexes never combine, headers and
  query params must not contradict, ...). It is merged with every root match it does not conflict with
  (unset fields are filled from the root's). A delegate route with a match that fits no root match is
  dropped (Istio logs "HTTPMatchRequests conflict"). No matches on either side = the other side's.
- route fields the delegate route leaves unset are inherited from the root route (`rewrite`, `timeout`,
  `retries`, `fault`, `mirror(s)`, `mirrorPercentage`, `corsPolicy`, `headers`).
- a missing delegate (or one that has hosts, i.e. is not a delegate) contributes no routes; the root's
  delegating route is omitted (`mizzen analyze` reports it, MZ0104).
Destinations of delegate routes are resolved in the delegate's namespace.
"""
from __future__ import annotations

from typing import Iterator

from ..api.base import Resource
from ..api.virtual_service import HTTPMatchRequest, HTTPRoute, StringMatch

_INHERITED = ("rewrite", "timeout", "retries", "fault", "mirror", "mirror_percent", "mirror_percentage",
              "cors_policy", "headers")


def _sm(m: StringMatch | None) -> StringMatch | None:
    return None if m is None or m.empty else m


def string_match_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    root, leaf = _sm(root), _sm(leaf)
    if root is None or leaf is None:
        return False
    if root.regex is not None or leaf.regex is not None:
        return True  # a regex never combines with another match
    if root.exact is not None:
        return leaf.exact != root.exact
    if root.prefix is not None:
        return not (leaf.prefix or leaf.exact or "").startswith(root.prefix)
    return True


def has_conflict(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> bool:
    for f in ("uri", "scheme", "method", "authority"):
        if string_match_conflict(getattr(root, f), getattr(leaf, f)):
            return True
    for f in ("headers", "without_headers", "query_params"):
        r, lf = getattr(root, f), getattr(leaf, f)
        if any(string_match_conflict(r.get(k), v) for k, v in lf.items()):
            return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    if any(k in root.source_labels and root.source_labels[k] != v for k, v in leaf.source_labels.items()):
        return True
    if root.gateways and leaf.gateways and not set(leaf.gateways) <= set(root.gateways):
        return True
    return False


def merge_match(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> HTTPMatchRequest:
    upd: dict = {}
    if root.name:
        upd["name"] = f"{root.name}-{leaf.name}" if leaf.name else root.name
    for f in ("uri", "scheme", "method", "authority", "port", "source_namespace", "stat_prefix"):
        if getattr(leaf, f) is None:
            upd[f] = getattr(root, f)
    for f in ("headers", "without_headers", "query_params", "source_labels"):
        upd[f] = {**getattr(root, f), **getattr(leaf, f)}
    if not leaf.gateways:
        upd["gateways"] = root.gateways
    return leaf.model_copy(update=upd)


def merge_matches(root: list[HTTPMatchRequest], leaf: list[HTTPMatchRequest]
                  ) -> list[HTTPMatchRequest] | None:
    """The merged matches, or None on a conflict (some delegate match fits no root match)."""
    if not root:
        return list(leaf)
    if not leaf:
        return list(root)
    out: list[HTTPMatchRequest] = []
    for sub in leaf:
        fits = [merge_match(rm, sub) for rm in root if not has_conflict(rm, sub)]
        if not fits:
            return None
        out += fits
    return out


def merge_route(root: HTTPRoute, leaf: HTTPRoute) -> HTTPRoute | None:
    matches = merge_matches(root.match, leaf.match)
    if matches is None:
        return None
    upd: dict = {"match": matches}
    if root.name:
        upd["name"] = f"{root.name}-{leaf.name}" if leaf.name else root.name
    for f in _INHERITED:
        if getattr(leaf, f) is None:
            upd[f] = getattr(root, f)
    if not leaf.mirrors and root.mirrors and leaf.mirror is None:
        upd["mirrors"] = root.mirrors
    return leaf.model_copy(update=upd)


def expand(config, vs: Resource) -> Iterator[tuple[Resource, str, HTTPRoute]]:
    """The http routes of a root VirtualService with delegation resolved: (owner, name, route), where
    `owner` is the VirtualService whose namespace resolves the route's destinations and `name` the
    default route name stem."""
    for i, r in enumerate(vs.spec.http):
        if r.delegate is None:
            yield vs, f"{vs.namespace}.{vs.name}.{i}", r
            continue
        d = config.delegate_for(vs, r.delegate)
        if d is None:
            continue  # missing delegate: the route is omitted (analyze: MZ0104)
        for k, sub in enumerate(d.spec.http):
            merged = merge_route(r, sub)
            if merged is not None:
                yield d, f"{vs.namespace}.{vs.name}.{i}.{d.namespace}.{d.name}.{k}", merged


def problems(config, vs: Resource) -> Iterator[tuple[str, str]]:
    """(field path, message) for every delegating route that yields nothing or drops delegate routes."""
    for i, r in enumerate(vs.spec.http):
        if r.delegate is None:
            continue
        ns = r.delegate.namespace or vs.namespace
        d = config.delegate_for(vs, r.delegate)
        if d is None:
            other = [x for x in config.by_kind.get("VirtualService", ())
                     if x.namespace == ns and x.name == r.delegate.name]
            why = "has hosts, so it is a root, not a delegate" if other else "does not exist"
            yield f"spec.http[{i}].delegate", f"delegate VirtualService {ns}/{r.delegate.name} {why}; " \
                                              f"the route is omitted"
            continue
        for k, sub in enumerate(d.spec.http):
            if merge_route(r, sub) is None:
                yield f"spec.http[{i}].delegate", f"route {k} of delegate {ns}/{d.name} has a match that is " \
                                                  f"not a subset of this route's matches; it is ignored"
